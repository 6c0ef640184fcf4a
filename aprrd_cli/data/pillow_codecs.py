"""HEIC (pillow-heif) and WebP / AVIF (Pillow's own plugins): the codecs beyond PNG, TIFF and JPEG.

HEIC goes through pillow-heif's own API rather than its Pillow plugin: that is what gives 10-bit
pixels as they are (Pillow has no 10-bit RGB mode) and reads them into 16 bits here
(``v * 65535 / 1023``, rounded, so 1023 is full white); 16-bit outputs are written back at 10 bits.
libheif applies the container's rotation (``irot``/``imir``) while decoding, so a HEIC's pixels
arrive upright and its EXIF orientation must not be applied again (``images._read_heic`` says so).
WebP and AVIF are read by the common Pillow path (Pillow turns an AVIF's ``irot``/``imir`` into the
EXIF orientation, applied like a JPEG's); Pillow decodes AVIF at 8 bits only, so the pixels of a
10/12-bit AVIF come from imagecodecs' libavif instead, into 16 bits as HEIC's, its metadata and
orientation still from Pillow. AVIF outputs are 8-bit: no library here writes a deeper AVIF with its
metadata. None of the three has grey+alpha, and WebP and Pillow's
AVIF encoder no grey at all: such pixels are written as equal colours.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEIF_BITS = 10  # what 16-bit outputs are stored at: HEVC Main 10, what phones and viewers decode


@dataclass
class HeifRead:
    """The primary picture of a HEIC and what it carries."""

    pixels: np.ndarray  # H x W [x C], uint8 or uint16 (10/12-bit samples scaled to 16 bits)
    frames: int
    bit_depth: int
    icc: bytes | None
    exif: bytes | None  # as pillow-heif gives it: "Exif\0\0" and the TIFF-structured block
    xmp: bytes | None


def to_16_bits(arr: np.ndarray, depth: int) -> np.ndarray:
    """``depth``-bit samples (10, 12) scaled to 16 bits, rounded, so full scale stays full scale."""
    top = (1 << depth) - 1
    return ((arr.astype(np.uint32) * 65535 + top // 2) // top).astype(np.uint16)


def avif_depth(head: bytes) -> int:
    """The bits per sample an AVIF declares in its ``pixi`` box (8 when it declares none)."""
    at = head.find(b"pixi")  # box size (4), "pixi", version and flags (4), channel count (1), bits per channel
    if at < 4 or at + 9 >= len(head) or head[at + 8] < 1:
        return 8
    return head[at + 9]


def read_deep_avif(path: Path, depth: int) -> np.ndarray:
    """The samples of a 10/12-bit AVIF in 16 bits (libavif through imagecodecs), as stored (not turned)."""
    import imagecodecs

    return to_16_bits(imagecodecs.avif_decode(path.read_bytes()), depth)


def read_heif(path: Path, check_size: Callable[[int, int], None]) -> HeifRead:
    """Decode the primary picture, upright; ``check_size(width, height)`` runs before any pixel is decoded."""
    import pillow_heif

    heif = pillow_heif.open_heif(path, convert_hdr_to_8bit=False, hdr_to_16bit=False)
    img = heif[heif.primary_index]
    check_size(*img.size)
    arr = np.asarray(img)
    depth = int(img.info.get("bit_depth", 8))
    if arr.dtype == np.uint16 and depth < 16:
        arr = to_16_bits(arr, depth)
    exif = img.info.get("exif") or None
    return HeifRead(
        pixels=arr,
        frames=len(heif),
        bit_depth=depth,
        icc=img.info.get("icc_profile") or None,
        exif=exif,
        xmp=img.info.get("xmp") or None,
    )


def _as_colour(arr: np.ndarray, keep_grey: bool) -> np.ndarray:
    """Grey (+ alpha) as equal R, G, B (+ alpha), for formats without it; grey alone kept if ``keep_grey``."""
    c = arr.shape[2]
    if c > 2 or (c == 1 and keep_grey):
        return arr
    return np.concatenate([arr[:, :, :1]] * 3 + ([arr[:, :, 1:]] if c == 2 else []), axis=2)


def write_heif(
    tmp: Path, arr: np.ndarray, quality: int, icc: bytes | None, exif: bytes | None, xmp: bytes | None
) -> None:
    """HEIC at 8 bits (uint8) or 10 bits (uint16), 4:4:4 (grey: 4:0:0)."""
    import pillow_heif

    arr = _as_colour(arr, keep_grey=True)
    c = arr.shape[2]
    if arr.dtype == np.uint16:
        top = (1 << HEIF_BITS) - 1
        arr = ((arr.astype(np.uint32) * top + 32767) // 65535).astype(np.uint16)
        mode = {1: "L;10", 3: "RGB;10", 4: "RGBA;10"}[c]
    else:
        mode = {1: "L", 3: "RGB", 4: "RGBA"}[c]
    data = np.ascontiguousarray(arr[:, :, 0] if c == 1 else arr)
    heif = pillow_heif.from_bytes(mode, (arr.shape[1], arr.shape[0]), data.tobytes())
    extra = {"icc_profile": icc} if icc else {}
    if exif:
        extra["exif"] = b"Exif\x00\x00" + exif
    if xmp:
        extra["xmp"] = xmp
    # quality 100 is libheif's near-lossless; -1 would be its lossless mode, not offered: the network's
    # output is not worth the size
    chroma = {"chroma": "444"} if c != 1 else {}  # grey is coded as grey (4:0:0) by itself
    heif.save(tmp, quality=quality, **chroma, **extra)


def write_pillow(
    tmp: Path,
    arr: np.ndarray,
    fmt: str,
    quality: int,
    icc: bytes | None,
    exif: bytes | None,
    xmp: bytes | None,
) -> None:
    """WebP (quality 100: lossless) or AVIF (4:4:4), 8 bits, with the ICC, EXIF and XMP chunks."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(_as_colour(arr, keep_grey=False)))  # RGB or RGBA
    extra: dict[str, object] = {"icc_profile": icc} if icc else {}
    if exif:
        extra["exif"] = exif
    if xmp:
        extra["xmp"] = xmp
    buf = io.BytesIO()
    if fmt == "webp":
        if quality >= 100:
            im.save(buf, format="WEBP", lossless=True, quality=100, method=4, exact=True, **extra)
        else:
            im.save(buf, format="WEBP", quality=quality, method=4, **extra)
    else:
        im.save(buf, format="AVIF", quality=quality, subsampling="4:4:4", **extra)
    tmp.write_bytes(buf.getvalue())
