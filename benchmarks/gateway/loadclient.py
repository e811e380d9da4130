"""A lean raw-asyncio HTTP/1.1 load client for the gateway benchmark (one process, uvloop).

    python benchmarks/gateway/loadclient.py '<json spec>'   → prints one JSON result line

Spec keys: port, path, body, headers, mode ("closed" | "open"), concurrency (closed),
rate and arrivals ("poisson" | "uniform", open), duration, warmup, pids (name → list of
pids whose CPU time is sampled at the edges of the measured window), timeout.

Closed loop: `concurrency` keep-alive connections, each sending the next request as soon as
the previous answer ends. Open loop: requests leave on schedule whatever the answers do,
each on an idle keep-alive connection (a new one when none is idle). Latency runs from the
moment the request is written to the last byte of the answer; TTFB to the end of the answer's
headers. Only requests that end inside the window count. Parsing is minimal (status line,
Content-Length or chunked framing) so that the client costs far less CPU than the proxies.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK")
_HEAD, _CL, _CHUNKED, _EOF, _IDLE = range(5)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (all their threads) so far."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / _TICK


class Conn(asyncio.Protocol):
    """One keep-alive connection; `request()` returns a future of (status, ttfb, end)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.fut: asyncio.Future[tuple[int, float, float]] | None = None
        self.buf = bytearray()
        self.state = _IDLE
        self.need = 0
        self.status = 0
        self.ttfb = 0.0
        self.keep = True
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop: not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        fut = self.fut
        if fut is not None and not fut.done():
            if self.state == _EOF:
                fut.set_result((self.status, self.ttfb, time.perf_counter()))
            else:
                fut.set_exception(ConnectionError("connection closed mid-answer"))

    def request(self, data: bytes) -> asyncio.Future[tuple[int, float, float]]:
        assert self.transport is not None
        self.fut = self.loop.create_future()
        self.state = _HEAD
        self.transport.write(data)
        return self.fut

    def data_received(self, data: bytes) -> None:
        self.buf += data
        buf = self.buf
        if self.state == _HEAD:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self.ttfb = time.perf_counter()
            head = bytes(buf[:end]).lower()
            del buf[: end + 4]
            self.status = int(head[9:12])
            self.keep = b"connection: close" not in head
            i = head.find(b"content-length:")
            if b"transfer-encoding: chunked" in head:
                self.state = _CHUNKED
            elif i >= 0:
                j = head.find(b"\r\n", i)
                self.need = int(head[i + 15 : j if j >= 0 else None])
                self.state = _CL
            else:
                self.state = _EOF
                self.keep = False
        if self.state == _CL:
            if len(buf) >= self.need:
                del buf[: self.need]
                self._done()
        elif self.state == _CHUNKED:
            while True:
                i = buf.find(b"\r\n")
                if i < 0:
                    return
                size = int(bytes(buf[:i]).split(b";", 1)[0], 16)
                if size == 0:
                    end = buf.find(b"\r\n\r\n", i)  # no trailers expected: "0\r\n\r\n"
                    if end < 0:
                        return
                    del buf[: end + 4]
                    self._done()
                    return
                if len(buf) < i + 4 + size:
                    return
                del buf[: i + 4 + size]
        elif self.state == _EOF:
            buf.clear()

    def _done(self) -> None:
        self.state = _IDLE
        fut = self.fut
        if fut is not None and not fut.done():
            fut.set_result((self.status, self.ttfb, time.perf_counter()))
        if not self.keep and self.transport is not None:
            self.transport.close()
            self.closed = True


