"""Denoised photos keep what they are: orientation, colour profile, camera data; nothing is dropped silently.

Most CLI tests replace the network by the identity (the network is not under test here), so a
marked corner and the pixel values can be followed from the input file to the output file.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms, ImageOps
from PIL.TiffImagePlugin import IFDRational

from aprrd_cli.data import exif as exifmod
from aprrd_cli.data.images import read_image, write_image
from aprrd_cli.data.tensors import to_float
from aprrd_cli.errors import InputError

MAKE, MODEL, DATETIME = "Canon", "EOS R5", "2024:05:06 07:08:09"


@pytest.fixture
def identity(monkeypatch) -> None:
    """The denoiser returns its input: what reaches the output file is what was read."""
    from aprrd_cli.inference import Denoiser

    monkeypatch.setattr(Denoiser, "__call__", lambda self, x, on_tile=None: x.clone())


@pytest.fixture(scope="module")
def icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def camera_exif(orientation: int = 6, endian: str = "<", size: tuple[int, int] | None = None) -> bytes:
    """A TIFF-structured EXIF block (no ``Exif\\0\\0``) with IFD0, Exif and GPS entries."""
    ex = Image.Exif()
    ex.endian = endian
    ex[274], ex[271], ex[272], ex[306] = orientation, MAKE, MODEL, DATETIME
    sub = ex.get_ifd(0x8769)
    sub[0x829A] = IFDRational(1, 250)  # ExposureTime
    sub[0x8827] = 400  # ISO
    if size is not None:
        sub[0xA002], sub[0xA003] = size  # PixelXDimension, PixelYDimension
    gps = ex.get_ifd(0x8825)
    gps[1], gps[2] = "N", (IFDRational(52), IFDRational(30), IFDRational(0))
    return ex.tobytes()[6:]


def marked(h: int = 48, w: int = 64) -> np.ndarray:
    """Grey, with a red block in the stored top-left corner."""
    a = np.full((h, w, 3), 128, np.uint8)
    a[:8, :8] = (255, 0, 0)
    return a


def save_jpeg(path: Path, arr: np.ndarray, exif: bytes | None = None, icc: bytes | None = None) -> Path:
    extra = {"exif": b"Exif\x00\x00" + exif} if exif else {}
    if icc:
        extra["icc_profile"] = icc
    Image.fromarray(arr).save(path, quality=100, subsampling=0, **extra)
    return path


def pillow_exif(path: Path) -> Image.Exif:
    """The EXIF as Pillow reads it, sub-IFDs loaded while the file is open (TIFF reads them lazily)."""
    with Image.open(path) as im:
        ex = im.getexif()
        ex.get_ifd(0x8769), ex.get_ifd(0x8825)
        return ex


def warnings_about(err: str, path: Path) -> list[str]:
    flat = " ".join(err.split())  # rich may wrap a long line on a narrow terminal
    return [w for w in flat.split("warning:")[1:] if str(path) in " ".join(w.split())]


# ---------------------------------------------------------------- orientation on reading


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_reads_as_displayed(tmp_path: Path, orientation: int) -> None:
    """JPEG and PNG (eXIf) against Pillow's exif_transpose; TIFF (tag 274) against the same pixels."""
    a = np.random.default_rng(orientation).integers(0, 256, (7, 11, 3), dtype=np.uint8)
    block = camera_exif(orientation)
    Image.fromarray(a).save(tmp_path / "o.png", exif=b"Exif\x00\x00" + block)
    want = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")))
    got, info = read_image(tmp_path / "o.png")
    assert np.array_equal(got, want) and info.orientation == orientation

    save_jpeg(tmp_path / "o.jpg", a, block)
    got, _ = read_image(tmp_path / "o.jpg")
    assert np.array_equal(got, np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.jpg"))))

    tifffile.imwrite(tmp_path / "o.tif", a, photometric="rgb", extratags=[(274, 3, 1, orientation, True)])
    got, info = read_image(tmp_path / "o.tif")
    assert np.array_equal(got, want) and info.orientation == orientation


def test_sixteen_bit_colour_png_orientation_and_icc(tmp_path: Path, icc: bytes) -> None:
    """16-bit colour PNG is decoded by OpenCV; its eXIf and iCCP are still read (by Pillow, no decode)."""
    a = (np.random.default_rng(0).random((6, 10, 4)) * 65535).astype(np.uint16)
    write_image(tmp_path / "x.png", a, icc_profile=icc, exif=camera_exif(6))
    got, info = read_image(tmp_path / "x.png")
    assert got.dtype == np.uint16 and np.array_equal(got, np.rot90(a, -1))
    assert info.icc_profile == icc and info.orientation == 6
    assert exifmod.orientation(info.exif) == 1


def test_exif_is_normalised_orientation_size_and_thumbnail(tmp_path: Path) -> None:
    """Orientation 1, PixelX/YDimension of the displayed image, and IFD1 (a thumbnail of the
    noisy input, maybe in the old orientation) removed; the rest byte for byte."""
    save_jpeg(tmp_path / "t.jpg", marked(), camera_exif(8, size=(64, 48)))
    arr, info = read_image(tmp_path / "t.jpg")
    assert arr.shape == (64, 48, 3) and info.orientation == 8
    back = Image.Exif()
    back.load(b"Exif\x00\x00" + info.exif)
    assert back[274] == 1 and back[271] == MAKE and back[306] == DATETIME
    assert (back.get_ifd(0x8769)[0xA002], back.get_ifd(0x8769)[0xA003]) == (48, 64)

    block = bytearray(camera_exif(6))
    _, ifd0 = exifmod.parse(bytes(block))
    ifd1_at = len(block)  # append IFD1 (one entry: Compression = JPEG) and link it from IFD0
    block += struct.pack("<H", 1) + struct.pack("<HHIHH", 259, 3, 1, 6, 0) + b"\0\0\0\0"
    block[ifd0.next_pos : ifd0.next_pos + 4] = struct.pack("<I", ifd1_at)
    out = exifmod.normalise(bytes(block), 10, 10)
    assert out[ifd0.next_pos : ifd0.next_pos + 4] == b"\0\0\0\0" and len(out) == ifd1_at  # IFD1 cut off
    changed = [i for i in range(len(out)) if out[i] != block[i]]
    assert all(
        ifd0.next_pos <= i < ifd0.next_pos + 4 or ifd0.entries[274].pos + 8 <= i < ifd0.entries[274].pos + 10
        for i in changed
    )


def _with_thumbnail(block: bytes, thumb: bytes, then: bytes = b"") -> tuple[bytes, int]:
    """``block`` with IFD1 (a JPEG thumbnail of ``thumb``) appended and linked, ``then`` after the picture."""
    buf = bytearray(block)
    _, ifd0 = exifmod.parse(block)
    at = len(buf)
    data_at = at + 2 + 2 * 12 + 4
    buf += struct.pack("<H", 2) + struct.pack("<HHII", 513, 4, 1, data_at) + struct.pack("<HHII", 514, 4, 1, len(thumb))
    buf += b"\0\0\0\0" + thumb + then
    buf[ifd0.next_pos : ifd0.next_pos + 4] = struct.pack("<I", at)
    return bytes(buf), at


def test_thumbnail_bytes_are_removed_not_just_unlinked() -> None:
    """A camera's 5 KB preview of the noisy photo must not travel inside the output's EXIF."""
    thumb = b"\xff\xd8\xff\xdb" + bytes(range(256)) * 20 + b"\xff\xd9"
    block, at = _with_thumbnail(camera_exif(6), thumb)
    out = exifmod.normalise(block, 10, 10)
    assert thumb not in out and len(out) == at and exifmod.orientation(out) == 1
    # something the IFD0 points at after the thumbnail (an odd layout): the thumbnail is zeroed in place
    _, ifd0 = exifmod.parse(camera_exif(6))
    tail = b"CAMERA-NOTES"
    block, at = _with_thumbnail(camera_exif(6), thumb, tail)
    buf = bytearray(block)
    make = ifd0.entries[271]  # repoint Make (ASCII) at the bytes after the thumbnail
    buf[make.pos + 4 : make.pos + 12] = struct.pack("<II", len(tail), len(block) - len(tail))
    out = exifmod.normalise(bytes(buf), 10, 10)
    assert len(out) == len(buf) and thumb not in out and out[at + 30 : at + 30 + len(thumb)] == bytes(len(thumb))
    assert out.endswith(tail)


# ---------------------------------------------------------------- carried through `aprrd denoise`


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tif"])
def test_rotated_jpeg_keeps_display_profile_and_camera_data(cli, tmp_path, tiny_student, identity, icc, suffix) -> None:
    src = save_jpeg(tmp_path / "cam.jpg", marked(), camera_exif(6, size=(64, 48)), icc)
    out = tmp_path / f"out{suffix}"
    code, _, err = cli("denoise", "--model", tiny_student, src, out)
    assert code == 0, err
    assert "warning" not in err
    # stored upright now: any viewer, with or without EXIF support, shows it turned as the input was
    with Image.open(out) as im:
        stored = np.asarray(im.convert("RGB"))
        assert im.info.get("icc_profile") == icc
    assert stored.shape == (64, 48, 3)
    assert stored[:8, -8:, 0].mean() > 200 and stored[:8, -8:, 1].mean() < 60  # the mark, displayed top-right
    assert abs(stored[-8:, :8].astype(float).mean() - 128) < 6
    ex = pillow_exif(out)
    assert ex.get(274, 1) == 1 and ex[271] == MAKE and ex[272] == MODEL and ex[306] == DATETIME
    sub = ex.get_ifd(0x8769)
    assert float(sub[0x829A]) == pytest.approx(1 / 250) and sub[0x8827] == 400
    assert (sub[0xA002], sub[0xA003]) == (48, 64)
    assert ex.get_ifd(0x8825)[1] == "N"
    got, info = read_image(out)
    assert got.shape == (64, 48, 3) and info.orientation == 1 and info.icc_profile == icc


def test_tiff_output_holds_exif_for_tiff_readers(cli, tmp_path, tiny_student, identity, icc) -> None:
    """tifffile, an independent TIFF reader, sees IFD0 tags, the Exif and GPS IFDs and the profile;
    big-endian EXIF gives a big-endian TIFF whose 16-bit pixels are intact."""
    a = (np.random.default_rng(1).random((20, 30, 3)) * 65535).astype(np.uint16)
    src = tmp_path / "in.png"
    write_image(src, a, icc_profile=icc, exif=camera_exif(3, endian=">"))
    code, _, err = cli("denoise", "--model", tiny_student, src, tmp_path / "o.tif")
    assert code == 0, err
    with tifffile.TiffFile(tmp_path / "o.tif") as tf:
        page = tf.pages[0]
        assert tf.byteorder == ">" and page.dtype == np.uint16
        assert page.tags["Make"].value == MAKE and page.tags["Model"].value == MODEL
        assert page.tags["ExifTag"].value["ExposureTime"] == (1, 250)
        assert page.tags["GPSTag"].value["GPSLatitudeRef"] == "N"
        assert page.iccprofile == icc
        assert np.abs(page.asarray().astype(int) - a[::-1, ::-1]).max() <= 1


def test_tiff_camera_data_travels_to_jpeg_and_png(cli, tmp_path, tiny_student, identity) -> None:
    a = marked(20, 30)
    tags = [(271, "s", 0, MAKE, True), (272, "s", 0, MODEL, True), (274, 3, 1, 8, True)]
    tifffile.imwrite(tmp_path / "in.tif", a, photometric="rgb", datetime=DATETIME, extratags=tags)
    for suffix in (".jpg", ".png"):
        code, _, err = cli("denoise", "--model", tiny_student, tmp_path / "in.tif", tmp_path / f"o{suffix}")
        assert code == 0, err
        ex = pillow_exif(tmp_path / f"o{suffix}")
        assert (ex[271], ex[272], ex[306]) == (MAKE, MODEL, DATETIME) and ex.get(274, 1) == 1
        assert 305 not in ex  # tifffile's own "Software: tifffile.py" is not camera data
        got, _ = read_image(tmp_path / f"o{suffix}")
        assert got.shape == (30, 20, 3) and got[-8:, :8, 0].mean() > 200  # orientation 8: mark at bottom-left


def test_files_without_metadata_get_none(tmp_path: Path) -> None:
    """A plain TIFF (tifffile's software tag, its shape description, 1/1 resolution) has no camera data."""
    write_image(tmp_path / "p.tif", marked(8, 8))
    write_image(tmp_path / "p.png", marked(8, 8))
    for name in ("p.tif", "p.png"):
        _, info = read_image(tmp_path / name)
        assert info.exif is None and info.icc_profile is None and info.orientation == 1


def test_png_metadata_chunks_are_well_formed(tmp_path: Path, icc: bytes) -> None:
    """iCCP and eXIf come before IDAT with correct CRCs; iCCP holds name, NUL, method 0, zlib data."""
    block = camera_exif(1)
    for shape, dtype in (((5, 6, 3), np.uint8), ((5, 6, 2), np.uint16), ((5, 6, 2), np.uint8), ((5, 6, 1), np.uint16)):
        p = tmp_path / "c.png"
        write_image(p, np.ones(shape, dtype), icc_profile=icc, exif=block)
        data, pos, seen = p.read_bytes(), 8, []
        while pos < len(data):
            (n,) = struct.unpack(">I", data[pos : pos + 4])
            kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
            assert struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])[0] == zlib.crc32(kind + body)
            seen.append(kind)
            if kind == b"iCCP":
                name, rest = body.split(b"\0", 1)
                assert 1 <= len(name) <= 79 and rest[0] == 0 and zlib.decompress(rest[1:]) == icc
            if kind == b"eXIf":
                assert body == block
            pos += 12 + n
        assert seen.index(b"iCCP") < seen.index(b"IDAT") and seen.index(b"eXIf") < seen.index(b"IDAT")
        assert seen[0] == b"IHDR" and seen[-1] == b"IEND"
        got, info = read_image(p)
        assert np.array_equal(got, np.ones(shape, dtype)) and info.icc_profile == icc and info.exif == block


