"""``prepare-data``: find the parts of a dataset tree, convert each into the prepared store, report.

Each training image becomes one ``.npy`` (written atomically, one image in memory at a
time); each evaluation set one folder whose ``meta.json`` is written last. Sources are
fingerprinted (size + modification time), so a second run re-reads nothing that is
unchanged. A bad file is reported and skipped; the good ones are prepared anyway. The
index is written at the end, and also when the run is interrupted, so finished images
are never redone. A lock on the output folder keeps two runs from writing it at once.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from aprrd_cli.console import warn
from aprrd_cli.data import dnd, folder, formats, sidd
from aprrd_cli.data.images import read_image
from aprrd_cli.data.parts import ALL_PARTS, TRAIN_GROUPS, Part, PartResult, read_meta
from aprrd_cli.data.store import (
    EVAL_SETS,
    INDEX_NAME,
    TRAIN_DIR,
    fingerprint,
    inside,
    read_index,
    safe_name,
    save_npy,
    write_index,
)
from aprrd_cli.data.tensors import from_float, to_float
from aprrd_cli.errors import AprrdError, InputError
from aprrd_cli.utils.atomic import remove_partials
from aprrd_cli.utils.locks import DirLock

SPACE_MARGIN = 256 * 2**20  # keep this much disk free beyond what an array needs
MIN_TRAIN_SIDE = 32  # the networks pool five times: no patch fits in a smaller image

EXPECTED_LAYOUT = (
    "SIDD_Medium_Srgb/Data/*/*_NOISY_SRGB_*.png, SIDD_Benchmark_Data/*/*_NOISY_SRGB_010.png, "
    "SIDD_Validation_sRGB/{ValidationNoisyBlocksSrgb,ValidationGtBlocksSrgb}.mat, "
    "SIDD_Benchmark_sRGB/BenchmarkNoisyBlocksSrgb.mat, dnd_2017/{info.mat,images_srgb/*.mat}, "
    f"or a folder of {formats.names()} photos"
)


def discover(root: Path, out: Path, parts: list[str] | None = None) -> list[Part]:
    """The parts found under ``root``: the SIDD/DND tree if there is one, else the photos in it."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: no such folder")
    if not root.is_dir():
        raise InputError(f"{root} is a file; give the folder that holds the dataset or the photos")
    if root.resolve() == Path(out).resolve():
        raise InputError(f"--out {out} is ROOT itself; choose another output folder")
    found = sidd.find(root) + dnd.find(root)
    if not found:
        found = folder.find(root, exclude=Path(out))
    if parts is not None:
        unknown = sorted(set(parts) - set(ALL_PARTS))
        if unknown:
            raise AprrdError(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(ALL_PARTS)}", exit_code=2)
        found = [p for p in found if p.key in parts]
    if not found:
        which = f" of the requested parts ({', '.join(parts)})" if parts is not None else ""
        raise InputError(f"{root} holds none{which}; expected {EXPECTED_LAYOUT}")
    return found


def load_train_image(path: Path) -> tuple[np.ndarray, str]:
    """An image as ``H x W x 3`` uint8/uint16, and a note on any conversion."""
    arr, info = read_image(path)
    notes = []
    if arr.shape[2] in (2, 4):
        arr, notes = arr[:, :, :-1], ["alpha dropped"]
    if arr.shape[2] == 1:  # as denoise does: a grey photo goes through the networks as RGB
        arr = np.repeat(arr, 3, axis=2)
        notes.append("grey stored as RGB")
    if min(arr.shape[:2]) < MIN_TRAIN_SIDE:  # prepared anyway (the store is not only for training), but said
        warn(
            f"{path}: {arr.shape[1]}x{arr.shape[0]} pixels is smaller than the {MIN_TRAIN_SIDE}-pixel minimum patch; "
            "train-apr and distill will leave it out"
        )
    if arr.dtype == np.float32:
        f, clipped = to_float(arr, path)
        if clipped:  # a float export with overshoots: say so rather than change the data silently
            warn(f"{path}: {clipped} values outside [0, 1] were clipped")
        arr = from_float(f, "uint16")
        notes.append("float stored as 16-bit" + (f", {clipped} values clipped to [0, 1]" if clipped else ""))
    return np.ascontiguousarray(arr), "; ".join(notes)


def _check_space(out: Path, nbytes: int) -> None:
    free = shutil.disk_usage(out).free
    if free < nbytes + SPACE_MARGIN:
        raise AprrdError(
            f"not enough disk space in {out}: {free / 2**30:.1f} GiB free, an image needs {nbytes / 2**20:.0f} MiB "
            "plus a margin; free some space or choose another --out"
        )


def _npy_matches(out: Path, entry: dict[str, Any]) -> bool:
    """The prepared file is there and has the shape the index says (cheap: header only)."""
    try:
        arr = np.load(inside(out, entry["file"]), mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, AprrdError, KeyError):
        return False
    return list(arr.shape) == list(entry.get("shape", [])) and arr.dtype.name == entry.get("dtype")


def _remove_entry(out: Path, entries: dict[str, dict[str, Any]], key: str) -> None:
    entry = entries.pop(key)
    try:
        inside(out, entry["file"]).unlink(missing_ok=True)
    except (OSError, AprrdError):
        pass


