"""``make gpu-check`` at toy sizes on the CPU: every step runs and reports, a failing or slow step
is recorded and the next one runs, and the result folder holds at most 8 files."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from tests.helpers import REPO

RUN = [sys.executable, "-m", "benchmarks.gpu_check"]


def test_every_step_runs_at_toy_sizes_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([*RUN, "--tiny", "--device", "cpu", "--out", out], cwd=REPO, capture_output=True, text=True)
    results = json.loads((out / "results.json").read_text())
    statuses = {name: r["status"] for name, r in results["steps"].items()}
    assert proc.returncode == 0, (statuses, proc.stderr[-3000:], (out / "log.txt").read_text()[-3000:])
    assert (
        statuses
        == dict.fromkeys(["environment", "device-tests", "throughput", "engine", "inference", "real-run"], "ok")
        or statuses.get("real-run") == "skipped"
    )
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and not [f for f in files if f.startswith(".")]
    assert {"summary.md", "results.json", "log.txt", "pytest.txt"} <= set(files)
    summary = (out / "summary.md").read_text()
    assert "| throughput | ok |" in summary and "## The engine end to end" in summary
    tp = results["steps"]["throughput"]
    assert set(tp["rows"]) == {"fp32", "bf16"} and all(r["apr_it_s"] > 0 for r in tp["rows"].values())
    eng = results["steps"]["engine"]
    assert eng["resumed_to"] == 6 and eng["ddp"]["ok"] and eng["ddp"]["backend"] == "gloo"
    assert results["steps"]["inference"]["max_diff_grey_levels"] <= 1.0
    if results["steps"]["real-run"]["status"] == "ok":
        assert {"curves.png", "crops.png"} <= set(files)
        assert set(results["steps"]["real-run"]["scores"]) <= {"cc15", "sidd7"}


def test_a_failed_or_timed_out_step_is_recorded_and_the_next_runs(tmp_path: Path, monkeypatch) -> None:
    from benchmarks.gpu_check import __main__ as runner

    steps = tuple(replace(s, tiny_seconds=1) if s.name == "device-tests" else s for s in runner.STEPS)
    monkeypatch.setattr(runner, "STEPS", steps)
    out = tmp_path / "out"
    code = runner.main(["--tiny", "--device", "cpu", "--out", str(out), "--only", "device-tests,environment"])
    results = json.loads((out / "results.json").read_text())
    assert code == 1
    assert results["steps"]["device-tests"]["status"] == "timeout"
    assert "stopped at its 1 s limit" in results["steps"]["device-tests"]["error"]
    assert results["steps"]["environment"]["status"] == "ok"
    assert "| device-tests | timeout |" in (out / "summary.md").read_text()
    code = runner.main(["--tiny", "--device", "cuda:7", "--out", str(tmp_path / "o2"), "--only", "environment"])
    failed = json.loads((tmp_path / "o2" / "results.json").read_text())["steps"]["environment"]
    assert code == 1 and failed["status"] == "failed" and failed["error"]
