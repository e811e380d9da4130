"""`serve --workers 2`: a worker that dies is replaced, the parent stops them all, and a
worker that cannot start is not restarted forever."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skyfleet.drill.procs import alive, worker_pids
from skyfleet.gateway.process import start_gateway

from .conftest import HTTP, fleet_config

pytestmark = pytest.mark.slow


def config(tmp_path: Path) -> Path:
    endpoint = {"name": "e0", "provider": "p0", "url": "http://127.0.0.1:9/v1"}
    return fleet_config(tmp_path / "fleet.yaml", [endpoint], health={"probe_interval_s": 60})


def test_a_killed_worker_is_replaced_and_stop_ends_every_worker(tmp_path: Path) -> None:
    gw = start_gateway(config(tmp_path), workers=2)
    try:
        first, second = worker_pids(gw, 2)
        os.kill(first, signal.SIGKILL)
        pids = worker_pids(gw, 3, timeout=30)
        assert len(pids) == 3, gw.log()
        replacement = pids[2]
        assert alive(replacement) and alive(second)
        assert f"worker {first} exited (signal 9)" in gw.log()
        for _ in range(20):  # both live workers answer on the shared port
            assert HTTP.get(gw.url + "/health").status_code == 200
    finally:
        code = gw.stop(20)
    assert code == 0
    deadline = time.monotonic() + 5
    while (alive(second) or alive(replacement)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(second) and not alive(replacement)


def test_workers_that_cannot_start_are_not_restarted_forever(tmp_path: Path) -> None:
    taken = socket.socket()  # no SO_REUSEPORT: every worker's bind fails
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    cmd = [sys.executable, "-m", "skyfleet.gateway.server", "--config", str(config(tmp_path))]
    cmd += ["--port", str(port), "--workers", "2"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    finally:
        taken.close()
    assert proc.returncode != 0
    assert "workers keep exiting right after starting" in proc.stderr
