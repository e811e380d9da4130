"""`serve --workers N`: the parent process that keeps N worker processes running.

The parent forwards SIGTERM, SIGINT and SIGHUP to every worker. A worker that exits while the
gateway is not stopping (killed, crashed, or SIGTERMed on its own) is replaced at once. One
that failed on its own (exit status > 0) within `QUICK_S` of its start probably could not
start: it is replaced after `PAUSE_S`, and after `MAX_QUICK` such exits in a row the gateway
stops (a worker that cannot start is not restarted forever).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time

log = logging.getLogger("skyfleet.gateway")

QUICK_S = 10.0  # a worker that exits sooner probably failed to start
PAUSE_S = 1.0
MAX_QUICK = 5


class Workers:
    """N copies of `cmd`, replaced when one exits, stopped together."""

    def __init__(self, cmd: list[str], count: int) -> None:
        self.cmd = cmd
        self.count = count
        self.procs: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
        self.stopping = False

    def _start(self) -> None:
        p = subprocess.Popen(self.cmd)
        self.procs[p.pid] = (p, time.monotonic())

    def forward(self, sig: int, _frame: object = None) -> None:
        """Pass `sig` to every worker; SIGTERM and SIGINT also stop the replacing."""
        if sig in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True
        for p, _ in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(sig)

    def run(self) -> int:
        """Start the workers and keep them running until stopped; the exit status."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.forward)
        for _ in range(self.count):
            self._start()
        codes: list[int] = []
        quick = 0
        while self.procs:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            if pid not in self.procs:
                continue
            proc, started = self.procs.pop(pid)
            proc.returncode = code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                codes.append(code)
                continue
            lived = time.monotonic() - started
            quick = quick + 1 if code > 0 and lived < QUICK_S else 0
            if quick >= MAX_QUICK:
                log.error("workers keep exiting right after starting (code %d): stopping", code)
                codes.append(code or 1)
                self.forward(signal.SIGTERM)
                continue
            how = f"signal {-code}" if code < 0 else f"code {code}"
            log.warning("worker %d exited (%s) after %.1f s; starting another", pid, how, lived)
            if quick:
                time.sleep(PAUSE_S)
            if not self.stopping:
                self._start()
        return next((c for c in codes if c > 0), 1 if any(codes) else 0)