# ---------------------------------------------------------------- nothing dropped silently


def test_alpha_into_jpeg_is_one_warning(cli, tmp_path, tiny_student) -> None:
    src = tmp_path / "rgba.png"
    write_image(src, np.random.default_rng(0).integers(0, 256, (16, 20, 4), dtype=np.uint8))
    code, _, err = cli("denoise", "--model", tiny_student, src, tmp_path / "o.jpg")
    assert code == 0, err
    said = warnings_about(err, src)
    assert len(said) == 1 and "alpha" in said[0] and "o.jpg" in said[0]
    assert read_image(tmp_path / "o.jpg")[0].shape == (16, 20, 3)
    code, _, err = cli("denoise", "--model", tiny_student, src, tmp_path / "o.png")
    assert code == 0 and "warning" not in err  # PNG keeps it


def test_animated_png_and_multipage_tiff_warn_once(cli, tmp_path, tiny_student) -> None:
    frames = [Image.fromarray(np.full((12, 14, 3), v, np.uint8)) for v in (10, 120, 240)]
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:], duration=100)
    tifffile.imwrite(tmp_path / "pages.tif", np.zeros((2, 12, 14, 3), np.uint8), photometric="rgb")
    with tifffile.TiffWriter(tmp_path / "preview.tif") as tw:  # a full page and its reduced-resolution preview
        tw.write(np.zeros((12, 14, 3), np.uint8), photometric="rgb")
        tw.write(np.zeros((6, 7, 3), np.uint8), photometric="rgb", subfiletype=1)
    for name, count in (("anim.png", "3 frames"), ("pages.tif", "2 pages"), ("preview.tif", None)):
        code, _, err = cli("denoise", "--model", tiny_student, tmp_path / name, tmp_path / f"out_{name}")
        assert code == 0, err
        said = warnings_about(err, tmp_path / name)
        if count is None:
            assert said == []
        else:
            assert len(said) == 1 and count in said[0] and "only the first" in said[0]
    assert read_image(tmp_path / "out_anim.png")[0].mean() == pytest.approx(10, abs=30)


