"""Every command, attacked with bad input: one ``error:`` line saying what is wrong, a non-zero
exit code, no traceback, and not one file written or changed.

The table below is the audit of issue 7 (docs/reliability.md lists it with the results); each
row runs the real CLI in-process on tiny files made in a temporary folder.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from aprrd_cli.data.images import write_image
from aprrd_cli.models import ATBSN, NBSN100
from aprrd_cli.models.checkpoint import save_model
from tests.helpers import png_header, rgb


class _Evil:
    """A pickle that would run a command if it were ever unpickled with code execution."""

    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Good and bad files of every kind the commands take, in one folder."""
    r = tmp_path_factory.mktemp("attack")
    torch.manual_seed(0)
    save_model(r / "student.pth", NBSN100(width=8), 1)
    save_model(r / "teacher.pth", ATBSN(width=8), 1)
    nan_sd = {k: v * float("nan") for k, v in NBSN100(width=8).state_dict().items()}
    torch.save({"model_state_dict": nan_sd}, r / "nan_weights.pth")
    (r / "empty.pth").write_bytes(b"")
    (r / "random.pth").write_bytes(np.random.default_rng(1).bytes(3000))
    (r / "truncated.pth").write_bytes((r / "student.pth").read_bytes()[:2000])
    torch.save({"x": _Evil()}, r / "code.pth")
    with open(r / "code_p4.pth", "wb") as f:  # a plain pickle (protocol 4), not torch.save
        pickle.dump(_Evil(), f, protocol=4)
    (r / "afile").write_text("a regular file where a folder is expected\n")

    write_image(r / "ok.png", rgb(40, 48))
    (r / "empty.png").write_bytes(b"")
    (r / "text.png").write_text("hello")
    (r / "truncated.png").write_bytes((r / "ok.png").read_bytes()[:200])
    (r / "bomb.png").write_bytes(png_header(100_000, 100_000))
    (r / "zero.png").write_bytes(png_header(0, 0))
    (r / "random.tif").write_bytes(b"II*\x00" + np.random.default_rng(2).bytes(500))
    write_image(r / "ok16.png", rgb(40, 48).astype(np.uint16) * 257)
    (r / "truncated16.png").write_bytes((r / "ok16.png").read_bytes()[:300])
    nan = np.full((16, 16, 3), 0.5, np.float32)
    nan[3, 3, 0] = np.nan
    tifffile.imwrite(r / "nan.tif", nan, photometric="rgb")
    inf = np.full((16, 16, 3), 0.5, np.float32)
    inf[3, 3, 0] = np.inf
    tifffile.imwrite(r / "inf.tif", inf, photometric="rgb")
    tifffile.imwrite(r / "int32.tif", rgb(16, 16).astype(np.int32), photometric="rgb")
    tifffile.imwrite(r / "five.tif", np.zeros((16, 16, 5), np.uint8), photometric="minisblack", planarconfig="contig")
    (r / "emptydir").mkdir()

    pairs = {
        "pairs_ok": {"noisy/a.png": rgb(40, 48), "gt/a.png": rgb(40, 48, 1)},
        "pairs_nogt": {"noisy/a.png": rgb(40, 48)},
        "pairs_unmatched": {"noisy/a.png": rgb(40, 48), "gt/b.png": rgb(40, 48)},
        "pairs_sizes": {"noisy/a.png": rgb(40, 48), "gt/a.png": rgb(41, 48)},
        "pairs_tiny": {"noisy/a.png": rgb(5, 5), "gt/a.png": rgb(5, 5)},
        "pairs_greygt": {"noisy/a.png": rgb(40, 48), "gt/a.png": rgb(40, 48)[:, :, :1]},
        "pairs_twogt": {"noisy/a.png": rgb(40, 48), "gt/a.png": rgb(40, 48), "gt/a.tif": rgb(40, 48)},
    }
    for name, items in pairs.items():
        for rel, arr in items.items():
            write_image(r / name / rel, arr)
    (r / "pairs_empty" / "noisy").mkdir(parents=True)
    (r / "pairs_empty" / "gt").mkdir()
    write_image(r / "pairs_badgt" / "noisy" / "a.png", rgb(40, 48))
    (r / "pairs_badgt" / "gt").mkdir()
    (r / "pairs_badgt" / "gt" / "a.png").write_bytes(b"not an image")

    from aprrd_cli.data.prepare import prepare

    write_image(r / "photos" / "p.png", rgb(64, 64))
    prepare(r / "photos", r / "prep")
    (r / "prep" / "dnd").mkdir()
    np.save(r / "prep" / "dnd" / "noisy.npy", np.full((1, 1, 32, 32, 3), 0.5, np.float32))
    (r / "prep" / "dnd" / "meta.json").write_text(json.dumps({"images": ["0001"], "boxes": [[[1, 1, 32, 32]]]}))
    (r / "nothing").mkdir()
    (r / "nothing" / "readme.txt").write_text("no images here")
    tifffile.imwrite(r / "float255.tif", np.full((16, 16, 3), 200.0, np.float32), photometric="rgb")
    return r


