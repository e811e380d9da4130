"""`skyfleet bench run` as a user runs it: a real CLI subprocess against a real server."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skyfleet.bench.echo_server import EchoServer

CLI = [sys.executable, "-c", "from skyfleet.cli import main; main()", "bench"]
pytestmark = pytest.mark.timeout(90)


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_run_writes_json_html_png(echo: EchoServer, tmp_path: Path) -> None:
    j, h, p = tmp_path / "r.json", tmp_path / "r.html", tmp_path / "r.png"
    out = _run(
        "run", echo.url, "--rate", "50", "--arrival", "gamma", "--burstiness", "0.5",
        "--requests", "30", "--warmup-requests", "5", "--input", "8-16", "--output", "4",
        "--slo", "ttft=500ms,tpot=50ms", "--header", "x-test: 1",
        "--json", str(j), "--html", str(h), "--png", str(p),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "TTFT" in out.stdout and "goodput" in out.stdout
    data = json.loads(j.read_text())
    assert data["settings"]["load"]["process"] == "gamma"
    assert data["settings"]["load"]["burstiness"] == 0.5
    assert data["settings"]["target"]["extra_headers"] == ["x-test"]
    s = data["summary"]
    assert s["requests"] == 30 and s["completed"] == 30
    assert s["goodput"] is not None and s["ttft_ms"]["p99"] > 0
    assert h.read_text().startswith("<!doctype html>") and "data:image/png;base64" in h.read_text()
    assert p.read_bytes()[:4] == b"\x89PNG"


def test_bad_url_and_bad_key_fail_before_the_run(keyed_echo: EchoServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = _run("run", f"http://127.0.0.1:{port}", "--requests", "5")
    assert out.returncode == 2 and "cannot reach" in out.stderr
    assert "Traceback" not in out.stderr
    out = _run("run", keyed_echo.url, "--api-key", "nope", "--requests", "5")
    assert out.returncode == 2 and "rejected the API key" in out.stderr
    out = _run("run", keyed_echo.url, "--slo", "fast", "--requests", "5")
    assert out.returncode == 2 and "--slo" in out.stderr


def test_ctrl_c_prints_partial_results(echo: EchoServer, tmp_path: Path) -> None:
    j = tmp_path / "partial.json"
    proc = subprocess.Popen(
        [*CLI, "run", echo.url, "--concurrency", "4", "--duration", "60", "--output", "50",
         "--json", str(j)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(4.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in out and "TTFT" in out
    data = json.loads(j.read_text())
    assert data["interrupted"] is True and data["summary"]["completed"] > 0


def test_sweep_fits_a_profile_and_says_when_the_limit_was_not_reached(
    echo: EchoServer, tmp_path: Path
) -> None:
    """A loose SLO that every rate meets: the sweep tries the throughput run's rate too,
    reports it, and warns that the limit lies above; the fitted profile loads."""
    from skyfleet.perf import Profile

    j, prof = tmp_path / "s.json", tmp_path / "fit.yaml"
    out = _run(
        "sweep", echo.url, "--slo", "ttft=5s,tpot=1s", "--input", "64", "--output", "8",
        "--steps", "1", "--refine", "1", "--requests", "20", "--sync-requests", "3",
        "--max-concurrency", "4", "--fit", "Llama-3.1-8B@H100",
        "--profile-out", str(prof), "--json", str(j),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads(j.read_text())
    kinds = [p["kind"] for p in data["points"]]
    assert kinds[:5] == ["probe"] * 4 + ["context"] and kinds.count("rate") == 2
    assert all(p["meets_slo"] for p in data["points"] if p["kind"] == "rate")
    r_max = data["points"][-1]["offered_rate"]
    assert data["max_rate_at_slo"] == pytest.approx(r_max)
    assert "the limit is above" in out.stdout
    assert data["fit"]["method"] in ("iterations", "tpot")
    assert Profile.load(prof).source == "bench"
