"""HEIC, WebP and AVIF in and out; XMP and IPTC carried; thumbnails and tool stamps left behind.

Inputs are made by the libraries people's files come from (pillow-heif for an iPhone-like HEIC,
Pillow for JPEG, WebP and AVIF, tifffile for TIFF); the network is replaced by the identity, so
what reaches an output is what was read. The bytes are checked here in every case; where exiftool
is installed, a second test reads the outputs with it as a photo manager would.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from aprrd_cli.data import exif as exifmod
from aprrd_cli.data import formats
from aprrd_cli.data.images import read_image, write_image
from aprrd_cli.errors import InputError
from tests.test_photo_metadata import camera_exif, identity, marked, pillow_exif, warnings_about  # noqa: F401

pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif is a runtime dependency: pip install -e .")

OUTPUTS = (".jpg", ".png", ".tif", ".heic", ".webp", ".avif")
XMP = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/"'
    ' xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:exif="http://ns.adobe.com/exif/1.0/"'
    ' xmp:Rating="5" tiff:Orientation="6" exif:PixelXDimension="64" exif:PixelYDimension="48">'
    "<dc:subject><rdf:Bag><rdf:li>harbour</rdf:li><rdf:li>night</rdf:li></rdf:Bag></dc:subject>"
    "<tiff:ImageWidth>64</tiff:ImageWidth></rdf:Description></rdf:RDF></x:xmpmeta>"
    '<?xpacket end="w"?>'
).encode()


def iim(record: int, dataset: int, value: bytes) -> bytes:
    return struct.pack(">BBBH", 0x1C, record, dataset, len(value)) + value


IPTC = iim(2, 0, b"\x00\x04") + iim(2, 25, b"harbour") + iim(2, 25, b"night") + iim(2, 90, b"Hamburg")


def display_p3_icc() -> bytes:
    """A v2 RGB display profile whose description reads 'Display P3', as iPhones embed."""
    desc = b"desc" + bytes(4) + struct.pack(">I", 11) + b"Display P3\x00" + bytes(4 + 2 + 1 + 67)
    xyz = b"XYZ " + bytes(4) + struct.pack(">iii", 63190, 65536, 54061)
    tags = [(b"desc", desc), (b"wtpt", xyz)]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data + bytes(-len(data) % 4)
    size = offset + len(body)
    header = struct.pack(">I", size) + b"appl" + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ " + bytes(12) + b"acspAPPL"
    header = header.ljust(128, b"\0")
    return header + struct.pack(">I", len(tags)) + table + body


def heic_exif() -> bytes:
    """An iPhone's EXIF: orientation 6, Apple, GPS, and a thumbnail in IFD1."""
    ex = Image.Exif()
    ex[274], ex[271], ex[272] = 6, "Apple", "iPhone 15 Pro"
    from PIL.TiffImagePlugin import IFDRational

    gps = ex.get_ifd(0x8825)
    gps[1], gps[2] = "N", (IFDRational(53), IFDRational(33), IFDRational(0))
    gps[3], gps[4] = "E", (IFDRational(9), IFDRational(59), IFDRational(0))
    return ex.tobytes()


@pytest.fixture
def iphone_heic(tmp_path: Path) -> Path:
    """Stored landscape 64x48 with a red corner, shown portrait (orientation 6), Display P3, GPS, XMP."""
    a = marked(48, 64)
    heif = pillow_heif.from_bytes("RGB", (64, 48), a.tobytes())
    path = tmp_path / "IMG_0001.HEIC"
    heif.save(path, quality=-1, chroma="444", exif=heic_exif(), icc_profile=display_p3_icc(), xmp=XMP)
    return path


def file_exif(path: Path) -> Image.Exif:
    """The EXIF as the format's own library reads it (pillow-heif for HEIC, Pillow for the others)."""
    if path.suffix != ".heic":
        return pillow_exif(path)
    ex = Image.Exif()
    ex.load(pillow_heif.open_heif(path).info["exif"])
    ex.get_ifd(0x8825)
    return ex


