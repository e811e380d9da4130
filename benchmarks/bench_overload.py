"""Overload control on and off: goodput and critical-class p99 TTFT at 1x, 2x and 5x load.

One run, one fleet: two emulated engines (Llama-3.1-8B on L4, 4 sequences at a time, so the
overload is real), time scale 2. Three gateways over the same emulators: `off` (no admission
control; the engines queue everything), `on` (overload control with its defaults: priority
queue, shedding, adaptive concurrency) and `on-slo` (the same with queue deadlines no longer
than the TTFT SLO). Each load level is open-loop Poisson traffic for a fixed time with a
20/50/30 critical/standard/sheddable mix of streaming requests; modes alternate inside each
level so all see the same machine conditions.

Goodput = requests/s answered 200 with TTFT within the SLO. Prints a rich table and writes
benchmarks/results/bench_overload.json.
Usage: .venv/bin/python benchmarks/bench_overload.py [--seconds 10] [--levels 1,2,5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from rich.console import Console
from rich.table import Table

from skyfleet.config import hash_key
from skyfleet.emulator.metrics import metric
from skyfleet.emulator.process import EmulatorProcess, start_emulator
from skyfleet.gateway.process import GatewayProcess, start_gateway
from skyfleet.perf import EngineSettings, default_profile

OUT = Path(__file__).parent / "results" / "bench_overload.json"
UPSTREAM = "Llama-3.1-8B"
TIME_SCALE = 2.0
SLOTS_PER_ENGINE = 4
ENGINES = 2
MAX_TOKENS = 16
SLO_TTFT_S = 1.0  # wall seconds (2 s emulated)
CLIENT_TIMEOUT_S = 30.0
MIX = {"critical": 20, "standard": 50, "sheddable": 30}


@dataclass
class Outcome:
    cls: str
    status: int
    ttft: float | None
    error: str | None = None


def write_config(path: Path, emus: list[EmulatorProcess], overload: dict[str, Any]) -> Path:
    doc: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0, "watch_config": False},
        "ledger": {"path": str(path.with_suffix(".sqlite")), "flush_interval_s": 0.5},
        "routing": {"scrape_interval_s": 0},
        "providers": [{"name": f"p{i}"} for i in range(len(emus))],
        "endpoints": [
            {
                "name": f"e{i}",
                "provider": f"p{i}",
                "url": e.base_url,
                "model": UPSTREAM,
                "capacity": SLOTS_PER_ENGINE,
            }
            for i, e in enumerate(emus)
        ],
        "models": [{"name": "chat", "endpoints": [f"e{i}" for i in range(len(emus))]}],
        "tenants": [{"name": c, "api_keys": [hash_key(f"sk-{c}")], "priority": c} for c in MIX],
        "overload": overload,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def one(s: aiohttp.ClientSession, url: str, cls: str) -> Outcome:
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": "Tell me about overload control"}],
        "max_tokens": MAX_TOKENS,
        "stream": True,
    }
    t0 = time.monotonic()
    try:
        async with s.post(
            url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer sk-{cls}"}
        ) as r:
            if r.status != 200:
                await r.read()
                return Outcome(cls, r.status, None)
            ttft = None
            async for _ in r.content.iter_any():
                if ttft is None:
                    ttft = time.monotonic() - t0
            return Outcome(cls, 200, ttft)
    except (aiohttp.ClientError, TimeoutError) as e:
        return Outcome(cls, 0, None, type(e).__name__)


async def offered(url: str, rate: float, seconds: float, seed: int) -> list[Outcome]:
    """Open-loop Poisson arrivals at `rate` for `seconds` with the class mix."""
    rng = random.Random(seed)
    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
        tasks = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            cls = rng.choices(list(MIX), weights=list(MIX.values()))[0]
            tasks.append(asyncio.ensure_future(one(s, url, cls)))
            await asyncio.sleep(rng.expovariate(rate))
        return list(await asyncio.gather(*tasks))


async def calibrate(url: str) -> float:
    """Seconds one request takes with every engine slot busy (median of a full round)."""
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:
        slots = ENGINES * SLOTS_PER_ENGINE
        for _ in range(2):
            t0 = time.monotonic()
            await asyncio.gather(*(one(s, url, "critical") for _ in range(slots)))
        return time.monotonic() - t0


def wait_idle(emus: list[EmulatorProcess], limit_s: float = 60.0) -> None:
    """Wait until no engine has running or waiting requests."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        busy = 0.0
        for e in emus:
            m = e.metrics()
            busy += metric(m, "vllm:num_requests_running") + metric(m, "vllm:num_requests_waiting")
        if busy == 0:
            return
        time.sleep(0.2)


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(p / 100 * len(v)) - 1))]


