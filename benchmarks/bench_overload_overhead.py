"""CPU cost of overload control on the request path: one admit + release, in process.

Measures `OverloadController.admit` + the release of an admitted request (the common case)
with the fleet-level control off/on and with/without tenant limits, in CPU microseconds
(process time, so other load on the machine does not inflate it). With `--before-src DIR`
the same cases run on another checkout's package too (e.g. a git worktree of the previous
commit), interleaved in the same run, best of `--repeat` each. Prints a rich table and
writes benchmarks/results/bench_overload_overhead.json.
Usage: .venv/bin/python benchmarks/bench_overload_overhead.py [--n 20000] [--before-src DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

OUT = Path(__file__).parent / "results" / "bench_overload_overhead.json"
CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("control off, no tenant limits", {"enabled": False}, {}),
    ("control on, no tenant limits", {"enabled": True}, {}),
    ("control off, RPM+TPM limits", {"enabled": False}, {"rpm": 10**9, "tpm": 10**12}),
    ("control on, RPM+TPM limits", {"enabled": True}, {"rpm": 10**9, "tpm": 10**12}),
]


async def measure(overload: dict[str, Any], limits: dict[str, Any], n: int) -> float:
    """CPU µs per admit + release on whichever skyfleet package is importable."""
    from prometheus_client import CollectorRegistry

    from skyfleet.config import hash_key, parse_config
    from skyfleet.gateway.fleet import Fleet
    from skyfleet.gateway.overload import OverloadController
    from skyfleet.policy.types import RequestFeatures

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
    tenant, eps = cfg.tenants[0], fleet.states["chat"]
    reqs = [
        RequestFeatures(model="chat", tenant="t", input_tokens_est=100, max_tokens=100)
        for _ in range(n)
    ]
    if hasattr(OverloadController, "attach_record"):  # before the composed request path
        old: Any = OverloadController(lambda: fleet, CollectorRegistry())  # type: ignore[arg-type]
        t0 = time.process_time()
        for r in reqs:
            await old.admit(r, tenant, eps)
            old.release(r, None, 100, 50)
        return (time.process_time() - t0) / n * 1e6
    from skyfleet.gateway.admission import Usage
    from skyfleet.policy.outcome import Outcome

    ctl = OverloadController(fleet, CollectorRegistry())
    t0 = time.process_time()
    for r in reqs:
        ticket = await ctl.admit(r, tenant, eps)
        ticket.release(Outcome.OK, Usage(100, 50))
    return (time.process_time() - t0) / n * 1e6


def child(n: int) -> None:
    """One pass over the cases; prints {case: µs} as JSON."""
    print(json.dumps({label: asyncio.run(measure(ov, lim, n)) for label, ov, lim in CASES}))


def run_pass(n: int, src: str | None) -> dict[str, float]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = str(Path(src) / "src")
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--n", str(n)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3, help="passes per package (best is kept)")
    ap.add_argument("--before-src", help="another checkout to measure side by side")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.n)
        return
    packages = {"this checkout": None} | ({"before": args.before_src} if args.before_src else {})
    best: dict[str, dict[str, float]] = {name: {} for name in packages}
    for _ in range(args.repeat):  # interleaved, so drifts in machine load hit both
        for name, src in packages.items():
            for case, us in run_pass(args.n, src).items():
                best[name][case] = min(us, best[name].get(case, float("inf")))
    rows = []
    for label, _, _ in CASES:
        row: dict[str, Any] = {"case": label, "cpu_us_per_request": best["this checkout"][label]}
        if args.before_src:
            row["before_cpu_us_per_request"] = best["before"][label]
        rows.append(row)
    table = Table(title="Overload control: CPU per admitted request (admit + release)")
    table.add_column("case")
    table.add_column("CPU µs", justify="right")
    if args.before_src:
        table.add_column("before µs", justify="right")
        table.add_column("after / before", justify="right")
    for r in rows:
        cells = [r["case"], f"{r['cpu_us_per_request']:.1f}"]
        if args.before_src:
            b = r["before_cpu_us_per_request"]
            cells += [f"{b:.1f}", f"{r['cpu_us_per_request'] / b:.2f}"]
        table.add_row(*cells)
    Console().print(table)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "bench": "bench_overload_overhead",
                "n": args.n,
                "repeat": args.repeat,
                "before_src": args.before_src,
                "machine": {"nproc": os.cpu_count(), "python": platform.python_version()},
                "results": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
