"""The benchmark suite's own machinery: baseline equivalence, one tiny benchmark, the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aprrd_cli.inference import Denoiser
from aprrd_cli.losses.apr import draw
from aprrd_cli.models import build
from benchmarks import baseline as B
from benchmarks.context import Context
from benchmarks.harness import Row, Section, interleaved, machine, render
from benchmarks.inference import student_inference


@pytest.mark.parametrize(
    ("arch", "shape"), [("atbsn", (1, 3, 64, 96)), ("nbsn-1.00M", (2, 3, 64, 64)), ("nbsn-1.02M", (1, 3, 64, 32))]
)
def test_baseline_computes_what_our_networks_compute(arch: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    ours = build(arch, width=8).eval()
    base = B.baseline_like(ours)
    x = torch.rand(*shape)
    with torch.no_grad():
        if arch == "atbsn":
            for shift in (0, 1, 5):
                assert (ours(x, shift) - base(x, shift)).abs().max().item() < 1e-5
        else:
            assert (ours(x) - base(x)).abs().max().item() < 1e-5


def test_baseline_apr_replacement_equals_ours() -> None:
    y = torch.rand(2, 3, 9, 11)
    d = draw(2, 9, 11, torch.Generator().manual_seed(3))
    assert torch.equal(B.apr_replace(y, d.pair, 0), d.h1(y))
    assert torch.equal(B.apr_replace(y, d.pair, 1), d.h2(y))


def test_tiny_student_benchmark_and_its_markdown(tmp_path: Path) -> None:
    ctx = Context(
        quick=True, tiny=True, shared=tmp_path / "absent", peak_gflops=100.0, tmp=tmp_path, log=lambda m: None
    )
    sec = student_inference(ctx)
    assert [r.label for r in sec.rows][0] == "64x64"
    for r in sec.rows:
        assert r.max_diff is not None and r.max_diff < 1e-4
        assert r.baseline > 0 and r.ours > 0 and r.ratio == pytest.approx(r.baseline / r.ours)
    assert any("GFLOP" in n for n in sec.notes)
    md = render([sec], machine(), "python -m benchmarks --quick", "now", ("1.0", "1.0"))
    assert md.startswith("# Performance\n")
    assert "## Student inference" in md and "| case | baseline | ours | ratio | max abs diff |" in md
    line = next(ln for ln in md.splitlines() if ln.startswith("| 64x64 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1].endswith(" s") and cells[2].endswith(" s") and cells[3] == f"{sec.rows[0].ratio:.2f}x"
    assert float(cells[4]) < 1e-4
    assert "[Student inference](#student-inference)" in md and "torch" in md


def test_rates_and_missing_values_render() -> None:
    rows = [
        Row("one process", 10.0, 2000.0, unit="crops/s", higher_is_better=True),
        Row("workers", None, 3000.0, "crops/s"),
    ]
    assert rows[0].ratio == pytest.approx(200.0) and rows[1].ratio is None
    md = render(
        [Section("Sampler", "crops", rows, target=">= 500 crops/s", passed=True)], {"CPU": "x"}, "c", "t", ("0", "0")
    )
    assert "| one process | 10.00 crops/s | 2,000 crops/s | 200.00x | — |" in md
    assert "| workers | — | 3,000 crops/s | — | — |" in md
    assert "| [Sampler](#sampler) | >= 500 crops/s | **met** |" in md


def test_interleaved_alternates_and_counts() -> None:
    calls: list[str] = []
    t = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, reps=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert len(t["a"]) == len(t["b"]) == 3


def test_official_script_matches_our_denoiser(tmp_path: Path) -> None:
    """The end-to-end baseline script reads the official format and agrees with ours to 1 grey level."""
    from benchmarks.official_script import main

    torch.manual_seed(0)
    model = build("nbsn-1.00M", width=8).eval()
    torch.save({"model_state_dict": model.state_dict()}, tmp_path / "official.pth")
    (tmp_path / "in").mkdir()
    img = np.random.default_rng(0).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "in" / "a.png")
    main([str(tmp_path / "official.pth"), str(tmp_path / "in"), str(tmp_path / "out")])
    got = np.asarray(Image.open(tmp_path / "out" / "a.png")).astype(int)
    x = torch.from_numpy(img.transpose(2, 0, 1).astype(np.float32) / 255)[None]
    ours = (Denoiser(model, torch.device("cpu"))(x)[0].clamp(0, 1).numpy().transpose(1, 2, 0) * 255).round()
    assert got.shape == (32, 64, 3) and np.abs(got - ours).max() <= 1


def test_tiny_allocator_benchmark_runs_both_settings(tmp_path: Path) -> None:
    from benchmarks.allocator import allocator

    ctx = Context(
        quick=True, tiny=True, shared=tmp_path / "absent", peak_gflops=100.0, tmp=tmp_path, log=lambda m: None
    )
    sec = allocator(ctx)
    assert [r.label for r in sec.rows] == [
        "teacher inference, 64x64",
        "student on 4 photos of different sizes around 64x64",
        "3 APR steps, batch 1 of 64x64",
    ]
    for r in sec.rows:
        assert r.baseline > 0 and r.ours > 0
        before, after = (
            float(v.replace(",", "")) for v in r.diff.removeprefix("peak RSS ").removesuffix(" MB").split(" -> ")
        )
        assert 100 < before < 4000 and 100 < after < 4000  # a torch process's resident memory, in MB


def test_gpu_throughput_code_runs_on_the_cpu() -> None:
    """The GPU benchmark's steps (bf16 autocast, device generators, baseline and ours), small, on the CPU."""
    from benchmarks.training import training_throughput

    rates = training_throughput(torch.device("cpu"), n=1, batch=1, size=64)
    assert set(rates) == {"APR base", "APR ours", "RD base", "RD ours"}
    assert all(0 < r < 1e4 for r in rates.values())


