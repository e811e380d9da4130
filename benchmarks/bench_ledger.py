"""Usage-ledger write rate: rows/s one PostgreSQL takes from skyfleet's batched writer.

One run, side by side, each case into a fresh database on one throw-away PostgreSQL 15
(durable defaults: fsync on, synchronous_commit on) on this machine:
  - the gateway's writer (`Ledger.flush`: one INSERT … SELECT unnest(…) ON CONFLICT DO
    NOTHING per batch) at batch sizes 500 and 5,000 (the default max_batch);
  - two writers at once (two gateway replicas on one database);
  - one INSERT per record (autocommit), the naive write, for contrast;
  - the SQLite backend's batched writer on a local file.
rows/s is wall-clock (the client and the server share the machine's cores); client CPU µs/row
is the gateway process's own cost (row building + encoding), the per-request ledger overhead
on the hot path's machine. Prints a table and writes benchmarks/results/bench_ledger.json.
Usage: .venv/bin/python benchmarks/bench_ledger.py [--rows 200000] [--naive-rows 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.table import Table

from skyfleet.gateway.ledger import Ledger, UsageRecord
from skyfleet.gateway.ledger.pg_server import PostgresServer, start_postgres
from skyfleet.gateway.ledger.postgres import COLUMNS, INSERT

OUT = Path(__file__).parent / "results" / "bench_ledger.json"


def records(n: int, prefix: str) -> list[UsageRecord]:
    now = time.time()
    return [
        UsageRecord(
            request_id=f"req-{prefix}{i:010x}",
            ts=now + i * 1e-4,
            tenant=f"tenant-{i % 50}",
            model="chat",
            endpoint=f"ep-{i % 40}",
            provider=f"provider-{i % 8}",
            tier="primary",
            status=200 if i % 50 else 503,
            stream=bool(i % 2),
            prompt_tokens=250 + i % 1000,
            completion_tokens=200 + i % 300,
            cost_usd=0.000123,
            ttft_s=0.12,
            latency_s=1.8,
            attempts=1,
        )
        for i in range(n)
    ]


async def batched(urls: list[str], n: int, batch: int) -> tuple[float, float, int]:
    """Writers (one per URL) each flush n records; wall s, client CPU s, rows in the table."""
    leds = [Ledger(u, flush_interval_s=3600, max_batch=batch) for u in urls]
    for led in leds:
        await led.start()
    for k, led in enumerate(leds):
        for r in records(n, f"{k:02x}{os.getpid():08x}"):
            led.add(r)
    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(led.flush() for led in leds))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    for led in leds:
        await led.close()
    return wall, cpu, await count(urls[0]) if urls[0].startswith("postgres") else n * len(urls)


async def naive(url: str, n: int) -> tuple[float, float, int]:
    """One autocommit INSERT per record (what a writer without batching does)."""
    single = INSERT  # the same statement with one-element arrays: same SQL, one row each
    conn = await asyncpg.connect(url)
    led = Ledger(url)  # create + migrate the schema
    await led.start()
    await led.close()
    recs = [tuple(getattr(r, c) for c in COLUMNS) for r in records(n, "naive0000")]
    c0, t0 = time.process_time(), time.perf_counter()
    for row in recs:
        await conn.execute(single, *([v] for v in row))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    await conn.close()
    return wall, cpu, await count(url)


async def count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT COUNT(*) FROM usage"))
    finally:
        await conn.close()


async def bytes_per_row(url: str) -> float:
    """Table + index + TOAST bytes per stored row (after VACUUM)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM ANALYZE usage")
        size = await conn.fetchval("SELECT pg_total_relation_size('usage')")
        n = await conn.fetchval("SELECT COUNT(*) FROM usage")
        return float(size) / max(1, int(n))
    finally:
        await conn.close()


def run(srv: PostgresServer, rows: int, naive_rows: int) -> tuple[list[dict[str, Any]], float]:
    out: list[dict[str, Any]] = []

    def add(case: str, n: int, batch: int | str, res: tuple[float, float, int]) -> None:
        wall, cpu, stored = res
        assert stored == n, f"{case}: {stored} rows stored, expected {n}"
        out.append(
            {
                "case": case,
                "rows": n,
                "batch": batch,
                "seconds": round(wall, 3),
                "rows_per_s": round(n / wall),
                "client_cpu_us_per_row": round(cpu / n * 1e6, 2),
            }
        )

    for batch in (500, 5000):
        url = srv.create_database(f"b{batch}")
        add("PostgreSQL, batched writer", rows, batch, asyncio.run(batched([url], rows, batch)))
    size = asyncio.run(bytes_per_row(url))
    url = srv.create_database("two")
    add(
        "PostgreSQL, 2 writers at once (2 replicas)",
        2 * rows,
        5000,
        asyncio.run(batched([url, url], rows, 5000)),
    )
    url = srv.create_database("naive")
    add("PostgreSQL, one INSERT per record", naive_rows, 1, asyncio.run(naive(url, naive_rows)))
    with tempfile.TemporaryDirectory() as d:
        db = str(Path(d) / "usage.sqlite")
        add("SQLite (WAL), batched writer", rows, 5000, asyncio.run(batched([db], rows, 5000)))
    return out, size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--naive-rows", type=int, default=5_000)
    args = ap.parse_args()
    with start_postgres(durable=True) as srv:
        version = srv.psql("SHOW server_version")
        settings = {k: srv.psql(f"SHOW {k}") for k in ("fsync", "synchronous_commit")}
        rows, size = run(srv, args.rows, args.naive_rows)
    naive_rate = next(r["rows_per_s"] for r in rows if r["batch"] == 1)
    t = Table(title=f"Usage ledger writes: PostgreSQL {version} ({settings}) on this machine")
    for col in ("case", "rows", "batch", "s", "rows/s", "× per-record", "client CPU µs/row"):
        t.add_column(col, justify="left" if col == "case" else "right")
    for r in rows:
        r["x_vs_per_record_insert"] = round(r["rows_per_s"] / naive_rate, 1)
        t.add_row(
            r["case"],
            f"{r['rows']:,}",
            str(r["batch"]),
            f"{r['seconds']:.2f}",
            f"{r['rows_per_s']:,}",
            f"{r['x_vs_per_record_insert']:.1f}",
            f"{r['client_cpu_us_per_row']:.1f}",
        )
    c = Console(width=130)
    c.print(t)
    c.print(f"PostgreSQL storage: {size:.0f} bytes per usage row (table + primary key + ts index)")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    OUT.write_text(
        json.dumps(
            {
                "bench": "bench_ledger",
                "postgres": {"version": version, **settings, "bytes_per_row": round(size, 1)},
                "machine": {
                    "nproc": os.cpu_count(),
                    "python": platform.python_version(),
                    "loadavg_at_end": [round(x, 2) for x in load],
                },
                "results": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
