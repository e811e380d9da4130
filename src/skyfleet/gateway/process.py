"""Start a real gateway subprocess (for tests, benchmarks, the demo and the simulator checks)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from skyfleet.errors import SkyfleetError

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class GatewayProcess:
    """A running `skyfleet serve`; stop() sends SIGTERM (graceful drain) and waits."""

    proc: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """http://host:port"""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (…/v1)."""
        return self.url + "/v1"

    def log(self) -> str:
        """Everything the gateway wrote to stdout/stderr so far."""
        return self.log_path.read_text(errors="replace")

    def reload(self) -> None:
        """Send SIGHUP (config reload)."""
        self.proc.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 30.0) -> int:
        """Graceful stop; kill after `timeout` seconds. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return int(self.proc.returncode)

    def __enter__(self) -> GatewayProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_gateway(
    config_path: str | Path,
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    workers: int = 1,
    env: dict[str, str] | None = None,
    ready_timeout: float = 30.0,
) -> GatewayProcess:
    """Start `skyfleet serve` as a subprocess and wait until GET /health answers."""
    for _ in range(3):
        p = port or _free_port()
        fd, log_name = tempfile.mkstemp(prefix="skyfleet-gateway-", suffix=".log")
        os.close(fd)
        log_f = open(log_name, "wb")  # noqa: SIM115 - owned by GatewayProcess
        cmd = [sys.executable, "-m", "skyfleet.gateway.server", "--config", str(config_path)]
        cmd += ["--host", host, "--port", str(p), "--workers", str(workers)]
        proc = subprocess.Popen(
            cmd,
            stdout=log_f,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        gp = GatewayProcess(proc, host, p, Path(log_name), log_f)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                with _OPENER.open(gp.url + "/health", timeout=1.0) as r:
                    # every worker listens (one answering is not all of them serving)
                    if r.status == 200 and gp.log().count("listening on") >= workers:
                        return gp
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        text = gp.log()
        gp.stop(5)
        if "address already in use" in text.lower() and port is None:
            continue
        raise SkyfleetError(f"gateway did not start (config {config_path}):\n{text[-2000:]}")
    raise SkyfleetError("gateway did not start: no free port found")
