"""Start an emulator as a real subprocess (for tests, benchmarks and the demo).

with start_emulator("Llama-3.1-8B@L4", time_scale=10) as emu:
    client = openai.OpenAI(base_url=emu.base_url, api_key="x")
    emu.inject("down", duration_s=5)   # admin API, see docs/emulator.md
    emu.clear_faults()
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from skyfleet.errors import SkyfleetError

_LISTENING = re.compile(r"listening on http://[^:\s]+:(\d+)")


class EmulatorProcess:
    """A running `skyfleet emulate` subprocess."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: str) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{port}"
        self.base_url = self.url + "/v1"

    # -- admin API --------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raise SkyfleetError(f"{method} {path}: HTTP {e.code}: {e.read().decode()}") from e

    def inject(self, kind: str, **params: Any) -> dict[str, Any]:
        """POST /admin/faults {"kind": kind, **params}; returns the registered fault."""
        out: dict[str, Any] = self._call("POST", "/admin/faults", {"kind": kind, **params})
        added: list[dict[str, Any]] = out["added"]
        return added[0]

    def faults(self) -> list[dict[str, Any]]:
        """GET /admin/faults: faults not yet expired."""
        out: dict[str, Any] = self._call("GET", "/admin/faults")
        return list(out["faults"])

    def clear_faults(self) -> None:
        """DELETE /admin/faults."""
        self._call("DELETE", "/admin/faults")

    def metrics(self) -> dict[str, float]:
        """GET /metrics parsed into {'name{labels}': value}."""
        from skyfleet.emulator.metrics import parse_metrics

        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
            return parse_metrics(r.read().decode())

    def log(self) -> str:
        """The subprocess's stdout + stderr so far."""
        with open(self.log_path, errors="replace") as f:
            return f.read()

    # -- lifecycle --------------------------------------------------------------------------
    def stop(self, timeout: float = 5.0) -> None:
        """Terminate (then kill) the process; safe to call twice."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _answers(port: int) -> bool:
    """/health answers 200, or (a drill's `down` fault at start) /metrics does."""
    for path in ("/health", "/metrics"):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
    return False


def emulator_command(
    profile: str,
    *,
    port: int = 0,
    time_scale: float = 1.0,
    seed: int = 0,
    served_model_name: str | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The argv that runs `skyfleet emulate` with this interpreter."""
    cmd = [sys.executable, "-c", "from skyfleet.cli import main; main()", "emulate"]
    cmd += ["--profile", profile, "--port", str(port), "--host", "127.0.0.1"]
    cmd += ["--time-scale", repr(float(time_scale)), "--seed", str(seed)]
    if served_model_name:
        cmd += ["--served-model-name", served_model_name]
    return cmd + list(extra_args)


def start_emulator(
    profile: str,
    *,
    time_scale: float = 1.0,
    seed: int = 0,
    served_model_name: str | None = None,
    port: int | None = None,
    extra_args: Sequence[str] = (),
    startup_timeout: float = 30.0,
    cpu: int | None = None,
) -> EmulatorProcess:
    """Start `skyfleet emulate` in a subprocess and wait until /health answers (or, while
    a drill's `down` fault is active from the start, /metrics).

    With `port=None` the emulator binds port 0 itself and reports the port it got (no race
    with other processes). `cpu` pins the process to one core (Linux `taskset` semantics).
    Raises SkyfleetError with the process's output if it exits or does not become healthy.
    """
    cmd = emulator_command(
        profile,
        port=port or 0,
        time_scale=time_scale,
        seed=seed,
        served_model_name=served_model_name,
        extra_args=extra_args,
    )
    fd, log_path = tempfile.mkstemp(prefix="skyfleet-emulator-", suffix=".log")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with os.fdopen(fd, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(proc.pid, {cpu})
    deadline = time.monotonic() + startup_timeout
    bound: int | None = None
    while time.monotonic() < deadline:
        with open(log_path, errors="replace") as f:
            out = f.read()
        if proc.poll() is not None:
            os.unlink(log_path)
            raise SkyfleetError(f"emulator exited with code {proc.returncode}: {out.strip()}")
        if bound is None:
            m = _LISTENING.search(out)
            bound = int(m.group(1)) if m else None
        if bound is not None and _answers(bound):
            return EmulatorProcess(proc, bound, log_path)
        time.sleep(0.05)
    emu = EmulatorProcess(proc, bound or 0, log_path)
    out = emu.log()
    emu.stop()
    raise SkyfleetError(f"emulator did not become healthy in {startup_timeout:g}s: {out.strip()}")