def test_cmyk_profile_is_not_put_on_rgb_pixels(tmp_path: Path, icc: bytes, capsys) -> None:
    cmyk_icc = icc[:16] + b"CMYK" + icc[20:]
    Image.new("CMYK", (8, 8), (0, 50, 100, 0)).save(tmp_path / "c.jpg", icc_profile=cmyk_icc)
    arr, info = read_image(tmp_path / "c.jpg")
    assert arr.shape == (8, 8, 3) and info.icc_profile is None
    said = warnings_about(capsys.readouterr().err, tmp_path / "c.jpg")
    assert len(said) == 1 and "CMYK ICC profile" in said[0]


def test_damaged_exif_is_said_and_the_image_still_reads(tmp_path: Path, capsys) -> None:
    save_jpeg(tmp_path / "d.jpg", marked(), b"MM\x00*\x00\x00\x00\x08\xff\xff")
    arr, info = read_image(tmp_path / "d.jpg")
    assert arr.shape == (48, 64, 3) and info.exif is None and info.orientation == 1
    said = warnings_about(capsys.readouterr().err, tmp_path / "d.jpg")
    assert len(said) == 1 and "EXIF data is damaged" in said[0]


def test_exif_too_long_for_jpeg_is_said(tmp_path: Path, capsys) -> None:
    ex = Image.Exif()
    ex[271] = MAKE
    ex.get_ifd(0x8769)[0x927C] = b"\x01" * 70_000  # a huge maker note
    block = ex.tobytes()[6:]
    write_image(tmp_path / "big.png", marked(8, 8), exif=block)
    assert read_image(tmp_path / "big.png")[1].exif == block  # PNG takes any size
    write_image(tmp_path / "big.jpg", marked(8, 8), exif=block)
    said = warnings_about(capsys.readouterr().err, tmp_path / "big.jpg")
    assert len(said) == 1 and "64 KB" in said[0]
    assert 271 not in pillow_exif(tmp_path / "big.jpg")