def red_corner(arr: np.ndarray) -> str:
    """Which corner holds the red mark of ``marked``: tl, tr, bl or br."""
    h, w = arr.shape[:2]
    corners = {"tl": arr[:8, :8], "tr": arr[:8, w - 8 :], "bl": arr[h - 8 :, :8], "br": arr[h - 8 :, w - 8 :]}
    return max(corners, key=lambda k: float(corners[k][..., 0].astype(float).mean() - corners[k][..., 1].mean()))


def test_table_names_every_format_once() -> None:
    assert formats.names() == "PNG, TIFF, JPEG, HEIC, WebP or AVIF"
    assert len(formats.BY_SUFFIX) == sum(len(f.suffixes) for f in formats.FORMATS)
    assert formats.for_path(Path("x.HEIF")).name == "heic" and formats.for_path(Path("x.webp")).lossy
    with pytest.raises(InputError, match=r"use \.png, \.tif/\.tiff, \.jpg/\.jpeg, \.heic/\.heif/\.hif, \.webp, \.avif"):
        formats.for_path(Path("x.bmp"))


@pytest.mark.parametrize("suffix", [".heic", ".webp", ".avif"])
def test_new_formats_round_trip_and_are_recognised_by_content(tmp_path: Path, suffix: str) -> None:
    y, x = np.mgrid[0:32, 0:48]
    a = np.stack([40 + 3 * x, 60 + 4 * y, 120 + x + y], axis=2).astype(np.uint8)  # smooth: lossy codecs keep it
    path = tmp_path / f"x{suffix}"
    write_image(path, a, quality=95)
    got, info = read_image(path)
    assert info.format == formats.for_path(path).name and got.shape == a.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - a).mean() < 3
    renamed = path.rename(tmp_path / "mislabelled.png")  # the content decides, not the suffix
    assert read_image(renamed)[1].format == info.format
    rgba = np.concatenate([a, np.full((32, 48, 1), 77, np.uint8)], axis=2)
    write_image(tmp_path / f"a{suffix}", rgba, quality=95)
    got, info = read_image(tmp_path / f"a{suffix}")
    assert info.channels == 4 and np.abs(got[:, :, 3].astype(int) - 77).max() <= 1


def test_webp_quality_100_is_lossless(tmp_path: Path) -> None:
    a = np.random.default_rng(2).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    write_image(tmp_path / "x.webp", a, quality=100)
    assert np.array_equal(read_image(tmp_path / "x.webp")[0], a)
    assert b"VP8L" in (tmp_path / "x.webp").read_bytes()[:64]


def test_iphone_heic_is_upright_once_and_keeps_profile_and_gps(iphone_heic: Path) -> None:
    arr, info = read_image(iphone_heic)
    assert arr.shape == (64, 48, 3) and red_corner(arr) == "tr"  # turned 90 degrees clockwise, once
    assert info.icc_profile == display_p3_icc()
    assert exifmod.orientation(info.exif) == 1
    back = Image.Exif()
    back.load(b"Exif\x00\x00" + info.exif)
    assert back[271] == "Apple" and back.get_ifd(0x8825)[1] == "N"
    text = info.xmp.decode()
    assert 'tiff:Orientation="1"' in text or "tiff:Orientation" not in text
    assert 'xmp:Rating="5"' in text