def summarise(results: list[Outcome], seconds: float) -> dict[str, Any]:
    crit = [r for r in results if r.cls == "critical"]
    good = [r for r in results if r.status == 200 and r.ttft is not None and r.ttft <= SLO_TTFT_S]
    by_status: dict[str, int] = {}
    for r in results:
        key = r.error or str(r.status)
        by_status[key] = by_status.get(key, 0) + 1
    return {
        "requests": len(results),
        "goodput_rps": len(good) / seconds,
        "ok_rps": sum(r.status == 200 for r in results) / seconds,
        "critical_success": sum(r.status == 200 for r in crit) / max(1, len(crit)),
        "critical_p99_ttft_s": pct([r.ttft for r in crit if r.ttft is not None], 99),
        "critical_slo_attainment": sum(
            1 for r in crit if r.status == 200 and r.ttft is not None and r.ttft <= SLO_TTFT_S
        )
        / max(1, len(crit)),
        "success_by_class": {
            c: sum(r.status == 200 for r in results if r.cls == c)
            / max(1, sum(r.cls == c for r in results))
            for c in MIX
        },
        "statuses": by_status,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0, help="per load level and mode")
    ap.add_argument("--levels", default="1,2,5", help="offered load as multiples of capacity")
    args = ap.parse_args()
    levels = [float(x) for x in args.levels.split(",")]
    console = Console(width=150)
    tmp = Path(tempfile.mkdtemp(prefix="bench-overload-"))
    prof = default_profile(
        "Llama-3.1-8B", "L4", engine=EngineSettings(max_num_seqs=SLOTS_PER_ENGINE)
    )
    prof.save(tmp / "engine.yaml")
    with ThreadPoolExecutor(ENGINES) as pool:
        emus = list(
            pool.map(
                lambda i: start_emulator(
                    str(tmp / "engine.yaml"),
                    time_scale=TIME_SCALE,
                    seed=i,
                    served_model_name=UPSTREAM,
                ),
                range(ENGINES),
            )
        )
    gws: dict[str, GatewayProcess] = {}
    try:
        modes: dict[str, dict[str, Any]] = {
            "off": {"enabled": False},
            "on": {"enabled": True},  # the defaults
            "on-slo": {  # queue deadlines no longer than the TTFT SLO
                "enabled": True,
                "critical_deadline_s": 0.9 * SLO_TTFT_S,
                "standard_deadline_s": 0.9 * SLO_TTFT_S,
                "sheddable_deadline_s": 0.5 * SLO_TTFT_S,
            },
        }
        for mode, ov in modes.items():
            gws[mode] = start_gateway(write_config(tmp / f"{mode}.yaml", emus, ov))
        service = asyncio.run(calibrate(gws["off"].url))
        capacity = ENGINES * SLOTS_PER_ENGINE / service
        wait_idle(emus)
        console.print(
            f"fleet: {ENGINES} engines x {SLOTS_PER_ENGINE} slots, {service:.2f} s/request "
            f"at full concurrency -> capacity {capacity:.1f} req/s"
        )
        rows: list[dict[str, Any]] = []
        for i, level in enumerate(levels):
            for mode in modes:
                console.print(f"load {level:g}x, admission control {mode} ...")
                res = asyncio.run(
                    offered(gws[mode].url, level * capacity, args.seconds, seed=100 + i)
                )
                row = {"level": level, "mode": mode, **summarise(res, args.seconds)}
                rows.append(row)
                wait_idle(emus)
        table = Table(title="Overload control: goodput and critical p99 TTFT (same fleet, one run)")
        for col in (
            "load",
            "admission",
            "requests",
            "goodput req/s",
            "critical ok",
            "critical p99 TTFT",
            "critical in SLO",
            "standard ok",
            "sheddable ok",
        ):
            table.add_column(col, justify="right")
        for r in rows:
            p99 = r["critical_p99_ttft_s"]
            table.add_row(
                f"{r['level']:g}x",
                r["mode"],
                str(r["requests"]),
                f"{r['goodput_rps']:.1f}",
                f"{100 * r['critical_success']:.1f}%",
                "-" if p99 is None else f"{p99:.2f} s",
                f"{100 * r['critical_slo_attainment']:.1f}%",
                f"{100 * r['success_by_class']['standard']:.0f}%",
                f"{100 * r['success_by_class']['sheddable']:.0f}%",
            )
        console.print(table)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(
            json.dumps(
                {
                    "bench": "bench_overload",
                    "machine": {
                        "nproc": os.cpu_count(),
                        "platform": platform.platform(),
                        "python": platform.python_version(),
                    },
                    "fleet": {
                        "engines": ENGINES,
                        "profile": "Llama-3.1-8B@L4 max_num_seqs=4",
                        "time_scale": TIME_SCALE,
                        "max_tokens": MAX_TOKENS,
                        "service_s": service,
                        "capacity_rps": capacity,
                        "slo_ttft_s": SLO_TTFT_S,
                        "seconds_per_level": args.seconds,
                    },
                    "modes": modes,
                    "results": rows,
                },
                indent=2,
            )
        )
        console.print(f"wrote {OUT}")
    finally:
        for g in gws.values():
            g.stop(10)
        for e in emus:
            e.stop()


if __name__ == "__main__":
    main()
