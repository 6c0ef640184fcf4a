"""EXIF blocks: read the orientation, normalise it, and carry the block into a TIFF file.

An EXIF block (a JPEG APP1 payload after ``Exif\\0\\0``, a PNG eXIf chunk) is a small TIFF: a
header, IFD0 (make, model, date...), pointers to the Exif and GPS sub-IFDs, and often IFD1 (a
thumbnail). Blocks are patched in place where possible, so maker notes, which hold private
absolute offsets, stay valid in JPEG and PNG outputs. Only merging into a TIFF output's own first
IFD lays the entries out anew (at the end of that file).

Everything here works on the raw bytes, in the block's own byte order; no value is decoded
beyond the few tags that are changed. Malformed blocks raise :class:`ExifError`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

# TIFF field types -> bytes per value (1 BYTE, 2 ASCII, 3 SHORT, 4 LONG, 5 RATIONAL, 6 SBYTE,
# 7 UNDEFINED, 8 SSHORT, 9 SLONG, 10 SRATIONAL, 11 FLOAT, 12 DOUBLE, 13 IFD)
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
SHORT, LONG, IFD_TYPE = 3, 4, 13
ORIENTATION = 274
EXIF_IFD, GPS_IFD, INTEROP_IFD = 34665, 34853, 40965
SUB_IFDS = (EXIF_IFD, GPS_IFD, INTEROP_IFD)
PIXEL_X, PIXEL_Y = 0xA002, 0xA003  # PixelXDimension / PixelYDimension in the Exif sub-IFD
# tags whose value is a file offset: copying them elsewhere would point at garbage
OFFSET_TAGS = frozenset({273, 279, 288, 289, 324, 325, 330, 513, 514, *SUB_IFDS})
MAX_ENTRIES = 4096  # far above any real IFD; bounds the work on a hostile block
MAX_VALUE_BYTES = 1 << 24
MAX_DEPTH = 3

# What a TIFF output writes itself (layout, pixel format, colour): EXIF's values for these describe
# the JPEG it came from and are not copied. ICC is carried separately.
STRUCTURAL = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 284, 317, 322, 323, 324, 325, 330, 338, 339}
    | {340, 341, 400, 513, 514, 529, 530, 531, 532, 32997, 32998, 34675}
)
# Tags a TIFF writer fills with defaults (description, resolution, software, date) that the
# photo's own EXIF values replace.
EXIF_WINS = frozenset({270, 282, 283, 296, 305, 306})
# The IFD0 tags of a TIFF input that are photo metadata (EXIF 2.3 IFD0 plus common extras:
# HostComputer, Rating, RatingPercent, Windows XP* tags, PrintIM), carried to other formats.
TIFF_PHOTO_TAGS = frozenset(
    {270, 271, 272, 282, 283, 296, 305, 306, 315, 316, 318, 319, 33432, 18246, 18249, 50341}
    | set(range(0x9C9B, 0x9CA0))
)


class ExifError(ValueError):
    """A block that is not a readable TIFF structure, or cannot be placed where asked."""


@dataclass
class Entry:
    tag: int
    type: int
    count: int
    data: bytes  # the value bytes, in the block's byte order
    pos: int  # where the 12-byte entry sits in the source


@dataclass
class Ifd:
    entries: dict[int, Entry]
    subs: dict[int, Ifd] = field(default_factory=dict)  # pointer tag -> the IFD it points at
    next_pos: int = 0  # position of the next-IFD pointer in the source
    problems: list[str] = field(default_factory=list)  # entries or sub-IFDs left out as damaged

    def all_problems(self) -> list[str]:
        return self.problems + [p for sub in self.subs.values() for p in sub.all_problems()]


Reader = Callable[[int, int], bytes]  # (offset, size) -> exactly size bytes


def bytes_reader(blob: bytes) -> Reader:
    def read(offset: int, size: int) -> bytes:
        if offset < 0 or offset + size > len(blob):
            raise ExifError(f"offset {offset}+{size} beyond the {len(blob)}-byte block")
        return blob[offset : offset + size]

    return read


def file_reader(f: BinaryIO) -> Reader:
    def read(offset: int, size: int) -> bytes:
        f.seek(offset)
        data = f.read(size)
        if len(data) != size:
            raise ExifError(f"offset {offset}+{size} beyond the end of the file")
        return data

    return read


def read_header(read: Reader) -> tuple[str, int]:
    """Byte order ('<' or '>') and the offset of IFD0; classic TIFF only."""
    head = read(0, 8)
    if head[:4] == b"II*\x00":
        endian = "<"
    elif head[:4] == b"MM\x00*":
        endian = ">"
    else:
        raise ExifError("not a TIFF-structured block (no II*/MM* header)")
    return endian, struct.unpack(endian + "I", head[4:8])[0]


def read_ifd(read: Reader, offset: int, endian: str, depth: int = 0, seen: set[int] | None = None) -> Ifd:
    """One IFD and, recursively, the Exif/GPS/Interop IFDs it points at.

    A damaged table raises; a damaged value or sub-IFD is left out and noted in ``problems``.
    """
    seen = set() if seen is None else seen
    if offset in seen:
        raise ExifError(f"IFD at {offset} refers back to itself")
    seen.add(offset)
    (n,) = struct.unpack(endian + "H", read(offset, 2))
    if n == 0 or n > MAX_ENTRIES:
        raise ExifError(f"IFD at {offset} declares {n} entries")
    table = read(offset + 2, 12 * n + 4)
    ifd = Ifd(entries={}, next_pos=offset + 2 + 12 * n)
    for i in range(n):
        tag, typ, count, raw = struct.unpack(endian + "HHI4s", table[12 * i : 12 * i + 12])
        size = TYPE_SIZES.get(typ)
        if size is None or size * count > MAX_VALUE_BYTES:
            ifd.problems.append(f"tag {tag} (type {typ}, count {count})")
            continue
        nbytes = size * count
        try:
            data = raw[:nbytes] if nbytes <= 4 else read(struct.unpack(endian + "I", raw)[0], nbytes)
        except ExifError:
            ifd.problems.append(f"tag {tag} (value outside the block)")
            continue
        ifd.entries[tag] = Entry(tag, typ, count, data, offset + 2 + 12 * i)
        if tag in SUB_IFDS and typ in (LONG, IFD_TYPE) and count == 1 and depth < MAX_DEPTH:
            name = {EXIF_IFD: "Exif", GPS_IFD: "GPS", INTEROP_IFD: "Interop"}[tag]
            try:
                ifd.subs[tag] = read_ifd(read, struct.unpack(endian + "I", data)[0], endian, depth + 1, seen)
            except (ExifError, struct.error) as e:
                ifd.problems.append(f"{name} sub-IFD ({e})")
    return ifd


def parse(blob: bytes) -> tuple[str, Ifd]:
    """The byte order and IFD0 (with its sub-IFDs) of an EXIF block."""
    read = bytes_reader(blob)
    try:
        endian, offset = read_header(read)
        return endian, read_ifd(read, offset, endian)
    except struct.error as e:
        raise ExifError(str(e)) from e


def short_value(entry: Entry | None, endian: str) -> int | None:
    if entry is None or entry.type not in (SHORT, LONG) or entry.count < 1:
        return None
    return struct.unpack(endian + ("H" if entry.type == SHORT else "I"), entry.data[: TYPE_SIZES[entry.type]])[0]


def orientation(blob: bytes) -> int:
    """The EXIF orientation (1-8); 1 when absent or out of range."""
    endian, ifd0 = parse(blob)
    value = short_value(ifd0.entries.get(ORIENTATION), endian)
    return value if value is not None and 1 <= value <= 8 else 1


def normalise(blob: bytes, width: int, height: int) -> bytes:
    """The block as it should travel with the displayed pixels, patched in place.

    Orientation becomes 1 (the pixels are already turned upright); PixelX/YDimension become the
    displayed size; IFD1 and its thumbnail are removed, since that preview shows the input (noisy,
    and possibly in the old orientation). Everything else, maker notes included, stays byte for byte.
    """
    endian, ifd0 = parse(blob)
    buf = bytearray(blob)

    def put(entry: Entry | None, value: int) -> None:
        if entry is None or entry.count != 1:
            return
        if entry.type == SHORT and value < 65536:
            buf[entry.pos + 8 : entry.pos + 10] = struct.pack(endian + "H", value)
        elif entry.type == LONG:
            buf[entry.pos + 8 : entry.pos + 12] = struct.pack(endian + "I", value)

    put(ifd0.entries.get(ORIENTATION), 1)
    (ifd1_at,) = struct.unpack(endian + "I", blob[ifd0.next_pos : ifd0.next_pos + 4])
    buf[ifd0.next_pos : ifd0.next_pos + 4] = b"\0\0\0\0"
    exif = ifd0.subs.get(EXIF_IFD)
    if exif is not None:
        put(exif.entries.get(PIXEL_X), width)
        put(exif.entries.get(PIXEL_Y), height)
    return _without_thumbnail(buf, blob, endian, ifd0, ifd1_at)


THUMB_OFFSET, THUMB_LENGTH, STRIP_OFFSETS, STRIP_COUNTS = 513, 514, 273, 279


def _spans(ifd: Ifd, at: int, blob: bytes, endian: str) -> list[tuple[int, int]]:
    """The byte ranges an IFD occupies: its table, the values stored outside it, its sub-IFDs'."""
    out = [(at, at + 2 + 12 * len(ifd.entries) + 4)] if at else []
    for e in ifd.entries.values():
        if len(e.data) > 4:
            (off,) = struct.unpack(endian + "I", blob[e.pos + 8 : e.pos + 12])
            out.append((off, off + len(e.data)))
    for tag, sub in ifd.subs.items():
        (off,) = struct.unpack(endian + "I", ifd.entries[tag].data[:4])
        out.extend(_spans(sub, off, blob, endian))
    return out


