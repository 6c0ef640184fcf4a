"""Named models: the official release's students, fetched once into a cache and verified.

``--model official`` (the 1.00M student) and ``--model official-1.02M`` name the files of the
APR-RD release, pinned to one commit and checked by SHA-256 before every use. The first use
downloads the file with ``torch.hub.download_url_to_file`` (PyTorch's own downloader, with
its hash check) into ``$APRRD_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/aprrd``; later
uses read the cache and need no network. ``APRRD_WEIGHTS_URL`` replaces the release's base
address: a mirror, an offline copy (``file:///...``) or a test server. A server that does not
connect or stops sending ends the download after ``APRRD_DOWNLOAD_TIMEOUT`` seconds (30) with
a one-line error; with a mirror set, errors also name the release's own address.

The download lands in a temporary file beside its target and is renamed over it only once
complete and verified (``utils.atomic.atomic_path``), so the cache never holds half a file or a
file with the wrong hash, also on Ctrl-C; two processes fetching at once each write their
own temporary and rename the same bytes into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import math
import os
import socket
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aprrd_cli.console import LineProgress, console, progress, warn
from aprrd_cli.errors import AprrdError
from aprrd_cli.utils.atomic import atomic_path, check_output_dir

RELEASE = "HYK2017/APRRD"
RELEASE_COMMIT = "36df6e0d8fff8c5ba0055ee14ae95c07f092c2cf"
RELEASE_URL = f"https://raw.githubusercontent.com/{RELEASE}/{RELEASE_COMMIT}/"
TIMEOUT_SECONDS = 30.0  # a server that does not answer (connect, or any read) ends the download with an error
LINE_SECONDS = 5.0  # in a log file, a progress line at least this often while a download runs


@dataclass(frozen=True)
class NamedModel:
    """A released checkpoint: where it lies in the release, its hash, and what it is."""

    name: str
    path: str  # relative to the release's root
    sha256: str
    size: int  # bytes
    about: str

    @property
    def file_name(self) -> str:
        """The cache's file name: the network and the hash's first characters."""
        stem = self.path.split("/")[0].lower()
        return f"{stem}_sidd_medium-{self.sha256[:8]}.pth"


NAMED: dict[str, NamedModel] = {
    m.name: m
    for m in (
        NamedModel(
            "official",
            "NBSN_1.00M/pretrained/NBSN_SIDD_Medium.pth",
            "42dc066bcc3aa973724cf406d19c6bfd9fa5276cf89b5e974ce5b9d30b26bc1f",
            4_025_343,
            "the APR-RD release's 1.00M student, trained on SIDD Medium",
        ),
        NamedModel(
            "official-1.02M",
            "NBSN_1.02M/pretrained/NBSN_SIDD_Medium.pth",
            "f743c0ed401a7b882f39f46fcba19f7c2c84ba190674c26b79c21239c17da041",
            4_095_991,
            "the APR-RD release's 1.02M student (the AT-BSN paper's network), trained on SIDD Medium",
        ),
    )
}


def cache_dir() -> Path:
    """``$APRRD_CACHE``, else ``$XDG_CACHE_HOME/aprrd``, else ``~/.cache/aprrd``."""
    if os.environ.get("APRRD_CACHE"):
        return Path(os.environ["APRRD_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "aprrd"


def base_url() -> str:
    """The release's base address, or ``APRRD_WEIGHTS_URL`` (always ending in ``/``)."""
    url = os.environ.get("APRRD_WEIGHTS_URL") or RELEASE_URL
    return url if url.endswith("/") else url + "/"


def url_of(model: NamedModel) -> str:
    return base_url() + model.path


def timeout_seconds() -> float:
    """How long a download waits for the server to connect or to send more (``APRRD_DOWNLOAD_TIMEOUT``,
    default 30 s): a server that accepts and never answers ends in an error, not a hang."""
    try:
        seconds = float(os.environ.get("APRRD_DOWNLOAD_TIMEOUT", TIMEOUT_SECONDS))
    except ValueError:
        return TIMEOUT_SECONDS
    return seconds if seconds > 0 and math.isfinite(seconds) else TIMEOUT_SECONDS


