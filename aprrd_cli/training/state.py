"""What a run saves and how a resume is checked: ``RUN/checkpoints/last.pth`` holds the model,
Adam, the schedule, the gradient scaler, every random state and the run's options; a resume
is refused when its numbers would differ from the run it continues."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import numpy as np
import torch

from aprrd_cli.errors import AprrdError
from aprrd_cli.models.checkpoint import read_raw
from aprrd_cli.training.config import TrainConfig, differences, option_name
from aprrd_cli.utils.atomic import remove_partials
from aprrd_cli.utils.locks import DirLock, LockedError

STATE_FORMAT = "aprrd-training-state"


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / "last.pth"


def read_state(run_dir: Path) -> dict | None:
    """The training state of ``RUN/checkpoints/last.pth`` (None when there is none)."""
    path = checkpoint_path(run_dir)
    if not path.exists():
        return None
    raw = read_raw(path)
    state = raw.get("training")
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise AprrdError(f"{path} is not an aprrd training checkpoint; choose another --run-dir")
    return raw


def check_resumable(run_dir: Path, command: str) -> None:
    """Why ``--resume`` cannot continue ``run_dir``, in one line, before the command reads its
    options (and, for distill, looks for a teacher): the folder does not exist, a run is still
    working in it (the lock's message, with its PID), or it holds no checkpoint yet (the run was
    killed before its first save). Silent when the folder holds a checkpoint."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise AprrdError(
            f"nothing to resume: {run_dir} does not exist; check --run-dir, or start a new run there without --resume"
        )
    if not run_dir.is_dir():
        raise AprrdError(f"nothing to resume: {run_dir} is a file, not a run folder; check --run-dir")
    if checkpoint_path(run_dir).exists():
        return
    if not any(run_dir.iterdir()):
        raise AprrdError(f"nothing to resume: {run_dir} is empty; start a new run there without --resume")
    # a lock file, config.json or log.jsonl: a run began here. Is it still going (not saved yet)?
    # Under torchrun only rank 0 looks, so that the ranks of this very command do not find each other.
    if os.environ.get("RANK", "0") == "0":
        try:
            with DirLock(run_dir, what=f"aprrd {command}"):  # held: the lock's message, with its PID
                pass
        except LockedError:
            raise
        except AprrdError:  # a folder we cannot write to: no run of ours is writing there either
            pass
    listed = " (its config.json lists them)" if (run_dir / "config.json").is_file() else ""
    raise AprrdError(
        f"nothing to resume: {run_dir} holds no checkpoint yet (its run stopped before its first save, "
        f"killed or crashed); start it again with the same options{listed} but without --resume"
    )


def remove_leftovers(run_dir: Path) -> None:
    """Delete temporary files a ``kill -9`` during a save left behind (the lock is held)."""
    remove_partials(run_dir, run_dir / "checkpoints")


def check_resume(saved: dict, cfg: TrainConfig, identity: dict, run_dir: Path) -> None:
    """Refuse a resume whose numbers would differ from the run it continues."""
    state = saved["training"]
    stage = state["config"].get("stage")
    if stage != cfg.stage:
        raise AprrdError(
            f"{run_dir} holds a {str(stage).upper()} run, not {cfg.stage.upper()}; choose another --run-dir"
        )
    diff = differences(type(cfg).from_dict(state["config"]), cfg)
    if diff:
        raise AprrdError(
            f"cannot resume {run_dir}: {'; '.join(diff)} differs from the saved run; "
            "drop the option (resuming keeps the saved values) or start a new --run-dir"
        )
    for key, (value, what) in identity.items():
        before = state.get("identity", {}).get(key)
        if before is not None and before[0] != value:
            raise AprrdError(
                f"cannot resume {run_dir}: {option_name(key)} {what} differs from the one the run started with; "
                "use the same one or start a new --run-dir"
            )
    done = saved.get("iteration") or 0
    if done >= cfg.iters:
        raise AprrdError(
            f"nothing to resume: {run_dir} already finished ({done} of {cfg.iters} iterations); "
            f"its result is {run_dir / cfg.output}"
        )


def resume_state(cfg: TrainConfig, run_dir: Path, resume: bool, identity: dict | None = None) -> dict | None:
    """The checkpoint a run continues (None for a new run), after every check a resume needs.

    Called twice: before anything heavy with no identity (``preflight``), and by the engine with
    the identity of the data and the teacher, which need them loaded.
    """
    run_dir = Path(run_dir)
    saved = read_state(run_dir)
    if resume:
        if saved is None:
            raise AprrdError(f"nothing to resume: {checkpoint_path(run_dir)} does not exist; start without --resume")
        check_resume(saved, cfg, identity or {}, run_dir)
        return saved
    if saved is not None:
        raise AprrdError(
            f"{run_dir} already holds a run (checkpoint at iteration {saved.get('iteration')}); "
            "pass --resume to continue it, or choose another --run-dir"
        )
    return None


# --- random states -------------------------------------------------------------------------


def capture_rng(generators: dict[str, torch.Generator]) -> dict:
    """Every random state a resumed run needs: torch, CUDA, numpy, python and the stage's own
    (with the device type they draw on)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    devices = {g.device.type for g in generators.values()}
    out = {
        "device": devices.pop() if len(devices) == 1 else "cpu",
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss)},
        "numpy_gauss": float(gauss),
        "python": list(random.getstate()[1]),
        "generators": {k: g.get_state() for k, g in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: dict, generators: dict[str, torch.Generator]) -> list[str]:
    """Put every saved random state back; returns the stage generators that moved to another
    device type, which are reseeded instead (deterministically, from their saved state)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], state["numpy_gauss"]))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    moved = []
    for k, g in generators.items():
        saved = state["generators"][k]
        if saved.numel() == g.get_state().numel() and state.get("device", g.device.type) == g.device.type:
            g.set_state(saved)
            continue
        # a CPU generator's state (5 KB of Mersenne twister) means nothing to a CUDA one (seed and
        # offset) and back: continue from a seed that the saved state decides
        g.manual_seed(int.from_bytes(hashlib.sha256(saved.numpy().tobytes()).digest()[:8], "little"))
        moved.append(k)
    return moved