def _without_thumbnail(buf: bytearray, blob: bytes, endian: str, ifd0: Ifd, ifd1_at: int) -> bytes:
    """The block with IFD1 and its preview picture gone, not merely unlinked.

    Cameras put them last: the block is then cut where they start. Where something else follows
    them, their bytes are zeroed instead (moving the rest would break maker notes' offsets).
    """
    if not ifd1_at:
        return bytes(buf)
    try:
        ifd1 = read_ifd(bytes_reader(blob), ifd1_at, endian)
    except (ExifError, struct.error):
        return bytes(buf)  # unreadable: unlinked, and nothing more can be told about its extent
    gone = [(ifd1_at, ifd1.next_pos + 4)]
    gone += [(a, b) for a, b in _spans(Ifd(entries=ifd1.entries), 0, blob, endian)]
    start, count = ifd1.entries.get(THUMB_OFFSET), ifd1.entries.get(THUMB_LENGTH)
    pairs = [(start, count)] if start and count else []
    if STRIP_OFFSETS in ifd1.entries and STRIP_COUNTS in ifd1.entries:
        pairs.append((ifd1.entries[STRIP_OFFSETS], ifd1.entries[STRIP_COUNTS]))
    for off_e, len_e in pairs:
        offs, lens = _ints(off_e, endian), _ints(len_e, endian)
        gone += [(o, min(o + n, len(blob))) for o, n in zip(offs, lens, strict=False) if 0 < o < len(blob)]
    kept = [(0, 8), *_spans(ifd0, struct.unpack(endian + "I", blob[4:8])[0], blob, endian)]
    first = min(a for a, _ in gone)
    if first >= max(b for _, b in kept):
        return bytes(buf[:first])
    for a, b in gone:
        buf[a:b] = bytes(b - a)
    return bytes(buf)


