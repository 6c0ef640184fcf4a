"""Named models: fetched once from a local HTTP server (never the internet), verified, cached atomically."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from aprrd_cli.data.images import read_image, write_image
from aprrd_cli.errors import AprrdError
from aprrd_cli.models import NBSN100, zoo
from tests.helpers import REFERENCE, Mirror, one_line


@pytest.fixture
def tiny(tmp_path, monkeypatch) -> tuple[zoo.NamedModel, bytes]:
    """'official' re-pointed at a width-8 student in the official format, with its real hash."""
    torch.manual_seed(0)
    path = tmp_path / "tiny.pth"
    torch.save({"model_state_dict": NBSN100(width=8).state_dict()}, path)
    data = path.read_bytes()
    model = replace(zoo.NAMED["official"], sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    monkeypatch.setitem(zoo.NAMED, "official", model)
    return model, data


def cache_files() -> list[str]:
    root = zoo.cache_dir()
    return sorted(p.name for p in root.rglob("*")) if root.exists() else []


def test_cache_location_follows_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("APRRD_CACHE", str(tmp_path / "c"))
    assert zoo.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("APRRD_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert zoo.cache_dir() == tmp_path / "xdg" / "aprrd"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert zoo.cache_dir() == tmp_path / "home" / ".cache" / "aprrd"


def test_release_addresses_are_pinned(monkeypatch) -> None:
    monkeypatch.delenv("APRRD_WEIGHTS_URL")
    assert zoo.url_of(zoo.NAMED["official"]) == (
        "https://raw.githubusercontent.com/HYK2017/APRRD/36df6e0d8fff8c5ba0055ee14ae95c07f092c2cf/"
        "NBSN_1.00M/pretrained/NBSN_SIDD_Medium.pth"
    )
    assert zoo.url_of(zoo.NAMED["official-1.02M"]).endswith(
        "36df6e0d8fff8c5ba0055ee14ae95c07f092c2cf/NBSN_1.02M/pretrained/NBSN_SIDD_Medium.pth"
    )
    monkeypatch.setenv("APRRD_WEIGHTS_URL", "file:///srv/aprrd")  # a missing slash is added
    assert zoo.url_of(zoo.NAMED["official"]) == "file:///srv/aprrd/NBSN_1.00M/pretrained/NBSN_SIDD_Medium.pth"


def test_the_pinned_hashes_are_those_of_the_reference_files() -> None:
    for name, file in (("official", "nbsn_1.00M_sidd_medium.pth"), ("official-1.02M", "nbsn_1.02M_sidd_medium.pth")):
        path = REFERENCE / file
        if not path.exists():
            pytest.skip(f"{path} is absent: the reference files live in ../shared beside the repo")
        assert zoo.sha256_of(path) == zoo.NAMED[name].sha256
        assert path.stat().st_size == zoo.NAMED[name].size


def test_fetched_once_then_offline(mirror, tiny) -> None:
    model, data = tiny
    mirror.put(model, data)
    path = zoo.fetch("official")
    assert path.read_bytes() == data and path.parent == zoo.cache_dir()
    assert mirror.requests == ["/" + model.path]
    mirror.close()  # offline from here on
    assert zoo.fetch("official") == path
    assert len(mirror.requests) == 1
    assert cache_files() == [path.name]  # no temporary left beside it


def test_a_file_with_the_wrong_hash_is_refused_and_not_kept(mirror, tiny) -> None:
    model, data = tiny
    mirror.put(model, data[:-10] + b"0123456789")  # same size, other bytes
    with pytest.raises(AprrdError, match="does not hold the official weights.*refused and not kept") as e:
        zoo.fetch("official")
    assert cache_files() == []
    # the mirror's copy is the bad one: the error names the release's own address too
    assert zoo.RELEASE_URL + model.path in str(e.value) and mirror.url in str(e.value)


def test_offline_with_an_empty_cache_says_where_to_put_the_file(monkeypatch) -> None:
    with pytest.raises(AprrdError) as e:
        zoo.fetch("official")
    msg = str(e.value)
    assert "http://127.0.0.1:9/NBSN_1.00M/pretrained/NBSN_SIDD_Medium.pth" in msg
    assert f"put it at {zoo.cached_path(zoo.NAMED['official'])}" in msg
    assert "\n" not in msg
    assert cache_files() == []


def test_missing_on_the_mirror_is_one_line(mirror, tiny) -> None:
    with pytest.raises(AprrdError, match="answered 404"):
        zoo.fetch("official")
    assert cache_files() == []


def test_ctrl_c_during_the_download_leaves_nothing(mirror, tiny, monkeypatch) -> None:
    """Ctrl-C after half the bytes arrived: the cache holds no file, whole or partial."""
    model, data = tiny
    mirror.put(model, data)
    import torch.hub

    def interrupted(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        Path(dst).write_bytes(data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.hub, "download_url_to_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        zoo.fetch("official")
    assert cache_files() == []


def test_a_dead_downloads_leftovers_are_removed(mirror, tiny) -> None:
    model, data = tiny
    mirror.put(model, data)
    cache = zoo.cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    stale = cache / f".{model.file_name}.999999999-abcdefgh.pth.part.0123456789abcdef0123456789abcdef.partial"
    stale.write_bytes(b"half")
    (cache / f".{model.file_name}.999999999-abcdefgh.pth.part").write_bytes(b"")
    path = zoo.fetch("official")
    assert cache_files() == [path.name]


def test_a_damaged_cached_file_is_fetched_again(mirror, tiny, capsys) -> None:
    model, data = tiny
    mirror.put(model, data)
    path = zoo.fetch("official")
    path.write_bytes(b"not the weights")
    assert zoo.fetch("official").read_bytes() == data
    assert "does not match the SHA-256" in capsys.readouterr().err
    assert len(mirror.requests) == 2


def test_two_processes_fetching_at_once(tmp_path) -> None:
    """Both succeed and the cache holds one complete, verified file (the server holds the first
    request until the second arrives, so the two downloads overlap)."""
    torch.manual_seed(0)
    src = tmp_path / "tiny.pth"
    torch.save({"model_state_dict": NBSN100(width=8).state_dict()}, src)
    data = src.read_bytes()
    m = Mirror(tmp_path / "mirror", together=2)
    try:
        m.put(zoo.NAMED["official"], data)
        code = (
            "import dataclasses, hashlib, sys; from aprrd_cli.models import zoo; "
            f"d = open({str(src)!r}, 'rb').read(); "
            "zoo.NAMED['official'] = dataclasses.replace(zoo.NAMED['official'], sha256=hashlib.sha256(d).hexdigest()); "
            "p = zoo.fetch('official'); sys.exit(0 if p.read_bytes() == d else 5)"
        )
        env = {**os.environ, "APRRD_WEIGHTS_URL": m.url, "APRRD_CACHE": str(tmp_path / "cache")}
        procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE) for _ in range(2)]
        results = [(p.wait(timeout=120), p.stderr.read().decode()) for p in procs]
    finally:
        m.close()
    assert [r[0] for r in results] == [0, 0], results
    assert len(m.requests) == 2  # both downloaded at once: neither saw a half file
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert files == [replace(zoo.NAMED["official"], sha256=hashlib.sha256(data).hexdigest()).file_name]


def test_denoise_uses_the_official_student_by_default(cli, mirror, tiny, tmp_path, monkeypatch) -> None:
    model, data = tiny
    mirror.put(model, data)
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "in.png", np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    code, _, err = cli("denoise", "in.png", "out.png")
    assert code == 0, err
    flat = " ".join(err.split())
    assert "model: official (the APR-RD release's 1.00M student" in flat
    assert "the default while there is no runs/rd/student.pth here; student nbsn-1.00M (official format)" in flat
    assert read_image(tmp_path / "out.png")[0].shape == (40, 40, 3)
    # with a student of the user's own in runs/rd, that one is the default
    (tmp_path / "runs" / "rd").mkdir(parents=True)
    shutil.copy(zoo.cached_path(model), tmp_path / "runs" / "rd" / "student.pth")
    code, _, err = cli("denoise", "in.png", "out2.png")
    assert code == 0
    assert "model: runs/rd/student.pth, the default: the student of your last distill; student" in " ".join(err.split())


def test_named_model_equals_the_reference_file(cli, mirror, tmp_path, official_student_path) -> None:
    """The issue's check: `--model official` (downloaded, then offline) gives exactly what
    `--model ../shared/reference/nbsn_1.00M_sidd_medium.pth` gives."""
    mirror.put(zoo.NAMED["official"], official_student_path.read_bytes())
    write_image(tmp_path / "in.png", np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8))
    code, _, err = cli("denoise", "-m", "official", "--device", "cpu", tmp_path / "in.png", tmp_path / "a.png")
    assert code == 0, err
    mirror.close()
    code, _, err = cli("denoise", "-m", "official", "--device", "cpu", tmp_path / "in.png", tmp_path / "b.png")
    assert code == 0 and "downloading" not in err, err
    code, _, err = cli(
        "denoise", "-m", official_student_path, "--device", "cpu", tmp_path / "in.png", tmp_path / "c.png"
    )
    assert code == 0, err
    a, b, c = (read_image(tmp_path / f"{n}.png")[0] for n in "abc")
    assert np.array_equal(a, c) and np.array_equal(b, c)


def test_evaluate_takes_a_named_model(cli, mirror, tiny, tmp_path) -> None:
    model, data = tiny
    mirror.put(model, data)
    rng = np.random.default_rng(2)
    for sub in ("noisy", "gt"):
        write_image(tmp_path / "pairs" / sub / "a.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    code, _, err = cli("evaluate", "-m", "official", "--pairs", tmp_path / "pairs", "--json", tmp_path / "s.json")
    assert code == 0, err
    assert '"n": 1' in (tmp_path / "s.json").read_text()


def test_a_corrupt_mirror_fails_the_command_in_one_line(cli, mirror, tiny, tmp_path) -> None:
    model, data = tiny
    mirror.put(model, b"x" * 1000)
    write_image(tmp_path / "in.png", np.zeros((16, 16, 3), dtype=np.uint8))
    code, _, err = cli("denoise", "-m", "official", tmp_path / "in.png", tmp_path / "o.png")
    assert code == 1
    assert "does not hold the official weights" in one_line(err)
    assert cache_files() == [] and not (tmp_path / "o.png").exists()


def test_a_server_that_never_answers_ends_in_a_short_clear_error(tiny, monkeypatch) -> None:
    """A server that accepts the connection and sends nothing took 61 s to fail, silently: the
    wait is bounded (APRRD_DOWNLOAD_TIMEOUT), said beforehand, and the error says what happened."""
    import socket
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)  # connections complete in the backlog; nothing is ever accepted or sent
    try:
        monkeypatch.setenv("APRRD_WEIGHTS_URL", f"http://127.0.0.1:{silent.getsockname()[1]}/")
        monkeypatch.setenv("APRRD_DOWNLOAD_TIMEOUT", "0.5")
        t0 = time.monotonic()
        with pytest.raises(AprrdError) as e:
            zoo.fetch("official")
        assert time.monotonic() - t0 < 20
    finally:
        silent.close()
    msg = str(e.value)
    assert "did not answer for 0.5 s (APRRD_DOWNLOAD_TIMEOUT)" in msg and "\n" not in msg
    assert zoo.RELEASE_URL + "NBSN_1.00M/pretrained/NBSN_SIDD_Medium.pth" in msg  # where else to get it
    assert cache_files() == []


def test_a_slow_download_prints_progress_lines_in_a_log(monkeypatch, capsys) -> None:
    """In a log file a download that takes more than a moment says how far it is (every few
    seconds, not only every APRRD_PROGRESS_SECONDS)."""
    import time

    data = np.random.default_rng(0).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()  # read 128 KB at a time
    model = replace(zoo.NAMED["official"], sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    monkeypatch.setitem(zoo.NAMED, "official", model)

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            for i in range(0, len(data), len(data) // 8):
                self.wfile.write(data[i : i + len(data) // 8])
                self.wfile.flush()
                time.sleep(0.15)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("APRRD_WEIGHTS_URL", f"http://127.0.0.1:{server.server_address[1]}/")
        monkeypatch.setattr(zoo, "LINE_SECONDS", 0.3)
        assert zoo.fetch("official").read_bytes() == data
    finally:
        server.shutdown()
        server.server_close()
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("official: ")]
    assert len(lines) >= 2 and "B/s" in lines[0]  # while it ran, and at the end
