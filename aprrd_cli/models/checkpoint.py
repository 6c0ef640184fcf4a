"""Checkpoints: our own format, and the official release's ``{'model_state_dict': ...}``.

Our format records the network's kind, architecture and configuration, the package
version and the training iteration, so a file says what it holds. Everything is loaded
with ``weights_only=True``: a user's file can never run code.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aprrd_cli import __version__
from aprrd_cli.errors import CheckpointError, short_reason
from aprrd_cli.models import build
from aprrd_cli.utils.atomic import atomic_path

FORMAT = "aprrd-checkpoint"
FORMAT_VERSION = 1
KIND_NAMES = {"teacher": "a teacher (AT-BSN)", "student": "a student (NBSN)"}


@dataclass
class LoadedModel:
    model: nn.Module
    arch: str
    kind: str
    source: str  # "aprrd" or "official"
    iteration: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def read_raw(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """``torch.load`` with weights only, turning every failure into one clear line."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; expected a .pth checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty; expected a .pth checkpoint file")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "GLOBAL" in text or "global" in text.split("WeightsUnpickler")[-1]:
            raise CheckpointError(
                f"{path} holds Python objects that cannot be loaded safely (weights_only); "
                "expected a checkpoint written by aprrd or the official APR-RD release"
            ) from e
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (random or foreign bytes); "
            "expected an aprrd or official APR-RD .pth file"
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError) as e:
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint, or is truncated or corrupt ({short_reason(e)}); "
            "expected an aprrd or official APR-RD .pth file"
        ) from e
    except Exception as e:  # torch's unpickler meets random bytes with many exception types
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (random or foreign bytes: {type(e).__name__}); "
            "expected an aprrd or official APR-RD .pth file"
        ) from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint dictionary")
    return obj


def _strip_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` / ``_orig_mod.`` prefixes that DDP and torch.compile add."""
    out = {}
    for k, v in sd.items():
        for p in ("module.", "_orig_mod."):
            while k.startswith(p):
                k = k[len(p) :]
        out[k] = v
    return out


def recognise(sd: dict[str, Any]) -> tuple[str, dict] | None:
    """Architecture and configuration of a state_dict, from its keys; None if unknown."""

    def shape(key: str) -> tuple[int, ...] | None:
        v = sd.get(key)
        return tuple(v.shape) if isinstance(v, torch.Tensor) else None

    if "nin_A.weight" in sd and shape("unet.intro.conv.weight"):
        return "atbsn", {"width": shape("unet.intro.conv.weight")[0]}
    s = shape("unet.dec1.conv2.conv.weight")
    if s and s[0] == 3 and shape("unet.intro.conv.weight"):
        return "nbsn-1.00M", {"width": shape("unet.intro.conv.weight")[0]}
    if "dec1_1.weight" in sd and shape("enc1.conv.weight"):
        return "nbsn-1.02M", {"width": shape("enc1.conv.weight")[0]}
    return None


def load_model(
    path: str | Path,
    expect: str | None = None,
    map_location: str | torch.device = "cpu",
) -> LoadedModel:
    """Load a teacher or student from our format or the official one.

    ``expect`` ("teacher" or "student") turns a file holding the other kind into a
    clear error instead of a confusing failure later.
    """
    path = Path(path)
    raw = read_raw(path, map_location)
    if raw.get("format") == FORMAT:
        sd = raw.get("model_state_dict")
        source = "aprrd"
    elif "model_state_dict" in raw:
        sd, source = raw["model_state_dict"], "official"
    elif raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
        sd, source = raw, "official"  # a bare state_dict
    else:
        keys = ", ".join(list(raw)[:4])
        raise CheckpointError(f"{path} has no network weights (keys: {keys}); expected an APR-RD checkpoint")
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: model_state_dict is not a dictionary of tensors")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise CheckpointError(f"{path}: model_state_dict is not a mapping of parameter names to tensors")
    sd = _strip_prefix(sd)
    found = recognise(sd)
    if found is None:
        raise CheckpointError(
            f"{path} holds a network that is not AT-BSN or NBSN (first keys: {', '.join(list(sd)[:3])}); "
            "expected an APR-RD teacher or student"
        )
    arch, config = found  # the weights decide the network; our metadata must agree with them
    if source == "aprrd" and (raw.get("arch", arch) != arch or raw.get("config", config) != config):
        raise CheckpointError(
            f"{path}: its metadata (arch {raw.get('arch')!r}, config {raw.get('config')!r}) does not match "
            f"its weights ({arch}, {config}); the file is damaged or was edited"
        )
    model = build(arch, **config)
    kind = model.kind
    if expect is not None and kind != expect:
        raise CheckpointError(
            f"{path} holds {KIND_NAMES[kind]} ({arch}) but {KIND_NAMES[expect]} is needed here"
            + ("; pass the teacher written by aprrd train-apr" if expect == "teacher" else "")
        )
    try:
        model.load_state_dict(sd, strict=True)
    except (RuntimeError, TypeError, ValueError) as e:
        first = str(e).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise CheckpointError(f"{path}: weights do not fit {arch} ({short_reason(detail, 120)})") from e
    model.eval()
    meta = {k: v for k, v in raw.items() if k != "model_state_dict"} if source == "aprrd" else {}
    return LoadedModel(model, arch, kind, source, raw.get("iteration") if source == "aprrd" else None, meta)


def model_payload(model: nn.Module, iteration: int | None = None, **extra: Any) -> dict:
    """The dictionary our format saves for ``model`` (unwrapping DDP / compile)."""
    inner = getattr(model, "module", model)
    inner = getattr(inner, "_orig_mod", inner)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": inner.kind,
        "arch": inner.arch,
        "config": inner.config(),
        "aprrd_version": __version__,
        "iteration": iteration,
        "model_state_dict": {k: v.detach().cpu() for k, v in inner.state_dict().items()},
        **extra,
    }


def save_payload(path: str | Path, payload: dict) -> None:
    """Atomically ``torch.save`` a dictionary (model checkpoints, training state)."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def save_model(path: str | Path, model: nn.Module, iteration: int | None = None, **extra: Any) -> None:
    save_payload(path, model_payload(model, iteration, **extra))
