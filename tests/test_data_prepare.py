"""prepare-data on tiny trees written in the real formats: pixel-exact results, no-op re-runs, bad files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from aprrd_cli.data import prepare as prepare_mod
from aprrd_cli.data.images import read_image, write_image
from aprrd_cli.data.store import open_eval_set, open_train_store
from aprrd_cli.utils.locks import DirLock
from tests.helpers import dnd_crop, matlab73, stamp_matlab_header, write_dnd

RNG = np.random.default_rng(11)


def rand_img(h: int, w: int, dtype=np.uint8) -> np.ndarray:
    hi = 256 if dtype == np.uint8 else 65536
    return RNG.integers(0, hi, (h, w, 3), dtype=dtype)


@pytest.fixture
def tree(tmp_path) -> tuple[Path, dict]:
    """A complete small tree: SIDD Medium, benchmark frames, validation + benchmark blocks, DND."""
    root = tmp_path / "root"
    truth: dict = {"train": {}}
    for scene, sid in (("0001_001_S6_00100_00060_3200_L", "0001"), ("0002_001_GP_00800_00350_5500_N", "0002")):
        for frame in ("010", "011"):
            noisy = rand_img(40 + int(sid) * 3, 52)
            write_image(root / "SIDD_Medium_Srgb" / "Data" / scene / f"{sid}_NOISY_SRGB_{frame}.png", noisy)
            write_image(root / "SIDD_Medium_Srgb" / "Data" / scene / f"{sid}_GT_SRGB_{frame}.png", rand_img(8, 8))
            truth["train"][f"{scene}__{sid}_NOISY_SRGB_{frame}"] = noisy
    frame = rand_img(36, 44)
    write_image(root / "SIDD_Benchmark_Data" / "0009_scene" / "0009_NOISY_SRGB_010.png", frame)
    truth["train"]["0009_scene__0009_NOISY_SRGB_010"] = frame
    val = root / "SIDD_Validation_sRGB"
    val.mkdir(parents=True)
    truth["val_noisy"] = RNG.integers(0, 256, (2, 3, 16, 12, 3), dtype=np.uint8)
    truth["val_gt"] = RNG.integers(0, 256, (2, 3, 16, 12, 3), dtype=np.uint8)
    truth["bench"] = RNG.integers(0, 256, (3, 2, 8, 8, 3), dtype=np.uint8)
    scipy.io.savemat(val / "ValidationNoisyBlocksSrgb.mat", {"ValidationNoisyBlocksSrgb": truth["val_noisy"]})
    scipy.io.savemat(val / "ValidationGtBlocksSrgb.mat", {"ValidationGtBlocksSrgb": truth["val_gt"]})
    # the benchmark blocks where one published tree puts them: beside the validation files
    scipy.io.savemat(val / "BenchmarkNoisyBlocksSrgb.mat", {"BenchmarkNoisyBlocksSrgb": truth["bench"]})
    imgs = [RNG.random((20, 24, 3), dtype=np.float32) for _ in range(2)]
    boxes = [
        np.array([[1, 1, 6, 8], [15, 17, 20, 24], [3, 9, 8, 16]]),
        np.array([[2, 2, 7, 9], [5, 1, 10, 8], [1, 17, 6, 24]]),
    ]
    write_dnd(root, imgs, boxes)
    truth["dnd_imgs"], truth["dnd_boxes"] = imgs, boxes
    return root, truth


def files_and_mtimes(prep: Path) -> dict[str, int]:
    return {str(p.relative_to(prep)): p.stat().st_mtime_ns for p in sorted(prep.rglob("*")) if p.is_file()}


def test_full_tree_prepares_pixel_exact_and_second_run_is_a_noop(tree, tmp_path, cli):
    root, truth = tree
    prep = tmp_path / "prep"
    code, out, err = cli("prepare-data", root, "--out", prep)
    assert code == 0, out + err
    store = open_train_store(prep)
    assert sorted(store.names) == sorted(truth["train"])  # the GT twins were never read
    for name, img in zip(store.names, store.images, strict=True):
        np.testing.assert_array_equal(img, truth["train"][name])
    index = json.loads((prep / "index.json").read_text())
    groups = {e["name"]: e["group"] for e in index["train"]}
    assert groups["0009_scene__0009_NOISY_SRGB_010"] == "sidd-bench-frames"
    assert list(open_train_store(prep, groups=["sidd-bench-frames"]).names) == ["0009_scene__0009_NOISY_SRGB_010"]
    assert set(index["eval"]) == {"sidd-val", "sidd-bench", "dnd"}

    val = open_eval_set(prep, "sidd-val")
    np.testing.assert_array_equal(val.noisy, truth["val_noisy"])
    np.testing.assert_array_equal(val.gt, truth["val_gt"])
    bench = open_eval_set(prep, "sidd-bench")
    np.testing.assert_array_equal(bench.noisy, truth["bench"])
    assert bench.gt is None
    dnd = open_eval_set(prep, "dnd")
    assert dnd.noisy.dtype == np.float32 and dnd.noisy.shape == (2, 3, 6, 8, 3)
    assert dnd.meta["images"] == ["0001", "0002"]
    for i in range(2):
        assert dnd.meta["boxes"][i] == truth["dnd_boxes"][i].tolist()
        for k, box in enumerate(truth["dnd_boxes"][i]):
            np.testing.assert_array_equal(dnd.noisy[i, k], dnd_crop(truth["dnd_imgs"][i], box))
    assert "sidd-medium" in out and "dnd" in out

    before = files_and_mtimes(prep)
    time.sleep(0.01)
    code, out2, _ = cli("prepare-data", root, "--out", prep)
    assert code == 0
    assert files_and_mtimes(prep) == before  # nothing rewritten, the index included
    rows = {line.split("│")[1].strip(): line for line in out2.splitlines() if line.count("│") > 5}
    assert [c.strip() for c in rows["sidd-medium"].split("│")[2:6]] == ["4", "0", "4", "0"]
    assert [c.strip() for c in rows["dnd"].split("│")[2:6]] == ["2", "0", "2", "0"]


def test_changed_and_removed_sources(tree, tmp_path):
    root, truth = tree
    prep = tmp_path / "prep"
    prepare_mod.prepare(root, prep, parts=["sidd-medium"])
    data = root / "SIDD_Medium_Srgb" / "Data"
    changed = rand_img(30, 30)
    write_image(data / "0001_001_S6_00100_00060_3200_L" / "0001_NOISY_SRGB_010.png", changed)
    (data / "0002_001_GP_00800_00350_5500_N" / "0002_NOISY_SRGB_011.png").unlink()
    (r,) = prepare_mod.prepare(root, prep, parts=["sidd-medium"])
    assert (r.found, r.prepared, r.unchanged, r.removed, r.skipped) == (3, 1, 2, 1, [])
    store = open_train_store(prep)
    assert len(store) == 3 and not (prep / "train" / "0002_001_GP_00800_00350_5500_N__0002_NOISY_SRGB_011.npy").exists()
    np.testing.assert_array_equal(
        store.images[store.names.index("0001_001_S6_00100_00060_3200_L__0001_NOISY_SRGB_010")], changed
    )


def test_v73_validation_blocks(tmp_path):
    """A validation file re-saved as v7.3 (HDF5, transposed) reads the same."""
    root = tmp_path / "root" / "SIDD_Validation_sRGB"
    arrays = {}
    for var in ("ValidationNoisyBlocksSrgb", "ValidationGtBlocksSrgb"):
        arrays[var] = RNG.integers(0, 256, (1, 2, 8, 4, 3), dtype=np.uint8)
        with matlab73(root / f"{var}.mat") as f:
            f.create_dataset(var, data=arrays[var].T)
        stamp_matlab_header(root / f"{var}.mat")
    prepare_mod.prepare(root.parent, tmp_path / "prep")
    val = open_eval_set(tmp_path / "prep", "sidd-val")
    np.testing.assert_array_equal(val.noisy, arrays["ValidationNoisyBlocksSrgb"])
    np.testing.assert_array_equal(val.gt, arrays["ValidationGtBlocksSrgb"])


def test_malformed_tree_reports_and_prepares_the_good_parts(tree, tmp_path, cli):
    root, truth = tree
    data = root / "SIDD_Medium_Srgb" / "Data" / "0001_001_S6_00100_00060_3200_L"
    bad_png = data / "0001_NOISY_SRGB_011.png"
    bad_png.write_bytes(bad_png.read_bytes()[:80])  # truncated
    val = root / "SIDD_Validation_sRGB"
    (val / "ValidationGtBlocksSrgb.mat").unlink()  # missing file
    scipy.io.savemat(val / "BenchmarkNoisyBlocksSrgb.mat", {"Blocks": truth["bench"]})  # wrong variable name
    boxes = [truth["dnd_boxes"][0], np.array([[1, 1, 6, 8], [16, 18, 21, 25], [3, 9, 8, 16]])]  # 2nd: outside
    write_dnd(root, truth["dnd_imgs"], boxes)
    prep = tmp_path / "prep"
    code, out, err = cli("prepare-data", root, "--out", prep)
    assert code == 1
    text = " ".join(out.split())
    assert f"{bad_png}: cannot decode PNG" in text
    assert "ValidationGtBlocksSrgb.mat: missing; expected a MATLAB file with ValidationGtBlocksSrgb" in text
    assert "no variable 'BenchmarkNoisyBlocksSrgb' (found: 'Blocks')" in text
    assert "0002.mat: box 2 [16 18 21 25] lies outside the 20 x 24 image" in text
    assert "Traceback" not in out + err
    # the good parts are there
    assert len(open_train_store(prep)) == 4
    dnd = open_eval_set(prep, "dnd")
    assert dnd.meta["images"] == ["0001"] and dnd.noisy.shape[0] == 1
    for name in ("sidd-val", "sidd-bench"):
        assert not (prep / name / "meta.json").exists()
    assert not list(prep.rglob("*.part"))


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((2, 3, 8, 8), np.uint8), "has shape (2, 3, 8, 8); expected [n_images, n_blocks, H, W, 3]"),
        (np.zeros((1, 2, 8, 8, 3), np.float64), "is float64; expected uint8"),
    ],
)
def test_wrong_block_shape_or_dtype(tmp_path, array, message):
    folder = tmp_path / "root" / "SIDD_Benchmark_sRGB"
    folder.mkdir(parents=True)
    scipy.io.savemat(folder / "BenchmarkNoisyBlocksSrgb.mat", {"BenchmarkNoisyBlocksSrgb": array})
    (r,) = prepare_mod.prepare(tmp_path / "root", tmp_path / "prep")
    assert r.prepared == 0 and len(r.skipped) == 1 and message in r.skipped[0][1]


def test_dnd_wrong_variable_and_missing_image(tree, tmp_path):
    root, truth = tree
    p = root / "dnd_2017" / "images_srgb" / "0002.mat"
    with matlab73(p) as f:
        f.create_dataset("Inoisy", data=truth["dnd_imgs"][1].T)
    stamp_matlab_header(p)
    (r,) = prepare_mod.prepare(root, tmp_path / "prep", parts=["dnd"])
    assert r.prepared == 1 and "no variable 'InoisySRGB' (found: 'Inoisy')" in r.skipped[0][1]
    p.unlink()
    (r,) = prepare_mod.prepare(root, tmp_path / "prep", parts=["dnd"])
    assert r.unchanged == 1 and "0002.mat: missing; info.mat lists boxes for it" in r.skipped[0][1]


def test_folder_of_photos(tmp_path, cli):
    root = tmp_path / "photos"
    a8 = rand_img(33, 40)
    a16 = rand_img(34, 41, np.uint16)
    rgba = np.concatenate([rand_img(35, 36), np.full((35, 36, 1), 255, np.uint8)], axis=2)
    write_image(root / "a.png", a8)
    write_image(root / "deep" / "er" / "b.tif", a16)
    write_image(root / "c.png", rgba)
    write_image(root / "d.jpg", rand_img(32, 32))
    write_image(root / "grey.png", RNG.integers(0, 256, (20, 20, 1), dtype=np.uint8))
    write_image(root / ".hidden.png", a8)
    (root / "notes.txt").write_text("not an image")
    prep = root / "prepared"  # inside ROOT: must not be read back as photos
    code, out, err = cli("prepare-data", root, "--out", prep)
    assert code == 0, err
    assert "grey" not in out  # a grey photo is prepared as RGB, as denoise takes it (issue 13)
    store = open_train_store(prep)
    assert store.names == ["a", "c", "d", "deep__er__b", "grey"]
    np.testing.assert_array_equal(store.images[0], a8)
    np.testing.assert_array_equal(store.images[1], rgba[:, :, :3])
    assert store.images[3].dtype == np.uint16
    np.testing.assert_array_equal(store.images[3], a16)
    grey = read_image(root / "grey.png")[0]
    np.testing.assert_array_equal(store.images[4], np.repeat(grey, 3, axis=2))
    assert [e.get("note") for e in store.entries if e["name"] == "grey"] == ["grey stored as RGB"]
    code, _, _ = cli("prepare-data", root, "--out", prep)
    assert code == 0 and len(open_train_store(prep)) == 5  # still not reading its own output


def test_names_never_escape_the_store(tmp_path):
    root = tmp_path / "photos"
    write_image(root / "-- weird name!.png", rand_img(10, 10))
    write_image(root / "sub" / "_.png", rand_img(10, 10))
    write_image(root / "sub" / "x.png", rand_img(10, 10))
    write_image(root / "sub__x.png", rand_img(10, 10))  # the same name as sub/x once flattened
    write_image(root / ".hidden" / "y.png", rand_img(10, 10))
    prepare_mod.prepare(root, tmp_path / "prep")
    prep = (tmp_path / "prep").resolve()
    index = json.loads((prep / "index.json").read_text())
    assert sorted(e["name"] for e in index["train"]) == ["sub", "sub__x", "sub__x-2", "weird_name"]
    for e in index["train"]:
        assert (prep / e["file"]).resolve().parent == prep / "train"
        assert not e["name"].startswith(".") and "/" not in e["name"]


def test_nothing_found_and_bad_arguments(tmp_path, cli):
    (tmp_path / "empty").mkdir()
    code, _, err = cli("prepare-data", tmp_path / "empty", "--out", tmp_path / "p")
    assert code == 1 and "holds none; expected SIDD_Medium_Srgb" in " ".join(err.split())
    code, _, err = cli("prepare-data", tmp_path / "missing")
    assert code == 1 and err.startswith("error:") and "missing: no such folder" in " ".join(err.split())
    code, _, err = cli("prepare-data", tmp_path / "empty", "--parts", "kodak")
    assert code == 2 and "unknown kodak" in " ".join(err.split())
    code, _, err = cli("prepare-data")
    assert code == 2 and "give ROOT" in " ".join(err.split())


def test_lock_refuses_a_second_run_and_takes_over_a_stale_one(tree, tmp_path, cli):
    root, _ = tree
    prep = tmp_path / "prep"
    with DirLock(prep, what="prepare-data"):
        code, _, err = cli("prepare-data", root, "--out", prep, "--parts", "sidd-bench")
        text = " ".join(err.split())
        assert code == 1 and f"in use by prepare-data (PID {os.getpid()}" in text and ".aprrd.lock" in text
    # a lock file left by a process that is gone (killed: no release ran)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (prep / ".aprrd.lock").write_text(json.dumps({"pid": int(dead.stdout), "what": "prepare-data"}))
    code, _, _ = cli("prepare-data", root, "--out", prep, "--parts", "sidd-bench")
    assert code == 0 and not (prep / ".aprrd.lock").exists()


def test_lock_held_by_another_process(tmp_path):
    prep = tmp_path / "prep"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from aprrd_cli.utils.locks import DirLock\nwith DirLock({str(prep)!r}, 'train-apr'):\n"
            "    print('held', flush=True)\n    import time; time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Exception, match=rf"in use by train-apr \(PID {holder.pid}\)"):
            DirLock(prep).acquire()
    finally:
        holder.kill()
        holder.wait()
    with DirLock(prep):  # its process is gone: the kernel lock went with it
        assert json.loads((prep / ".aprrd.lock").read_text())["pid"] == os.getpid()


def test_interrupt_keeps_finished_images_and_leaves_no_partial_file(tree, tmp_path, cli, monkeypatch):
    root, truth = tree
    prep = tmp_path / "prep"
    real = prepare_mod.load_train_image
    calls = []

    def flaky(path):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(path)

    monkeypatch.setattr(prepare_mod, "load_train_image", flaky)
    code, _, err = cli("prepare-data", root, "--out", prep, "--parts", "sidd-medium")
    assert code == 130 and "interrupted" in err
    assert not list(prep.rglob("*.part")) and not (prep / ".aprrd.lock").exists()
    assert len(open_train_store(prep)) == 2  # the two finished images are recorded
    monkeypatch.setattr(prepare_mod, "load_train_image", real)
    (r,) = prepare_mod.prepare(root, prep, parts=["sidd-medium"])
    assert (r.prepared, r.unchanged) == (2, 2)


def test_a_store_forgets_images_whose_source_is_gone_and_names_other_roots(tmp_path, cli):
    """A store prepared from two roots over time kept entries of the first root after its photos
    were deleted, and trained on them (issue 13)."""
    write_image(tmp_path / "a" / "x.png", rand_img(40, 40))
    write_image(tmp_path / "a" / "y.png", rand_img(40, 40))
    write_image(tmp_path / "b" / "z.png", rand_img(40, 40))
    prep = tmp_path / "prep"
    assert cli("prepare-data", tmp_path / "a", "--out", prep)[0] == 0
    code, _, err = cli("prepare-data", tmp_path / "b", "--out", prep)
    assert code == 0, err
    text = " ".join(err.split())
    assert "also holds 2 training image(s) prepared earlier from" in text and str(tmp_path / "a") in text
    assert sorted(open_train_store(prep).names) == ["x", "y", "z"]
    (tmp_path / "a" / "x.png").unlink()
    code, _, err = cli("prepare-data", tmp_path / "b", "--out", prep)
    assert code == 0, err
    assert "removed 1 training image(s) of earlier runs whose source file no longer exists" in " ".join(err.split())
    assert sorted(open_train_store(prep).names) == ["y", "z"]
    assert sorted(p.name for p in (prep / "train").iterdir()) == ["y.npy", "z.npy"]


def test_a_folder_of_symlinked_photos_is_that_folders_own(tmp_path, cli):
    """Photos linked into a folder (a selection of one's pictures) were keyed by the link's target,
    so a fresh store warned that it held images "prepared earlier" from the very folder given."""
    write_image(tmp_path / "library" / "x.png", rand_img(40, 40))
    write_image(tmp_path / "library" / "y.png", rand_img(40, 40))
    (tmp_path / "pick").mkdir()
    for name in ("x.png", "y.png"):
        (tmp_path / "pick" / name).symlink_to(tmp_path / "library" / name)
    prep = tmp_path / "prep"
    code, _, err = cli("prepare-data", tmp_path / "pick", "--out", prep)
    assert code == 0 and "prepared earlier" not in err, err
    store = open_train_store(prep)
    assert sorted(e["source"] for e in store.entries) == [str((tmp_path / "pick").resolve() / n)
                                                         for n in ("x.png", "y.png")]  # fmt: skip
    code, out, err = cli("prepare-data", tmp_path / "pick", "--out", prep)
    assert code == 0 and "prepared earlier" not in err and len(open_train_store(prep)) == 2
    (tmp_path / "pick" / "x.png").unlink()  # the link is gone, its target is not
    code, _, err = cli("prepare-data", tmp_path / "pick", "--out", prep)
    assert code == 0, err
    assert open_train_store(prep).names == ["y"]


def test_a_store_keyed_by_link_targets_moves_to_the_links(tmp_path, cli):
    """A store that an earlier version prepared from symlinked photos (keyed by their targets) is
    taken over by the same folder without preparing the photos again or keeping doubles."""
    import json

    write_image(tmp_path / "library" / "x.png", rand_img(40, 40))
    (tmp_path / "pick").mkdir()
    (tmp_path / "pick" / "x.png").symlink_to(tmp_path / "library" / "x.png")
    prep = tmp_path / "prep"
    assert cli("prepare-data", tmp_path / "pick", "--out", prep)[0] == 0
    index_path = prep / "index.json"
    index = json.loads(index_path.read_text())
    target = str((tmp_path / "library" / "x.png").resolve())
    index["train"][0]["source"] = target  # as the earlier version wrote it
    index_path.write_text(json.dumps(index))
    code, out, err = cli("prepare-data", tmp_path / "pick", "--out", prep)
    assert code == 0 and "prepared earlier" not in err, err
    entries = open_train_store(prep).entries
    assert [e["name"] for e in entries] == ["x"] and entries[0]["source"] != target
