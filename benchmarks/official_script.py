"""The official release's way of denoising a folder, for the end-to-end benchmark.

``python -m benchmarks.official_script MODEL IN_DIR OUT_DIR``: load the official
checkpoint into the baseline network, then for each image read it with PIL, run it under
``no_grad`` in float32, clip, round and write a PNG, as the official test script does.
Only torch, numpy, PIL and the baseline module are imported.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.baseline import load_official


def main(argv: list[str]) -> None:
    model, src, dst = Path(argv[0]), Path(argv[1]), Path(argv[2])
    net = load_official(model)
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.glob("*.png")):
        img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
        x = torch.from_numpy(img.transpose(2, 0, 1).copy()).unsqueeze(0)
        with torch.no_grad():
            y = net(x)
        out = (y[0].clamp(0, 1).numpy().transpose(1, 2, 0) * 255.0).round().astype(np.uint8)
        Image.fromarray(out).save(dst / path.name)


if __name__ == "__main__":
    main(sys.argv[1:])
