"""The fixes of the reliability audit, each shown on its own, and property tests: arbitrary bytes
into the reader, any image kind through the denoiser, a full disk and unwritable folders."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from aprrd_cli.data.images import ImageInfo, read_image, write_image
from aprrd_cli.denoise import denoise_array
from aprrd_cli.errors import AprrdError, CheckpointError, InputError, OutputError
from aprrd_cli.inference import Denoiser
from aprrd_cli.models import NBSN100
from aprrd_cli.utils.atomic import atomic_path, check_output_dir, remove_partials
from tests.helpers import flat, rgb

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_net() -> NBSN100:
    torch.manual_seed(0)
    return NBSN100(width=8)


# ---------------------------------------------------------------- TIFF colour spaces


def test_cmyk_tiff_is_converted_not_read_as_rgba(tmp_path: Path) -> None:
    a = rgb(10, 12)
    Image.fromarray(a).convert("CMYK").save(tmp_path / "c.tif")
    got, info = read_image(tmp_path / "c.tif")
    want = np.asarray(Image.open(tmp_path / "c.tif").convert("RGB"))
    assert info.channels == 3 and np.array_equal(got, want)


def test_palette_tiff_gives_its_colours_not_its_indices(tmp_path: Path) -> None:
    a = rgb(10, 12)
    Image.fromarray(a).convert("P").save(tmp_path / "p.tif")
    got, info = read_image(tmp_path / "p.tif")
    assert info.dtype == "uint8" and np.array_equal(got, np.asarray(Image.open(tmp_path / "p.tif").convert("RGB")))


def test_min_is_white_and_bilevel_tiffs(tmp_path: Path) -> None:
    g = np.arange(12, dtype=np.uint8).reshape(3, 4)
    tifffile.imwrite(tmp_path / "w.tif", g, photometric="miniswhite")
    assert np.array_equal(read_image(tmp_path / "w.tif")[0][:, :, 0], 255 - g)
    tifffile.imwrite(tmp_path / "b.tif", g > 5)
    got, info = read_image(tmp_path / "b.tif")
    assert info.dtype == "uint8" and set(np.unique(got)) == {0, 255}


def test_unsupported_colour_space_is_one_line(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "lab.tif", rgb(8, 8), photometric="cielab")
    with pytest.raises(InputError, match="photometric 8.*re-export it as RGB"):
        read_image(tmp_path / "lab.tif")


def test_damaged_files_print_nothing_but_our_error(tmp_path: Path, capfd) -> None:
    """tifffile logs bad headers and OpenCV prints [ WARN] lines of its own; neither may reach stderr."""
    (tmp_path / "r.tif").write_bytes(b"II*\x00" + np.random.default_rng(0).bytes(500))
    write_image(tmp_path / "ok16.png", rgb(40, 48).astype(np.uint16) * 257)
    (tmp_path / "t16.png").write_bytes((tmp_path / "ok16.png").read_bytes()[:300])
    for name in ("r.tif", "t16.png"):
        with pytest.raises(InputError, match="damaged"):
            read_image(tmp_path / name)
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


# ---------------------------------------------------------------- properties


@settings(max_examples=400, deadline=None)
@given(
    magic=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"II+\x00"]),
    body=st.binary(max_size=600),
)
def test_arbitrary_bytes_only_ever_raise_input_error(tmp_path_factory, magic: bytes, body: bytes) -> None:
    """Whatever a file holds, the reader returns an image or raises InputError, never anything else."""
    p = tmp_path_factory.mktemp("fuzz") / "x.png"
    p.write_bytes(magic + body)
    try:
        arr, info = read_image(p)
    except InputError as e:
        assert "\n" not in str(e) and str(p) in str(e)
        return
    assert arr.ndim == 3 and 1 <= arr.shape[2] <= 4 and arr.dtype.name == info.dtype


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_damaged_real_files_only_ever_raise_input_error(tmp_path_factory, data) -> None:
    """Real PNG/TIFF/JPEG files cut short or with flipped bytes: an image or InputError."""
    suffix = data.draw(st.sampled_from([".png", ".tif", ".jpg"]))
    dtype = data.draw(st.sampled_from(["uint8", "uint16"])) if suffix != ".jpg" else "uint8"
    folder = tmp_path_factory.mktemp("damaged")
    a = rgb(24, 20).astype(dtype) * (257 if dtype == "uint16" else 1)
    write_image(folder / f"a{suffix}", a)
    raw = bytearray((folder / f"a{suffix}").read_bytes())
    cut = data.draw(st.integers(0, len(raw)))
    raw = raw[:cut]
    for pos in data.draw(st.lists(st.integers(0, max(0, len(raw) - 1)), max_size=4)):
        if raw:
            raw[pos] ^= 0xFF
    p = folder / f"b{suffix}"
    p.write_bytes(bytes(raw))
    try:
        arr, _ = read_image(p)
    except InputError as e:
        assert "\n" not in str(e)
        return
    assert arr.ndim == 3 and arr.shape[2] in (1, 2, 3, 4)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    h=st.integers(1, 70),
    w=st.integers(1, 70),
    channels=st.sampled_from([1, 2, 3, 4]),
    dtype=st.sampled_from(["uint8", "uint16", "float32"]),
    out_dtype=st.sampled_from(["uint8", "uint16", "float32"]),
)
def test_denoiser_takes_any_size_and_kind(tiny_net, h, w, channels, dtype, out_dtype) -> None:
    """Any size, channel count and bit depth: same size and channels out, the alpha untouched
    when the dtype stays, values inside the target range."""
    rng = np.random.default_rng(h * 71 + w)
    top = {"uint8": 255, "uint16": 65535, "float32": 1.0}[dtype]
    arr = (rng.random((h, w, channels)) * top).astype(dtype)
    y = denoise_array(Denoiser(tiny_net, CPU), arr, ImageInfo("png", dtype, channels), out_dtype)
    assert y.shape == (h, w, channels) and y.dtype.name == out_dtype
    if out_dtype == "float32":
        assert np.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    if channels in (2, 4) and out_dtype == dtype:
        assert np.array_equal(y[:, :, -1], arr[:, :, -1])


def test_denoiser_refuses_a_model_that_outputs_nan() -> None:
    net = NBSN100(width=8)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(float("nan"))
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        Denoiser(net, CPU)(torch.rand(1, 3, 16, 16))


# ---------------------------------------------------------------- unwritable places, full disk


def test_check_output_dir(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match=r"f is a file, not a folder"):
        check_output_dir(tmp_path / "f" / "sub")
    check_output_dir(tmp_path / "new" / "deep")  # created, and left empty
    assert list((tmp_path / "new" / "deep").iterdir()) == []

    def read_only(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr("tempfile.mkstemp", read_only)
    with pytest.raises(OutputError, match="Read-only file system; choose a writable folder"):
        check_output_dir(tmp_path / "ro")


def test_short_write_without_errno_on_a_full_disk_says_no_space(tmp_path: Path, monkeypatch) -> None:
    """numpy's tofile reports a full disk as 'N requested and M written' with no errno."""
    monkeypatch.setattr("aprrd_cli.utils.atomic._free_bytes", lambda folder: 0)
    with pytest.raises(OutputError, match="No space left on device"), atomic_path(tmp_path / "a.png"):
        raise OSError("13269 requested and 4096 written")
    assert list(tmp_path.iterdir()) == []


