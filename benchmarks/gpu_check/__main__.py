"""The runner: one subprocess per step, each with its own time limit; the summary after each."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.gpu_check.report import render_summary
from benchmarks.gpu_check.steps import STEPS, Context, run_step

REPO = Path(__file__).resolve().parents[2]
CARRY = REPO / ".gpu-carry"  # `make gpu-photos` copies the real photos and the official student here


def default_photos() -> Path:
    for p in (CARRY / "real", REPO.parent / "shared" / "data" / "real"):
        if p.is_dir():
            return p
    return CARRY / "real"


def default_official() -> Path:
    for p in (
        CARRY / "nbsn_1.00M_sidd_medium.pth",
        REPO.parent / "shared" / "reference" / "nbsn_1.00M_sidd_medium.pth",
    ):
        if p.is_file():
            return p
    return CARRY / "nbsn_1.00M_sidd_medium.pth"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__)
    p.add_argument("--out", type=Path, required=True, help="the result folder (at most 8 files are written)")
    p.add_argument("--device", default="cuda", help="the device to check (cuda, cuda:N; cpu with --tiny)")
    p.add_argument("--photos", type=Path, default=default_photos(), help="SET/noisy and SET/gt folders (cc15, sidd7)")
    p.add_argument("--official", type=Path, default=default_official(), help="the official 1.00M student")
    p.add_argument("--tiny", action="store_true", help="toy sizes and iterations: proves the steps run (the tests)")
    p.add_argument("--only", default="", help=f"comma-separated steps ({', '.join(s.name for s in STEPS)})")
    p.add_argument("--step", help=argparse.SUPPRESS)  # internal: run one step in this process
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    ctx = Context(out=a.out, device=a.device, photos=a.photos, official=a.official, tiny=a.tiny)
    if a.step:  # a child: one step, its result written for the parent
        return run_step(ctx, a.step)
    a.out.mkdir(parents=True, exist_ok=True)
    names = [n.strip() for n in a.only.split(",") if n.strip()] or [s.name for s in STEPS]
    unknown = sorted(set(names) - {s.name for s in STEPS})
    if unknown:
        print(f"error: unknown step(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    results: dict = {"command": "python -m benchmarks.gpu_check " + " ".join(argv or sys.argv[1:]),
                     "started": time.strftime("%Y-%m-%d %H:%M:%S"), "tiny": a.tiny, "steps": {}}  # fmt: skip
    log = a.out / "log.txt"
    log.write_text("")
    t_all = time.perf_counter()
    for step in (s for s in STEPS if s.name in names):
        limit = step.tiny_seconds if a.tiny else step.seconds
        print(f"[{step.name}] (limit {limit} s)", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        results["steps"][step.name] = child(a, step.name, limit, log)
        results["steps"][step.name]["seconds"] = round(time.perf_counter() - t0, 1)
        results["seconds"] = round(time.perf_counter() - t_all, 1)
        write_results(a.out, results)
        print(f"  {results['steps'][step.name]['status']} in {results['steps'][step.name]['seconds']} s",
              file=sys.stderr, flush=True)  # fmt: skip
    failed = [n for n, r in results["steps"].items() if r["status"] != "ok"]
    print(f"gpu-check: {len(results['steps']) - len(failed)} of {len(results['steps'])} steps ok"
          + (f"; not ok: {', '.join(failed)}" if failed else "") + f"; summary {a.out / 'summary.md'}",
          file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


def child(a: argparse.Namespace, name: str, limit: int, log: Path) -> dict:
    """Run one step in a fresh process (a crash or a hang takes only that step) within ``limit``."""
    cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--step", name, "--out", str(a.out), "--device", a.device]
    cmd += ["--photos", str(a.photos), "--official", str(a.official)] + (["--tiny"] if a.tiny else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1", "APRRD_PROGRESS_SECONDS": "10"}  # fmt: skip
    result_file = a.out / f".step-{name}.json"
    result_file.unlink(missing_ok=True)
    with open(log, "a") as f:
        f.write(f"\n===== {name} =====\n")
        f.flush()
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=limit)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    result_file.unlink(missing_ok=True)
    if code is None:
        result["status"] = "timeout"
        result["error"] = f"stopped at its {limit} s limit"
    elif code != 0 or "status" not in result:
        result["status"] = "failed"
        result.setdefault("error", f"exit code {code}; see log.txt")
    return result


def write_results(out: Path, results: dict) -> None:
    tmp = out / ".results.json.part"
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(out / "results.json")
    tmp = out / ".summary.md.part"
    tmp.write_text(render_summary(results))
    tmp.replace(out / "summary.md")


if __name__ == "__main__":
    sys.exit(main())