TINY = ["--iters", "2", "--batch-size", "1", "--width", "8", "--device", "cpu", "--threads", "1"]

# (id, arguments with {r} for the attack folder, a phrase the error line must hold, exit code)
CASES = [
    # ---- denoise
    ("denoise-missing-input", "denoise {r}/nope.png {r}/out/o.png -m {r}/student.pth", "no such file", 1),
    ("denoise-empty-file", "denoise {r}/empty.png {r}/out/o.png -m {r}/student.pth", "is empty", 1),
    ("denoise-text-file", "denoise {r}/text.png {r}/out/o.png -m {r}/student.pth", "not a PNG, TIFF, JPEG, HEIC", 1),
    ("denoise-truncated-png", "denoise {r}/truncated.png {r}/out/o.png -m {r}/student.pth", "truncated", 1),
    ("denoise-truncated-16bit", "denoise {r}/truncated16.png {r}/out/o.png -m {r}/student.pth", "truncated", 1),
    ("denoise-random-tiff", "denoise {r}/random.tif {r}/out/o.png -m {r}/student.pth", "damaged", 1),
    ("denoise-bomb", "denoise {r}/bomb.png {r}/out/o.png -m {r}/student.pth", "more than the 250 MP limit", 1),
    ("denoise-zero-size", "denoise {r}/zero.png {r}/out/o.png -m {r}/student.pth", "empty image (0x0)", 1),
    ("denoise-nan", "denoise {r}/nan.tif {r}/out/o.tif -m {r}/student.pth", "NaN or infinite", 1),
    ("denoise-inf", "denoise {r}/inf.tif {r}/out/o.tif -m {r}/student.pth", "NaN or infinite", 1),
    ("denoise-int32", "denoise {r}/int32.tif {r}/out/o.tif -m {r}/student.pth", "int32 is not supported", 1),
    ("denoise-5-channels", "denoise {r}/five.tif {r}/out/o.tif -m {r}/student.pth", "5 channels", 1),
    ("denoise-output-is-input", "denoise {r}/ok.png {r}/ok.png -m {r}/student.pth", "is the input itself", 1),
    ("denoise-output-under-file", "denoise {r}/ok.png {r}/afile/o.png -m {r}/student.pth", "is a file, not a", 1),
    ("denoise-folder-into-file", "denoise {r}/pairs_ok/noisy {r}/afile -m {r}/student.pth", "give an output folder", 1),
    ("denoise-folder-under-file", "denoise {r}/pairs_ok/noisy {r}/afile/o -m {r}/student.pth", "is a file, not a", 1),
    ("denoise-empty-folder", "denoise {r}/emptydir {r}/out -m {r}/student.pth", "holds no PNG, TIFF, JPEG, HEIC", 1),
    ("denoise-bad-suffix", "denoise {r}/ok.png {r}/out/o.bmp -m {r}/student.pth", "unknown output type", 1),
    ("denoise-jpeg-16bit", "denoise {r}/ok.png {r}/out/o.jpg -m {r}/student.pth --bit-depth 16", "only 8 bits", 1),
    ("denoise-bit-depth-12", "denoise {r}/ok.png {r}/out/o.png -m {r}/student.pth --bit-depth 12", "8 or 16", 2),
    ("denoise-cuda7", "denoise {r}/ok.png {r}/out/o.png -m {r}/student.pth --device cuda:7", "cuda:7 requested", 1),
    ("denoise-device-typo", "denoise {r}/ok.png {r}/out/o.png -m {r}/student.pth --device gpu", "unknown device", 2),
    ("denoise-model-missing", "denoise {r}/ok.png {r}/out/o.png -m {r}/nope.pth", "no model at", 1),
    ("denoise-tile-1", "denoise {r}/ok.png {r}/out/o.png -m {r}/student.pth --tile 1", "below the 64-pixel minimum", 2),
    ("denoise-float-0-255", "denoise {r}/float255.tif {r}/out/o.tif -m {r}/student.pth", "0..255 export", 1),
    ("denoise-format-single", "denoise {r}/ok.png {r}/out/o.png -m {r}/student.pth --format jpg", "--format", 2),
    ("denoise-model-empty", "denoise {r}/ok.png {r}/out/o.png -m {r}/empty.pth", "is empty", 1),
    ("denoise-model-random", "denoise {r}/ok.png {r}/out/o.png -m {r}/random.pth", "not a PyTorch checkpoint", 1),
    ("denoise-model-truncated", "denoise {r}/ok.png {r}/out/o.png -m {r}/truncated.pth", "truncated or corrupt", 1),
    ("denoise-model-code", "denoise {r}/ok.png {r}/out/o.png -m {r}/code.pth", "cannot be loaded safely", 1),
    ("denoise-model-plain-pickle", "denoise {r}/ok.png {r}/out/o.png -m {r}/code_p4.pth", "not a PyTorch", 1),
    ("denoise-model-folder", "denoise {r}/ok.png {r}/out/o.png -m {r}/emptydir", "is a folder", 1),
    ("denoise-nan-weights", "denoise {r}/ok.png {r}/out/o.png -m {r}/nan_weights.pth", "NaN or infinite", 1),
    ("denoise-nan-weights-folder", "denoise {r}/pairs_ok {r}/out -m {r}/nan_weights.pth", "weights are damaged", 1),
    # ---- evaluate
    ("evaluate-no-source", "evaluate -m {r}/student.pth", "exactly one", 2),
    ("evaluate-two-sources", "evaluate -m {r}/student.pth --pairs {r}/pairs_ok --set dnd", "exactly one", 2),
    ("evaluate-unknown-set", "evaluate -m {r}/student.pth --set foo", "unknown --set", 2),
    ("evaluate-pairs-missing", "evaluate -m {r}/student.pth --pairs {r}/nope", "no such folder", 1),
    ("evaluate-pairs-no-gt", "evaluate -m {r}/student.pth --pairs {r}/pairs_nogt", "has no gt/ folder", 1),
    ("evaluate-pairs-empty", "evaluate -m {r}/student.pth --pairs {r}/pairs_empty", "holds no PNG", 1),
    ("evaluate-pairs-unmatched", "evaluate -m {r}/student.pth --pairs {r}/pairs_unmatched", "names do not match", 1),
    ("evaluate-pairs-sizes", "evaluate -m {r}/student.pth --pairs {r}/pairs_sizes", "the same size", 1),
    ("evaluate-pairs-tiny", "evaluate -m {r}/student.pth --pairs {r}/pairs_tiny", "too small for SSIM", 1),
    ("evaluate-pairs-grey-gt", "evaluate -m {r}/student.pth --pairs {r}/pairs_greygt", "same colour channels", 1),
    ("evaluate-pairs-two-gt", "evaluate -m {r}/student.pth --pairs {r}/pairs_twogt", "two images for one pair", 1),
    ("evaluate-tile-1", "evaluate -m {r}/student.pth --pairs {r}/pairs_ok --tile 1", "below the 64-pixel", 2),
    ("evaluate-pairs-bad-gt", "evaluate -m {r}/student.pth --pairs {r}/pairs_badgt", "not a PNG, TIFF, JPEG, HEIC", 1),
    ("evaluate-set-absent", "evaluate -m {r}/student.pth --set sidd-val --data {r}/prep", "no prepared sidd-val", 1),
    ("evaluate-data-missing", "evaluate -m {r}/student.pth --set dnd --data {r}/nope", "no prepared dnd", 1),
    ("evaluate-json-folder", "evaluate -m {r}/student.pth --pairs {r}/pairs_ok --json {r}/emptydir", "is a folder", 1),
    ("evaluate-json-under-file", "evaluate -m {r}/student.pth --pairs {r}/pairs_ok --json {r}/afile/s.json",
     "is a file, not a folder", 1),
    ("evaluate-out-under-file", "evaluate -m {r}/student.pth --set dnd --data {r}/prep --out {r}/afile/o",
     "is a file, not a folder", 1),
    ("evaluate-pictures-under-file", "evaluate -m {r}/student.pth --pairs {r}/pairs_ok --save-images --out {r}/afile",
     "is a file, not a folder", 1),
    ("evaluate-cuda7", "evaluate -m {r}/student.pth --pairs {r}/pairs_ok --device cuda:7", "cuda:7 requested", 1),
    ("evaluate-model-random", "evaluate -m {r}/random.pth --pairs {r}/pairs_ok", "not a PyTorch checkpoint", 1),
    ("evaluate-nan-weights", "evaluate -m {r}/nan_weights.pth --pairs {r}/pairs_ok", "NaN or infinite", 1),
    # ---- prepare-data
    ("prepare-root-missing", "prepare-data {r}/nope --out {r}/p2", "no such folder", 1),
    ("prepare-root-is-file", "prepare-data {r}/ok.png --out {r}/p2", "is a file", 1),
    ("prepare-out-is-root", "prepare-data {r}/photos --out {r}/photos", "is ROOT itself", 1),
    ("prepare-nothing-found", "prepare-data {r}/nothing --out {r}/p2", "holds none", 1),
    ("prepare-unknown-part", "prepare-data {r}/photos --out {r}/p2 --parts foo", "unknown foo", 2),
    ("prepare-no-root", "prepare-data --out {r}/p2", "give ROOT", 2),
    ("prepare-root-and-demo", "prepare-data {r}/photos --demo {r}/d --out {r}/p2", "not both", 2),
    ("prepare-out-under-file", "prepare-data {r}/photos --out {r}/afile/p", "is a file, not a folder", 1),
    ("prepare-demo-into-user-folder", "prepare-data --demo {r}/photos --out {r}/p2", "holds no demo set", 1),
    # ---- train-apr
    ("train-patch-33", "train-apr --data {r}/prep --run-dir {r}/run --patch-size 33", "multiple of 32", 2),
    ("train-patch-too-big", "train-apr --data {r}/prep --run-dir {r}/run --patch-size 96", "than every training", 2),
    ("train-data-missing", "train-apr --data {r}/nope --run-dir {r}/run --patch-size 32", "prepare-data", 1),
    ("train-data-is-file", "train-apr --data {r}/ok.png --run-dir {r}/run --patch-size 32", "not a prepared", 1),
    ("train-data-empty", "train-apr --data {r}/emptydir --run-dir {r}/run --patch-size 32", "no prepared training", 1),
    ("train-cuda7", "train-apr --data {r}/prep --run-dir {r}/run --patch-size 32 --device cuda:7", "cuda:7", 1),
    ("train-run-under-file", "train-apr --data {r}/prep --run-dir {r}/afile/run --patch-size 32", "is a file", 1),
    ("train-resume-nothing", "train-apr --data {r}/prep --run-dir {r}/run --patch-size 32 --resume", "nothing to", 1),
    ("train-fp16-cpu", "train-apr --data {r}/prep --run-dir {r}/run --patch-size 32 --precision fp16", "fp16", 2),
    ("train-lr-zero", "train-apr --data {r}/prep --run-dir {r}/run --patch-size 32 --lr 0", "positive", 2),
    ("train-val-missing", "train-apr --data {r}/prep --run-dir {r}/run --patch-size 32 --val {r}/nope",
     "no such folder", 1),
    ("train-val-sidd-absent", "train-apr --data {r}/prep --run-dir {r}/run --patch-size 32 --val sidd-val",
     "no prepared sidd-val", 1),
    # ---- distill
    ("distill-student-teacher-init-misfit",
     "distill --teacher {r}/student.pth --init {r}/student.pth --student 1.02M --data {r}/prep --run-dir {r}/rd "
     "--patch-size 32", "none of its tensors fit this nbsn-1.02M", 1),
    ("distill-teacher-missing", "distill --teacher {r}/nope.pth --data {r}/prep --run-dir {r}/rd --patch-size 32",
     "nope.pth; run aprrd train-apr first (it writes RUN/teacher.pth", 1),
    ("distill-teacher-random", "distill --teacher {r}/random.pth --data {r}/prep --run-dir {r}/rd --patch-size 32",
     "not a PyTorch checkpoint", 1),
    ("distill-teacher-truncated",
     "distill --teacher {r}/truncated.pth --data {r}/prep --run-dir {r}/rd --patch-size 32", "truncated", 1),
    ("distill-unknown-student",
     "distill --teacher {r}/teacher.pth --student 5M --data {r}/prep --run-dir {r}/rd --patch-size 32",
     "unknown student", 2),
    ("distill-patch-48", "distill --teacher {r}/teacher.pth --data {r}/prep --run-dir {r}/rd --patch-size 48",
     "multiple of 32", 2),
]  # fmt: skip


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time: nothing may appear or change."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