def test_remove_partials(tmp_path: Path) -> None:
    (tmp_path / ".a.npy.x1.npy.part").write_bytes(b"half")
    (tmp_path / "keep.npy").write_bytes(b"whole")
    assert remove_partials(tmp_path, tmp_path / "absent") == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.npy"]


def test_lock_on_a_read_only_folder_is_a_clean_error(tmp_path: Path, monkeypatch) -> None:
    """The folder exists but the lock file cannot be created: was an internal error (exit 3)."""
    from aprrd_cli.utils.locks import DirLock

    real_open = os.open

    def ro_open(path, flags, *a):
        if str(path).endswith(".aprrd.lock"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *a)

    monkeypatch.setattr(os, "open", ro_open)
    with pytest.raises(AprrdError, match="cannot write in .*Read-only file system"):
        DirLock(tmp_path).acquire()


def test_denoise_refuses_before_loading_the_model(cli, tmp_path: Path) -> None:
    """A bad single image or an unwritable output fail first: the model is not even looked at."""
    (tmp_path / "bad.png").write_text("no")
    write_image(tmp_path / "ok.png", rgb(8, 8))
    (tmp_path / "file").write_text("x")
    code, _, err = cli("denoise", tmp_path / "bad.png", tmp_path / "o.png", "-m", tmp_path / "absent.pth")
    assert code == 1 and "is not a PNG" in err and "no model" not in err
    code, _, err = cli("denoise", tmp_path / "ok.png", tmp_path / "file" / "o.png", "-m", tmp_path / "absent.pth")
    assert code == 1 and "is a file, not a folder" in err and "no model" not in err


