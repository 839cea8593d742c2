"""`nslm bench`: runs and prints its columns (figures are never asserted)."""

from __future__ import annotations

from nslm.cli import main


def test_bench_train_prints_fp32_bf16_and_the_plain_loop(capsys):
    assert main(["bench", "train", "--preset", "transformer-1m", "--steps", "1", "--warmup", "1",
                 "--batch-size", "2", "--context", "16", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for column in ("implementation", "dtype", "tokens/s", "model GFLOP/s", "nslm", "plain PyTorch", "fp32", "bf16"):
        assert column in out


def test_bench_generate_prints_with_and_without_cache(capsys):
    assert main(["bench", "generate", "--preset", "gru-1m", "--tokens", "5"]) == 0
    out = capsys.readouterr().out
    for column in ("with cache", "without cache", "tokens/s"):
        assert column in out
