"""Shared fixtures: the reference files in ../shared (skipped with a reason when absent)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import REAL, REFERENCE, Mirror, need

# One thread: tests use tiny tensors, and on a busy 2-core machine two OpenMP threads
# thrash (measured: tiny convolutions ~50x slower). CI time stays predictable.
torch.set_num_threads(1)

# A shell without job control starts background jobs (`make test &`, nohup) with SIGINT ignored,
# and exec'd children inherit that: the Ctrl-C tests would then test nothing and fail. Restoring
# Python's handler here also gives the aprrd processes the tests start the default disposition.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        default="cpu",
        help="device of the tests that exercise one (those using the `device` fixture): cpu, cuda or cuda:N",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that take the ``device`` fixture are marked ``device``: ``pytest -m device --device cuda``
    runs exactly them on a GPU (make gpu-check does)."""
    for item in items:
        if "device" in getattr(item, "fixturenames", ()):
            item.add_marker("device")


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    """The device under test (``--device``, default cpu), with true fp32 arithmetic on GPUs (no TF32)."""
    from aprrd_cli.device import set_fp32_math

    spec = request.config.getoption("--device")
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            pytest.skip(f"--device {spec} asked for, but no CUDA GPU is visible")
        torch.cuda.set_device(dev)
        set_fp32_math("fp32")
    return dev


@pytest.fixture(autouse=True)
def one_thread():
    """Every test starts on one thread, even if an in-process command (--threads N) changed it."""
    torch.set_num_threads(1)
    yield


# Nothing listens on the discard port: a named model that a test fetches without serving it
# fails at once, offline, instead of reaching the internet.
OFFLINE_URL = "http://127.0.0.1:9/"


@pytest.fixture(autouse=True)
def offline_weights(tmp_path_factory, monkeypatch):
    """No test touches the internet or the user's cache: named models come from an empty
    per-test cache and an address where nothing answers, unless the test serves them."""
    monkeypatch.setenv("APRRD_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("APRRD_WEIGHTS_URL", OFFLINE_URL)
    yield


@pytest.fixture
def mirror(tmp_path, monkeypatch) -> Iterator[Mirror]:
    """A local server laid out as the release (``APRRD_WEIGHTS_URL`` points at it): tests put the
    named models' files there."""
    m = Mirror(tmp_path / "mirror")
    monkeypatch.setenv("APRRD_WEIGHTS_URL", m.url)
    yield m
    m.close()


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory) -> Path:
    """A random width-8 student in our format: fast, and enough to test the plumbing."""
    from aprrd_cli.models import NBSN100
    from aprrd_cli.models.checkpoint import save_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_student") / "student.pth"
    save_model(path, NBSN100(width=8), iteration=0)
    return path


@pytest.fixture(scope="session")
def golden() -> dict[str, np.ndarray]:
    with np.load(need(REFERENCE / "golden.npz")) as g:
        return {k: g[k] for k in g.files}


@pytest.fixture(scope="session")
def official_student_path() -> Path:
    return need(REFERENCE / "nbsn_1.00M_sidd_medium.pth")


@pytest.fixture(scope="session")
def official_student_102_path() -> Path:
    return need(REFERENCE / "nbsn_1.02M_sidd_medium.pth")


@pytest.fixture(scope="session")
def random_teacher_path() -> Path:
    return need(REFERENCE / "atbsn_random_seed0.pth")


@pytest.fixture(scope="session")
def sidd7() -> Path:
    return need(REAL / "sidd7")


@pytest.fixture
def cli(capsys):
    """Run ``aprrd ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from aprrd_cli.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