def test_full_disk_stops_a_folder_run_and_keeps_what_was_written(cli, tmp_path, tiny_student, monkeypatch) -> None:
    for i in range(4):
        write_image(tmp_path / "in" / f"{i}.png", rgb(16, 16, i))
    import aprrd_cli.data.images as images

    real = images._write_png
    calls = []

    def fill_up(tmp: Path, arr: np.ndarray, chunks: bytes = b"") -> None:
        calls.append(tmp)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(tmp, arr, chunks)

    monkeypatch.setattr(images, "_write_png", fill_up)
    code, _, err = cli("denoise", tmp_path / "in", tmp_path / "out", "-m", tiny_student, "--device", "cpu")
    assert code == 1 and len(calls) == 3  # stopped at the first failure, not one error per image
    assert "No space left on device" in flat(err) and "2 image(s) written before it are kept" in flat(err)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "1.png"]  # no .part


def test_one_line_for_library_warnings(cli, tmp_path, tiny_student, monkeypatch) -> None:
    import warnings

    import aprrd_cli.denoise as cmd  # where the command's reading happens (read_checked, denoise_file)

    real = cmd.read_image

    def noisy_read(path):
        warnings.warn("first line\nsecond line [x]", UserWarning, stacklevel=1)
        return real(path)

    monkeypatch.setattr(cmd, "read_image", noisy_read)
    write_image(tmp_path / "a.png", rgb(8, 8))
    code, _, err = cli("denoise", tmp_path / "a.png", tmp_path / "b.png", "-m", tiny_student, "--device", "cpu")
    assert code == 0
    assert "warning: first line" in err and "second line" not in err and "UserWarning" not in err


# ---------------------------------------------------------------- values outside [0, 1]


def test_prepare_warns_when_float_photos_are_clipped(cli, tmp_path: Path) -> None:
    a = np.random.default_rng(0).random((40, 40, 3)).astype(np.float32) * 2 - 0.5
    (tmp_path / "ph").mkdir()
    tifffile.imwrite(tmp_path / "ph" / "f.tif", a, photometric="rgb")
    write_image(tmp_path / "ph" / "small.png", rgb(20, 40))
    code, out, err = cli("prepare-data", tmp_path / "ph", "--out", tmp_path / "prep")
    clipped = int(np.count_nonzero((a < 0) | (a > 1)))
    assert code == 0 and f"{clipped} values outside [0, 1] were clipped" in flat(err)
    assert "smaller than the 32-pixel minimum patch" in flat(err)


def test_prepare_warns_when_dnd_crops_are_clipped(tmp_path: Path, capsys) -> None:
    from aprrd_cli.data.prepare import prepare
    from tests.helpers import write_dnd

    img = np.full((20, 24, 3), 0.5, np.float32)
    img[0, 0, 0], img[1, 1, 1] = 1.5, -0.25
    write_dnd(tmp_path / "root", [img], [np.array([[1, 1, 6, 8]])])
    (r,) = prepare(tmp_path / "root", tmp_path / "prep")
    assert r.prepared == 1 and "2 values of the DND crops outside [0, 1] were clipped" in flat(capsys.readouterr().err)
    arr = np.load(tmp_path / "prep" / "dnd" / "noisy.npy")
    assert arr.min() == 0.0 and arr.max() == 1.0


