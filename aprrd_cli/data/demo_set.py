"""The embedded demo set: photos shipped with scikit-image, degraded by the camera-noise simulator.

Small on purpose, so that ``make demo`` trains in minutes on a 2-core CPU: seven noisy
training photos of 256-427 px a side (``DIR/noisy``) and four evaluation pairs of 256 x 256
(``DIR/pairs/noisy`` and ``DIR/pairs/gt``, same names) cut from regions of the photos that
the training images do not contain. The ground truth is the noise-free render through the
same camera pipeline (see ``noise_sim.render_clean``). Everything is deterministic under
``seed``; files that already exist are left alone, so re-running changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from aprrd_cli.data.images import write_image
from aprrd_cli.data.noise_sim import CameraNoise, render_clean, simulate
from aprrd_cli.errors import AprrdError

# (name, scikit-image photo, crop (top, left, height, width) or None, downscale to this longest side or None)
TRAIN = (
    ("astronaut_top", "astronaut", (0, 128, 256, 384), None),
    ("astronaut_left", "astronaut", (256, 0, 256, 256), None),
    ("coffee_left", "coffee", (0, 0, 400, 320), None),
    ("rocket_left", "rocket", (0, 0, 427, 352), None),
    ("immunohistochemistry", "immunohistochemistry", None, 320),
    ("hubble", "hubble_deep_field", None, 384),
    ("retina", "retina", (205, 205, 1000, 1000), 320),
)
# evaluation crops: disjoint from the training crops of the same photo
PAIRS = (
    ("astronaut", "astronaut", (256, 256, 256, 256)),
    ("coffee", "coffee", (144, 344, 256, 256)),
    ("rocket", "rocket", (171, 384, 256, 256)),
    ("chelsea", "chelsea", (22, 195, 256, 256)),
)


def _photo(name: str) -> np.ndarray:
    try:
        import skimage.data
    except ImportError as e:
        raise AprrdError(
            "the demo set needs scikit-image (its bundled photos): pip install scikit-image", exit_code=2
        ) from e
    img = getattr(skimage.data, name)()
    return np.ascontiguousarray(img[:, :, :3])


def _cut(img: np.ndarray, box: tuple[int, int, int, int] | None, longest: int | None) -> np.ndarray:
    if box is not None:
        top, left, h, w = box
        img = img[top : top + h, left : left + w]
    if longest is not None and max(img.shape[:2]) > longest:
        import cv2

        s = longest / max(img.shape[:2])
        size = (round(img.shape[1] * s), round(img.shape[0] * s))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)  # averaging: a cleaner, sharper photo
    return np.ascontiguousarray(img)


def build_demo_set(dir: Path, seed: int = 0, cam: CameraNoise = CameraNoise()) -> Path:
    """Write ``dir/noisy/*.png`` and ``dir/pairs/{noisy,gt}/*.png``; returns ``dir``."""
    dir = Path(dir)
    _check_or_record_parameters(dir, seed, cam)
    jobs = [(dir / "noisy" / f"{n}.png", None, photo, box, longest) for n, photo, box, longest in TRAIN]
    jobs += [(dir / "pairs" / "noisy" / f"{n}.png", dir / "pairs" / "gt" / f"{n}.png", p, b, None) for n, p, b in PAIRS]
    for i, (noisy_path, gt_path, photo, box, longest) in enumerate(jobs):
        if noisy_path.exists() and (gt_path is None or gt_path.exists()):
            continue
        clean = _cut(_photo(photo), box, longest)
        rng = np.random.Generator(np.random.PCG64([seed, i]))
        write_image(noisy_path, simulate(clean, rng, cam))
        if gt_path is not None:
            write_image(gt_path, render_clean(clean, cam))
    return dir


def _check_or_record_parameters(dir: Path, seed: int, cam: CameraNoise) -> None:
    """Existing files are reused only if they were made with the same noise (``dir/demo.json``)."""
    from aprrd_cli.utils.atomic import atomic_write_text

    params = {"seed": seed, "camera": json.loads(json.dumps(asdict(cam)))}
    record = dir / "demo.json"
    if not record.exists() and dir.is_dir() and any(dir.iterdir()):
        raise AprrdError(
            f"{dir} is not empty and holds no demo set (no {record.name}); give --demo a new or empty folder, "
            "so that no file of yours is overwritten or mixed into the demo set"
        )
    if dir.exists() and not dir.is_dir():
        raise AprrdError(f"{dir} is a file; give --demo a new or empty folder")
    if record.exists():
        try:
            old = json.loads(record.read_text())
        except (OSError, ValueError):
            old = None
        if old != params:
            raise AprrdError(
                f"{dir} holds a demo set made with other noise settings ({record}); "
                "choose another folder or delete this one"
            )
        return
    atomic_write_text(record, json.dumps(params, indent=1))
