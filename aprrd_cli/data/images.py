"""Reading and writing photos: PNG 8/16-bit, TIFF 8/16-bit/float, JPEG, HEIC 8/10-bit, WebP, AVIF.

What each format is and holds is the table in :mod:`aprrd_cli.data.formats`. Codecs: OpenCV for
16-bit colour PNG (Pillow reads those as 8-bit and silently drops the low byte), Pillow for the
other PNG and JPEG modes (grey, grey+alpha, palette, CMYK) and for WebP and AVIF, tifffile for
TIFF, pillow-heif for HEIC (:mod:`aprrd_cli.data.pillow_codecs`). Declared dimensions are checked
from the header before any pixel is decoded, so a decompression bomb costs nothing.

Arrays are ``H x W x C`` with C = 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA), in the
file's own dtype: uint8, uint16 or float32, turned as the file is displayed (its EXIF or TIFF
orientation applied), so every reader (denoise, evaluate, prepare-data) sees the same pixels.

A photo keeps what it is: the ICC profile, the EXIF block (orientation set to 1, its thumbnail
removed), the XMP packet (orientation and pixel size set to the output's) and the IPTC records are
read into :class:`ImageInfo`, and ``write_image`` writes each into every format that can hold it.
Whatever cannot be kept (frames after the first, alpha in a JPEG, IPTC in a PNG) is said in a
warning naming the file, never dropped silently.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aprrd_cli import __version__
from aprrd_cli.console import warn
from aprrd_cli.data import exif as exifmod
from aprrd_cli.data import formats
from aprrd_cli.data import xmp_iptc as xi
from aprrd_cli.errors import InputError
from aprrd_cli.utils.atomic import atomic_path

IMAGE_SUFFIXES = {s: f.name for s, f in formats.BY_SUFFIX.items()}
MAX_PIXELS = 250_000_000  # larger declared sizes are refused as likely decompression bombs
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_QUALITY = formats.BY_NAME["jpeg"].default_quality
TIFF_XMP, TIFF_IPTC = 700, 33723  # the TIFF tags of the XMP packet and the IPTC records
EXIF_PREFIX = b"Exif\x00\x00"  # what precedes the TIFF structure in a JPEG APP1 segment
JPEG_MAX_EXIF = 65533 - len(EXIF_PREFIX)  # one APP1 segment


@dataclass(frozen=True)
class ImageInfo:
    """What a file held, so that the output can be written back the same way."""

    format: str  # a name in data/formats.py: png | tiff | jpeg | heic | webp | avif
    dtype: str  # uint8 | uint16 | float32
    channels: int  # 1, 2, 3 or 4
    icc_profile: bytes | None = None  # the colour profile, as stored
    exif: bytes | None = None  # TIFF-structured EXIF (no "Exif\0\0" prefix), orientation 1, no thumbnail
    orientation: int = 1  # the EXIF/TIFF orientation that was applied on reading (1 = none)
    xmp: bytes | None = None  # the XMP packet, its orientation and pixel size set to the upright pixels'
    iptc: bytes | None = None  # the IPTC-IIM records, as stored

    @property
    def bit_depth(self) -> int:
        return {"uint8": 8, "uint16": 16, "float32": 32}[self.dtype]


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _check_dims(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise InputError(f"{path}: declares an empty image ({width}x{height})")
    if width * height > max_pixels:
        raise InputError(
            f"{path}: declares {width}x{height} pixels ({width * height / 1e6:.0f} MP), more than the "
            f"{max_pixels / 1e6:.0f} MP limit; likely a corrupt or hostile file"
        )


@dataclass
class _Meta:
    """What a decoder found besides the pixels."""

    icc: bytes | None = None
    exif: bytes | None = None  # TIFF-structured, as stored
    orientation: int | None = None  # from a TIFF tag, or 1 where the decoder turned the pixels; None: from ``exif``
    frames: int = 1  # full-resolution frames or pages in the file; only the first is read
    xmp: bytes | None = None
    iptc: bytes | None = None


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, ImageInfo]:
    """Decode an image file into ``H x W x C`` (its own dtype), turned upright, and what it was.

    Warns (naming the file) about frames or pages after the first, which are not read, and
    about metadata that is damaged or cannot travel with RGB pixels (a CMYK profile).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an image")
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from e
    if not head:
        raise InputError(f"{path} is empty; expected a {formats.names()} image")
    known = formats.sniff(head)
    if known is None:
        raise InputError(f"{path} is not a {formats.names()} image")
    fmt = known.name
    try:
        if fmt == "png" and len(head) >= 24 and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            _check_dims(path, width, height, max_pixels)
        if fmt == "tiff":
            arr, meta = _read_tiff(path, max_pixels)
        elif fmt == "png" and _png_is_16bit_colour(head):
            arr = _read_png16_colour(path, head, max_pixels)
            meta = _png_meta(path)
        elif fmt == "heic":
            arr, meta = _read_heic(path, max_pixels)
        else:
            arr, meta = _read_pillow(path, max_pixels)
    except InputError:
        raise
    except MemoryError as e:
        raise InputError(f"{path}: too large to decode in memory") from e
    except Exception as e:  # codec errors come in many types; all mean a damaged file
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: cannot decode {known.label} ({msg[:100]}); the file is damaged or truncated") from e
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.dtype == np.float64 or arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    if arr.dtype not in (np.uint8, np.uint16, np.float32):
        raise InputError(f"{path}: pixel type {arr.dtype} is not supported; use 8/16-bit integer or float")
    if arr.shape[2] > 4:
        raise InputError(f"{path}: {arr.shape[2]} channels; expected grey, grey+alpha, RGB or RGBA")
    if meta.frames > 1:
        what = "pages" if fmt == "tiff" else "frames"
        warn(f"{path}: holds {meta.frames} {what}; only the first is read, the other {meta.frames - 1} are left out")
    orientation, exif = _upright_exif(path, meta, arr.shape)
    arr = orient(arr, orientation)
    xmp = xi.xmp_for_output(meta.xmp, arr.shape[1], arr.shape[0]) if meta.xmp else None
    icc = _usable_icc(path, meta.icc)
    info = ImageInfo(fmt, arr.dtype.name, arr.shape[2], icc, exif, orientation, xmp, meta.iptc or None)
    return np.ascontiguousarray(arr), info