USAGE = [
    ("denoise", "missing argument 'INPUT'; see 'aprrd denoise -h'"),
    ("denoise a.png b.png --tile abc", "invalid value for '--tile'"),
    ("denoise a.png b.png --nope", "no such option: --nope"),
    ("bogus", "no such command 'bogus'; see 'aprrd -h'"),
    ("train-apr --iters 0", "invalid value for '--iters'"),
]


@pytest.mark.parametrize(("argv", "phrase"), USAGE, ids=[u[0] for u in USAGE])
def test_usage_errors_are_one_line(cli, argv, phrase) -> None:
    got, out, err = cli(*argv.split())
    assert got == 2
    assert [ln for ln in err.splitlines() if ln.strip()] == [err.strip()], err  # one line, no usage block
    assert err.startswith("error: ") and phrase in err, err


@pytest.mark.parametrize(("case", "argv", "phrase", "code"), CASES, ids=[c[0] for c in CASES])
def test_bad_invocation_fails_cleanly(cli, world, case, argv, phrase, code) -> None:
    args = argv.format(r=world).split()
    if args[0] in ("train-apr", "distill"):
        args[1:1] = TINY  # before the case's own options, which win
    before = snapshot(world)
    got, out, err = cli(*args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("error:", "internal error:"))]
    assert got == code, err
    assert len(errors) == 1 and errors[0].startswith("error:"), err  # one line, and not a bug of ours
    assert errors[0] == lines[-1] and phrase in errors[0], err
    assert "Traceback" not in err + out and "Warning" not in err
    assert snapshot(world) == before  # nothing written, nothing half-written
    assert not (world / "pwned.txt").exists()  # a checkpoint never runs code


