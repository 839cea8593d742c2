"""Two CPU processes under torchrun (gloo): different data per rank, one writer, equal weights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from nslm.weights import weights_sha256


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_one_model(tmp_path, data_dir):
    run = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "-m", "nslm", "train", "--preset", "transformer-1m", "--data", str(data_dir), "--out", str(run),
           "--max-steps", "4", "--device", "cpu", "--dtype", "fp32",
           "--set", "model.d_model=32", "--set", "model.n_layer=1", "--set", "model.n_head=2", "--set", "model.d_ff=64",
           "--set", "model.context_length=32", "--set", "train.batch_size=4", "--set", "train.eval_tokens=1024",
           "--set", "train.sample_tokens=4", "--set", "train.log_interval=1", "--set", "train.grad_accum=2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads((run / "ddp.json").read_text())
    assert ddp["world_size"] == 2
    ranks = sorted(ddp["ranks"], key=lambda r: r["rank"])
    assert ranks[0]["first_batch_sha256"] != ranks[1]["first_batch_sha256"]  # each rank reads its own windows
    # DDP keeps the replicas in step: the saved weights are every rank's weights
    model_cfg = json.loads((run / "config.json").read_text())["model"]
    from nslm.models import ModelConfig, build_model

    model = build_model(ModelConfig.from_dict(model_cfg))
    model.load_state_dict(load_file(str(run / "last" / "model.safetensors")))
    saved = weights_sha256(model)
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"] == saved
    # only rank 0 wrote the run folder
    status = json.loads((run / "status.json").read_text())
    assert status["pid"] == ranks[0]["pid"] and status["state"] == "finished"
    steps = [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in l]
    assert steps == [1, 2, 3, 4]  # one line per step, not one per process
    tokens = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["tokens"]
    assert tokens == 2 * 2 * 4 * 32  # ranks x accumulation x batch x context
    assert sorted(p.name for p in run.iterdir()) == sorted(
        [".train.lock", "config.json", "ddp.json", "last", "loss.png", "metrics.jsonl", "model.safetensors", "status.json",
         "tokenizer.json"])
