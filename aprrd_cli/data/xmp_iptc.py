"""XMP and IPTC blocks: read from where each format keeps them, fixed to the output, written back.

XMP (Lightroom's, Capture One's, darktable's, digiKam's ratings, keywords, captions and edits) is an
XML packet; it also repeats the image's orientation and size (``tiff:Orientation``,
``exif:PixelXDimension``...), which would make a viewer turn an upright output a second time, so
those fields are set to the output's. IPTC-IIM (captions, keywords, place, credit) is carried as the
raw record set, byte for byte: in a JPEG inside a Photoshop APP13 segment (resource 0x0404), in a
TIFF as tag 33723.
"""

from __future__ import annotations

import re
import struct

XMP_JPEG_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"  # the APP1 segment that holds the XMP packet
PHOTOSHOP_HEADER = b"Photoshop 3.0\x00"  # the APP13 segment of Photoshop image resources
IPTC_RESOURCE = 0x0404
PNG_XMP_KEYWORD = b"XML:com.adobe.xmp"
MAX_SEGMENT = 65533  # payload of one JPEG marker segment


def _set_field(text: str, name: str, value: int, add: bool = False) -> str:
    """``name`` (prefix:Local) set to ``value`` in attribute and element form; unchanged where absent."""
    attr = re.compile(rf'(\b{re.escape(name)}\s*=\s*)(["\'])[^"\']*\2')
    elem = re.compile(rf"(<{re.escape(name)}>)[^<]*(</{re.escape(name)}>)")
    text = attr.sub(lambda m: f"{m.group(1)}{m.group(2)}{value}{m.group(2)}", text)
    return elem.sub(lambda m: f"{m.group(1)}{value}{m.group(2)}", text)


def xmp_for_output(xmp: bytes, width: int, height: int) -> bytes:
    """The packet with its orientation 1 and its pixel sizes the output's (only fields it has)."""
    try:
        text = xmp.decode("utf-8")
    except UnicodeDecodeError:
        return xmp  # UTF-16 packets are rare; carried unchanged rather than damaged
    text = _set_field(text, "tiff:Orientation", 1)
    for name, value in (
        ("exif:PixelXDimension", width),
        ("exif:PixelYDimension", height),
        ("tiff:ImageWidth", width),
        ("tiff:ImageLength", height),
    ):
        text = _set_field(text, name, value)
    return text.encode("utf-8")


def iptc_from_photoshop(resources: dict[int, bytes] | None) -> bytes | None:
    """The IPTC records among a JPEG's Photoshop resources (as Pillow parses APP13)."""
    if not resources:
        return None
    return resources.get(IPTC_RESOURCE) or None


def xmp_from_info(info: dict) -> bytes | None:
    """The XMP packet Pillow found (JPEG APP1, PNG iTXt, WebP, AVIF), as bytes."""
    xmp = info.get("xmp") or info.get(PNG_XMP_KEYWORD.decode())
    if not xmp:
        return None
    return xmp.encode("utf-8") if isinstance(xmp, str) else bytes(xmp)


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", marker, len(payload) + 2) + payload


def jpeg_xmp_segment(xmp: bytes) -> bytes | None:
    """APP1 with the XMP packet; None when it is over the 64 KB one segment holds."""
    payload = XMP_JPEG_HEADER + xmp
    return _segment(0xFFE1, payload) if len(payload) <= MAX_SEGMENT else None


def jpeg_iptc_segment(iptc: bytes) -> bytes | None:
    """APP13 with one Photoshop resource (8BIM 0x0404, empty name) holding the IPTC records."""
    data = iptc + (b"\0" if len(iptc) % 2 else b"")
    payload = PHOTOSHOP_HEADER + b"8BIM" + struct.pack(">HHI", IPTC_RESOURCE, 0, len(iptc)) + data
    return _segment(0xFFED, payload) if len(payload) <= MAX_SEGMENT else None


def insert_jpeg_segments(jpeg: bytes, segments: bytes) -> bytes:
    """``segments`` placed after the leading APPn segments of an encoded JPEG (before its tables)."""
    if not segments:
        return jpeg
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("JPEG encoder output does not start with SOI")
    pos = 2
    while pos + 4 <= len(jpeg) and jpeg[pos] == 0xFF and 0xE0 <= jpeg[pos + 1] <= 0xEF:
        pos += 2 + struct.unpack(">H", jpeg[pos + 2 : pos + 4])[0]
    return jpeg[:pos] + segments + jpeg[pos:]


def png_xmp_chunk_data(xmp: bytes) -> bytes:
    """An iTXt chunk's data: keyword, NUL, uncompressed, no language, no translated keyword, the packet."""
    return PNG_XMP_KEYWORD + b"\x00\x00\x00\x00\x00" + xmp