def test_a_failing_benchmark_is_reported_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import suite

    def broken(ctx: Context) -> None:
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setitem(suite.BENCHMARKS, "gpu", broken)
    ctx = Context(quick=True, tiny=True, shared=tmp_path, peak_gflops=1.0, tmp=tmp_path, log=lambda m: None)
    (sec,) = suite.run_all(ctx, ["gpu"])
    assert sec.passed is False and sec.notes == ["failed: RuntimeError: CUDA error: out of memory"]


def test_tiny_bf16_benchmark_runs_where_bf16_is_native(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bf16 section's code, small (it measures fp32 against bf16 only on a bf16-native CPU)."""
    from benchmarks.precision import bf16

    ctx = Context(quick=True, tiny=True, shared=tmp_path / "absent", peak_gflops=1.0, tmp=tmp_path, log=lambda m: None)
    monkeypatch.setenv("APRRD_CPU_BF16", "0")
    assert bf16(ctx).rows == []
    monkeypatch.setenv("APRRD_CPU_BF16", "1")
    sec = bf16(ctx)
    labels = [r.label for r in sec.rows]
    assert (
        labels[:2] == ["student 64x64", "teacher 64x64"]
        and labels[2].startswith("APR step")
        and labels[3].startswith("RD step")
    )
    assert all(r.baseline > 0 and r.ours > 0 for r in sec.rows)
    assert "grey" in sec.rows[0].diff and "loss" in sec.rows[2].diff


def test_the_bench_command_starts_and_refuses_an_unknown_benchmark(capsys) -> None:
    from benchmarks.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["--only", "nope"])
    assert e.value.code == 2 and "unknown benchmark(s) nope" in capsys.readouterr().err


def test_tiny_big_photo_benchmark_measures_each_tiling_once(tmp_path: Path) -> None:
    """The big-photo benchmark runs in child processes; settings with the default's windows reuse its run."""
    from benchmarks.tiling import tiling

    ctx = Context(
        quick=True, tiny=True, shared=tmp_path / "absent", peak_gflops=100.0, tmp=tmp_path, log=lambda m: None
    )
    sec = tiling(ctx)
    (row,) = sec.rows
    assert row.label.startswith("cpu, 64x96 (96x64)") and "default (whole)" in row.label
    assert row.ours > 0 and row.ratio == pytest.approx(1.0)  # a 64x96 photo: every setting is the whole image
    assert any("the same tiles as the default, not run again" in n for n in sec.notes)
    assert any("working memory" in n and "GB per MP measured" in n for n in sec.notes)
