"""Helpers the test modules share: where the reference files are, tiny images and files in
the real formats, and reading the one-line messages. Fixtures live in ``conftest.py``."""

from __future__ import annotations

import http.server
import itertools
import struct
import threading
import zlib
from functools import partial
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from aprrd_cli.models import zoo

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "reference"
REAL = SHARED / "data" / "real"


def need(path: Path) -> Path:
    """Skip the calling test, with the reason, when a shared file is missing."""
    if not path.exists():
        pytest.skip(f"{path} is absent: the reference files live in ../shared beside the repo")
    return path


def flat(text: str) -> str:
    """The console wraps long lines; compare messages with single spaces."""
    return " ".join(text.split())


def one_line(err: str) -> str:
    """The last non-empty line of a command's stderr (its one error line), after checking there is
    no traceback."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines and "Traceback" not in err, err
    return lines[-1]


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A random 8-bit RGB image."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_header(width: int, height: int) -> bytes:
    """The signature and IHDR of an 8-bit RGB PNG declaring this size, and nothing else."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + crc


def matlab73(path: Path) -> h5py.File:
    """An HDF5 file with MATLAB's 512-byte user block, as ``save -v7.3`` writes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return h5py.File(path, "w", userblock_size=512)


def stamp_matlab_header(path: Path) -> None:
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    header = text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as f:
        f.write(header.ljust(512, b"\x00"))


def write_dnd(root: Path, images: list[np.ndarray], boxes: list[np.ndarray]) -> None:
    """dnd_2017/info.mat (cell of object references, arrays transposed) and images_srgb/NNNN.mat."""
    d = root / "dnd_2017"
    info = d / "info.mat"
    with matlab73(info) as f:
        refs = f.create_group("#refs#")
        cell = [refs.create_dataset(f"b{i}", data=b.T.astype(np.float64)).ref for i, b in enumerate(boxes)]
        bb = f.create_group("info").create_dataset("boundingboxes", shape=(1, len(cell)), dtype=h5py.ref_dtype)
        bb[0, :] = cell
    stamp_matlab_header(info)
    for i, img in enumerate(images):
        p = d / "images_srgb" / f"{i + 1:04d}.mat"
        with matlab73(p) as f:
            f.create_dataset("InoisySRGB", data=img.T)  # MATLAB H x W x 3 -> HDF5 3 x W x H
        stamp_matlab_header(p)


def dnd_crop(img: np.ndarray, box) -> np.ndarray:
    x1, y1, x2, y2 = box  # as DND's own script: x along rows, 1-based inclusive
    return img[x1 - 1 : x2, y1 - 1 : y2]


def correlated_noisy_image(size: int = 96, seed: int = 0) -> np.ndarray:
    """A smooth picture plus spatially correlated noise (blurred white noise): 3 x H x W in [0,1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    clean = np.stack([0.5 + 0.3 * np.sin(6 * xx), 0.5 + 0.3 * np.cos(5 * yy), 0.4 + 0.3 * xx * yy])
    noise = np.stack([gaussian_filter(rng.normal(0, 1, (size, size)), 0.8) for _ in range(3)])
    return np.clip(clean + 0.12 * noise / noise.std(), 0, 1).astype(np.float32)


class TinySampler:
    """Random crops of one image; batch(step) is a pure function of (seed, step), like PatchSampler."""

    def __init__(self, image, patch, batch, seed=0, rank=0, world=1, poison=None, interrupt=None):
        self.image, self.patch, self.seed = torch.from_numpy(image), patch, seed
        self.batch_size, self.rank, self.world = batch, rank, world
        self.poison, self.interrupt = poison, interrupt

    def sample(self, step: int, index: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, step, index])
        _, h, w = self.image.shape
        r, c = rng.integers(0, h - self.patch + 1), rng.integers(0, w - self.patch + 1)
        return self.image[:, r : r + self.patch, c : c + self.patch]

    def batch(self, step: int) -> torch.Tensor:
        per = self.batch_size // self.world
        out = torch.stack([self.sample(step, i) for i in range(self.rank * per, (self.rank + 1) * per)])
        if self.poison is not None and step == self.poison:
            out[:] = float("nan")
        return out

    def loader(self, start_step: int, num_workers: int = 0, pin_memory: bool = False):
        for s in itertools.count(start_step):
            if self.interrupt is not None and s == self.interrupt:
                raise KeyboardInterrupt
            yield s, self.batch(s)


class Mirror:
    """A folder laid out as the release, served on 127.0.0.1; counts the requests."""

    def __init__(self, root: Path, together: int = 0) -> None:
        """``together``: hold each request until that many have arrived (so downloads overlap
        however slowly the clients start); a sleep alone is not enough on a loaded machine."""
        self.root = root
        self.requests: list[str] = []
        mirror = self
        barrier = threading.Barrier(together) if together else None

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                mirror.requests.append(self.path)
                if barrier is not None:
                    try:
                        barrier.wait(timeout=100)
                    except threading.BrokenBarrierError:
                        pass  # the other never came: serve anyway, the test's count will say so
                super().do_GET()

            def log_message(self, *args: object) -> None:  # keep the test output clean
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def put(self, model: zoo.NamedModel, data: bytes) -> None:
        path = self.root / model.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def random_store(root: Path, seed: int, val_side: tuple[int, int] = (32, 32)) -> Path:
    """Two random 64 x 72 photos made into a store by aprrd prepare-data (ROOT/prep), with one
    random validation pair of ``val_side`` (h, w) in ROOT/prep/val; returns ROOT/prep."""
    from aprrd_cli.cli import main
    from aprrd_cli.data.images import write_image

    rng = np.random.default_rng(seed)
    for i in range(2):
        write_image(root / "photos" / f"p{i}.png", rng.integers(0, 256, (64, 72, 3), dtype=np.uint8))
    assert main(["prepare-data", str(root / "photos"), "--out", str(root / "prep")]) == 0
    for sub in ("noisy", "gt"):
        write_image(root / "prep" / "val" / sub / "v.png", rng.integers(0, 256, (*val_side, 3), dtype=np.uint8))
    return root / "prep"
