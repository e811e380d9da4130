"""CPU cost of overload control on the request path: one admit + release, in process.

Measures `OverloadController.admit` + `release` for an admitted request (the common case)
with the fleet-level control off/on and with/without tenant limits, in CPU microseconds
(process time, so other load on the machine does not inflate it). Prints a rich table and
writes benchmarks/results/bench_overload_overhead.json.
Usage: .venv/bin/python benchmarks/bench_overload_overhead.py [--n 20000]
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

from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.table import Table

from skyfleet.config import hash_key, parse_config
from skyfleet.gateway.admission import Usage
from skyfleet.gateway.fleet import Fleet
from skyfleet.gateway.overload import OverloadController
from skyfleet.policy.outcome import Outcome
from skyfleet.policy.types import RequestFeatures

OUT = Path(__file__).parent / "results" / "bench_overload_overhead.json"
CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("control off, no tenant limits", {"enabled": False}, {}),
    ("control on, no tenant limits", {"enabled": True}, {}),
    ("control off, RPM+TPM limits", {"enabled": False}, {"rpm": 10**9, "tpm": 10**12}),
    ("control on, RPM+TPM limits", {"enabled": True}, {"rpm": 10**9, "tpm": 10**12}),
]


async def measure(overload: dict[str, Any], limits: dict[str, Any], n: int) -> float:
    cfg = parse_config(
        {
            "providers": [{"name": "p"}],
            "endpoints": [
                {
                    "name": "e",
                    "provider": "p",
                    "url": "http://127.0.0.1:9/v1",
                    "model": "m",
                    "capacity": 10**6,
                }
            ],
            "models": [{"name": "chat", "endpoints": ["e"]}],
            "tenants": [{"name": "t", "api_keys": [hash_key("k")], "limits": limits}],
            "overload": overload,
        }
    )
    fleet = Fleet(cfg)
    ctl = OverloadController(fleet, CollectorRegistry())
    tenant, eps = cfg.tenants[0], fleet.states["chat"]
    reqs = [
        RequestFeatures(model="chat", tenant="t", input_tokens_est=100, max_tokens=100)
        for _ in range(n)
    ]
    t0 = time.process_time()
    for r in reqs:
        ticket = await ctl.admit(r, tenant, eps)
        ticket.release(Outcome.OK, Usage(100, 50))
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    args = ap.parse_args()
    rows = []
    for label, ov, lim in CASES:
        best = min(asyncio.run(measure(ov, lim, args.n)) for _ in range(3))
        rows.append({"case": label, "cpu_us_per_request": best})
    table = Table(title="Overload control: CPU per admitted request (admit + release)")
    table.add_column("case")
    table.add_column("CPU µs", justify="right")
    for r in rows:
        table.add_row(r["case"], f"{r['cpu_us_per_request']:.1f}")
    Console().print(table)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "bench": "bench_overload_overhead",
                "n": args.n,
                "machine": {"nproc": os.cpu_count(), "python": platform.python_version()},
                "results": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