@pytest.mark.usefixtures("identity")
def test_ten_bit_heic_reads_into_16_bits_and_writes_back_at_10(tmp_path: Path, cli, tiny_student) -> None:
    ten = np.random.default_rng(3).integers(0, 1024, (16, 24, 3), dtype=np.uint16)
    ten[0, 0] = 1023
    pillow_heif.from_bytes("RGB;10", (24, 16), ten.tobytes()).save(tmp_path / "ten.heic", quality=-1, chroma="444")
    arr, info = read_image(tmp_path / "ten.heic")
    assert arr.dtype == np.uint16 and info.dtype == "uint16" and arr[0, 0].max() == 65535
    stored = np.asarray(pillow_heif.open_heif(tmp_path / "ten.heic", convert_hdr_to_8bit=False, hdr_to_16bit=False))
    assert np.array_equal(arr, np.rint(stored.astype(float) * 65535 / 1023).astype(np.uint16))
    write_image(tmp_path / "again.heic", arr, quality=100)
    again = pillow_heif.open_heif(tmp_path / "again.heic", convert_hdr_to_8bit=False, hdr_to_16bit=False)
    assert again.info["bit_depth"] == 10
    code, _, err = cli("denoise", "--model", tiny_student, tmp_path / "ten.heic", tmp_path / "o.png")
    assert code == 0, err
    assert read_image(tmp_path / "o.png")[1].dtype == "uint16"  # 10 bits into 16-bit PNG, not 8
    code, _, err = cli("denoise", "--model", tiny_student, tmp_path / "ten.heic", tmp_path / "o.webp")
    assert code == 0, err  # WebP holds 8 bits: 16-bit samples go down, as into JPEG
    code, _, err = cli("denoise", "-m", tiny_student, "--bit-depth", "16", tmp_path / "ten.heic", tmp_path / "p.avif")
    assert code == 1 and "AVIF holds only 8 bits" in err and ".heic" in err


@pytest.mark.usefixtures("identity")
def test_ten_bit_avif_reads_into_16_bits(tmp_path: Path, cli, tiny_student) -> None:
    """Pillow decodes AVIF at 8 bits; a 10-bit AVIF (made by libavif through imagecodecs) keeps its depth."""
    imagecodecs = pytest.importorskip("imagecodecs", reason="imagecodecs is a runtime dependency: pip install -e .")
    ten = np.random.default_rng(4).integers(0, 1024, (16, 24, 3), dtype=np.uint16)
    ten[0, 0] = 1023
    (tmp_path / "ten.avif").write_bytes(imagecodecs.avif_encode(ten, level=100, bitspersample=10))
    arr, info = read_image(tmp_path / "ten.avif")
    assert info.format == "avif" and arr.dtype == np.uint16 and arr[0, 0].max() == 65535
    assert np.array_equal(arr, np.rint(ten.astype(float) * 65535 / 1023).astype(np.uint16))
    code, _, err = cli("denoise", "--model", tiny_student, tmp_path / "ten.avif", tmp_path / "o.png")
    assert code == 0, err
    assert read_image(tmp_path / "o.png")[1].dtype == "uint16"
    code, _, err = cli("denoise", "--model", tiny_student, tmp_path / "ten.avif", tmp_path / "o.avif")
    assert code == 0, err  # AVIF outputs are 8-bit here, as into JPEG
    assert read_image(tmp_path / "o.avif")[1].dtype == "uint8"


@pytest.mark.usefixtures("identity")
@pytest.mark.parametrize("suffix", OUTPUTS)
def test_iphone_heic_denoised_to_every_format(tmp_path, cli, tiny_student, iphone_heic, suffix) -> None:
    out = tmp_path / f"o{suffix}"
    code, _, err = cli("denoise", "--model", tiny_student, iphone_heic, out)
    assert code == 0, err
    assert not warnings_about(err, out)  # HEIC carries no IPTC: nothing to lose
    arr, info = read_image(out)
    assert arr.shape[:2] == (64, 48) and red_corner(arr) == "tr"  # upright, and no viewer turns it again
    assert info.orientation == 1 and info.icc_profile == display_p3_icc()
    ex = file_exif(out)
    assert ex.get(274, 1) == 1 and ex[271] == "Apple" and ex.get_ifd(0x8825)[1] == "N"
    text = info.xmp.decode()
    assert 'xmp:Rating="5"' in text and "<rdf:li>night</rdf:li>" in text
    assert 'tiff:Orientation="6"' not in text
    assert 'exif:PixelXDimension="48"' in text and 'exif:PixelYDimension="64"' in text