# numpy views that turn a stored image into the displayed one, per EXIF/TIFF orientation 1-8
# (2: mirrored, 3: upside down, 4: mirrored upside down, 5: transposed, 6: stored turned 90 degrees
# anticlockwise, so shown turned clockwise, 7: transversed, 8: shown turned anticlockwise)
_ORIENT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: a.transpose(1, 0, 2)[:, ::-1],
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: a.transpose(1, 0, 2)[::-1],
}


def orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """``H x W x C`` as displayed for an EXIF/TIFF orientation (1-8; other values: as stored)."""
    return _ORIENT.get(orientation, _ORIENT[1])(arr)


def _upright_exif(path: Path, meta: _Meta, shape: tuple[int, ...]) -> tuple[int, bytes | None]:
    """The orientation to apply and the EXIF to carry (orientation 1, displayed size, no thumbnail).

    A damaged EXIF block is reported and dropped: its orientation cannot be trusted either.
    """
    tagged = meta.orientation if meta.orientation in _ORIENT else 1  # a TIFF's own tag, when it has one
    if meta.exif is None:
        return tagged, None
    try:
        orientation = exifmod.orientation(meta.exif) if meta.orientation is None else tagged
        h, w = shape[:2] if orientation <= 4 else shape[1::-1]
        return orientation, exifmod.normalise(meta.exif, w, h)
    except (exifmod.ExifError, struct.error) as e:
        warn(f"{path}: EXIF data is damaged ({e}); its orientation and camera data are ignored")
        return tagged, None


def _usable_icc(path: Path, icc: bytes | None) -> bytes | None:
    """The ICC profile, if it can describe the decoded pixels (RGB or grey).

    CMYK images are decoded to RGB, so their CMYK profile no longer applies; it is dropped, said.
    """
    if not icc:
        return None
    space = icc[16:20] if len(icc) >= 128 else b""
    if space in (b"RGB ", b"GRAY"):
        return icc
    if not space:
        warn(f"{path}: its ICC profile is damaged ({len(icc)} bytes); outputs get none")
    else:
        name = space.decode("latin-1").strip()
        warn(f"{path}: its {name} ICC profile does not describe the RGB pixels it is converted to; outputs get none")
    return None