def pct(xs: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) of sorted xs, or None when empty."""
    if not xs:
        return None
    return xs[min(len(xs) - 1, int(len(xs) * q / 100.0))]


class Run:
    """One measured run against 127.0.0.1:port."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.loop = asyncio.get_running_loop()
        self.port = int(spec["port"])
        hdrs = {"Host": f"127.0.0.1:{self.port}", "Content-Type": "application/json"}
        hdrs.update(spec.get("headers") or {})
        body = spec["body"].encode()
        hdrs["Content-Length"] = str(len(body))
        head = f"POST {spec['path']} HTTP/1.1\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
        self.req = (head + "\r\n").encode() + body
        self.timeout = float(spec.get("timeout", 30.0))
        self.lat: list[float] = []
        self.ttfb: list[float] = []
        self.lag: list[float] = []
        self.errors: dict[str, int] = {}
        self.count = 0
        self.open_conns = 0
        self.t0 = self.t_end = 0.0
        self.snap: dict[str, tuple[float, dict[str, float]]] = {}

    async def connect(self) -> Conn:
        _, proto = await self.loop.create_connection(
            lambda: Conn(self.loop), "127.0.0.1", self.port
        )
        self.open_conns += 1
        return proto

    def sample(self, key: str) -> None:
        pids: dict[str, list[int]] = self.spec.get("pids") or {}
        vals = {name: cpu_seconds(p) for name, p in pids.items()}
        vals["client"] = time.process_time()
        self.snap[key] = (time.perf_counter(), vals)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    async def one(self, conn: Conn, sent: float) -> bool:
        """Send one request on conn; record it; False when conn is no longer usable."""
        try:
            status, ttfb, end = await asyncio.wait_for(conn.request(self.req), self.timeout)
        except (TimeoutError, ConnectionError, OSError) as e:
            if self.t0 <= time.perf_counter() <= self.t_end:
                self.error(type(e).__name__)
            if conn.transport is not None:
                conn.transport.close()
            return False
        if self.t0 <= end <= self.t_end:
            if status != 200:
                self.error(f"http_{status}")
            else:
                self.count += 1
                self.lat.append(end - sent)
                self.ttfb.append(ttfb - sent)
        return not conn.closed

    async def closed_loop(self, conc: int) -> None:
        async def worker() -> None:
            conn: Conn | None = None
            while time.perf_counter() < self.t_end:
                if conn is None or conn.closed:
                    try:
                        conn = await self.connect()
                    except OSError:
                        self.error("connect")
                        await asyncio.sleep(0.01)
                        continue
                if not await self.one(conn, time.perf_counter()):
                    conn = None
            if conn is not None and conn.transport is not None:
                conn.transport.close()

        await asyncio.gather(*(worker() for _ in range(conc)))

    async def open_loop(self, rate: float, poisson: bool) -> None:
        idle: list[Conn] = [await self.connect() for _ in range(min(64, max(4, int(rate / 50))))]
        rng = random.Random(1)
        tasks: set[asyncio.Task[None]] = set()

        async def fire(sched: float) -> None:
            conn = idle.pop() if idle else None
            if conn is None or conn.closed:
                try:
                    conn = await self.connect()
                except OSError:
                    self.error("connect")
                    return
            sent = time.perf_counter()
            if self.t0 <= sent <= self.t_end:
                self.lag.append(sent - sched)
            if await self.one(conn, sent):
                idle.append(conn)

        t = time.perf_counter()
        while t < self.t_end:
            t += rng.expovariate(rate) if poisson else 1.0 / rate
            now = time.perf_counter()
            if t > now:
                await asyncio.sleep(t - now)
            task = self.loop.create_task(fire(t))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=self.timeout)
        for c in idle:
            if c.transport is not None:
                c.transport.close()

    async def run(self) -> dict[str, Any]:
        s = self.spec
        dur, warm = float(s["duration"]), float(s.get("warmup", 1.0))
        self.t0 = time.perf_counter() + warm  # the window, in perf_counter time
        self.t_end = self.t0 + dur
        self.loop.call_later(warm, self.sample, "start")
        self.loop.call_later(warm + dur, self.sample, "end")
        if s["mode"] == "closed":
            await self.closed_loop(int(s["concurrency"]))
        else:
            await self.open_loop(float(s["rate"]), s.get("arrivals", "poisson") == "poisson")
        await asyncio.sleep(0)
        return self.result(dur)

    def result(self, dur: float) -> dict[str, Any]:
        a, b = self.snap.get("start"), self.snap.get("end")
        cpu: dict[str, float] = {}
        wall = dur
        if a is not None and b is not None:
            wall = b[0] - a[0]
            cpu = {n: b[1][n] - a[1][n] for n in a[1]}
        self.lat.sort()
        self.ttfb.sort()
        self.lag.sort()

        def ms(xs: list[float], q: float) -> float | None:
            v = pct(xs, q)
            return None if v is None else v * 1e3

        return {
            "requests": self.count,
            "errors": self.errors,
            "wall_s": wall,
            "rps": self.count / dur,
            "cpu_s": cpu,
            "connections": self.open_conns,
            "latency_ms": {f"p{q:g}": ms(self.lat, q) for q in (50, 90, 99, 99.9)}
            | {"mean": (sum(self.lat) / len(self.lat) * 1e3) if self.lat else None},
            "ttfb_ms": {f"p{q:g}": ms(self.ttfb, q) for q in (50, 99)},
            "send_lag_ms": {f"p{q:g}": ms(self.lag, q) for q in (50, 99)} if self.lag else None,
        }


async def amain(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the spec and return the result."""
    return await Run(spec).run()


def main() -> None:
    """Entry point: one JSON spec argument, one JSON result line on stdout."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    spec = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(amain(spec))), flush=True)


if __name__ == "__main__":
    main()