def test_evaluate_warns_when_float_pairs_are_clipped(tmp_path: Path, capsys) -> None:
    from aprrd_cli.data.pairs import load_pairs

    a = np.full((16, 16, 3), 0.5, np.float32)
    a[0, 0] = 2.0
    (tmp_path / "p" / "noisy").mkdir(parents=True)
    tifffile.imwrite(tmp_path / "p" / "noisy" / "a.tif", a, photometric="rgb")
    write_image(tmp_path / "p" / "gt" / "a.tif", rgb(16, 16))
    ((_, noisy, _),) = load_pairs(tmp_path / "p")
    assert noisy[0, 0].tolist() == [255, 255, 255]
    assert "3 values outside [0, 1] were clipped" in flat(capsys.readouterr().err)


def test_prepare_removes_what_a_kill_left(tmp_path: Path) -> None:
    from aprrd_cli.data.prepare import prepare

    write_image(tmp_path / "ph" / "a.png", rgb(40, 40))
    (tmp_path / "prep" / "train").mkdir(parents=True)
    (tmp_path / "prep" / "dnd").mkdir()
    left = [tmp_path / "prep" / "train" / ".a.npy.k2j.npy.part", tmp_path / "prep" / "dnd" / ".noisy.npy.x.npy.part"]
    for p in left:
        p.write_bytes(b"half an array")
    prepare(tmp_path / "ph", tmp_path / "prep")
    assert not any(p.exists() for p in left) and (tmp_path / "prep" / "train" / "a.npy").exists()


# ---------------------------------------------------------------- bad dataset files


def _val(root: Path, noisy: object, gt: object) -> None:
    import scipy.io

    d = root / "SIDD_Validation_sRGB"
    d.mkdir(parents=True)
    for stem, value in (("ValidationNoisyBlocksSrgb", noisy), ("ValidationGtBlocksSrgb", gt)):
        if isinstance(value, bytes):
            (d / f"{stem}.mat").write_bytes(value)
        else:
            scipy.io.savemat(d / f"{stem}.mat", {stem: value})


def _blocks(*shape: int, dtype=np.uint8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 200, shape).astype(dtype)


IMG = np.random.default_rng(1).random((20, 24, 3)).astype(np.float32)


def _dnd(root: Path, boxes: list | None = None, image: np.ndarray | None = None, truncate: bool = False) -> None:
    from tests.helpers import write_dnd

    write_dnd(root, [IMG if image is None else image], [np.array(boxes or [[1, 1, 6, 8], [15, 17, 20, 24]])])
    if truncate:
        f = root / "dnd_2017" / "images_srgb" / "0001.mat"
        f.write_bytes(f.read_bytes()[:3000])


BAD_TREES = {
    "val-wrong-dtype": (lambda r: _val(r, _blocks(2, 3, 16, 16, 3, dtype=np.float64), _blocks(2, 3, 16, 16, 3)),
                        "is float64; expected uint8"),
    "val-grey-blocks": (lambda r: _val(r, _blocks(2, 3, 16, 16), _blocks(2, 3, 16, 16)), "expected [n_images"),
    "val-zero-blocks": (lambda r: _val(r, _blocks(2, 0, 16, 16, 3), _blocks(2, 0, 16, 16, 3)), "expected [n_images"),
    "val-gt-mismatch": (lambda r: _val(r, _blocks(2, 3, 16, 16, 3), _blocks(2, 3, 16, 12, 3)), "they must match"),
    "val-random-bytes": (lambda r: _val(r, np.random.default_rng(2).bytes(4000), _blocks(2, 3, 16, 16, 3)),
                         "not a readable MATLAB file"),
    "val-truncated-header": (lambda r: _val(r, b"MATLAB 5.0 MAT-file" + b"\0" * 100, _blocks(2, 3, 16, 16, 3)),
                             "not a readable MATLAB file"),
    "val-cell": (lambda r: _val(r, np.array([[_blocks(16, 16, 3)]], dtype=object), _blocks(2, 3, 16, 16, 3)),
                 "expected uint8"),
    "dnd-box-outside": (lambda r: _dnd(r, boxes=[[1, 1, 6, 8], [15, 17, 21, 24]]), "lies outside the 20 x 24 image"),
    "dnd-box-zero": (lambda r: _dnd(r, boxes=[[0, 1, 5, 8], [15, 17, 20, 24]]), "lies outside"),
    "dnd-box-huge": (lambda r: _dnd(r, boxes=[[1, 1, 6e12, 8], [15, 17, 20, 24]]), "lies outside"),
    "dnd-box-sizes": (lambda r: _dnd(r, boxes=[[1, 1, 6, 8], [15, 17, 20, 23]]), "several sizes"),
    "dnd-box-fraction": (lambda r: _dnd(r, boxes=[[1, 1, 6, 8.5], [15, 17, 20, 24]]), "not whole pixel coordinates"),
    "dnd-box-width": (lambda r: _dnd(r, boxes=[[1, 1, 6]]), "expected n_boxes x 4"),
    "dnd-image-2d": (lambda r: _dnd(r, image=IMG[:, :, 0]), "expected H x W x 3"),
    "dnd-image-integer": (lambda r: _dnd(r, image=(IMG * 255).astype(np.uint8)), "expected float sRGB"),
    "dnd-image-nan": (lambda r: _dnd(r, image=np.where(IMG > 0.5, np.nan, IMG).astype(np.float32)), "NaN or infinite"),
    "dnd-image-truncated": (lambda r: _dnd(r, truncate=True), "damaged or truncated"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_TREES))