def test_debug_shows_the_traceback(cli, world) -> None:
    code, _, err = cli("--debug", "denoise", world / "text.png", world / "out" / "o.png", "-m", world / "student.pth")
    assert code == 1 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error:")


@pytest.mark.parametrize(
    ("damage", "phrase"),
    [
        ("[]", "holds a JSON list, not an aprrd index"),
        ('{"version": 1, "train": 5}', "is malformed"),
        ('{"version": 1, "train": [{"name": "x"}]}', "is malformed"),
        ('{"version": 1, "train": [], "eval": []}', "is malformed"),
        ("{bad", "is unreadable"),
        ('{"version": 1, "train": [{"name": "x", "file": "../../x.npy"}]}', "points outside"),
        ("truncated-array", "is damaged"),
    ],
)
def test_damaged_prepared_store(cli, world, tmp_path, damage, phrase) -> None:
    """A hand-edited or damaged store: train-apr and prepare-data refuse it in one line (three of
    these were internal errors: KeyError, TypeError, AttributeError)."""
    import shutil

    prep = tmp_path / "prep"
    shutil.copytree(world / "prep", prep)
    if damage == "truncated-array":
        (arr,) = (prep / "train").glob("*.npy")
        arr.write_bytes(arr.read_bytes()[:100])
    else:
        (prep / "index.json").write_text(damage)
    commands = [["train-apr", *TINY, "--data", prep, "--run-dir", tmp_path / "run", "--patch-size", "32"]]
    if phrase not in ("is damaged", "points outside"):  # prepare-data never opens those paths: no harm there
        commands.append(["prepare-data", world / "photos", "--out", prep])
    for args in commands:
        code, _, err = cli(*args)
        assert code == 1 and err.strip().splitlines()[-1].startswith("error:") and phrase in err, err
        assert "Traceback" not in err and not (tmp_path / "run" / "config.json").exists()
