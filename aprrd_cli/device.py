"""The device manager: the one place that knows about devices, threads, precision and DDP."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

import torch

from aprrd_cli.errors import DeviceError, short_reason

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
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


# CPU flags that mean the processor computes bf16 in hardware (x86: AVX512-BF16 on AMD Zen 4/5 and
# Intel Cooper Lake, AMX on Sapphire Rapids and later; ARM: the BF16 extension)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("flags", "features"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_bf16_native() -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively, and why we say so.

    Read from the processor's own flags, never guessed: without native bf16 oneDNN emulates it
    and bf16 runs slower than fp32, so it must not be chosen there. ``APRRD_CPU_BF16=1`` or ``0``
    overrides (a virtual machine that hides its flags; a comparison run).
    """
    forced = os.environ.get("APRRD_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1", f"APRRD_CPU_BF16={forced}"
    flags = _cpu_flags()
    found = [f for f in BF16_CPU_FLAGS if f in flags]
    if found:
        return True, f"this CPU computes bf16 natively ({', '.join(found)})"
    if not flags:
        return False, "this CPU's flags could not be read (/proc/cpuinfo), so bf16 is not assumed"
    return False, "this CPU has no native bf16 (no avx512_bf16 or amx_bf16), where fp32 is faster"


def default_precision(device: torch.device) -> str:
    """bf16 where the hardware computes it (GPUs that support it, CPUs with native bf16), else fp32."""
    return auto_precision(device)[0]


def auto_precision(device: torch.device) -> tuple[str, str]:
    """What ``--precision auto`` means on ``device``, and why."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: this GPU supports bf16"
        return "fp32", "auto: this GPU has no bf16"
    if device.type == "cpu":
        native, why = cpu_bf16_native()
        return ("bf16" if native else "fp32"), f"auto: {why}"
    return "fp32", f"auto: fp32 on {device.type}"


def resolve_precision(precision: str | None, device: torch.device) -> str:
    """``auto`` made concrete, or the precision asked for, refused where the device lacks it.

    fp32 is true IEEE fp32 (TF32 off on GPUs); tf32 keeps fp32 storage but lets an Ampere or
    later GPU compute convolutions and matrix products in TF32; bf16 and fp16 are autocast
    (the losses stay fp32), fp16 with a gradient scaler.
    """
    return precision_with_reason(precision, device)[0]


def precision_with_reason(precision: str | None, device: torch.device) -> tuple[str, str]:
    """``resolve_precision`` and the reason, for the run's records and the one-line descriptions."""
    if precision is None or precision == "auto":
        return auto_precision(device)
    if precision not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r}; use auto, fp32, tf32, bf16 or fp16", exit_code=2)
    if precision == "fp16" and device.type == "cpu":
        raise DeviceError("fp16 is not supported on the CPU; use --precision fp32 or bf16", exit_code=2)
    if precision == "tf32" and device.type != "cuda":
        raise DeviceError("tf32 is a mode of NVIDIA GPUs; on this device use --precision fp32 or bf16", exit_code=2)
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError("this GPU does not support bf16; use --precision fp16 or fp32", exit_code=2)
    return precision, "asked for"


def set_fp32_math(precision: str) -> None:
    """TF32 for fp32 convolutions and matrix products only when ``precision`` is tf32.

    PyTorch lets cuDNN use TF32 for fp32 convolutions by default, so an "fp32" run on an
    Ampere or later GPU would silently be TF32 (10 bits of mantissa). Only CUDA reads these
    settings; the CPU's fp32 is unaffected.
    """
    mode = "tf32" if precision == "tf32" else "ieee"
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
        conv.fp32_precision = mode
        torch.backends.cuda.matmul.fp32_precision = mode
    else:
        torch.backends.cudnn.allow_tf32 = mode == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"


@contextlib.contextmanager
def fp32_math(precision: str = "fp32") -> Iterator[None]:
    """``set_fp32_math`` for a block only, the caller's settings restored after: what a library
    call uses, so that it never changes the process's TF32 choice behind the caller's back."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        before = (conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)

        def restore() -> None:
            conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = before
    else:
        before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)

        def restore() -> None:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before

    set_fp32_math(precision)
    try:
        yield
    finally:
        restore()


def set_determinism(device: torch.device, deterministic: bool) -> None:
    """Deterministic kernels when asked (a resumed GPU run then repeats the uninterrupted one bit
    for bit, at some cost in speed); otherwise cuDNN picks the fastest kernels for the fixed
    training shapes (``cudnn.benchmark``). The CPU is deterministic either way."""
    torch.use_deterministic_algorithms(deterministic)
    if device.type != "cuda":
        return
    if deterministic:  # cuBLAS needs a fixed workspace to be deterministic (before its first use)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def use_device(device: torch.device) -> None:
    """Make ``device`` the current CUDA device, so that nothing (the pinned-memory thread, a
    library's default allocation) opens a context on GPU 0 when another GPU was asked for."""
    if device.type == "cuda":
        torch.cuda.set_device(device)


def out_of_memory_message(e: BaseException, what: str) -> str:
    """A GPU out-of-memory error as one line saying what to lower."""
    return f"the GPU ran out of memory ({short_reason(e, 120)}); {what}"


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Mixed precision for ``bf16``/``fp16``; a no-op for ``fp32`` and ``tf32``."""
    if precision in ("fp32", "tf32"):
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


DDP_TIMEOUT_MINUTES = 60.0  # a collective may wait this long (rank 0 validating, saving) before failing


def init_distributed(device: str = "auto") -> tuple[int, int, int]:
    """Join torchrun's process group: ``(rank, world_size, local_rank)``; ``(0, 1, 0)`` alone.

    NCCL when the ranks train on CUDA GPUs (each rank on ``cuda:LOCAL_RANK``, so a node needs
    at least as many GPUs as processes), gloo otherwise. Collectives wait up to
    ``APRRD_DDP_TIMEOUT_MINUTES`` (60): the other ranks wait while rank 0 validates.
    """
    import datetime

    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if world <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device.strip().lower() not in ("cpu", "mps")
        if use_cuda:
            gpus = torch.cuda.device_count()
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(local + 1)))
            if local >= gpus:
                raise DeviceError(
                    f"torchrun started {local_world} processes on this machine but only {gpus} GPU(s) are visible, "
                    f"so process {local} has none (NCCL cannot share a GPU between processes); use --nproc-per-node "
                    f"{gpus} or fewer, or --device cpu"
                )
            torch.cuda.set_device(local)
        minutes = float(os.environ.get("APRRD_DDP_TIMEOUT_MINUTES", DDP_TIMEOUT_MINUTES))
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=minutes))
    return dist.get_rank(), dist.get_world_size(), local


def is_main() -> bool:
    """True on rank 0 (or when not distributed): the one process that writes files and logs."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op when not distributed): the others wait here, at a known point,
    while rank 0 validates or writes a checkpoint."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup_distributed(interrupted: bool = False) -> None:
    """Leave the process group (no-op when not distributed).

    After Ctrl-C/SIGTERM a peer may already be gone, and destroying an NCCL group then waits
    for it for ever: the process is exiting, so the group is left to the operating system.
    """
    import torch.distributed as dist

    if interrupted:
        return
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