# ---------------------------------------------------------------- float TIFFs on the wrong scale


def test_float_tiff_in_0_255_is_refused_with_what_was_found(cli, tmp_path, tiny_student) -> None:
    a = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.float32)
    write_image(tmp_path / "f.tif", a)
    code, _, err = cli("denoise", "--model", tiny_student, tmp_path / "f.tif", tmp_path / "o" / "f.tif")
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 1 and "Traceback" not in err
    line = " ".join(lines[-1].split())
    assert "values up to 25" in line and "99th percentile" in line and "0..255" in line
    assert "must lie in [0, 1]" in line and "re-export" in line and str(tmp_path / "f.tif") in line
    assert not (tmp_path / "o" / "f.tif").exists()


@pytest.mark.parametrize("value", [2.0, -1.0])
def test_float_scale_threshold_is_one_percent_outside_minus_half_to_one_and_a_half(value: float) -> None:
    a = np.full((100, 100, 1), 0.5, np.float32)
    a.flat[:99] = value  # 0.99%: small overshoots, clipped and counted
    f, clipped = to_float(a, "x.tif")
    assert clipped == 99 and f.min() >= 0 and f.max() <= 1
    a.flat[:100] = value  # 1%: another scale, refused
    with pytest.raises(InputError, match="must lie in \\[0, 1\\]") as e:
        to_float(a, "x.tif")
    assert "x.tif" in str(e.value) and ("up to 2" in str(e.value) or "down to -1" in str(e.value))
    a[:] = 1.5  # the limits themselves are overshoots, not another scale
    assert to_float(a)[1] == a.size


