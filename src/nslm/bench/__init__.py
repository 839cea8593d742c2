"""Benchmarks: training throughput (nslm vs a plain-PyTorch loop, fp32 vs bf16) and generation speed."""