def prepare_train(
    part: Part, out: Path, entries: dict[str, dict[str, Any]], result: PartResult, advance: Callable[[], None]
) -> None:
    """Training images of one part into ``out/train``; ``entries`` (by source path) is updated in place."""
    for path, why in part.missing:
        result.skip(path, why)
    result.found = len(part.sources)
    where = part.where.resolve()
    names = {e["name"] for e in entries.values()}
    seen: set[str] = set()
    for src in part.sources:
        # the photo's own path under the resolved root, not its link's target: a folder of symlinked
        # photos is that folder's, and the store must not think it came from elsewhere
        key = str(where / src.relative_to(part.where))
        legacy = str(src.resolve())  # how stores were keyed before: move this folder's own entries over
        if key not in entries and legacy in entries and entries[legacy].get("root") == str(where):
            entries[key] = {**entries.pop(legacy), "source": key}
        seen.add(key)
        old = entries.get(key)
        try:
            fp = fingerprint(src)
        except OSError as e:
            result.skip(src, f"cannot read ({e.strerror})")
            advance()
            continue
        if old is not None and old.get("fingerprint") == fp and _npy_matches(out, old):
            result.unchanged += 1
            advance()
            continue
        if old is not None:
            name = old["name"]
        else:
            stem = safe_name(src.relative_to(part.where).with_suffix("").as_posix().replace("/", "__"))
            name, n = stem, 1
            while name in names:
                n += 1
                name = f"{stem}-{n}"
            names.add(name)
        try:
            arr, note = load_train_image(src)
        except InputError as e:
            result.skip(src, str(e))  # the message says what is wrong and what was expected
            if old is not None:  # the source changed and is now bad: its old array is stale
                _remove_entry(out, entries, key)
            advance()
            continue
        _check_space(out, arr.nbytes)
        rel = f"{TRAIN_DIR}/{name}.npy"
        save_npy(inside(out, rel), arr)
        entries[key] = {
            "name": name,
            "root": str(where),
            "file": rel,
            "shape": list(arr.shape),
            "dtype": arr.dtype.name,
            "group": part.key,
            "source": key,
            "fingerprint": fp,
            **({"note": note} if note else {}),
        }
        result.prepared += 1
        advance()
    # images of this part prepared earlier whose source is gone
    for key in [k for k, e in entries.items() if e.get("group") == part.key and k not in seen]:
        if where in Path(key).parents:
            _remove_entry(out, entries, key)
            result.removed += 1


def _forget_gone_sources(out: Path, entries: dict[str, dict[str, Any]], root: Path) -> None:
    """Drop training images whose source file is gone, whatever root they came from, and say when
    the store still holds images of other roots: training reads every image of the store."""
    gone = [k for k in entries if not Path(k).is_file()]
    for key in gone:
        _remove_entry(out, entries, key)
    if gone:
        warn(f"removed {len(gone)} training image(s) of earlier runs whose source file no longer exists")
    here = root.resolve()
    others = [e for k, e in entries.items() if here not in Path(k).parents]
    if others:
        roots = sorted({e.get("root") or str(Path(e["source"]).parent) for e in others})
        shown = ", ".join(roots[:2]) + (f" and {len(roots) - 2} more" if len(roots) > 2 else "")
        warn(
            f"{out} also holds {len(others)} training image(s) prepared earlier from {shown}; train-apr and distill "
            f"train on them too (prepare into a new --out to train on this ROOT alone)"
        )


def _eval_summary(out: Path) -> dict[str, Any]:
    summary = {}
    for name in EVAL_SETS:
        meta = read_meta(out / name)
        if meta and (out / name / "noisy.npy").is_file():
            summary[name] = {"folder": name, "shape": meta.get("shape"), "dtype": meta.get("dtype")}
    return summary


def prepare(
    root: Path,
    out: Path,
    parts: list[str] | None = None,
    on_start: Callable[[int], None] | None = None,
    on_item: Callable[[str], None] | None = None,
    found: list[Part] | None = None,
) -> list[PartResult]:
    """Prepare every part found under ``root`` into ``out``; one result per part.

    ``on_start(total)`` and ``on_item(description)`` drive a progress display; ``found``
    is ``discover``'s answer when the caller already has it.
    """
    root, out = Path(root), Path(out)
    if found is None:
        found = discover(root, out, parts)
    total = sum(len(p.sources) if p.key in TRAIN_GROUPS else 1 for p in found)
    if on_start:
        on_start(total)

    def advance(desc: str = "") -> None:
        if on_item:
            on_item(desc)

    results: list[PartResult] = []
    with DirLock(out, what="prepare-data"):
        # temporary files a kill -9 left (an interrupted DND array is gigabytes); no one else writes here now
        remove_partials(out, out / TRAIN_DIR, *(out / name for name in EVAL_SETS))
        index = read_index(out)
        before = json.dumps(index, sort_keys=True) if (out / INDEX_NAME).exists() else None
        entries = {e["source"]: e for e in index["train"] if "source" in e}
        unkeyed = [e for e in index["train"] if "source" not in e]
        try:
            for part in found:
                result = PartResult(part)
                results.append(result)
                if part.key in TRAIN_GROUPS:
                    prepare_train(part, out, entries, result, lambda p=part: advance(p.key))
                    continue
                if part.key == "sidd-val":
                    sidd.prepare_val(part, out, result)
                elif part.key == "sidd-bench":
                    sidd.prepare_bench(part, out, result)
                elif part.key == "dnd":
                    dnd.prepare(part, out, result)
                advance(part.key)
            _forget_gone_sources(out, entries, root)
        finally:  # also on Ctrl-C: what is finished is recorded and never redone
            index["train"] = sorted(unkeyed + list(entries.values()), key=lambda e: e["name"])
            index["eval"] = _eval_summary(out)
            if json.dumps(index, sort_keys=True) != before:  # an unchanged store is left untouched
                write_index(out, index)
    return results