def _png_meta(path: Path, im=None) -> _Meta:
    """A PNG's iCCP and eXIf chunks and frame count, read by Pillow without decoding pixels."""
    if im is None:
        from PIL import Image

        with Image.open(path) as im:
            return _png_meta(path, im)
    return _Meta(
        icc=im.info.get("icc_profile") or None,
        exif=_strip_exif_prefix(im.info.get("exif")),
        frames=int(getattr(im, "n_frames", 1)),
        xmp=xi.xmp_from_info(im.info),
    )


def _strip_exif_prefix(exif: bytes | None) -> bytes | None:
    if not exif:
        return None
    return exif[len(EXIF_PREFIX) :] if exif.startswith(EXIF_PREFIX) else exif


def _quiet_cv2():
    """OpenCV, with its own C++ log silenced: a damaged file is reported once, by us, on one line."""
    import cv2

    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # older builds without the logging module
        pass
    return cv2


def _png_is_16bit_colour(head: bytes) -> bool:
    # IHDR: width, height (4 bytes each), bit depth, colour type at offsets 24 and 25
    return len(head) >= 26 and head[12:16] == b"IHDR" and head[24] == 16 and head[25] in (2, 4, 6)


def _read_png16_colour(path: Path, head: bytes, max_pixels: int) -> np.ndarray:
    cv2 = _quiet_cv2()

    width, height = struct.unpack(">II", head[16:24])
    _check_dims(path, width, height, max_pixels)
    buf = np.fromfile(path, dtype=np.uint8)
    arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if arr is None or arr.shape[:2] != (height, width):
        raise InputError(f"{path}: cannot decode PNG; the file is damaged or truncated")
    if head[25] == 4:  # grey+alpha arrives as BGRA with B == G == R
        return arr[:, :, [0, 3]]
    return arr[:, :, [2, 1, 0]] if arr.shape[2] == 3 else arr[:, :, [2, 1, 0, 3]]


def _read_pillow(path: Path, max_pixels: int) -> tuple[np.ndarray, _Meta]:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own guard then fires only at twice our limit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", message="Corrupt EXIF data")  # reported by _upright_exif, once
        try:
            im = Image.open(path)
        except Image.DecompressionBombError as e:
            raise InputError(
                f"{path}: declares more than the {max_pixels / 1e6:.0f} MP limit; likely a corrupt or hostile file"
            ) from e
        with im:
            _check_dims(path, im.width, im.height, max_pixels)
            im.load()  # decodes fully; raises on truncated data (a deep AVIF is decoded again, at its depth)
            if im.format == "PNG":
                meta = _png_meta(path, im)
            else:  # JPEG (MPO's extra pictures are previews, not frames), WebP, AVIF, or a TIFF handed over
                meta = _Meta(
                    icc=im.info.get("icc_profile") or None,
                    exif=_strip_exif_prefix(im.info.get("exif")),
                    xmp=xi.xmp_from_info(im.info),
                    iptc=xi.iptc_from_photoshop(im.info.get("photoshop")),
                    frames=int(getattr(im, "n_frames", 1)) if im.format in ("WEBP", "AVIF") else 1,
                )
                if im.format == "AVIF":
                    return _avif_pixels(path, im), meta
            return _pillow_pixels(path, im), meta


def _read_heic(path: Path, max_pixels: int) -> tuple[np.ndarray, _Meta]:
    """A HEIC's primary picture, already upright: libheif applies the container's rotation itself."""
    from aprrd_cli.data.pillow_codecs import read_heif

    got = read_heif(path, lambda w, h: _check_dims(path, w, h, max_pixels))
    meta = _Meta(icc=got.icc, exif=_strip_exif_prefix(got.exif), orientation=1, frames=got.frames, xmp=got.xmp)
    return got.pixels, meta


def _avif_pixels(path: Path, im) -> np.ndarray:
    """An AVIF's pixels: Pillow's 8 bits, or 16 bits from libavif for a 10/12-bit file."""
    from aprrd_cli.data.pillow_codecs import avif_depth, read_deep_avif

    with open(path, "rb") as f:
        depth = avif_depth(f.read(1 << 16))
    return read_deep_avif(path, depth) if depth > 8 else _pillow_pixels(path, im)


