"""The photo formats aprrd reads and writes, one record each.

Everything that differs between formats and is not codec code lives here: the suffixes, how a
file is recognised from its first bytes, the sample types it can hold (and the bits it stores
them at), alpha, which metadata blocks it carries, and whether it is lossy (``--quality``). The
codecs themselves are in :mod:`aprrd_cli.data.images` (PNG, TIFF, JPEG) and
:mod:`aprrd_cli.data.pillow_codecs` (HEIC, WebP, AVIF); every message that lists the formats is
built from this table, so a new format is one record and its two codec functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aprrd_cli.errors import InputError

# metadata blocks a photo can carry: colour profile, EXIF (camera, date, GPS), XMP (ratings, keywords,
# edits), IPTC-IIM (captions, keywords, place: what newsrooms and photo managers fill in)
ICC, EXIF, XMP, IPTC = "ICC profile", "EXIF", "XMP", "IPTC"
BIT_DEPTHS = {"uint8": 8, "uint16": 16}  # integer sample types, as --bit-depth names them


@dataclass(frozen=True)
class Format:
    """What one file format is and can hold."""

    name: str  # the internal key: png | tiff | jpeg | heic | webp | avif
    label: str  # as users write it in a message
    suffixes: tuple[str, ...]  # lower case; the first is the one --format gives
    choices: tuple[str, ...]  # what --format accepts for it; the first is shown in help
    sniff: Callable[[bytes], bool]  # recognises the first 64 bytes of a file
    dtypes: tuple[str, ...]  # sample types it holds; the first is the default for others
    alpha: bool
    metadata: frozenset[str]
    default_quality: int | None = None  # lossy formats: the --quality used when none is given
    stored_bits: int | None = None  # uint16 stored at fewer bits (10 for HEIC)
    quality_note: str = ""  # what --quality means beyond 1-100, for the help text

    @property
    def lossy(self) -> bool:
        return self.default_quality is not None

    @property
    def suffix(self) -> str:
        return self.suffixes[0]

    def holds(self, dtype: str) -> bool:
        return dtype in self.dtypes


def _is_tiff(head: bytes) -> bool:
    return head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _iso_brands(head: bytes) -> set[bytes]:
    """The major and compatible brands of an ISO base media file's ``ftyp`` box (HEIF, AVIF)."""
    if len(head) < 16 or head[4:8] != b"ftyp":
        return set()
    size = min(int.from_bytes(head[:4], "big"), len(head))
    return {head[8:12]} | {head[i : i + 4] for i in range(16, size - 3, 4)}


_HEIC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"mif2"}
_AVIF_BRANDS = {b"avif", b"avis"}


def _is_avif(head: bytes) -> bool:
    return bool(_iso_brands(head) & _AVIF_BRANDS)


def _is_heic(head: bytes) -> bool:
    brands = _iso_brands(head)
    return bool(brands & _HEIC_BRANDS) and not brands & _AVIF_BRANDS


FORMATS: tuple[Format, ...] = (
    Format(
        "png",
        "PNG",
        (".png",),
        ("png",),
        lambda h: h.startswith(b"\x89PNG\r\n\x1a\n"),
        ("uint8", "uint16"),
        alpha=True,
        metadata=frozenset({ICC, EXIF, XMP}),
    ),
    Format(
        "tiff",
        "TIFF",
        (".tif", ".tiff"),
        ("tif", "tiff"),
        _is_tiff,
        ("uint8", "uint16", "float32"),
        alpha=True,
        metadata=frozenset({ICC, EXIF, XMP, IPTC}),
    ),
    Format(
        "jpeg",
        "JPEG",
        (".jpg", ".jpeg"),
        ("jpg", "jpeg"),
        lambda h: h[:3] == b"\xff\xd8\xff",
        ("uint8",),
        alpha=False,
        metadata=frozenset({ICC, EXIF, XMP, IPTC}),
        default_quality=95,
        quality_note="colour is never subsampled",
    ),
    Format(
        "heic",
        "HEIC",
        (".heic", ".heif", ".hif"),
        ("heic", "heif"),
        _is_heic,
        ("uint8", "uint16"),
        alpha=True,
        metadata=frozenset({ICC, EXIF, XMP}),
        default_quality=90,
        stored_bits=10,
        quality_note="colour is not subsampled",
    ),
    Format(
        "webp",
        "WebP",
        (".webp",),
        ("webp",),
        lambda h: h[:4] == b"RIFF" and h[8:12] == b"WEBP",
        ("uint8",),
        alpha=True,
        metadata=frozenset({ICC, EXIF, XMP}),
        default_quality=90,
        quality_note="100 writes lossless WebP",
    ),
    Format(
        "avif",
        "AVIF",
        (".avif",),
        ("avif",),
        _is_avif,
        ("uint8",),
        alpha=True,
        metadata=frozenset({ICC, EXIF, XMP}),
        default_quality=90,
        quality_note="colour is not subsampled",
    ),
)
BY_NAME = {f.name: f for f in FORMATS}
BY_SUFFIX = {s: f for f in FORMATS for s in f.suffixes}
BY_CHOICE = {c: f for f in FORMATS for c in f.choices}


def _listed(words: list[str], last: str) -> str:
    return ", ".join(words[:-1]) + f" {last} " + words[-1] if len(words) > 1 else words[0]


def names(fmts: tuple[Format, ...] | list[Format] = FORMATS, last: str = "or") -> str:
    """'PNG, TIFF, JPEG, HEIC, WebP or AVIF': the formats as a message names them."""
    return _listed([f.label for f in fmts], last)


def suffix_list() -> str:
    """'.png, .tif/.tiff, ...': the suffixes, grouped by format."""
    return ", ".join("/".join(f.suffixes) for f in FORMATS)


def choice_list(sep: str = "|") -> str:
    """'png|tif|jpg|heic|webp|avif': what --format takes."""
    return sep.join(f.choices[0] for f in FORMATS)


def sniff(head: bytes) -> Format | None:
    """The format whose signature the first bytes of a file carry."""
    return next((f for f in FORMATS if f.sniff(head)), None)


def for_suffix(path: Path) -> Format | None:
    return BY_SUFFIX.get(path.suffix.lower())


def for_path(path: Path) -> Format:
    """The format an output path's suffix names; an error naming the known suffixes otherwise."""
    fmt = for_suffix(path)
    if fmt is None:
        raise InputError(f"{path}: unknown output type {path.suffix!r}; use {suffix_list()}")
    return fmt


def lossy() -> list[Format]:
    return [f for f in FORMATS if f.lossy]


def quality_help() -> str:
    """Each lossy format's default quality and what it adds, for --quality's help."""
    return "; ".join(
        f"{f.label} default {f.default_quality}" + (f", {f.quality_note}" if f.quality_note else "") for f in lossy()
    )


def holding(dtype: str) -> list[Format]:
    return [f for f in FORMATS if f.holds(dtype)]
