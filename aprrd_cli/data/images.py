"""Reading and writing photos: PNG 8/16-bit, TIFF 8/16-bit/float, JPEG.

Codecs: OpenCV for 16-bit colour PNG (Pillow reads those as 8-bit and silently drops
the low byte), Pillow for the other PNG and JPEG modes (grey, grey+alpha, palette,
CMYK), tifffile for TIFF. Declared dimensions are checked from the header before any
pixel is decoded, so a decompression bomb costs nothing.

Arrays are ``H x W x C`` with C = 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA), in the
file's own dtype: uint8, uint16 or float32.
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aprrd_cli.errors import InputError
from aprrd_cli.fsutil import atomic_path

IMAGE_SUFFIXES = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".jpg": "jpeg", ".jpeg": "jpeg"}
MAX_PIXELS = 250_000_000  # larger declared sizes are refused as likely decompression bombs
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class ImageInfo:
    """What a file held, so that the output can be written back the same way."""

    format: str  # png | tiff | jpeg
    dtype: str  # uint8 | uint16 | float32
    channels: int  # 1, 2, 3 or 4

    @property
    def bit_depth(self) -> int:
        return {"uint8": 8, "uint16": 16, "float32": 32}[self.dtype]


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def sniff_format(path: Path, head: bytes) -> str | None:
    if head.startswith(PNG_MAGIC):
        return "png"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    return None


def _check_dims(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise InputError(f"{path}: declares an empty image ({width}x{height})")
    if width * height > max_pixels:
        raise InputError(
            f"{path}: declares {width}x{height} pixels ({width * height / 1e6:.0f} MP), more than the "
            f"{max_pixels / 1e6:.0f} MP limit; likely a corrupt or hostile file"
        )


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, ImageInfo]:
    """Decode an image file into ``H x W x C`` (its own dtype) and what it was."""
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
        raise InputError(f"{path} is empty; expected a PNG, TIFF or JPEG image")
    fmt = sniff_format(path, head)
    if fmt is None:
        raise InputError(f"{path} is not a PNG, TIFF or JPEG image")
    try:
        if fmt == "png" and len(head) >= 24 and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            _check_dims(path, width, height, max_pixels)
        if fmt == "tiff":
            arr = _read_tiff(path, max_pixels)
        elif fmt == "png" and _png_is_16bit_colour(head):
            arr = _read_png16_colour(path, head, max_pixels)
        else:
            arr = _read_pillow(path, max_pixels)
    except InputError:
        raise
    except MemoryError as e:
        raise InputError(f"{path}: too large to decode in memory") from e
    except Exception as e:  # codec errors come in many types; all mean a damaged file
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: cannot decode {fmt.upper()} ({msg[:100]}); the file is damaged or truncated") from e
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.dtype == np.float64 or arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    if arr.dtype not in (np.uint8, np.uint16, np.float32):
        raise InputError(f"{path}: pixel type {arr.dtype} is not supported; use 8/16-bit integer or float")
    if arr.shape[2] > 4:
        raise InputError(f"{path}: {arr.shape[2]} channels; expected grey, grey+alpha, RGB or RGBA")
    return np.ascontiguousarray(arr), ImageInfo(fmt, arr.dtype.name, arr.shape[2])


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


def _read_pillow(path: Path, max_pixels: int) -> np.ndarray:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own guard then fires only at twice our limit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except Image.DecompressionBombError as e:
            raise InputError(
                f"{path}: declares more than the {max_pixels / 1e6:.0f} MP limit; likely a corrupt or hostile file"
            ) from e
        with im:
            _check_dims(path, im.width, im.height, max_pixels)
            im.load()  # decodes fully; raises on truncated data
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


def _read_tiff(path: Path, max_pixels: int) -> np.ndarray:
    """The first page of a TIFF, in RGB or grey whatever its photometric interpretation.

    tifffile returns samples as stored: palette indices, CMYK inks, inverted grey. Those are
    converted here (a CMYK file must not pass for RGB + alpha). Compressions tifffile cannot
    decode without optional codecs (JPEG-in-TIFF) are handed to Pillow.
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
        try:
            arr = page.asarray()
        except ValueError as e:
            if "requires" not in str(e):  # a codec tifffile lacks: Pillow may have it
                raise
            return _read_pillow(path, max_pixels)
    if arr.ndim == 3 and arr.shape[0] in (1, 2, 3, 4) and arr.shape[2] not in (1, 2, 3, 4):
        arr = np.moveaxis(arr, 0, 2)
    if arr.ndim not in (2, 3):
        raise InputError(f"{path}: TIFF layout {arr.shape} is not a single 2-D image")
    return _tiff_to_rgb(path, arr, photometric, colormap)


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