def lightroom_jpeg(path: Path, thumb: bytes) -> Path:
    """A JPEG as Lightroom exports it: EXIF with a thumbnail in IFD1, XMP in APP1, IPTC in APP13."""
    block = bytearray(camera_exif(1, size=(64, 48)))
    _, ifd0 = exifmod.parse(bytes(block))
    at = len(block)
    block += struct.pack("<HHHII", 2, 513, 4, 1, at + 30) + struct.pack("<HHII", 514, 4, 1, len(thumb)) + bytes(4)
    block += thumb
    block[ifd0.next_pos : ifd0.next_pos + 4] = struct.pack("<I", at)
    Image.fromarray(marked(48, 64)).save(path, quality=95, exif=b"Exif\x00\x00" + bytes(block))
    jpeg = path.read_bytes()
    xmp = b"http://ns.adobe.com/xap/1.0/\x00" + XMP
    res = b"Photoshop 3.0\x00" + b"8BIM" + struct.pack(">HHI", 0x0404, 0, len(IPTC)) + IPTC + bytes(len(IPTC) % 2)
    segs = struct.pack(">HH", 0xFFE1, len(xmp) + 2) + xmp + struct.pack(">HH", 0xFFED, len(res) + 2) + res
    path.write_bytes(jpeg[:2] + segs + jpeg[2:])
    return path


THUMB = b"\xff\xd8\xff\xdb" + b"NOISY-PREVIEW" * 400 + b"\xff\xd9"


def iptc_of(path: Path) -> bytes | None:
    return read_image(path)[1].iptc


@pytest.mark.usefixtures("identity")
@pytest.mark.parametrize("suffix", OUTPUTS)
def test_xmp_and_iptc_travel_and_the_thumbnail_does_not(tmp_path, cli, tiny_student, suffix) -> None:
    src = lightroom_jpeg(tmp_path / "in.jpg", THUMB)
    _, info = read_image(src)
    assert info.iptc == IPTC and b'xmp:Rating="5"' in info.xmp
    out = tmp_path / f"o{suffix}"
    code, _, err = cli("denoise", "--model", tiny_student, src, out)
    assert code == 0, err
    data = out.read_bytes()
    assert b"NOISY-PREVIEW" not in data  # the preview's bytes are gone, not only unlinked
    got = read_image(out)[1]
    assert b'xmp:Rating="5"' in got.xmp and b"<rdf:li>harbour</rdf:li>" in got.xmp
    assert b"<tiff:ImageWidth>64</tiff:ImageWidth>" in got.xmp
    said = warnings_about(err, out)
    if formats.IPTC in formats.for_path(out).metadata:
        assert got.iptc == IPTC and not said
    else:
        assert got.iptc is None and len(said) == 1 and "IPTC" in said[0] and "not carried" in said[0]


@pytest.mark.usefixtures("identity")
def test_tiff_xmp_and_iptc_tags_travel_and_tool_stamps_do_not(tmp_path, cli, tiny_student) -> None:
    tags = [(700, 1, len(XMP), XMP, True), (33723, 7, len(IPTC), IPTC, True)]
    tifffile.imwrite(tmp_path / "in.tif", marked(16, 16), photometric="rgb", extratags=tags)
    for suffix in (".jpg", ".tif"):
        code, _, err = cli("denoise", "--model", tiny_student, tmp_path / "in.tif", tmp_path / f"o{suffix}")
        assert code == 0, err
        got = read_image(tmp_path / f"o{suffix}")[1]
        assert got.iptc == IPTC and b'xmp:Rating="5"' in got.xmp
    with tifffile.TiffFile(tmp_path / "o.tif") as tf:
        tags = tf.pages[0].tags
        assert "ImageDescription" not in tags  # tifffile's {"shape": ...} would show as the caption
        assert tags["Software"].value.startswith("aprrd ")


@pytest.mark.usefixtures("identity")
def test_format_option_writes_heic_webp_avif_for_a_folder(tmp_path, cli, tiny_student) -> None:
    write_image(tmp_path / "in" / "a.png", marked(16, 16))
    write_image(tmp_path / "in" / "b.tif", marked(16, 16).astype(np.uint16) * 257)
    for fmt in ("heic", "webp", "avif"):
        code, _, err = cli("denoise", "--model", tiny_student, "--format", fmt, tmp_path / "in", tmp_path / fmt)
        assert code == 0, err
        assert sorted(p.name for p in (tmp_path / fmt).iterdir()) == [f"a.{fmt}", f"b.{fmt}"]
        want = "uint16" if fmt == "heic" else "uint8"  # HEIC keeps 16 bits (at 10), WebP/AVIF hold 8
        assert read_image(tmp_path / fmt / f"b.{fmt}")[1].dtype == want


