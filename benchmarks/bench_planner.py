"""Planner benchmark: the 2.5 B prompts/day workload, one week hourly, 200+ offerings, 3 models.

Compares, on the same problem and machine:
  relax-and-fix  — skyfleet's solver (whole-horizon LP bound + per-period MILPs), 60 s limit;
  direct MILP    — the whole horizon handed to HiGHS as one MILP, same limit;
  greedy         — the fallback heuristic alone.
The gap of each is measured against the best proven lower bound (the LP relaxation).

    .venv/bin/python benchmarks/bench_planner.py [--time-limit 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from skyfleet.catalog.offerings import expand, load_offerings
from skyfleet.planner.greedy import greedy
from skyfleet.planner.milp import Variant, solve
from skyfleet.planner.problem import Options, build_problem
from skyfleet.planner.solver import solve_plan
from skyfleet.workload import load_workload

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--skip-direct", action="store_true")
    args = ap.parse_args()
    w = load_workload(ROOT / "examples/workloads/chat-2.5b.yaml")
    pl = w.planning
    rows = load_offerings()
    offs = expand(rows, pl.spot_availability)
    opts = Options(resilience=pl.resilience, max_share=pl.max_share, time_limit_s=args.time_limit)
    t0 = time.perf_counter()
    prob = build_problem(w, offs, opts)
    build_s = time.perf_counter() - t0
    n_int = sum(1 if prob.committed(j) else prob.T for j in range(len(prob.columns)))
    results: dict[str, dict[str, float | str | None]] = {}

    t = time.perf_counter()
    sol = solve_plan(prob)
    results["relax-and-fix"] = {
        "seconds": time.perf_counter() - t + build_s,
        "cost": sol.cost,
        "status": sol.status,
        "bound": sol.bound,
    }
    bound = sol.bound or 0.0
    t = time.perf_counter()
    g = greedy(prob)
    results["greedy"] = {
        "seconds": time.perf_counter() - t + build_s,
        "cost": g.cost if g.feasible else None,
        "status": g.status,
        "bound": None,
    }
    if not args.skip_direct:
        t = time.perf_counter()
        d = solve(prob, Variant(time_limit_s=args.time_limit))
        results["direct MILP"] = {
            "seconds": time.perf_counter() - t + build_s,
            "cost": d.cost if d.feasible else None,
            "status": d.status,
            "bound": d.bound,
        }
        bound = max(bound, d.bound or 0.0)
    for r in results.values():
        c = r["cost"]
        r["gap_vs_bound"] = (float(c) - bound) / float(c) if isinstance(c, float) else None
    base = results["relax-and-fix"]["cost"]
    table = Table(title=f"planner: {w.name}, {prob.T} periods, {len(offs)} offerings")
    for h in ["solver", "wall s", "cost/week $", "gap vs LP bound", "cost ratio", "status"]:
        table.add_column(h)
    for name, r in results.items():
        c = r["cost"]
        table.add_row(
            name,
            f"{r['seconds']:.1f}",
            "—" if c is None else f"{float(c):,.0f}",
            "—" if r["gap_vs_bound"] is None else f"{float(r['gap_vs_bound']):.3%}",
            "—" if c is None or not base else f"{float(c) / float(base):.4f}",
            str(r["status"]),
        )
    Console().print(table)
    out = {
        "workload": w.name,
        "requests_per_day": w.requests_per_day(),
        "periods": prob.T,
        "catalog_rows": len(rows),
        "offerings": len(offs),
        "pools": len(prob.pools),
        "columns": len(prob.columns),
        "integer_variables": n_int,
        "build_seconds": build_s,
        "lp_bound": bound,
        "time_limit_s": args.time_limit,
        "results": results,
        "machine": {"nproc": os.cpu_count(), "platform": platform.platform()},
    }
    dest = ROOT / "benchmarks/results/bench_planner.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1))
    Console().print(
        f"offerings {len(offs)} (rows {len(rows)}), pools {len(prob.pools)}, columns "
        f"{len(prob.columns)}, integer variables {n_int:,}; wrote {dest}"
    )


if __name__ == "__main__":
    main()
