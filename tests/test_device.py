"""The device manager: present devices only, clear refusals."""

from __future__ import annotations

import pytest
import torch

from aprrd_cli.device import resolve_device, resolve_precision, set_threads
from aprrd_cli.errors import DeviceError


def test_auto_and_cpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("CPU") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_absent_cuda_is_refused() -> None:
    for spec in ("cuda", "cuda:0", "cuda:7"):
        with pytest.raises(DeviceError, match=f"device {spec} requested but no CUDA GPU is visible"):
            resolve_device(spec)


def test_nonsense_is_a_usage_error() -> None:
    with pytest.raises(DeviceError) as e:
        resolve_device("gpu0")
    assert e.value.exit_code == 2


def test_precision_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setenv("APRRD_CPU_BF16", "0")
    assert resolve_precision(None, cpu) == "fp32"
    assert resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setenv("APRRD_CPU_BF16", "1")
    assert resolve_precision(None, cpu) == "bf16"
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(DeviceError, match="fp16 is not supported on the CPU"):
        resolve_precision("fp16", cpu)
    with pytest.raises(DeviceError, match="unknown precision"):
        resolve_precision("fp8", cpu)


def test_threads() -> None:
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1
        assert set_threads(None) == 1
        with pytest.raises(DeviceError):
            set_threads(0)
    finally:
        torch.set_num_threads(before)