def _ints(entry: Entry, endian: str) -> list[int]:
    """The SHORT or LONG values of an entry."""
    code = {SHORT: "H", LONG: "I"}.get(entry.type)
    if code is None:
        return []
    return list(struct.unpack(f"{endian}{entry.count}{code}", entry.data))


def _pad(data: bytes) -> bytes:
    return data + b"\0" if len(data) % 2 else data


def serialise(ifd: Ifd, endian: str, base: int, raw: dict[int, bytes] | None = None, next_ifd: int = 0) -> bytes:
    """``ifd`` laid out to start at file offset ``base`` (even), values and sub-IFDs after it.

    ``raw``: ready 12-byte entries (of the file being written into) kept verbatim; their values
    stay where they are. Entries that hold offsets are only copied through ``subs``.
    """
    raw = raw or {}
    tags = sorted(set(raw) | set(ifd.subs) | {t for t in ifd.entries if t not in OFFSET_TAGS})
    pos = base + 2 + 12 * len(tags) + 4
    entries: dict[int, bytes] = {}
    tail: list[bytes] = []
    for tag in tags:
        if tag in raw:
            entries[tag] = raw[tag]
        elif tag not in ifd.subs:
            e = ifd.entries[tag]
            if len(e.data) <= 4:
                value = e.data.ljust(4, b"\0")
            else:
                value = struct.pack(endian + "I", pos)
                tail.append(_pad(e.data))
                pos += len(tail[-1])
            entries[tag] = struct.pack(endian + "HHI", tag, e.type, e.count) + value
    for tag in tags:  # sub-IFDs after all the values
        if tag in ifd.subs and tag not in raw:
            own = ifd.entries.get(tag)
            typ = own.type if own is not None and own.type in (LONG, IFD_TYPE) else LONG
            entries[tag] = struct.pack(endian + "HHII", tag, typ, 1, pos)
            tail.append(serialise(ifd.subs[tag], endian, pos))
            pos += len(tail[-1])
    if pos >= 1 << 32:
        raise ExifError("the file is too large for a classic TIFF offset")
    head = struct.pack(endian + "H", len(tags)) + b"".join(entries[t] for t in tags)
    return head + struct.pack(endian + "I", next_ifd) + b"".join(tail)