def to_float(arr: np.ndarray, path: str | Path = "image") -> tuple[np.ndarray, int]:
    """Scale to float32 in [0, 1]; returns the array and how many values were clipped.

    NaN or infinite values are an error (they would spread through the network);
    finite values outside [0, 1] (float files only) are clipped and counted.
    """
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0, 0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0, 0
    a = arr.astype(np.float32, copy=True)
    bad = ~np.isfinite(a)
    if bad.any():
        raise InputError(f"{path}: {int(bad.sum())} pixel values are NaN or infinite; fix or re-export the image")
    clipped = int(np.count_nonzero((a < 0) | (a > 1)))
    if clipped:
        np.clip(a, 0.0, 1.0, out=a)
    return a, clipped


def from_float(img: np.ndarray, dtype: str) -> np.ndarray:
    """Float [0, 1] to the target dtype: clip, then round for integers."""
    img = np.clip(img, 0.0, 1.0)
    if dtype == "uint8":
        return np.rint(img * 255.0).astype(np.uint8)
    if dtype == "uint16":
        return np.rint(img * 65535.0).astype(np.uint16)
    return img.astype(np.float32)


def format_for(path: Path) -> str:
    fmt = IMAGE_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unknown output type {path.suffix!r}; use .png, .tif/.tiff or .jpg/.jpeg")
    return fmt


def check_writable(path: Path, dtype: str) -> None:
    """Refuse, before any work, a dtype the output format cannot hold."""
    fmt = format_for(path)
    if fmt == "png" and dtype == "float32":
        raise InputError(f"{path}: PNG holds 8 or 16 bits, not float; use --bit-depth 8/16 or a .tif output")
    if fmt == "jpeg" and dtype != "uint8":
        raise InputError(f"{path}: JPEG holds only 8 bits; use --bit-depth 8 or a .png/.tif output")


def write_image(path: str | Path, arr: np.ndarray) -> None:
    """Atomically write ``H x W x C`` (C = 1..4) in the format the suffix names."""
    path = Path(path)
    check_writable(path, arr.dtype.name)
    fmt = format_for(path)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    with atomic_path(path) as tmp:
        if fmt == "tiff":
            import tifffile

            photometric = "rgb" if arr.shape[2] >= 3 else "minisblack"
            extras = ["unassalpha"] if arr.shape[2] in (2, 4) else None
            data = arr[:, :, 0] if arr.shape[2] == 1 else arr
            tifffile.imwrite(tmp, data, photometric=photometric, extrasamples=extras, compression="zlib")
        elif fmt == "jpeg":
            from PIL import Image

            rgb = arr[:, :, :3] if arr.shape[2] >= 3 else arr[:, :, 0]
            Image.fromarray(np.ascontiguousarray(rgb)).save(tmp, format="JPEG", quality=95, subsampling=0)
        else:
            _write_png(tmp, arr)


def _write_png(tmp: Path, arr: np.ndarray) -> None:
    cv2 = _quiet_cv2()

    c = arr.shape[2]
    if c == 2:
        if arr.dtype == np.uint8:
            from PIL import Image

            Image.fromarray(np.ascontiguousarray(arr), mode="LA").save(tmp, format="PNG")
            return
        _write_png16_grey_alpha(tmp, arr)  # neither OpenCV nor Pillow writes 16-bit LA
        return
    if c == 3:
        arr = arr[:, :, ::-1]
    elif c == 4:
        arr = arr[:, :, [2, 1, 0, 3]]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr))
    if not ok:
        raise InputError(f"{tmp}: PNG encoding failed")
    buf.tofile(tmp)


def _write_png16_grey_alpha(tmp: Path, arr: np.ndarray) -> None:
    """A minimal exact PNG encoder for 16-bit grey+alpha (colour type 4), filter 0."""
    import zlib

    h, w = arr.shape[:2]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = np.zeros((h, 1 + w * 4), dtype=np.uint8)
    rows[:, 1:] = np.ascontiguousarray(arr.astype(">u2")).view(np.uint8).reshape(h, w * 4)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 4, 0, 0, 0)
    data = PNG_MAGIC + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b"")
    tmp.write_bytes(data)
