"""The processes of one drill: started on 127.0.0.1, all stopped at the end whatever happened,
then checked for leaks (every pid the drill saw, a gateway's workers included, is gone).

with Processes() as procs:
    emu = procs.emulator()
    rude = procs.rude("silent")
    gw = procs.gateway(config_path, workers=2)
leaked = procs.leaked  # pids still alive after the stop (then killed); [] is the target
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from skyfleet.emulator.process import EmulatorProcess, start_emulator
from skyfleet.errors import SkyfleetError
from skyfleet.gateway.process import GatewayProcess, start_gateway

PROFILE = "Llama-3.1-8B@H100-SXM-80GB"
UPSTREAM_MODEL = "m"
_LISTENING = re.compile(r"listening on http://[^:\s]+:(\d+) \(pid (\d+)\)")


class RudeProcess:
    """A running `python -m skyfleet.drill.rude MODE`; `rude(True)` turns the fault on."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{port}"
        self.base_url = self.url + "/v1"

    def rude(self, on: bool) -> None:
        """SIGUSR1: misbehave from now on; SIGUSR2: answer politely again."""
        self.proc.send_signal(signal.SIGUSR1 if on else signal.SIGUSR2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)


def start_rude(
    mode: str, *, port: int = 0, rude: bool = False, chunks: int = 8, gap_s: float = 0.005
) -> RudeProcess:
    """Start a rude upstream and wait until it listens."""
    fd, name = tempfile.mkstemp(prefix="skyfleet-rude-", suffix=".log")
    os.close(fd)
    cmd = [sys.executable, "-m", "skyfleet.drill.rude", mode, "--port", str(port)]
    cmd += ["--chunks", str(chunks), "--gap-s", repr(gap_s)] + (["--rude"] if rude else [])
    with open(name, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    log_path = Path(name)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        m = _LISTENING.search(log_path.read_text(errors="replace"))
        if m:
            return RudeProcess(proc, int(m.group(1)), log_path)
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise SkyfleetError(f"rude upstream {mode} did not start: {log_path.read_text()[-1000:]}")


def worker_pids(gw: GatewayProcess, workers: int, timeout: float = 15.0) -> list[int]:
    """The pids of a `--workers N` gateway's workers (from their 'listening' lines)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [int(m.group(2)) for m in _LISTENING.finditer(gw.log())]
        if len(pids) >= workers or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (not gone, not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Processes:
    """Every process one drill starts; `close()` (or leaving the `with`) stops them all."""

    def __init__(self) -> None:
        self.emulators: list[EmulatorProcess] = []
        self.rudes: list[RudeProcess] = []
        self.gateways: list[GatewayProcess] = []
        self.pids: set[int] = set()
        self.leaked: list[int] = []

    def emulator(
        self, *, time_scale: float = 20.0, seed: int = 0, port: int | None = None
    ) -> EmulatorProcess:
        """An emulator serving `UPSTREAM_MODEL`."""
        emu = start_emulator(
            PROFILE, time_scale=time_scale, seed=seed, served_model_name=UPSTREAM_MODEL, port=port
        )
        self.emulators.append(emu)
        self.pids.add(emu.proc.pid)
        return emu

    def rude(self, mode: str, *, rude: bool = False) -> RudeProcess:
        """A rude upstream (polite until `rude(True)` unless `rude=True`)."""
        r = start_rude(mode, rude=rude)
        self.rudes.append(r)
        self.pids.add(r.proc.pid)
        return r

    def gateway(
        self, config: Path, *, workers: int = 1, env: dict[str, str] | None = None
    ) -> GatewayProcess:
        """`skyfleet serve` (with its workers' pids recorded)."""
        gw = start_gateway(config, workers=workers, env=env)
        self.gateways.append(gw)
        self.pids.add(gw.proc.pid)
        if workers > 1:
            self.pids.update(worker_pids(gw, workers))
        return gw

    def note(self, pid: int) -> None:
        """Check `pid` too at the end (a process started by someone else, e.g. a worker)."""
        self.pids.add(pid)

    def close(self) -> list[int]:
        """Stop the gateways (SIGTERM: drain, flush), then the upstreams; kill and report
        any pid still alive."""
        for gw in self.gateways:
            with contextlib.suppress(Exception):
                gw.stop(20)
        upstreams: list[EmulatorProcess | RudeProcess] = [*self.emulators, *self.rudes]
        for p in upstreams:
            with contextlib.suppress(Exception):
                p.stop()
        deadline = time.monotonic() + 5
        left = [pid for pid in self.pids if alive(pid)]
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = [pid for pid in left if alive(pid)]
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self.leaked = sorted(left)
        return self.leaked

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