def test_bad_dataset_files_are_reported_and_nothing_is_visible(cli, tmp_path: Path, case: str) -> None:
    root, prep = tmp_path / "root", tmp_path / "prep"
    build, phrase = BAD_TREES[case]
    build(root)
    code, out, err = cli("prepare-data", root, "--out", prep)
    skipped = [ln for ln in out.splitlines() if ln.startswith("skipped")]
    assert code == 1 and len(skipped) == 1 and phrase in skipped[0], out + err
    assert "Traceback" not in out + err
    assert not (prep / "sidd-val" / "meta.json").exists() and not (prep / "dnd" / "meta.json").exists()
    assert not [p for p in prep.rglob("*") if p.name.endswith(".part")]


def test_bad_photos_are_reported_and_the_good_ones_prepared(cli, tmp_path: Path) -> None:
    ph = tmp_path / "ph"
    write_image(ph / "ok.png", rgb(40, 40))
    write_image(ph / "grey.png", rgb(40, 40)[:, :, :1])
    nan = np.full((40, 40, 3), 0.5, np.float32)
    nan[0, 0, 0] = np.nan
    tifffile.imwrite(ph / "nan.tif", nan, photometric="rgb")
    (ph / "empty.jpg").write_bytes(b"")
    (ph / "junk.png").write_bytes(b"junk")
    code, out, err = cli("prepare-data", ph, "--out", tmp_path / "prep")
    text = flat(out)
    assert code == 1 and text.count("skipped [folder]") == 3
    for phrase in ("NaN or infinite", "is empty", "is not a PNG, TIFF, JPEG, HEIC, WebP or AVIF"):
        assert phrase in text
    assert text.count("expected") <= 3  # once a line at most: the reason is not followed by a second 'expected'
    from aprrd_cli.data.store import open_train_store

    assert open_train_store(tmp_path / "prep").names == ["grey", "ok"]  # grey photos are prepared as RGB


def test_skip_existing_continues_and_leaves_finished_outputs(cli, tmp_path: Path, tiny_student) -> None:
    for i in range(3):
        write_image(tmp_path / "in" / f"{i}.png", rgb(16, 16, i))
    write_image(tmp_path / "out" / "1.png", rgb(4, 4))  # finished by an earlier, interrupted run
    before = (tmp_path / "out" / "1.png").stat().st_mtime_ns
    args = ("-m", tiny_student, "--device", "cpu", "--skip-existing")
    code, _, err = cli("denoise", tmp_path / "in", tmp_path / "out", *args)
    assert code == 0 and "denoised 2 images" in err and "1 already there" in err
    assert (tmp_path / "out" / "1.png").stat().st_mtime_ns == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "1.png", "2.png"]
    code, _, err = cli("denoise", tmp_path / "in" / "0.png", tmp_path / "out" / "0.png", *args)
    assert code == 0 and "nothing to do" in err