def test_prepare_data_and_evaluate_pairs_read_the_new_formats(tmp_path, cli, iphone_heic) -> None:
    """prepare-data takes HEIC, WebP and AVIF photos upright; --pairs pairs a HEIC with its WebP namesake."""
    from aprrd_cli.data.pairs import load_pairs
    from aprrd_cli.data.store import open_train_store

    root = tmp_path / "photos"
    root.mkdir()
    shutil.copy(iphone_heic, root / "a.heic")
    write_image(root / "b.webp", marked(40, 32), quality=100)
    write_image(root / "c.avif", marked(40, 32))
    code, _, err = cli("prepare-data", root, "--out", tmp_path / "prep")
    assert code == 0, err
    store = open_train_store(tmp_path / "prep")
    assert store.names == ["a", "b", "c"]
    assert store.images[0].shape == (64, 48, 3) and red_corner(np.asarray(store.images[0])) == "tr"
    assert np.array_equal(store.images[1], marked(40, 32))
    (tmp_path / "pairs" / "noisy").mkdir(parents=True)
    shutil.copy(iphone_heic, tmp_path / "pairs" / "noisy" / "x.heic")
    write_image(tmp_path / "pairs" / "gt" / "x.webp", read_image(iphone_heic)[0], quality=100)
    ((name, noisy, gt),) = load_pairs(tmp_path / "pairs")
    assert name == "x.heic" and np.array_equal(noisy, gt)


def test_heic_damaged_is_one_line(tmp_path: Path, iphone_heic: Path) -> None:
    bad = tmp_path / "bad.heic"
    bad.write_bytes(iphone_heic.read_bytes()[:200])
    with pytest.raises(InputError) as e:
        read_image(bad)
    assert "cannot decode HEIC" in str(e.value) and "\n" not in str(e.value)


def exiftool(*args: str) -> list[dict]:
    out = subprocess.run(["exiftool", "-j", "-G1", "-a", "-n", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


@pytest.mark.usefixtures("identity")
@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool not installed (Debian: libimage-exiftool-perl)")
def test_exiftool_reads_what_a_photo_manager_needs(tmp_path, cli, tiny_student, iphone_heic) -> None:
    src = lightroom_jpeg(tmp_path / "in.jpg", THUMB)
    outs = []
    for suffix in OUTPUTS:
        for name, inp in (("jpg", src), ("heic", iphone_heic)):
            out = tmp_path / f"{name}{suffix}"
            code, _, err = cli("denoise", "--model", tiny_student, inp, out)
            assert code == 0, err
            outs.append(out)
    for tags in exiftool(*map(str, outs)):
        name = Path(tags["SourceFile"]).name
        from_jpeg = name.startswith("jpg")
        assert tags.get("XMP-xmp:Rating") == 5, name
        subject = tags.get("XMP-dc:Subject")
        assert subject == (["harbour", "night"]), name
        assert tags.get("IFD0:Orientation", 1) == 1 and tags.get("XMP-tiff:Orientation", 1) == 1, name
        assert not any(k.startswith("IFD1:") or k.endswith("ThumbnailImage") for k in tags), name
        assert tags.get("IFD0:Make") == ("Canon" if from_jpeg else "Apple"), name
        if from_jpeg and formats.IPTC in formats.for_path(Path(name)).metadata:
            assert tags.get("IPTC:City") == "Hamburg" and tags.get("IPTC:Keywords") == ["harbour", "night"], name
        if not from_jpeg:
            assert tags.get("ICC_Profile:ProfileDescription") == "Display P3", name
            assert tags.get("GPS:GPSLatitudeRef") == "N", name
        if name.endswith(".tif"):
            assert "IFD0:ImageDescription" not in tags and str(tags.get("IFD0:Software", "")).startswith("aprrd")
