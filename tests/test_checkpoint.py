"""Checkpoints: our format records what it holds; official files load; bad files fail clearly."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

from aprrd_cli import __version__
from aprrd_cli.errors import CheckpointError
from aprrd_cli.models import ATBSN, NBSN100, NBSN102
from aprrd_cli.models.checkpoint import load_model, read_raw, recognise, save_model


@pytest.mark.parametrize("cls", [ATBSN, NBSN100, NBSN102])
def test_our_format_round_trips_with_its_metadata(tmp_path: Path, cls) -> None:
    torch.manual_seed(0)
    model = cls(width=8)
    p = tmp_path / "m.pth"
    save_model(p, model, iteration=123, stage="test")
    raw = read_raw(p)
    assert raw["aprrd_version"] == __version__ and raw["iteration"] == 123 and raw["config"] == {"width": 8}
    assert raw["kind"] == cls.kind and raw["arch"] == cls.arch and raw["stage"] == "test"
    loaded = load_model(p)
    assert loaded.source == "aprrd" and loaded.iteration == 123 and loaded.arch == cls.arch
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.model.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)


def test_official_files_are_recognised_from_their_keys(
    official_student_path, official_student_102_path, random_teacher_path
) -> None:
    for path, arch, kind in (
        (official_student_path, "nbsn-1.00M", "student"),
        (official_student_102_path, "nbsn-1.02M", "student"),
        (random_teacher_path, "atbsn", "teacher"),
    ):
        loaded = load_model(path)
        assert (loaded.arch, loaded.kind, loaded.source) == (arch, kind, "official")


def test_ddp_and_compile_prefixes_and_bare_state_dicts_load(tmp_path: Path) -> None:
    model = NBSN100(width=8)
    sd = {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}
    torch.save({"model_state_dict": sd}, tmp_path / "a.pth")
    torch.save(model.state_dict(), tmp_path / "b.pth")
    for name in ("a.pth", "b.pth"):
        assert load_model(tmp_path / name).arch == "nbsn-1.00M"


def test_recognise_rejects_other_networks() -> None:
    assert recognise({"conv.weight": torch.zeros(3, 3, 3, 3)}) is None


@pytest.mark.parametrize(
    ("make", "expect"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: p.write_bytes(random.Random(0).randbytes(4096)), "not a PyTorch checkpoint"),
        (lambda p: torch.save([1, 2, 3], p), "holds a list, not a checkpoint"),
        (lambda p: torch.save({"model_state_dict": {"x.weight": torch.zeros(2)}}, p), "not AT-BSN or NBSN"),
        (lambda p: torch.save({"optimizer": {}}, p), "has no network weights"),
        (lambda p: p.mkdir(), "is a folder"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path: Path, make, expect: str) -> None:
    p = tmp_path / "x.pth"
    make(p)
    with pytest.raises(CheckpointError) as e:
        load_model(p)
    assert expect in str(e.value) and str(p) in str(e.value) and "\n" not in str(e.value)


def test_truncated_file(tmp_path: Path) -> None:
    good = tmp_path / "good.pth"
    save_model(good, NBSN100(width=8))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(bad)


def test_code_in_a_pickle_is_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model_state_dict": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_model(tmp_path / "evil.pth")
    assert not marker.exists()


def test_wrong_kind_is_named(official_student_path, random_teacher_path) -> None:
    with pytest.raises(CheckpointError, match=r"holds a student .* but a teacher \(AT-BSN\) is needed"):
        load_model(official_student_path, expect="teacher")
    with pytest.raises(CheckpointError, match=r"holds a teacher .* but a student \(NBSN\) is needed"):
        load_model(random_teacher_path, expect="student")


def test_shapes_that_do_not_fit(tmp_path: Path) -> None:
    sd = NBSN100(width=8).state_dict()
    sd["unet.dec2.conv1.conv.weight"] = torch.zeros(16, 5, 3, 3)
    torch.save({"model_state_dict": sd}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="weights do not fit nbsn-1.00M"):
        load_model(tmp_path / "x.pth")
