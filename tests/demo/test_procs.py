"""The /proc helpers and ChildGroup stop real processes and see what is left."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from skyfleet.demo.procs import ChildGroup, alive, descendants, kill_pids

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")


class _Handle:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def _sleeper(ignore_term: bool = False) -> subprocess.Popen[bytes]:
    code = "import signal,time\n"
    if ignore_term:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('ready', flush=True)\ntime.sleep(60)\n"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
    return p


def test_descendants_sees_children_and_stop_all_stops_them() -> None:
    a, b = _sleeper(), _sleeper()
    try:
        assert {a.pid, b.pid} <= set(descendants(os.getpid()))
        group = ChildGroup()
        group.add("a", _Handle(a))
        group.add("b", _Handle(b))
        left = group.stop_all()
        assert left == []
        assert not alive(a.pid) and not alive(b.pid)
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_stop_all_kills_a_child_its_handle_failed_to_stop() -> None:
    stubborn = _sleeper(ignore_term=True)

    class Broken:
        proc = stubborn

        def stop(self) -> None:
            raise RuntimeError("cannot stop")

    try:
        group = ChildGroup()
        group.add("broken", Broken())
        t0 = time.monotonic()
        left = group.stop_all()
        stubborn.wait(5)  # reap the zombie
        assert stubborn.pid in left
        assert group.errors and "cannot stop" in group.errors[0]
        assert time.monotonic() - t0 < 10
    finally:
        if stubborn.poll() is None:
            stubborn.kill()
            stubborn.wait()


def test_kill_pids_escalates_to_sigkill() -> None:
    p = _sleeper(ignore_term=True)
    kill_pids([p.pid], grace_s=0.3)
    assert p.wait(5) != 0
