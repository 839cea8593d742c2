"""Where a model runs: device, precision (bf16 autocast or fp32), this process's rank, and the threads of
NumPy's BLAS while the NumPy step decodes.

Training, generation, evaluation and the benchmarks all choose through these functions, so `auto`
means the same thing everywhere and an absent GPU is refused with the same sentence.
"""

from __future__ import annotations

import contextlib
import os
import threading
from contextlib import nullcontext
from pathlib import Path

import torch
from threadpoolctl import ThreadpoolController

from nslm.errors import NslmError

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "fp32", "bf16")


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AMX or AVX-512-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def bf16_native(device: torch.device) -> bool:
    """Whether `device` does bf16 matrix products in hardware (elsewhere bf16 is emulated and slow)."""
    return (device.type == "cuda" and torch.cuda.is_bf16_supported()) or (device.type == "cpu" and cpu_has_bf16())


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; `cuda:N` is GPU N; an explicit device that is absent, or a name
    that is no device, is an NslmError naming the value."""
    if not isinstance(name, str):
        raise NslmError(f"--device {name!r} is not a device: use {DEVICE_CHOICES}")
    name = name.strip()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise NslmError("--device cuda was asked for but this PyTorch sees no CUDA GPU; use --device cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    kind, colon, index = name.partition(":")
    if kind == "cuda" and colon:
        if not (index.isascii() and index.isdigit()):
            raise NslmError(f"--device {name} is not a device: GPU numbers are whole numbers, as in cuda:0")
        if not torch.cuda.is_available():
            raise NslmError(f"--device {name}: this machine has no CUDA GPU (or this PyTorch was built without "
                            "CUDA); use --device cpu")
        count = torch.cuda.device_count()
        if int(index) >= count:
            raise NslmError(f"--device {name}: this machine has {count} CUDA GPU{'s' if count != 1 else ''} "
                            f"(cuda:0 to cuda:{count - 1})")
        return torch.device("cuda", int(index))
    if name == "mps":
        if not _mps_available():
            raise NslmError("--device mps was asked for but MPS is not available; use --device cpu")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise NslmError(f"--device {name or repr(name)} is not a device: use {DEVICE_CHOICES}")


def as_device(device: str | torch.device | None) -> torch.device:
    """A torch.device from None (auto), a name that `pick_device` knows (auto, cpu, cuda, cuda:N, mps), or a
    torch.device, checked the same way (an absent GPU is an NslmError, not a failure later)."""
    if device is None:
        return pick_device("auto")
    if isinstance(device, torch.device):
        if device.type not in ("cpu", "cuda", "mps"):
            return device
        indexed = device.type == "cuda" and device.index is not None
        return pick_device(f"cuda:{device.index}" if indexed else device.type)
    return pick_device(device)


def pick_autocast_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """bf16 where the hardware does it natively (`auto`), None for fp32."""
    if name == "fp32":
        return None
    supported = bf16_native(device)
    if name == "bf16":
        if device.type == "mps" or (device.type == "cuda" and not supported):
            raise NslmError(f"--dtype bf16 is not supported on {device}; use --dtype fp32")
        return torch.bfloat16
    return torch.bfloat16 if supported else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """A context that runs the forward pass in `dtype` (None: plain fp32, no autocast)."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def process_rank() -> int:
    """This process's rank under torchrun (RANK), 0 when run alone."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Processes in this run under torchrun (WORLD_SIZE), 1 when run alone."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0: the one process that writes the run folder and prints."""
    return process_rank() == 0


# ---------------------------------------------------------------- NumPy's BLAS threads (the NumPy decoding step)
_blas_controller = None
_blas_controller_lock = threading.Lock()


def _blas():
    global _blas_controller
    with _blas_controller_lock:
        if _blas_controller is None:  # finding the loaded libraries takes milliseconds: once
            _blas_controller = ThreadpoolController().select(user_api="blas")
        return _blas_controller


@contextlib.contextmanager
def one_blas_thread():
    """NumPy's BLAS on one thread while decoding. Its matrix-vector products are too small to share, and on
    a busy machine a second BLAS thread waits for a core: on the 2-core CPU with other work running, the
    step ran at 77 tokens/s with two BLAS threads and 500 with one (the head's 128 x 4,096 product alone took
    1.3 ms instead of 30 us). Taken and given back around work that does not yield (about 25 us for both).

    OpenBLAS honours a thread count set from the main thread for the whole process, but may ignore one set
    from another thread (seen with 0.3.31), so an app that decodes in worker threads calls
    `blas_on_one_thread()` from its main thread at start instead."""
    limit = _blas().limit(limits=1)
    try:
        yield
    finally:
        limit.restore_original_limits()


def blas_on_one_thread() -> None:
    """NumPy's BLAS on one thread for the rest of this process (call it from the main thread): for the web
    app, whose stories are decoded in worker threads and whose other NumPy work is a few small products."""
    _blas().limit(limits=1)
