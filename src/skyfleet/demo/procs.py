"""Child processes of the demo: start them as a group, stop them all, check none is left.

Linux only for the /proc checks (elsewhere they report nothing and stopping relies on each
handle's own `stop`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol


class Stoppable(Protocol):
    """A started child (emulator or gateway) with an idempotent `stop()`."""

    def stop(self) -> object: ...


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, session id) of a process from /proc/PID/stat, or None when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2 :].split()
    return rest[0], int(rest[1]), int(rest[3])


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _all_pids() -> list[int]:
    try:
        return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    """Live descendants of `pid` (children, grandchildren…), by scanning /proc."""
    parent: dict[int, int] = {}
    for other in _all_pids():
        stat = _stat(other)
        if stat is not None and stat[0] not in ("Z", "X"):
            parent[other] = stat[1]
    out: list[int] = []
    frontier = {pid}
    while frontier:
        children = {
            child for child, ppid in parent.items() if ppid in frontier and child not in out
        }
        out.extend(sorted(children))
        frontier = children
    return out


def session_members(sid: int) -> list[int]:
    """Live processes whose session id is `sid` (a process started with start_new_session)."""
    out = []
    for pid in _all_pids():
        stat = _stat(pid)
        if stat is not None and stat[0] not in ("Z", "X") and stat[2] == sid:
            out.append(pid)
    return out


def kill_pids(pids: list[int], grace_s: float = 3.0) -> None:
    """SIGTERM the given pids, then SIGKILL those still alive after `grace_s`."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.05)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _pid_of(child: object) -> int | None:
    proc = getattr(child, "proc", None)
    pid = getattr(proc, "pid", None)
    return pid if isinstance(pid, int) else None


class ChildGroup:
    """The children the demo started; `stop_all` stops each (in parallel), then kills any of
    them, or of their own children, that outlived its handle's stop. Only processes started
    through this group are ever signalled."""

    def __init__(self) -> None:
        self.children: list[tuple[str, Stoppable]] = []
        self.errors: list[str] = []

    def add(self, name: str, child: Stoppable) -> None:
        self.children.append((name, child))

    def pids(self) -> list[int]:
        """Pids of the registered children and their live descendants."""
        out: list[int] = []
        for _, child in self.children:
            pid = _pid_of(child)
            if pid is not None:
                out.append(pid)
                out.extend(descendants(pid))
        return out

    def stop_all(self, log: Callable[[str], None] | None = None) -> list[int]:
        """Stop every child; return the pids that had to be killed afterwards."""
        known = self.pids()
        children, self.children = self.children, []

        def stop(item: tuple[str, Stoppable]) -> None:
            name, child = item
            try:
                child.stop()
            except Exception as e:  # one failed stop must not leave the others running
                self.errors.append(f"{name}: {e}")

        if children:
            with ThreadPoolExecutor(max_workers=min(16, len(children))) as pool:
                list(pool.map(stop, reversed(children)))
        left = [pid for pid in known if alive(pid)]
        if left:
            if log is not None:
                log(f"stopping {len(left)} leftover child process(es): {left}")
            kill_pids(left)
        return left
