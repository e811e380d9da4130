"""Shared state through Redis: requests/s of 1, 2 and 3 gateway processes with it on vs off.

In one run, for each process count N (``serve --workers N``: N SO_REUSEPORT processes, each
its own Redis link and replica id, exactly as N replicas) and each mode:

- ``local``: no Redis, the tenant has no limits (the baseline);
- ``fleet``: ``server.redis_url`` set, the tenant has no limits: endpoint health, in-flight
  counts and retry-budget totals exchanged every ``shared_state_interval_s`` (0.25 s), no
  Redis call on the request path;
- ``local+limits``: no Redis, the tenant has RPM, TPM and concurrency limits (in process);
- ``shared+limits``: Redis for fleet state and those limits: two Lua calls per request
  (acquire on admission, the correction after the answer).

it drives the gateway in a closed loop (benchmarks/gateway/loadclient.py, `--concurrency`
keep-alive connections) in front of the fast echo upstream (skyfleet.bench.echo_server), and
records requests/s, the gateways' CPU per request, and Redis's calls and CPU per request
(`INFO commandstats`/`INFO cpu` over the run ÷ the ledger's rows). Ratios on ÷ off per N are
the result; the issue's target is ``shared+limits`` ÷ ``local+limits`` ≥ 0.75 at N = 1. The
summary adds the paper estimate for 29k req/s average and 3× peaks from the measured costs.

    .venv/bin/python benchmarks/bench_shared_state.py [--duration 8] [--replicas 1,2,3]

Only 127.0.0.1 is used; every process started is stopped on exit, error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import redis

from bench_gateway import measure_in_tmp, run_client, write_result
from gateway import procs

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "bench_shared_state.json"
KEY = "sk-bench"
BODY = json.dumps(
    {"model": "chat", "messages": [{"role": "user", "content": "hello " * 20}], "max_tokens": 16}
)
MODES = ("local", "fleet", "local+limits", "shared+limits")
SERIAL_MODES = ("local+limits", "shared+limits")
PAIRS = (("fleet", "local"), ("shared+limits", "local+limits"))  # on ÷ off
LIMITS = {"rpm": 1_000_000_000, "tpm": 1_000_000_000_000, "max_concurrency": 1_000_000}
AVG_RPS, PEAK = 29_000, 3
TARGET_RATIO = 0.75
REDIS_UTILISATION = 0.5  # plan a Redis shard (one core) at half its capacity
GATEWAY_UTILISATION = 0.6  # plan gateway cores at 60 %


def gateway_config(tmp: Path, name: str, upstream: int, mode: str, redis_url: str) -> Path:
    from skyfleet.config import hash_key

    server: dict[str, Any] = {"watch_config": False}
    if mode in ("fleet", "shared+limits"):
        server["redis_url"] = redis_url
    tenant: dict[str, Any] = {"name": "bench", "api_keys": [hash_key(KEY)]}
    if mode.endswith("limits"):
        tenant["limits"] = LIMITS
    cfg = {
        "server": server,
        "ledger": {"path": str(tmp / f"{name}.sqlite")},
        "routing": {"scrape_interval_s": 0},
        "providers": [{"name": "local"}],
        "endpoints": [
            {
                "name": f"echo{i}",
                "provider": "local",
                "url": f"http://127.0.0.1:{upstream}/v1",
                "model": "echo",
                "capacity": 100000,
            }
            for i in range(2)
        ],
        "models": [{"name": "chat", "endpoints": ["echo0", "echo1"]}],
        "tenants": [tenant],
    }
    path = tmp / f"{name}.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def redis_stats(r: redis.Redis) -> dict[str, float]:
    """Redis's total command calls, EVALSHA calls and CPU seconds so far."""
    cmd = r.info("commandstats")
    cpu = r.info("cpu")
    calls = sum(v["calls"] for v in cmd.values())
    eval_calls = sum(v["calls"] for k, v in cmd.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
    eval_usec = sum(v["usec"] for k, v in cmd.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
    return {
        "calls": float(calls),
        "eval_calls": float(eval_calls),
        "eval_usec": float(eval_usec),
        "cpu_s": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        "t": time.monotonic(),
    }


def ledger_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM usage").fetchone()[0])


def one_run(
    a: argparse.Namespace, tmp: Path, up: int, r: redis.Redis, url: str, n: int, mode: str,
    k: int, conc: int,
) -> dict[str, Any]:  # fmt: skip
    """Start N processes in `mode`, load them with `conc` connections, stop them; the row."""
    from skyfleet.gateway.process import start_gateway

    name = f"n{n}-{mode.replace('+', '-')}-c{conc}-{k}"
    cfg = gateway_config(tmp, name, up, mode, url)
    r.flushall()
    r.config_resetstat()
    before = redis_stats(r)
    gw = start_gateway(cfg, workers=n, env={"SKYFLEET_LOG_LEVEL": "WARNING"})
    try:
        pids = {"gateway": procs.tree(gw.proc.pid)}
        spec = {"port": gw.port, "path": "/v1/chat/completions", "body": BODY, "pids": pids}
        spec |= {"headers": {"Authorization": f"Bearer {KEY}"}, "mode": "closed"}
        spec |= {"concurrency": conc, "duration": a.duration, "warmup": a.warmup}
        spec["timeout"] = 30
        print(f"  {n} process(es), {mode:13} closed loop, {conc} connection(s) ...")
        res = run_client(spec, None, a.duration + a.warmup + 60)
    finally:
        gw.stop(30)
    after = redis_stats(r)
    rows = ledger_rows(tmp / f"{name}.sqlite")
    d = {key: after[key] - before[key] for key in before}
    cpu = res["cpu_s"].get("gateway")
    return {
        "replicas": n,
        "mode": mode,
        "concurrency": conc,
        "round": k,
        "rps": res["rps"],
        "requests": res["requests"],
        "errors": sum(res["errors"].values()),
        "latency_ms": res["latency_ms"],
        "p50_ms": res["latency_ms"]["p50"],
        "p99_ms": res["latency_ms"]["p99"],
        "gateway_cpu_us_per_request": cpu / res["requests"] * 1e6 if cpu else None,
        "ledger_rows": rows,
        "redis_round_trips_per_request": d["eval_calls"] / rows if rows else None,
        "redis_commands_per_request": d["calls"] / rows if rows else None,  # inside scripts too
        "redis_eval_us_per_call": d["eval_usec"] / d["eval_calls"] if d["eval_calls"] else None,
        "redis_cpu_us_per_request": d["cpu_s"] / rows * 1e6 if rows else None,
        "redis_round_trips_per_s": d["eval_calls"] / d["t"],
        "redis_cpu_cores": d["cpu_s"] / d["t"],
    }


async def exchange_cost(url: str, r: redis.Redis, replicas: int, endpoints: int) -> dict[str, Any]:
    """Redis time and gateway CPU of one fleet-state exchange with `replicas` replicas and
    `endpoints` endpoints (all in this process, each its own store; 20 rounds)."""
    from prometheus_client import CollectorRegistry

    from skyfleet.config import parse_config
    from skyfleet.gateway.fleet import Fleet
    from skyfleet.gateway.redis_link import RedisLink
    from skyfleet.gateway.shared_fleet import SharedFleet
    from skyfleet.policy.settings import retry_budget

    names = [f"e{i}" for i in range(endpoints)]
    cfg = parse_config(
        {
            "server": {"redis_url": url},
            "providers": [{"name": "p"}],
            "endpoints": [
                {"name": n, "provider": "p", "url": "http://127.0.0.1:9/v1", "model": "m"}
                for n in names
            ],
            "models": [{"name": "chat", "endpoints": names}],
        }
    )
    link = RedisLink(url, CollectorRegistry())
    await link.start()
    stores = []
    for k in range(replicas):
        fleet = Fleet(cfg)
        for i, ep in enumerate(fleet.endpoints.values()):
            ep.state.in_flight = (i + k) % 7
        budget = retry_budget(cfg.routing)
        stores.append(SharedFleet(fleet, link, lambda b=budget: b, CollectorRegistry()))
    for s in stores:  # every replica known before measuring
        await s.exchange()
    r.config_resetstat()
    cpu = time.process_time()
    rounds = 20
    for k in range(rounds):
        for i, s in enumerate(stores):
            s.fleet.endpoints[names[k % endpoints]].state.in_flight = (i + k) % 5  # changes
            await s.exchange()
    cpu = time.process_time() - cpu
    stat = r.info("commandstats").get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    await link.close()
    r.flushall()
    n = rounds * replicas
    return {
        "replicas": replicas,
        "endpoints": endpoints,
        "exchanges": n,
        "redis_us_per_exchange": stat["usec"] / max(1, stat["calls"]),
        "gateway_cpu_us_per_exchange": cpu / n * 1e6,
    }


def measure(a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    ps = procs.Procs(tmp)
    try:
        up = procs.free_port()
        echo = [sys.executable, "-m", "skyfleet.bench.echo_server", "--port", str(up)]
        p = ps.start("echo", echo)
        procs.wait_tcp(up, p, 20, "echo upstream")
        rport = procs.free_port()
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        rcmd = [exe, "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        p = ps.start("redis", [*rcmd, "no"])
        procs.wait_tcp(rport, p, 20, "redis-server")
        r = redis.Redis(port=rport, decode_responses=True)
        url = f"redis://127.0.0.1:{rport}/0"
        rows = []
        for k in range(a.rounds):  # rounds interleave every configuration
            for n in a.replicas:
                for mode in MODES:
                    rows.append(one_run(a, tmp, up, r, url, n, mode, k, a.concurrency))
            for mode in SERIAL_MODES:  # one connection: nothing to batch (the worst case)
                rows.append(one_run(a, tmp, up, r, url, 1, mode, k, 1))
        print("  fleet-state exchange cost by replicas × endpoints ...")
        cost = [
            asyncio.run(exchange_cost(url, r, nr, ne)) for nr, ne in ((3, 2), (30, 50), (150, 50))
        ]
        r.close()
        return {"rows": rows, "exchange_cost": cost}
    finally:
        ps.stop_all()


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


KEYS = ("rps", "p50_ms", "p99_ms", "gateway_cpu_us_per_request", "redis_round_trips_per_request")
KEYS += ("redis_commands_per_request", "redis_eval_us_per_call", "redis_cpu_us_per_request")
KEYS += ("redis_round_trips_per_s",)


def _medians(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in KEYS:
        xs = [r[key] for r in rows if r[key] is not None]
        out[key] = _median(xs) if xs else None
    return out


def summarize(rows: list[dict[str, Any]], a: argparse.Namespace) -> dict[str, Any]:
    """Medians per (N, mode), on ÷ off ratios (requests/s, and CPU per request), the
    unbatched worst case and the paper estimate."""

    def pick(n: int, mode: str, conc: int) -> list[dict[str, Any]]:
        return [r for r in rows if (r["replicas"], r["mode"], r["concurrency"]) == (n, mode, conc)]

    med = {
        str(n): {mode: _medians(pick(n, mode, a.concurrency)) for mode in MODES} for n in a.replicas
    }
    serial = {mode: _medians(pick(1, mode, 1)) for mode in SERIAL_MODES}
    ratios: dict[str, dict[str, float]] = {}
    for n, modes in med.items():
        for on, off in PAIRS:
            r_on, r_off = modes[on], modes[off]
            ratios.setdefault(n, {})[f"{on} / {off}"] = r_on["rps"] / r_off["rps"]  # type: ignore[operator]
            cpu = r_off["gateway_cpu_us_per_request"], r_on["gateway_cpu_us_per_request"]
            if cpu[0] and cpu[1]:
                ratios[n][f"{on} / {off} (CPU per request)"] = cpu[0] / cpu[1]
    n1 = str(min(a.replicas))
    target = ratios[n1]["shared+limits / local+limits"]
    return {
        "median": med,
        "serial": serial,
        "ratios": ratios,
        "target_met": target >= TARGET_RATIO,
        "estimate": {
            "batched": estimate(med[n1]["shared+limits"], med),
            "unbatched": estimate(serial["shared+limits"], med),
        },
        "errors": sum(r["errors"] for r in rows),
    }


def estimate(
    shared: dict[str, float | None], med: dict[str, dict[str, dict[str, float | None]]]
) -> dict[str, Any]:
    """Gateway cores and Redis shards for 29k req/s average and 3× peaks, from measured
    per-request costs (gateway CPU µs per request; Redis CPU µs and calls per request)."""
    gw_us = shared["gateway_cpu_us_per_request"] or 0.0
    redis_us = shared["redis_cpu_us_per_request"] or 0.0
    calls = shared["redis_round_trips_per_request"] or 0.0
    out: dict[str, Any] = {
        "gateway_cpu_us_per_request": gw_us,
        "redis_cpu_us_per_request": redis_us,
        "redis_round_trips_per_request": calls,
        "fleet_exchanges_per_s_per_process": {
            n: (m["fleet"]["redis_round_trips_per_s"] or 0.0) / int(n) for n, m in med.items()
        },
    }
    for label, rate in (("average", AVG_RPS), ("peak", AVG_RPS * PEAK)):
        redis_cores = rate * redis_us / 1e6
        out[label] = {
            "req_per_s": rate,
            "gateway_cores": rate * gw_us / 1e6 / GATEWAY_UTILISATION,
            "redis_cpu_cores_busy": redis_cores,
            "redis_shards": max(1, math.ceil(redis_cores / REDIS_UTILISATION)),
            "redis_round_trips_per_s": rate * calls,
        }
    return out


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def show(summary: dict[str, Any], a: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=max(130, shutil.get_terminal_size().columns))
    t = Table(title=f"closed loop, {a.duration:g} s, median of {a.rounds} round(s)")
    cols = ("processes", "conns", "mode", "req/s", "× off", "CPU × off", "p50 ms", "p99 ms")
    cols += ("gateway CPU µs/req", "Redis calls/req", "Redis cmds/req", "Redis CPU µs/req")
    for c in cols:
        t.add_column(c, justify="left" if c == "mode" else "right", no_wrap=c == "mode")
    table = [(n, a.concurrency, modes) for n, modes in summary["median"].items()]
    table.append(("1", 1, summary["serial"]))
    for n, conc, modes in table:
        for mode, v in modes.items():
            ratio = cpu = None
            if conc == a.concurrency:
                pair = next((f"{on} / {off}" for on, off in PAIRS if on == mode), None)
                ratio = summary["ratios"][n].get(pair or "")
                cpu = summary["ratios"][n].get(f"{pair} (CPU per request)")
            t.add_row(
                n,
                str(conc),
                mode,
                _f(v["rps"], ",.0f"),
                _f(ratio, ".2f"),
                _f(cpu, ".2f"),
                _f(v["p50_ms"], ".1f"),
                _f(v["p99_ms"], ".1f"),
                _f(v["gateway_cpu_us_per_request"], ",.0f"),
                _f(v["redis_round_trips_per_request"], ".3f"),
                _f(v["redis_commands_per_request"], ".1f"),
                _f(v["redis_cpu_us_per_request"], ".1f"),
            )
    con.print(t)
    for kind, e in summary["estimate"].items():
        for label in ("average", "peak"):
            x = e[label]
            con.print(
                f"  {kind:9} {label:7} {x['req_per_s']:,} req/s: gateway "
                f"{x['gateway_cores']:.0f} cores at {GATEWAY_UTILISATION:.0%}; Redis "
                f"{x['redis_round_trips_per_s']:,.0f} calls/s, {x['redis_cpu_cores_busy']:.2f} "
                f"cores busy → {x['redis_shards']} shard(s) at {REDIS_UTILISATION:.0%}"
            )
    for c in summary.get("exchange_cost", []):
        con.print(
            f"  exchange with {c['replicas']} replicas × {c['endpoints']} endpoints: Redis "
            f"{c['redis_us_per_exchange']:.0f} µs, gateway CPU "
            f"{c['gateway_cpu_us_per_exchange']:.0f} µs per exchange"
        )
    n1 = min(summary["median"], key=int)
    ratio = summary["ratios"][n1]["shared+limits / local+limits"]
    con.print(
        f"  target: shared+limits ÷ local+limits req/s at {n1} process ≥ {TARGET_RATIO}: "
        f"{ratio:.2f} ({'met' if summary['target_met'] else 'not met'}); "
        f"errors: {summary['errors']}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=8.0, help="seconds measured per run")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds before each window")
    ap.add_argument("--concurrency", type=int, default=64, help="closed-loop connections")
    ap.add_argument("--replicas", default="1,2,3", help="gateway process counts")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved repetitions")
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args()
    a.replicas = [int(x) for x in a.replicas.split(",")]
    info, t_start, res = measure_in_tmp(measure, a, "skyfleet-bench-shared-")
    rows = res["rows"]
    summary = summarize(rows, a)
    summary["exchange_cost"] = res["exchange_cost"]
    show(summary, a)
    write_result(Path(a.out), "bench_shared_state.py", info, t_start, a, summary=summary, rows=rows)


if __name__ == "__main__":
    main()
