"""Benchmarks: training throughput (nslm vs a plain-PyTorch loop, fp32 vs bf16), generation speed, and the
novelty index's embedding speed with the neighbours cheaper embeddings would find."""
