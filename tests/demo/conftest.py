"""Run `skyfleet demo` as a real process and watch every process it starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from skyfleet.demo.procs import alive, descendants


@dataclass
class DemoProc:
    """A `skyfleet demo` subprocess, its output, and every descendant seen while it ran."""

    proc: subprocess.Popen[str]
    seen: set[int] = field(default_factory=set)
    lines: list[str] = field(default_factory=list)

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.1)
        return False

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def leftovers(self) -> list[int]:
        return sorted(p for p in self.seen if alive(p))


def _watch(dp: DemoProc) -> None:
    while dp.proc.poll() is None:
        dp.seen.update(descendants(dp.proc.pid))
        time.sleep(0.2)


def _read(dp: DemoProc) -> None:
    assert dp.proc.stdout is not None
    for line in dp.proc.stdout:
        dp.lines.append(line)


@pytest.fixture
def run_demo() -> Iterator[object]:
    """Start `skyfleet demo ARGS…`; teardown kills whatever the demo left behind."""
    started: list[DemoProc] = []

    def start(*args: str) -> DemoProc:
        env = {**os.environ, "COLUMNS": "160", "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-c", "from skyfleet.cli import main; main()", "demo", *args]
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        dp = DemoProc(proc)
        started.append(dp)
        threading.Thread(target=_watch, args=(dp,), daemon=True).start()
        threading.Thread(target=_read, args=(dp,), daemon=True).start()
        return dp

    yield start
    for dp in started:
        if dp.proc.poll() is None:
            dp.proc.kill()
            dp.proc.wait()
        for pid in dp.leftovers():
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path
