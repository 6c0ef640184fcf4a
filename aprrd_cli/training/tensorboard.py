"""TensorBoard event files of a training run (``--tensorboard``): RUN/tensorboard/.

The loss and the learning rate at each log record (the numbers log.jsonl holds), and at each
validation its PSNR and SSIM and a picture, noisy | output, of the first validation image
(its centre 512x512). log.jsonl and loss.png stay as they are; this is a second view for
those who follow their runs in TensorBoard (``tensorboard --logdir runs``).

The ``tensorboard`` package is an optional extra (``pip install 'aprrd[tensorboard]'``):
asking for the events without it is refused before the run starts.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from rich.markup import escape

from aprrd_cli.errors import AprrdError

FOLDER = "tensorboard"  # inside the run folder
PIP_EXTRA = "'aprrd[tensorboard]'"


def check_available() -> None:
    """Refuse ``--tensorboard`` in one line, naming the extra, when the package is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        # escaped: the CLI prints errors as rich markup, where [tensorboard] would be a style tag
        raise AprrdError(f"--tensorboard needs the tensorboard package: pip install {escape(PIP_EXTRA)}", exit_code=2)


class Board:
    """An event-file writer for one run. A run resumed from iteration ``start`` drops the events
    written after it (TensorBoard's ``purge_step``), as log.jsonl is cut back, so the curves do not
    hold the steps of an interrupted process twice."""

    def __init__(self, run_dir: Path, start: int) -> None:
        check_available()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(run_dir) / FOLDER), purge_step=start + 1 if start else None)

    def train(self, iteration: int, loss: float, lr: float) -> None:
        self.writer.add_scalar("train/loss", loss, iteration)
        self.writer.add_scalar("train/lr", lr, iteration)

    def validation(self, iteration: int, psnr: float, ssim: float, picture: np.ndarray | None) -> None:
        self.writer.add_scalar("val/psnr", psnr, iteration)
        self.writer.add_scalar("val/ssim", ssim, iteration)
        if picture is not None:
            self.writer.add_image("val/noisy_output", picture, iteration, dataformats="HWC")
        self.writer.flush()  # a validation is a moment to look at: make it visible now

    def close(self) -> None:
        self.writer.close()
