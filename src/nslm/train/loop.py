"""The training loop: config -> data -> model -> optimizer -> steps, with evaluation, checkpoints,
progress, metrics and exact resume. Runs as one process or under torchrun (DistributedDataParallel)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from nslm.atomic import atomic_write_json, atomic_write_text
from nslm.data.tokens import DataFolder
from nslm.device import autocast, pick_autocast_dtype, pick_device, process_rank, world_size
from nslm.errors import NslmError
from nslm.models import ModelConfig, build_model
from nslm.models.loss import IGNORE, head_cross_entropy
from nslm.sampling import generate_ids
from nslm.tokenizer import Tokenizer
from nslm.train import checkpoint
from nslm.train.config import TrainConfig
from nslm.train.plot import plot_loss
from nslm.train.windows import batch_generator, random_batch, validation_windows
from nslm.weights import save_weights, weights_sha256
from nslm.train.metrics import read_metrics
from nslm.train.optim import make_optimizer, set_lr
from nslm.train.runlock import hold_run
from nslm.train.step import BatchStep


# ---------------------------------------------------------------- schedule
def learning_rate(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warmup over `warmup_steps`, then down to lr * min_lr_ratio as progress goes 0 -> 1: by a cosine
    over the whole run, or with train.cooldown flat and then linearly over that last share of the run
    (warmup-stable-decay)."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    progress = min(max(progress, 0.0), 1.0)
    if cfg.cooldown is None:
        shape = 0.5 * (1 + math.cos(math.pi * progress))
    else:
        shape = min(1.0, (1 - progress) / cfg.cooldown)
    return cfg.lr * warm * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape)


def compile_wanted(tcfg: TrainConfig, mcfg: ModelConfig, device: torch.device) -> bool:
    """train.compile, or where it is unset (None), the measured default: compile a Transformer on a CUDA GPU
    (1.2x at batch 16, 2.5x at batch 512 on an H200, README "Benchmarks"); elsewhere compiling costs a
    minute and has not been shown to pay."""
    if tcfg.compile is not None:
        return tcfg.compile
    return device.type == "cuda" and mcfg.arch == "transformer"


# ---------------------------------------------------------------- distributed
class Dist:
    """Rank, world size and helpers; a single process is rank 0 of 1."""

    def __init__(self):
        self.world = world_size()
        self.rank = process_rank()
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.active = False

    def start(self, device: torch.device) -> None:
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(backend)
            self.active = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def any(self, flag: bool, device) -> bool:
        """True on every rank when any rank says True (so all ranks stop at the same step)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t)
        return bool(t.item() > 0)

    def gather(self, obj) -> list:
        if not self.active:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def stop(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- the trainer
class Trainer:
    """One training run in `run_dir` (see docs/ARCHITECTURE.md, "Run folder")."""

    def __init__(self, run_config: dict, run_dir: Path, resume: bool):
        self.run_config = run_config
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.tcfg = TrainConfig.from_dict(run_config["train"])
        self.mcfg = ModelConfig.from_dict(run_config["model"])
        self.meta = run_config["data"]
        self.dist = Dist()
        self.device = pick_device(self.tcfg.device, self.dist.local_rank)
        self.tcfg = self.tcfg.for_device(self.device, self.mcfg.dropout)
        self.dist.start(self.device)
        self.amp_dtype = pick_autocast_dtype(self.tcfg.dtype, self.device)
        self.stop_signal: str | None = None
        self.setup_done = False
        # best_val: the lowest loss on the selection split (dev where the data folder has one, else valid)
        self.step, self.tokens_seen, self.elapsed_before, self.best_val = 0, 0, 0.0, float("inf")
        self.max_steps, self.max_tokens, self.max_minutes = self.tcfg.resolved_limits()
        self.tokens_per_step = self.tcfg.batch_size * self.tcfg.grad_accum * self.mcfg.context_length * self.dist.world
        # filled in by run() and setup()
        self.started: float | None = None  # wall time the current process began training
        self.start_step = 0
        self.first_batch_sha: str | None = None
        self.last_lr = 0.0
        self.model = self.net = self.optimizer = self.tokenizer = None
        self.batch_step: BatchStep | None = None
        self.train_tokens = self.valid_tokens = None
        self.selected_by = "valid"
        self.windows: dict[str, tuple] = {}  # split -> (inputs, targets, estimated, TokenSplit)
        self.val_estimated = False

    # ---- set-up
    def setup(self) -> None:
        if self.tcfg.threads:
            torch.set_num_threads(self.tcfg.threads)
        torch.manual_seed(self.tcfg.seed)
        if self.tcfg.deterministic:
            torch.use_deterministic_algorithms(True)
        data = DataFolder(self.meta["path"])
        self.train_tokens, self.valid_tokens = data.split("train"), data.split("valid")
        self.selected_by = data.selection_split
        self.model = build_model(self.mcfg).to(self.device)
        self.optimizer = make_optimizer(self.model, self.tcfg, self.device)
        self.step, self.tokens_seen, self.elapsed_before = 0, 0, 0.0
        self.best_val = float("inf")
        if self.resume:
            self._restore()
            if self.dist.main:
                atomic_write_json(self.run_dir / "config.json", self.run_config)
        self.setup_done = True
        self.net = self.model
        if compile_wanted(self.tcfg, self.mcfg, self.device):
            self.net = torch.compile(self.net)
        if self.dist.active:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.net, device_ids=ids)
        self.batch_step = BatchStep(self.net, self.tcfg.batch_threads, self.autocast)
        # validation is always measured and reported; a dev split, where there is one, picks the checkpoint
        for name in dict.fromkeys(("valid", self.selected_by)):
            split = data.split(name)
            x, y, estimated = validation_windows(split.ids, self.mcfg.context_length, self.tcfg.eval_tokens)
            self.windows[name] = (x, y, estimated, split)
        self.val_estimated = self.windows["valid"][2]
        self.tokenizer = None  # only the main process samples; a run folder without a tokenizer trains unsampled
        if self.dist.main:
            try:
                self.tokenizer = Tokenizer.load(self.run_dir / "tokenizer.json")
            except NslmError:
                pass

    def _restore(self) -> None:
        state, rng = checkpoint.load_last(self.run_dir, self.model, self.optimizer)
        self.step = state["step"]
        self.tokens_seen = state["tokens"]
        self.elapsed_before = float(state["elapsed_s"])
        best = state.get("best_dev_loss") if self.selected_by == "dev" else state["best_val_loss"]
        self.best_val = float("inf") if best is None else float(best)
        key = f"cpu_rank{self.dist.rank}" if f"cpu_rank{self.dist.rank}" in rng else "cpu_rank0"
        if key in rng:
            torch.set_rng_state(rng[key])
        cuda_key = f"cuda_rank{self.dist.rank}"
        if self.device.type == "cuda" and cuda_key in rng:
            try:
                torch.cuda.set_rng_state(rng[cuda_key], self.device)
            except RuntimeError:
                raise NslmError(f"{self.run_dir / 'last' / 'state.safetensors'} is damaged: tensor rng.{cuda_key} "
                                "is not a CUDA random-generator state; the run cannot be resumed") from None
        if self.dist.main:
            self._trim_metrics(self.step)

    def _trim_metrics(self, step: int) -> None:
        """Drop metric lines written after the checkpoint we resume from (a crash can leave some)."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        kept = [row for row in read_metrics(self.run_dir) if isinstance(row.get("step"), int) and row["step"] <= step]
        atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in kept))

    # ---- helpers
    def autocast(self):
        return autocast(self.device, self.amp_dtype)

    def elapsed(self) -> float:
        return self.elapsed_before + (time.time() - self.started)

    def progress(self) -> float:
        parts = []
        if self.max_steps:
            parts.append(self.step / self.max_steps)
        if self.max_tokens:
            parts.append(self.tokens_seen / self.max_tokens)
        if self.max_minutes:
            parts.append(self.elapsed() / (60 * self.max_minutes))
        return min(1.0, max(parts))

    def status(self, state: str, **extra) -> None:
        if not self.dist.main:
            return
        atomic_write_json(self.run_dir / "status.json", {
            "state": state, "pid": os.getpid(), "step": self.step, "max_steps": self.max_steps,
            "progress": round(self.progress(), 4) if self.started is not None else 0.0,
            "updated": now_iso(), **extra})

    def log(self, record: dict) -> None:
        if self.dist.main:
            with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    # ---- one optimisation step
    def train_step(self) -> torch.Tensor:
        """One optimizer update over grad_accum micro-batches; returns the mean loss as a 0-d tensor on the
        device (reading it waits for the GPU, so the loop reads it only when it logs)."""
        lr = learning_rate(self.tcfg, self.step, self.progress())
        set_lr(self.optimizer, lr)
        self.net.train()
        total = torch.zeros((), device=self.device)
        pin = self.device.type == "cuda"
        for micro in range(self.tcfg.grad_accum):
            gen = batch_generator(self.tcfg.seed, self.dist.rank, self.step, micro)
            x, y = random_batch(self.train_tokens.ids, self.tcfg.batch_size, self.mcfg.context_length, gen)
            if self.step == self.start_step and micro == 0:
                self.first_batch_sha = hashlib.sha256(x.numpy().tobytes()).hexdigest()
            if pin:  # page-locked, so the copy really runs beside the GPU's work
                x, y = x.pin_memory(), y.pin_memory()
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            last = micro == self.tcfg.grad_accum - 1
            sync = nullcontext() if (last or not self.dist.active) else self.net.no_sync()
            with sync:
                loss = self.batch_step(x, y, scale=1 / self.tcfg.grad_accum)
            total += loss.float()
        if self.tcfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tcfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += self.tokens_per_step
        self.last_lr = lr
        return total / self.tcfg.grad_accum

    # ---- evaluation
    @torch.no_grad()
    def split_loss(self, name: str, batch_size: int = 32) -> tuple[float, float | None, int]:
        """(loss in nats per token, bits per byte, tokens scored) of split `name` over its fixed windows."""
        self.model.eval()
        xs, ys, _, split = self.windows[name]
        nats, count = 0.0, 0
        for i in range(0, len(xs), batch_size):
            x = xs[i : i + batch_size].to(self.device)
            y = ys[i : i + batch_size].to(self.device)
            nats += sum(self.batch_step.map(self._nats, x, y))
            count += int((y != IGNORE).sum())
        loss = nats / max(count, 1)
        # bits per byte: nats per token times tokens per byte of the whole split, in bits
        bpb = loss * len(split) / math.log(2) / split.bytes if split.bytes else None
        return loss, bpb, count

    def _nats(self, _shard: int, x: torch.Tensor, y: torch.Tensor) -> float:
        """Summed cross-entropy over the scored tokens of (x, y): the head's loss in row chunks, never the
        whole [windows, T, vocabulary] logits (run in the shards' threads: grad mode and precision set here)."""
        with torch.no_grad(), self.autocast():
            return head_cross_entropy(self.model.features(x), self.model.tok_emb.weight, y, reduction="sum").item()

    def evaluate(self) -> dict:
        """Validation loss, perplexity and bits per byte (and the dev split's, where the data has one, which
        picks the checkpoint), and a greedy sample."""
        val_loss, bpb, count = self.split_loss("valid")
        record = {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50)), "val_bpb": bpb,
                  "val_tokens": count, "val_estimated": self.val_estimated}
        if self.selected_by == "dev":
            dev_loss, dev_bpb, dev_count = self.split_loss("dev")
            record.update(dev_loss=dev_loss, dev_bpb=dev_bpb, dev_tokens=dev_count)
        record["selected_by"] = self.selected_by
        record["sample"], record["sample_ended"] = self.sample()
        return record

    def sample(self) -> tuple[str | None, bool | None]:
        """A greedy continuation of `sample_prompt` and whether it reached the end-of-story token."""
        if self.tokenizer is None or self.tcfg.sample_tokens == 0:
            return None, None
        eot = self.tokenizer.eot_id
        prompt = [eot] + self.tokenizer.encode(self.tcfg.sample_prompt)
        was_training = self.model.training
        self.model.eval()
        with self.autocast():
            ids = list(generate_ids(self.model, prompt, self.tcfg.sample_tokens, self.tokenizer.eot_id, temperature=0))
        self.model.train(was_training)
        return self.tokenizer.decode(prompt[1:] + ids), len(ids) < self.tcfg.sample_tokens

    # ---- checkpoints
    def rng_states(self) -> dict[str, torch.Tensor]:
        states = self.dist.gather(torch.get_rng_state())
        rng = {f"cpu_rank{r}": s for r, s in enumerate(states)}
        if self.device.type == "cuda":
            for r, s in enumerate(self.dist.gather(torch.cuda.get_rng_state(self.device).cpu())):
                rng[f"cuda_rank{r}"] = s
        return rng

    def save_last(self) -> None:
        rng = self.rng_states()  # every rank takes part in the gather
        if not self.dist.main:
            return
        best = None if math.isinf(self.best_val) else self.best_val
        state = {"step": self.step, "tokens": self.tokens_seen, "elapsed_s": self.elapsed(),
                 "best_val_loss": best if self.selected_by == "valid" else None,
                 **({"best_dev_loss": best} if self.selected_by == "dev" else {}),
                 "data_position": {"seed": self.tcfg.seed, "next_step": self.step, "world_size": self.dist.world},
                 "saved": now_iso()}
        checkpoint.save_last(self.run_dir, self.model, self.optimizer, state, rng)

    def save_best_if_better(self, val_loss: float) -> bool:
        if val_loss >= self.best_val:
            return False
        self.best_val = val_loss
        if self.dist.main:
            save_weights(self.model, self.run_dir / "model.safetensors")
        return True

    # ---- the run
    def done(self) -> bool:
        return self.progress() >= 1.0 or (self.tcfg.stop_after_steps is not None and self.step >= self.tcfg.stop_after_steps)

    def run(self) -> dict:
        """Train to the limit, a stop signal, or an error; returns the final status record."""
        threads = torch.get_num_threads()
        # the lock tells everyone else (the GUI, a second `nslm train --resume`) that this run is training
        lock = hold_run(self.run_dir) if self.dist.main else nullcontext()
        try:
            with lock:
                if self.dist.main:
                    checkpoint.tidy_run_folder(self.run_dir)
                return self._run()
        finally:
            torch.set_num_threads(threads)  # train.threads applies to this run only

    def _run(self) -> dict:
        self.started = time.time()
        handlers = self._catch_signals()
        bar = None
        try:
            self.setup()
            self.start_step = self.step
            self.started = time.time()
            self.status("running")
            bar = self._progress_bar()
            self._train_until_done(bar)
            stopped = self.stop_signal is not None or (self.tcfg.stop_after_steps and self.step >= self.tcfg.stop_after_steps
                                                       and self.progress() < 1.0)
            if stopped:
                self.save_last()
                if self.dist.main and not (self.run_dir / "model.safetensors").exists():
                    save_weights(self.model, self.run_dir / "model.safetensors")
            else:
                self._eval_and_checkpoint(bar)
            self._finish_ddp_record()
            if self.dist.main and not stopped:
                self._plot()
            result_state = "stopped" if stopped else "finished"
            best = None if math.isinf(self.best_val) else self.best_val
            self.status(result_state, best_val_loss=best if self.selected_by == "valid" else None,
                        **({"best_dev_loss": best} if self.selected_by == "dev" else {}),
                        selected_by=self.selected_by, tokens=self.tokens_seen, elapsed_s=round(self.elapsed(), 2))
            return {"state": result_state, "step": self.step, "best_val_loss": self.best_val,
                    "selected_by": self.selected_by, "elapsed_s": self.elapsed(), "signal": self.stop_signal}
        except BaseException:
            if self.setup_done or not self.resume:  # a resume that could not start leaves the run as it was
                self.status("failed", message="training failed; see the error printed by nslm train")
            raise
        finally:
            if self.batch_step is not None:
                self.batch_step.close()
            if bar is not None:
                bar.close()
            self._restore_signals(handlers)
            self.dist.stop()

    def _train_until_done(self, bar) -> None:
        """Optimizer steps, logging and periodic evaluation until a limit or a stop signal."""
        window_t, window_tokens = time.time(), 0
        # on a GPU, reading the loss every step would make the CPU wait for the GPU every step: there the
        # loss is read (and checked) at log steps only; on the CPU the read is free, so every step is checked
        check_every_step = self.device.type != "cuda"
        while not self.dist.any(self.stop_signal is not None or self.done(), self.device):
            loss_t = self.train_step()
            log_now = self.step % self.tcfg.log_interval == 0 or self.done()
            loss = loss_t.item() if (log_now or check_every_step) else None
            if loss is not None and not math.isfinite(loss):
                raise NslmError(f"the training loss became {loss} at step {self.step}; lower train.lr or use --dtype fp32")
            window_tokens += self.tokens_per_step
            if log_now:
                tok_s = window_tokens / max(time.time() - window_t, 1e-9)
                window_t, window_tokens = time.time(), 0
                self._log_train(loss, tok_s, bar)
            if self.step % self.tcfg.eval_interval == 0 and not self.done():
                self._eval_and_checkpoint(bar)

    def _log_train(self, loss: float, tok_s: float, bar) -> None:
        progress = self.progress()
        elapsed = self.elapsed()
        eta = elapsed * (1 - progress) / progress if progress > 0 else None
        record = {"event": "train", "step": self.step, "tokens": self.tokens_seen, "elapsed_s": round(elapsed, 3),
                  "train_loss": loss, "lr": self.last_lr, "tokens_per_s": round(tok_s, 1),
                  "progress": round(progress, 5), "eta_s": None if eta is None else round(eta, 1)}
        self.log(record)
        if bar is not None:
            bar.n = round(100 * progress, 1)
            bar.set_postfix_str(f"step {self.step} loss {loss:.3f} {tok_s:,.0f} tok/s", refresh=False)
            bar.refresh()
        self.status("running")

    def _eval_and_checkpoint(self, bar) -> None:
        if self.dist.main:
            result = self.evaluate()
            improved = self.save_best_if_better(result[f"{'dev' if self.selected_by == 'dev' else 'val'}_loss"])
            self.log({"event": "eval", "step": self.step, "tokens": self.tokens_seen,
                      "elapsed_s": round(self.elapsed(), 3), "train_loss": None, "lr": self.last_lr,
                      "progress": round(self.progress(), 5), "eta_s": None, "best": improved, **result})
            if bar is not None:
                bpb = f"{result['val_bpb']:.3f}" if result["val_bpb"] is not None else "?"
                dev = f"dev loss {result['dev_loss']:.3f}, " if "dev_loss" in result else ""
                bar.write(f"step {self.step}: {dev}val loss {result['val_loss']:.3f}, ppl {result['val_ppl']:.1f}, "
                          f"bpb {bpb}{' (estimate)' if self.val_estimated else ''} | {result['sample']!r}")
        self.dist.barrier()
        self.save_last()

    def _finish_ddp_record(self) -> None:
        """Under DDP, record each rank's pid, first batch and final weights (for checks and debugging)."""
        if not self.dist.active:
            return
        rows = self.dist.gather({"rank": self.dist.rank, "pid": os.getpid(), "first_batch_sha256": self.first_batch_sha,
                                 "weights_sha256": weights_sha256(self.model)})
        if self.dist.main:
            atomic_write_json(self.run_dir / "ddp.json", {"world_size": self.dist.world, "ranks": rows})

    def _progress_bar(self):
        if not self.dist.main:
            return None
        bar = tqdm(total=100, unit="%", desc=self.run_dir.name, dynamic_ncols=True,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")
        bar.n = round(100 * self.progress(), 1)
        return bar

    def _plot(self) -> None:
        plot_loss(self.run_dir / "metrics.jsonl", self.run_dir / "loss.png")

    # ---- signals: Ctrl-C / SIGTERM finish the step, save, and exit cleanly
    def _catch_signals(self):
        def handler(signum, frame):
            if self.stop_signal is not None:  # a second Ctrl-C: stop now, without the checkpoint
                raise KeyboardInterrupt
            self.stop_signal = signal.Signals(signum).name
            if self.dist.main:
                print(f"\n{self.stop_signal}: finishing this step and saving a checkpoint "
                      "(press Ctrl-C again to quit without saving)", file=sys.stderr)

        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                old[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread (e.g. called from a GUI worker)
                pass
        return old

    def _restore_signals(self, old) -> None:
        for sig, h in old.items():
            signal.signal(sig, h)
