"""docs/api.md runs as written: its ```python blocks in one namespace, its ```bash `aprrd` lines
through the CLI, in a folder with real photos (crops of sidd7) and the official weights served
from a local mirror, as a new user would paste them."""

from __future__ import annotations

import contextlib
import io
import re
import shlex

import numpy as np
import pytest

from aprrd_cli.data.images import read_image, write_image
from aprrd_cli.models import zoo
from tests.helpers import REAL, REFERENCE, REPO, need

DOC = REPO / "docs" / "api.md"
BLOCK = re.compile(r"```(python|bash)\n(.*?)```", re.S)


def blocks() -> list[tuple[str, str]]:
    """docs/api.md's blocks, then the README's Python ones (its section on the API)."""
    readme = [(k, c) for k, c in BLOCK.findall((REPO / "README.md").read_text()) if k == "python"]
    return BLOCK.findall(DOC.read_text()) + readme


def test_the_doc_has_the_examples_it_promises() -> None:
    kinds = [k for k, _ in blocks()]
    assert kinds.count("python") >= 7 and kinds.count("bash") >= 1
    code = "\n".join(c for _, c in blocks())
    for name in ("aprrd.load", ".denoise(", ".denoise_file(", "aprrd.psnr", "aprrd.ssim", "torch.hub.load",
                 "onnxruntime", "torch.jit.load", "aprrd export"):  # fmt: skip
        assert name in code, name


@pytest.mark.slow
def test_every_example_of_docs_api_runs(cli, mirror, tmp_path, monkeypatch) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime is a test dependency (pip install -e '.[dev]')")
    pytest.importorskip("onnx", reason="ONNX export needs the export extra (pip install -e '.[dev]')")
    mirror.put(zoo.NAMED["official"], need(REFERENCE / "nbsn_1.00M_sidd_medium.pth").read_bytes())
    noisy = read_image(need(REAL / "sidd7" / "noisy" / "NOISY_1.png"))[0][:72, :104]
    clean = read_image(REAL / "sidd7" / "gt" / "NOISY_1.png")[0][:72, :104]
    write_image(tmp_path / "noisy.png", noisy)
    write_image(tmp_path / "clean.png", clean)
    write_image(tmp_path / "noisy16.tif", noisy.astype(np.uint16) * 257)
    (tmp_path / "aprrd").symlink_to(REPO)  # "the folder you cloned"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    printed = io.StringIO()
    for kind, code in blocks():
        if kind == "python":
            with contextlib.redirect_stdout(printed):
                exec(compile(code, str(DOC), "exec"), namespace)
            continue
        for line in code.splitlines():
            if line.startswith("aprrd "):
                status, _, err = cli(*shlex.split(line)[1:])
                assert status == 0, (line, err)
    out = printed.getvalue()
    # what the examples say they do
    assert "(72, 104, 3) uint8" in out
    assert "(72, 104) uint16 torch.Size([1, 3, 72, 104]) cpu" in out
    assert "tile=10 is below the 64-pixel minimum" in out
    scores = re.search(r"noisy ([\d.]+) dB, denoised ([\d.]+) dB, SSIM ([\d.]+)", out)
    assert scores and float(scores[2]) > float(scores[1]) + 5  # a SIDD crop: the official student removes the noise
    assert "torch.Size([1, 3, 100, 130])" in out and "torch.Size([2, 3, 64, 90])" in out
    assert "noisy: float32 B x 3 x H x W" in out
    assert read_image(tmp_path / "denoised16.png")[1].dtype == "uint16"
    # the onnxruntime example writes what the API writes, within a grey level
    api = read_image(tmp_path / "denoised.png")[0].astype(int)
    onnx = read_image(tmp_path / "denoised_onnx.png")[0].astype(int)
    assert np.abs(api - onnx).max() <= 1