def test_pairs_are_compared_as_displayed(tmp_path: Path) -> None:
    """evaluate's pairs: a noisy JPEG stored turned (orientation 6) matches an upright ground truth."""
    from aprrd_cli.data.pairs import load_pairs

    gt = np.random.default_rng(0).integers(0, 256, (40, 24, 3), dtype=np.uint8)
    write_image(tmp_path / "noisy" / "a.png", np.rot90(gt, 1).copy(), exif=camera_exif(6))
    write_image(tmp_path / "gt" / "a.png", gt)
    (pair,) = load_pairs(tmp_path)
    assert np.array_equal(pair[1], pair[2])


# ---------------------------------------------------------------- --format and --quality


def test_format_option_converts_a_folder_and_keeps_bit_depth_rules(cli, tmp_path, tiny_student, icc) -> None:
    src = tmp_path / "in"
    write_image(src / "a.png", marked(16, 16), icc_profile=icc, exif=camera_exif(1))
    write_image(src / "deep" / "b.tif", marked(16, 16).astype(np.uint16) * 257)
    save_jpeg(src / "c.jpg", marked(16, 16))
    code, _, err = cli("denoise", "--model", tiny_student, "--format", "jpg", src, tmp_path / "j")
    assert code == 0, err
    assert sorted(str(p.relative_to(tmp_path / "j")) for p in (tmp_path / "j").rglob("*.*")) == [
        "a.jpg",
        "c.jpg",
        "deep/b.jpg",
    ]
    assert read_image(tmp_path / "j" / "deep" / "b.jpg")[1].dtype == "uint8"  # 16-bit to JPEG: 8-bit
    assert read_image(tmp_path / "j" / "a.jpg")[1].icc_profile == icc
    assert pillow_exif(tmp_path / "j" / "a.jpg")[271] == MAKE
    code, _, err = cli("denoise", "--model", tiny_student, "--format", "tif", src, tmp_path / "t")
    assert code == 0, err
    assert read_image(tmp_path / "t" / "deep" / "b.tif")[1].dtype == "uint16"
    assert read_image(tmp_path / "t" / "c.tif")[1].dtype == "uint8"


