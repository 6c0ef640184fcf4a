"""The device manager: the one place that knows about devices, threads, precision and DDP."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

import torch

from aprrd_cli.errors import DeviceError

PRECISIONS = ("fp32", "bf16", "fp16")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N|mps`` into a present device, or fail with a clear message."""
    spec = spec.strip().lower()
    if not _DEVICE_RE.match(spec):
        raise DeviceError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps", exit_code=2)
    if spec == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DeviceError("device mps requested but Apple MPS is not available here; use --device cpu")
        return torch.device("mps")
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(spec.split(":")[1]) if ":" in spec else 0
    if index >= n:
        seen = f"only {n} CUDA device(s) are visible" if n else "no CUDA GPU is visible"
        raise DeviceError(f"device {spec} requested but {seen}; use --device auto or cpu")
    return torch.device(f"cuda:{index}")


def set_threads(n: int | None) -> int:
    """Set torch's intra-op thread count (None: keep torch's default); returns the count."""
    if n is not None:
        if n < 1:
            raise DeviceError(f"--threads must be at least 1, got {n}", exit_code=2)
        torch.set_num_threads(n)
    return torch.get_num_threads()


def default_precision(device: torch.device) -> str:
    """bf16 on GPUs that support it, fp32 elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def resolve_precision(precision: str | None, device: torch.device) -> str:
    if precision is None or precision == "auto":
        return default_precision(device)
    if precision not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r}; use fp32, bf16 or fp16", exit_code=2)
    if precision == "fp16" and device.type == "cpu":
        raise DeviceError("fp16 is not supported on the CPU; use --precision fp32 or bf16", exit_code=2)
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError("this GPU does not support bf16; use --precision fp16 or fp32", exit_code=2)
    return precision


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Mixed precision for ``bf16``/``fp16``; a no-op for ``fp32``."""
    if precision == "fp32":
        yield
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def describe(device: torch.device) -> str:
    """A short human description: the GPU model, or the CPU and its thread count."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        n = torch.get_num_threads()
        return f"cpu ({n} thread{'s' if n != 1 else ''} of {os.cpu_count()} cores)"
    return str(device)


# --- Distributed training (torchrun) -------------------------------------------------------
# torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them training runs as one process.


def init_distributed(device: str = "auto") -> tuple[int, int, int]:
    """Join torchrun's process group: ``(rank, world_size, local_rank)``; ``(0, 1, 0)`` alone.

    NCCL when the ranks train on CUDA GPUs (each rank on ``cuda:LOCAL_RANK``), gloo otherwise.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if world <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device.strip().lower() not in ("cpu", "mps")
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), local


def is_main() -> bool:
    """True on rank 0 (or when not distributed): the one process that writes files and logs."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def cleanup_distributed() -> None:
    """Leave the process group (no-op when not distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