def cached_path(model: NamedModel) -> Path:
    return cache_dir() / model.file_name


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_named(spec: str | os.PathLike | None) -> bool:
    return isinstance(spec, str) and spec in NAMED


def fetch(name: str) -> Path:
    """The verified local file of a named model, downloading it on first use."""
    model = NAMED[name]
    path = cached_path(model)
    if path.is_file():
        if sha256_of(path) == model.sha256:
            return path
        warn(f"{path} does not match the SHA-256 of the {name} weights (damaged or replaced); downloading it again")
        with contextlib.suppress(OSError):
            path.unlink()
    _download(model, path)
    return path


def path_of(spec: str) -> Path:
    """The file a weights option names: a named model's verified file (downloaded on first use), or
    the path itself, unchecked (each option reports a missing file in its own words)."""
    return fetch(spec) if is_named(spec) else Path(spec)


def _by_hand(model: NamedModel, url: str, path: Path) -> str:
    """Where else the file may be had: with a mirror set, the release's own address (the mirror's
    copy may be the bad one), else a mirror."""
    release = RELEASE_URL + model.path
    if url != release:
        return f"download {release} (the release's own copy) by hand and put it at {path}, or unset APRRD_WEIGHTS_URL"
    return f"download {url} by hand and put it at {path}, or set APRRD_WEIGHTS_URL to a mirror"


def _download(model: NamedModel, path: Path) -> None:
    url = url_of(model)
    check_output_dir(path.parent, f"{model.name} weights (set APRRD_CACHE to a writable folder)")
    by_hand = _by_hand(model, url, path)
    timeout = timeout_seconds()
    import torch.hub

    console.print(
        f"downloading the {model.name} weights ({model.size / 1e6:.1f} MB) from {url} "
        f"(gives up after {timeout:g} s without an answer)"
    )
    with atomic_path(path) as tmp:
        # network failures become one line here, inside the block: atomic_path would report any
        # OSError (URLError is one) as a problem of the folder written to
        try:
            with _socket_timeout(timeout), _rich_progress(torch.hub, model.name):
                torch.hub.download_url_to_file(url, str(tmp), hash_prefix=model.sha256, progress=True)
        except urllib.error.HTTPError as e:
            raise AprrdError(
                f"cannot download the {model.name} weights: {url} answered {e.code} {e.reason}; {by_hand}"
            ) from e
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            if isinstance(reason, TimeoutError):  # socket.timeout is TimeoutError
                reason = f"the server did not answer for {timeout:g} s (APRRD_DOWNLOAD_TIMEOUT); check the network"
            raise AprrdError(f"cannot download the {model.name} weights from {url}: {reason}; {by_hand}") from e
        except RuntimeError as e:
            if "invalid hash value" not in str(e):
                raise
            got = str(e).rsplit('got "', 1)[-1].rstrip('")')
            raise AprrdError(
                f"{url} does not hold the {model.name} weights (SHA-256 {got[:16]}..., expected "
                f"{model.sha256[:16]}...); the download was refused and not kept; check APRRD_WEIGHTS_URL, or {by_hand}"
            ) from e
    console.print(f"{model.name} weights verified (SHA-256) and cached at {path}")


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """urllib has no timeout by default: a stalled server would hang the command."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


@contextlib.contextmanager
def _rich_progress(hub: object, name: str) -> Iterator[None]:
    """Show PyTorch's download progress with our progress display (bytes, rate, ETA).

    ``torch.hub`` reports through a ``tqdm``-like object that it looks up in its own module;
    for the download this stands in for it.
    """
    display = progress("B")
    if isinstance(display, LineProgress):  # a log file: a line every few seconds, not every 30
        display.every = min(display.every, LINE_SECONDS)

    class Bar:
        def __init__(self, total: int | None = None, disable: bool = False, **_: object) -> None:
            self.task = display.add_task(name, total=total)

        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def update(self, n: int) -> None:
            display.advance(self.task, n)

    before = hub.tqdm
    hub.tqdm = Bar
    try:
        with display:
            yield
    finally:
        hub.tqdm = before


def describe_named(name: str) -> str:
    return f"{name} ({NAMED[name].about})"


__all__ = ["NAMED", "NamedModel", "base_url", "cache_dir", "cached_path", "fetch", "is_named", "url_of"]