def test_format_option_refuses_two_inputs_for_one_output(cli, tmp_path, tiny_student) -> None:
    write_image(tmp_path / "in" / "a.png", marked(8, 8))
    write_image(tmp_path / "in" / "a.tif", marked(8, 8))
    code, _, err = cli("denoise", "--model", tiny_student, "--format", "jpg", tmp_path / "in", tmp_path / "out")
    assert code == 1 and "would both be written to" in err and "a.jpg" in err
    assert not (tmp_path / "out").exists()


def test_format_option_for_one_image(cli, tmp_path, tiny_student) -> None:
    write_image(tmp_path / "x.png", marked(8, 8))
    code, _, err = cli("denoise", "--model", tiny_student, "--format", "png", tmp_path / "x.png", tmp_path / "o.jpg")
    assert code == 2 and "OUTPUT's suffix sets the format" in " ".join(err.split()) and "o.png" in err
    assert not (tmp_path / "o.jpg").exists()
    code, _, err = cli("denoise", "--model", tiny_student, "--format", "jpg", tmp_path / "x.png", tmp_path / "o.jpg")
    assert code == 0, err
    (tmp_path / "folder").mkdir()
    code, _, err = cli("denoise", "--model", tiny_student, "--format", "tif", tmp_path / "x.png", tmp_path / "folder")
    assert code == 0 and (tmp_path / "folder" / "x.tif").is_file()
    code, _, err = cli("denoise", "--model", tiny_student, "--format", "bmp", tmp_path / "x.png", tmp_path / "folder")
    assert code == 2 and "--format must be one of png, tif, jpg, heic, webp, avif" in err


def test_quality_option(cli, tmp_path, tiny_student, identity) -> None:
    src = tmp_path / "x.png"
    write_image(src, np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    sizes = {}
    for q in (10, 95):
        code, _, err = cli("denoise", "--model", tiny_student, "--quality", q, src, tmp_path / f"q{q}.jpg")
        assert code == 0, err
        sizes[q] = (tmp_path / f"q{q}.jpg").stat().st_size
    code, _, err = cli("denoise", "--model", tiny_student, src, tmp_path / "default.jpg")
    assert code == 0 and (tmp_path / "default.jpg").read_bytes() == (tmp_path / "q95.jpg").read_bytes()
    assert sizes[10] < sizes[95] / 2
    code, _, err = cli("denoise", "--model", tiny_student, "--quality", "0", src, tmp_path / "o.jpg")
    assert code == 2 and not (tmp_path / "o.jpg").exists()
    code, _, err = cli("denoise", "--model", tiny_student, "--quality", "80", src, tmp_path / "o.png")
    assert code == 0 and "--quality applies to JPEG, HEIC, WebP and AVIF outputs only" in err
    import typer

    from aprrd_cli.app import app

    helps = {p.name: p.help for p in typer.main.get_command(app).commands["denoise"].params}
    assert "default 95" in helps["quality"] and "png" not in helps["quality"]
    assert "keeps its input's" in helps["out_format"] and "OUTPUT's suffix decides" in helps["out_format"]