def to_block(ifd: Ifd, endian: str) -> bytes:
    """A standalone EXIF block (TIFF header + IFD0 at offset 8) from parsed IFDs."""
    head = (b"II*\x00" if endian == "<" else b"MM\x00*") + struct.pack(endian + "I", 8)
    return head + serialise(ifd, endian, 8)


def from_tiff(f: BinaryIO) -> tuple[bytes | None, list[str]]:
    """The photo metadata of a classic TIFF's first IFD as an EXIF block (None when there is none).

    Defaults that TIFF writers add (tifffile's software name and shape description, a resolution
    without unit) are not photo metadata and are left out.
    """
    read = file_reader(f)
    try:
        endian, offset = read_header(read)
        ifd0 = read_ifd(read, offset, endian)
    except struct.error as e:
        raise ExifError(str(e)) from e
    keep = {t: e for t, e in ifd0.entries.items() if t in TIFF_PHOTO_TAGS}
    if 305 in keep and (keep[305].data.rstrip(b"\0") == b"tifffile.py" or keep[305].data.startswith(b"aprrd ")):
        del keep[305]
    if short_value(keep.get(296), endian) == 1:  # resolution "without unit": tifffile's placeholder 1/1
        for t in (282, 283, 296):
            keep.pop(t, None)
    description = keep[270].data.lstrip() if 270 in keep else b""
    if description[:1] in (b"{", b"<") or description.startswith(b"ImageJ="):  # tifffile/OME/ImageJ layout notes
        del keep[270]
    subs = {t: s for t, s in ifd0.subs.items() if t in (EXIF_IFD, GPS_IFD)}
    if not subs and not (set(keep) - {282, 283, 296}):
        return None, []
    for t in subs:
        keep[t] = ifd0.entries[t]
    picked = Ifd(entries=keep, subs=subs)
    return to_block(picked, endian), [p for s in subs.values() for p in s.all_problems()]


def embed_in_tiff(f: BinaryIO, blob: bytes) -> list[str]:
    """Merge an EXIF block into the first IFD of a classic TIFF open for update.

    IFD0 is rewritten at the end of the file with the file's own entries (whose values stay
    where they are) plus the photo's tags, the Exif and GPS sub-IFDs after it; the header then
    points at it. The file must use the block's byte order. Returns what could not be carried.
    """
    endian, ifd0 = parse(blob)
    read = file_reader(f)
    file_endian, offset = read_header(read)
    if file_endian != endian:
        raise ExifError("the TIFF's byte order differs from the EXIF block's")
    (n,) = struct.unpack(endian + "H", read(offset, 2))
    table = read(offset + 2, 12 * n + 4)
    own = {struct.unpack(endian + "H", table[12 * i : 12 * i + 2])[0]: table[12 * i : 12 * i + 12] for i in range(n)}
    (next_ifd,) = struct.unpack(endian + "I", table[12 * n :])
    photo = {
        t: e
        for t, e in ifd0.entries.items()
        if t not in STRUCTURAL and t != INTEROP_IFD and (t not in own or t in EXIF_WINS)
    }
    subs = {t: s for t, s in ifd0.subs.items() if t in (EXIF_IFD, GPS_IFD)}
    merged = Ifd(entries=photo, subs=subs)
    kept = {t: e for t, e in own.items() if t not in photo and t not in subs}
    f.seek(0, 2)
    end = f.tell()
    base = end + end % 2
    data = serialise(merged, endian, base, kept, next_ifd)
    f.write(b"\0" * (base - end) + data)
    f.seek(4)
    f.write(struct.pack(endian + "I", base))
    return ifd0.problems + [p for s in subs.values() for p in s.all_problems()]
