"""Is the load generator the bottleneck? One process against a minimal fast local server.

1. Tiny non-streaming requests at rising open-loop rates: achieved rate, send lag, errors.
   Non-streaming requests use the raw keep-alive client (`fast_path`, the default);
   aiohttp is measured too for comparison.
2. Many open streams at once (closed loop, slow token stream): streams held, lag, errors.

The server is `skyfleet.bench.echo_server` (raw asyncio protocol + uvloop) in another
process. Prints a rich table and writes benchmarks/results/bench_loadgen.json.
Usage: .venv/bin/python benchmarks/bench_loadgen.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from skyfleet.bench import Load, SyntheticRequests, Target, preflight, run_load
from skyfleet.bench.echo_server import EchoServer

OUT = Path(__file__).parent / "results" / "bench_loadgen.json"


async def tiny_rate(url: str, rate: float, seconds: float, fast: bool) -> dict[str, Any]:
    t, _ = await preflight(Target(url, stream=False))
    load = Load(rate=rate, process="poisson", duration_s=seconds, warmup_s=0.5, seed=1)
    cpu0 = time.process_time()
    rr = await run_load(t, SyntheticRequests(8, 1), load, scrape_metrics=False, fast_path=fast)
    cpu = time.process_time() - cpu0
    s = rr.summary()
    return {
        "test": "tiny non-streaming " + ("(raw client)" if fast else "(aiohttp)"),
        "asked_rate": rate,
        "achieved_send_rate": s.send_rate,
        "completed_per_s": s.request_throughput,
        "ratio": s.send_rate / rate,
        "lag_p50_ms": s.lag.p50 * 1e3,
        "lag_p99_ms": s.lag.p99 * 1e3,
        "e2e_p50_ms": s.e2e.p50 * 1e3,
        "errors": s.failed,
        "client_cpu_s_per_request": cpu / max(1, len(rr.results)),
        "saturation_warning": bool(rr.warnings),
    }


async def open_streams(url: str, streams: int, seconds: float) -> dict[str, Any]:
    t, _ = await preflight(Target(url, stream=True, timeout_s=120))
    load = Load(concurrency=streams, duration_s=seconds, seed=2)
    # each stream: 40 tokens, one every 100 ms → ~4 s open
    peak = 0
    from skyfleet.bench import LiveStats

    live = LiveStats()

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, live.in_flight)
            await asyncio.sleep(0.05)

    w = asyncio.ensure_future(watch())
    cpu0 = time.process_time()
    rr = await run_load(t, SyntheticRequests(8, 40), load, live=live, scrape_metrics=False)
    cpu = time.process_time() - cpu0
    w.cancel()
    s = rr.summary()
    return {
        "test": "open streams",
        "asked_streams": streams,
        "peak_open_streams": peak,
        "completed": s.completed,
        "errors": s.failed,
        "itl_p50_ms": s.itl.p50 * 1e3,
        "itl_p99_ms": s.itl.p99 * 1e3,
        "chunks_per_s": s.output_token_throughput,
        "client_cpu_s_per_s": cpu / max(s.duration_s, 1e-9),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    secs = 2.0 if a.quick else 4.0
    rows: list[dict[str, Any]] = []
    import uvloop

    with EchoServer() as srv:
        for fast, rates in ((True, (1000.0, 2000.0, 3000.0, 4000.0)), (False, (1000.0, 2000.0))):
            for rate in rates:
                rows.append(uvloop.run(tiny_rate(srv.url, rate, secs, fast)))
    with EchoServer("--token-delay-ms", "100") as srv:
        for n in (500, 1000):
            rows.append(uvloop.run(open_streams(srv.url, n, 6.0)))
    c = Console()
    t = Table(title="load generator: one process vs a fast local server")
    for col in ("test", "asked", "achieved", "ratio", "lag p50 ms", "lag p99 ms", "errors", "note"):
        t.add_column(col, justify="left" if col in ("test", "note") else "right")
    for r in rows:
        if r["test"].startswith("tiny"):
            t.add_row(
                r["test"], f"{r['asked_rate']:.0f}/s", f"{r['achieved_send_rate']:.0f}/s",
                f"{r['ratio']:.2f}", f"{r['lag_p50_ms']:.2f}", f"{r['lag_p99_ms']:.1f}",
                str(r["errors"]),
                f"{r['client_cpu_s_per_request'] * 1e6:.0f} µs CPU/req"
                + (" · saturation warned" if r["saturation_warning"] else ""),
            )  # fmt: skip
        else:
            t.add_row(
                r["test"], str(r["asked_streams"]), str(r["peak_open_streams"]),
                f"{r['peak_open_streams'] / r['asked_streams']:.2f}", "", "",
                str(r["errors"]),
                f"ITL p50/p99 {r['itl_p50_ms']:.0f}/{r['itl_p99_ms']:.0f} ms (server: 100) · "
                f"{r['chunks_per_s']:.0f} chunks/s · {r['client_cpu_s_per_s']:.2f} CPU",
            )  # fmt: skip
    c.print(t)
    machine = {
        "nproc": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    c.print(f"wrote {OUT}  (load average {machine['loadavg']})")


if __name__ == "__main__":
    main()