def _pillow_pixels(path: Path, im) -> np.ndarray:
    """Pillow's decoded modes as grey, grey+alpha, RGB or RGBA at 8/16 bits, or float."""
    mode = im.mode
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA" if ("transparency" in im.info or mode == "PA") else "RGB")
    elif mode == "CMYK":
        im = im.convert("RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(im, dtype=np.uint16)
    elif mode == "I":
        a = np.asarray(im)
        if a.min() < 0 or a.max() > 65535:
            raise InputError(f"{path}: 32-bit integer pixels out of the 16-bit range")
        return a.astype(np.uint16)
    elif mode == "F":
        return np.asarray(im, dtype=np.float32)
    elif mode in ("RGBX", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGBA" if "A" in mode else "RGB")
    return np.asarray(im)


def _read_tiff(path: Path, max_pixels: int) -> tuple[np.ndarray, _Meta]:
    """The first page of a TIFF, in RGB or grey whatever its photometric interpretation.

    tifffile returns samples as stored: palette indices, CMYK inks, inverted grey. Those are
    converted here (a CMYK file must not pass for RGB + alpha). Compressions tifffile cannot
    decode without optional codecs (JPEG-in-TIFF) are handed to Pillow. The metadata (ICC,
    Orientation, photo tags and the Exif/GPS IFDs, the number of full-resolution pages) is
    read from the TIFF structure itself.
    """
    import logging

    import tifffile

    logging.getLogger("tifffile").setLevel(logging.CRITICAL)  # it logs damaged headers; we raise instead
    with tifffile.TiffFile(path) as tf:
        if not tf.pages:
            raise InputError(f"{path}: TIFF holds no image; the file is damaged or truncated")
        page = tf.pages[0]
        shape = page.shape
        if page.planarconfig == 1 or len(shape) == 2:  # contiguous
            h, w = shape[0], shape[1]
        else:
            h, w = shape[1], shape[2]
        _check_dims(path, w, h, max_pixels)
        photometric = int(page.photometric)
        colormap = page.colormap if photometric == PHOTOMETRIC_PALETTE else None
        meta = _tiff_meta(path, tf, page)
        try:
            arr = page.asarray()
        except ValueError as e:
            if "requires" not in str(e):  # a codec tifffile lacks: Pillow may have it
                raise
            return _read_pillow(path, max_pixels)[0], meta
    if arr.ndim == 3 and arr.shape[0] in (1, 2, 3, 4) and arr.shape[2] not in (1, 2, 3, 4):
        arr = np.moveaxis(arr, 0, 2)
    if arr.ndim not in (2, 3):
        raise InputError(f"{path}: TIFF layout {arr.shape} is not a single 2-D image")
    return _tiff_to_rgb(path, arr, photometric, colormap), meta


def _tiff_meta(path: Path, tf, page) -> _Meta:
    """ICC, orientation, EXIF and the count of full-resolution pages of an open TIFF.

    Pages flagged as reduced-resolution (NewSubfileType bit 0: previews, thumbnails) are not frames.
    """
    frames = 1
    if len(tf.pages) > 1:
        frames = sum(1 for p in tf.pages if not (int(getattr(p, "subfiletype", 0) or 0) & 1))
    tag = page.tags.get(274)
    orientation = int(tag.value) if tag is not None and isinstance(tag.value, int) else 1
    meta = _Meta(icc=page.iccprofile or None, orientation=orientation, frames=max(frames, 1))
    meta.xmp, meta.iptc = _tag_bytes(page, TIFF_XMP), _tag_bytes(page, TIFF_IPTC)
    if tf.is_bigtiff:
        if any(code in page.tags for code in (271, 272, 306, exifmod.EXIF_IFD, exifmod.GPS_IFD)):
            warn(f"{path}: EXIF data in a BigTIFF is not read; outputs do not carry it")
        return meta
    try:
        with open(path, "rb") as f:
            meta.exif, problems = exifmod.from_tiff(f)
    except (exifmod.ExifError, struct.error) as e:
        warn(f"{path}: EXIF data is damaged ({e}); outputs do not carry it")
        return meta
    if problems:
        warn(f"{path}: damaged EXIF entries left out: {'; '.join(problems[:3])}")
    return meta


def _tag_bytes(page, code: int) -> bytes | None:
    """A TIFF tag's value as the bytes it stores (XMP as BYTE, IPTC as UNDEFINED or LONG: both raw)."""
    tag = page.tags.get(code)
    if tag is None or not tag.valuebytecount:
        return None
    fh = page.parent.filehandle
    fh.seek(tag.valueoffset)
    return fh.read(tag.valuebytecount) or None


PHOTOMETRIC_MINISWHITE, PHOTOMETRIC_MINISBLACK, PHOTOMETRIC_RGB, PHOTOMETRIC_PALETTE = 0, 1, 2, 3
PHOTOMETRIC_SEPARATED, PHOTOMETRIC_YCBCR = 5, 6


def _full_scale(arr: np.ndarray) -> float:
    return float(np.iinfo(arr.dtype).max) if arr.dtype.kind in "ui" else 1.0


def _tiff_to_rgb(path: Path, arr: np.ndarray, photometric: int, colormap: np.ndarray | None) -> np.ndarray:
    if arr.dtype == np.bool_:  # bilevel: 0 / full white
        arr = arr.astype(np.uint8) * 255
    if photometric in (PHOTOMETRIC_MINISBLACK, PHOTOMETRIC_RGB, PHOTOMETRIC_YCBCR):
        return arr  # tifffile has already converted YCbCr to RGB
    if photometric == PHOTOMETRIC_MINISWHITE:
        grey = arr if arr.ndim == 2 else arr[:, :, 0]
        inv = (_full_scale(grey) - grey.astype(np.float64)).astype(grey.dtype)
        if arr.ndim == 2:
            return inv
        out = arr.copy()
        out[:, :, 0] = inv
        return out
    if photometric == PHOTOMETRIC_PALETTE:
        if colormap is None or arr.ndim != 2 or arr.dtype.kind != "u" or int(arr.max(initial=0)) >= colormap.shape[-1]:
            raise InputError(f"{path}: palette TIFF with a missing or too short colour map; re-export it as RGB")
        cmap = np.asarray(colormap)
        if cmap.ndim != 2 or cmap.shape[0] != 3:
            raise InputError(f"{path}: palette TIFF with a colour map of shape {cmap.shape}; re-export it as RGB")
        if cmap.dtype == np.uint16 and (np.all(cmap % 257 == 0) or np.all(cmap % 256 == 0)):
            cmap = (cmap >> 8).astype(np.uint8)  # 8-bit colours stored on 16 bits (x257 by libtiff, x256 by Pillow)
        return np.ascontiguousarray(cmap[:, arr].transpose(1, 2, 0))
    if photometric == PHOTOMETRIC_SEPARATED:
        if arr.ndim != 3 or arr.shape[2] < 4:
            raise InputError(f"{path}: separated (ink) TIFF with {arr.shape} samples; expected CMYK")
        top = _full_scale(arr)
        ink = arr[:, :, :4].astype(np.float64)
        c, m, y, k = (ink[:, :, i] for i in range(4))
        rgb = np.stack([(top - c) * (top - k), (top - m) * (top - k), (top - y) * (top - k)], axis=2) / top
        if arr.dtype.kind in "ui":
            rgb = np.rint(rgb)
        return rgb.astype(arr.dtype)
    raise InputError(
        f"{path}: TIFF colour space (photometric {photometric}) is not supported; re-export it as RGB or grey"
    )


def format_for(path: Path) -> str:
    """The name of the format an output path's suffix names (see data/formats.py)."""
    return formats.for_path(path).name


def check_writable(path: Path, dtype: str) -> None:
    """Refuse, before any work, a dtype the output format cannot hold."""
    fmt = formats.for_path(path)
    if fmt.holds(dtype):
        return
    depths = [str(formats.BIT_DEPTHS[d]) for d in fmt.dtypes if d in formats.BIT_DEPTHS]
    held = f"only {depths[0]} bits" if len(depths) == 1 else f"{' or '.join(depths)} bits"
    if fmt.stored_bits:
        held += f" (16 stored at {fmt.stored_bits})"
    if dtype == "float32":
        held += ", not float"
    others = "/".join(f.suffix for f in formats.holding(dtype))
    raise InputError(f"{path}: {fmt.label} holds {held}; use --bit-depth {'/'.join(depths)} or a {others} output")


def write_image(
    path: str | Path,
    arr: np.ndarray,
    *,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    xmp: bytes | None = None,
    iptc: bytes | None = None,
    quality: int | None = None,
) -> None:
    """Atomically write ``H x W x C`` (C = 1..4) in the format the suffix names.

    ``icc_profile``, ``exif`` (TIFF-structured, as in :class:`ImageInfo`), ``xmp`` and ``iptc`` are
    written where the format holds them (data/formats.py); what cannot go in (IPTC in a PNG, alpha
    or over-long EXIF in a JPEG, EXIF in a BigTIFF) is said in one warning naming the file.
    ``quality``: 1-100 for the lossy formats (default: the format's own, 95 for JPEG, 90 for HEIC,
    WebP and AVIF; 100 writes lossless WebP); ignored by PNG and TIFF.
    """
    path = Path(path)
    check_writable(path, arr.dtype.name)
    fmt = formats.for_path(path)
    quality = fmt.default_quality if quality is None else quality
    if quality is not None and not 1 <= quality <= 100:
        raise InputError(f"{fmt.label} quality must be 1-100, got {quality}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    given = {formats.ICC: icc_profile, formats.EXIF: exif, formats.XMP: xmp, formats.IPTC: iptc}
    lost = [name for name, block in given.items() if block and name not in fmt.metadata]
    if lost:
        warn(f"{path}: {fmt.label} cannot hold the photo's {' and '.join(lost)} data; not carried")
    icc_profile, exif, xmp, iptc = (block if name in fmt.metadata else None for name, block in given.items())
    with atomic_path(path) as tmp:
        if fmt.name == "tiff":
            _write_tiff(path, tmp, arr, icc_profile, exif, xmp, iptc)
        elif fmt.name == "jpeg":
            _write_jpeg(path, tmp, arr, icc_profile, exif, quality, xmp, iptc)
        elif fmt.name == "png":
            _write_png(tmp, arr, _png_metadata_chunks(icc_profile, exif, xmp))
        elif fmt.name == "heic":
            from aprrd_cli.data.pillow_codecs import write_heif

            write_heif(tmp, arr, quality, icc_profile, exif, xmp)
        else:
            from aprrd_cli.data.pillow_codecs import write_pillow

            write_pillow(tmp, arr, fmt.name, quality, icc_profile, exif, xmp)


def _write_tiff(
    path: Path,
    tmp: Path,
    arr: np.ndarray,
    icc: bytes | None,
    exif: bytes | None,
    xmp: bytes | None = None,
    iptc: bytes | None = None,
) -> None:
    """tifffile writes the pixels, the ICC, XMP and IPTC tags; the EXIF is merged into IFD0 afterwards.

    The file is written in the EXIF block's byte order, so the block's values are copied as they are.
    No description (tifffile's shape note would show as the caption) and ``Software: aprrd <version>``
    unless the photo's EXIF names its own.
    """
    import tifffile

    endian = None
    if exif:
        try:
            endian = exifmod.parse(exif)[0]
        except (exifmod.ExifError, struct.error) as e:
            warn(f"{path}: EXIF data is damaged ({e}); not written")
            exif = None
    photometric = "rgb" if arr.shape[2] >= 3 else "minisblack"
    extras = ["unassalpha"] if arr.shape[2] in (2, 4) else None
    data = arr[:, :, 0] if arr.shape[2] == 1 else arr
    tags = []
    if xmp:
        tags.append((TIFF_XMP, 1, len(xmp), xmp, True))  # BYTE, as XMP's specification stores it
    if iptc:
        tags.append((TIFF_IPTC, 7, len(iptc), iptc, True))  # UNDEFINED: the records byte for byte
    tifffile.imwrite(
        tmp,
        data,
        photometric=photometric,
        extrasamples=extras,
        compression="zlib",
        iccprofile=icc or None,
        byteorder=endian,
        metadata=None,
        software=f"aprrd {__version__}",
        extratags=tags or None,
    )
    if not exif:
        return
    with open(tmp, "r+b") as f:
        if f.read(4) not in (b"II*\x00", b"MM\x00*"):  # tifffile chose BigTIFF for a huge image
            warn(f"{path}: written as BigTIFF, which cannot take the EXIF data here; it is not carried")
            return
        try:
            problems = exifmod.embed_in_tiff(f, exif)
        except (exifmod.ExifError, struct.error) as e:
            warn(f"{path}: EXIF data could not be written ({e}); not carried")
            return
    if problems:
        warn(f"{path}: damaged EXIF entries not carried: {'; '.join(problems[:3])}")


def _write_jpeg(
    path: Path,
    tmp: Path,
    arr: np.ndarray,
    icc: bytes | None,
    exif: bytes | None,
    quality: int,
    xmp: bytes | None = None,
    iptc: bytes | None = None,
) -> None:
    import io

    from PIL import Image

    if arr.shape[2] in (2, 4):
        warn(f"{path}: JPEG cannot hold transparency; the alpha channel is left out (use .png or .tif to keep it)")
    if exif and len(exif) > JPEG_MAX_EXIF:
        warn(f"{path}: EXIF data of {len(exif)} bytes exceeds the 64 KB a JPEG can hold; not carried")
        exif = None
    extra = {}
    if icc:
        extra["icc_profile"] = icc
    if exif:
        extra["exif"] = EXIF_PREFIX + exif
    segments = b""
    for name, block, make in (("XMP", xmp, xi.jpeg_xmp_segment), ("IPTC", iptc, xi.jpeg_iptc_segment)):
        seg = make(block) if block else b""
        if seg is None:
            warn(f"{path}: {name} data of {len(block)} bytes exceeds the 64 KB a JPEG segment holds; not carried")
        segments += seg or b""
    rgb = arr[:, :, :3] if arr.shape[2] >= 3 else arr[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=quality, subsampling=0, **extra)
    tmp.write_bytes(xi.insert_jpeg_segments(buf.getvalue(), segments))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_metadata_chunks(icc: bytes | None, exif: bytes | None, xmp: bytes | None = None) -> bytes:
    """iCCP (profile name, NUL, method 0, zlib data), eXIf (the bare TIFF structure) and iTXt (XMP) chunks."""
    chunks = b""
    if icc:
        chunks += _png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc, 9))
    if exif:
        chunks += _png_chunk(b"eXIf", exif)
    if xmp:
        chunks += _png_chunk(b"iTXt", xi.png_xmp_chunk_data(xmp))
    return chunks


def _with_chunks(png: bytes, chunks: bytes) -> bytes:
    """Insert ancillary chunks right after IHDR (before PLTE and IDAT, as iCCP and eXIf must be)."""
    if not chunks:
        return png
    if png[:8] != PNG_MAGIC or png[12:16] != b"IHDR":
        raise ValueError("PNG encoder output does not start with IHDR")
    end = 8 + 8 + struct.unpack(">I", png[8:12])[0] + 4
    return png[:end] + chunks + png[end:]


def _write_png(tmp: Path, arr: np.ndarray, chunks: bytes = b"") -> None:
    """Encode (OpenCV, Pillow for 8-bit LA, our own for 16-bit LA), then add the metadata chunks."""
    c = arr.shape[2]
    if c == 2:
        if arr.dtype == np.uint8:
            import io

            from PIL import Image

            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(arr), mode="LA").save(buf, format="PNG")
            png = buf.getvalue()
        else:
            png = _encode_png16_grey_alpha(arr)  # neither OpenCV nor Pillow writes 16-bit LA
    else:
        cv2 = _quiet_cv2()
        if c == 3:
            arr = arr[:, :, ::-1]
        elif c == 4:
            arr = arr[:, :, [2, 1, 0, 3]]
        ok, enc = cv2.imencode(".png", np.ascontiguousarray(arr))
        if not ok:
            raise InputError(f"{tmp}: PNG encoding failed")
        png = enc.tobytes()
    tmp.write_bytes(_with_chunks(png, chunks))


def _encode_png16_grey_alpha(arr: np.ndarray) -> bytes:
    """A minimal exact PNG encoder for 16-bit grey+alpha (colour type 4), filter 0."""
    h, w = arr.shape[:2]
    rows = np.zeros((h, 1 + w * 4), dtype=np.uint8)
    rows[:, 1:] = np.ascontiguousarray(arr.astype(">u2")).view(np.uint8).reshape(h, w * 4)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 4, 0, 0, 0)
    idat = _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
    return PNG_MAGIC + _png_chunk(b"IHDR", ihdr) + idat + _png_chunk(b"IEND", b"")
