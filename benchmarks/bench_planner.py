"""Planner benchmark: the 2.5 B prompts/day workload, one week hourly, the shipped catalog,
3 models — with exact region quotas, billing units and every TP up to the instance.

Compares, on the same problem and machine:
  relax-and-fix  — skyfleet's solver (whole-horizon LP bound + per-period MILPs), 60 s limit;
  direct MILP    — the whole horizon handed to HiGHS as one MILP, same limit (--skip-direct);
  greedy         — the fallback heuristic alone;
and times the whole `skyfleet plan … --html --json` command (a subprocess, as a user runs it)
with the time per phase of the same run (baselines, explanation, validation, reports).
The gap of each solver is measured against the best proven lower bound (the LP relaxation).

    .venv/bin/python benchmarks/bench_planner.py [--time-limit 60] [--skip-direct]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from skyfleet.planner.api import planning_options, workload_offerings
from skyfleet.planner.greedy import greedy
from skyfleet.planner.milp import Variant, solve
from skyfleet.planner.problem import build_problem
from skyfleet.planner.solver import int_vars, solve_plan
from skyfleet.workload import load_workload

ROOT = Path(__file__).resolve().parents[1]
WORKLOAD = ROOT / "examples/workloads/chat-2.5b.yaml"


def whole_command(time_limit: float) -> dict[str, object]:
    """`skyfleet plan` with every output, timed from outside, plus its own phase times."""
    with tempfile.TemporaryDirectory() as d:
        code = (
            "import json, sys, time; t0 = time.perf_counter()\n"
            "from skyfleet.planner.api import plan_workload\n"
            "from skyfleet.planner.report import print_report, write_html, write_json\n"
            "from skyfleet.workload import load_workload\n"
            "t_imp = time.perf_counter() - t0\n"
            f"r = plan_workload(load_workload({str(WORKLOAD)!r}), time_limit_s={time_limit})\n"
            "t = time.perf_counter()\n"
            f"r.plan.save({d!r} + '/p.yaml'); write_json(r.plan, {d!r} + '/p.json')\n"
            f"write_html(r.plan, {d!r} + '/p.html'); print_report(r.plan)\n"
            "ph = {'imports': t_imp, **r.timings, 'reports': time.perf_counter() - t}\n"
            "print('PHASES' + json.dumps(ph))\n"
        )
        t = time.perf_counter()
        lib = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        lib_s = time.perf_counter() - t
        phases = json.loads(lib.stdout.rsplit("PHASES", 1)[1])
        skyfleet = str(Path(sys.executable).with_name("skyfleet"))
        t = time.perf_counter()
        subprocess.run(
            [
                skyfleet,
                "plan",
                str(WORKLOAD),
                "--out",
                f"{d}/plan.yaml",
                "--html",
                f"{d}/p.html",
                "--json",
                f"{d}/p.json",
                "--time-limit",
                str(time_limit),
                "-q",
            ],
            check=True,
            capture_output=True,
        )
        cli_s = time.perf_counter() - t
        meta = json.loads(Path(f"{d}/p.json").read_text())["plan"]["meta"]
    return {
        "cli_seconds": cli_s,
        "library_seconds": lib_s,
        "phases": phases,
        "optimality_gap": meta["optimality_gap"],
        "status": meta["status"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--skip-direct", action="store_true")
    args = ap.parse_args()
    w = load_workload(WORKLOAD)
    offs = workload_offerings(w)
    opts = planning_options(w, time_limit_s=args.time_limit)
    t0 = time.perf_counter()
    prob = build_problem(w, offs, opts)
    build_s = time.perf_counter() - t0
    n_int = int_vars(prob, Variant())
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
    cmd = whole_command(args.time_limit)
    ph = Table(title="whole `skyfleet plan --html --json` run, by phase (library run)")
    ph.add_column("phase")
    ph.add_column("s", justify="right")
    for k, v in cmd["phases"].items():  # type: ignore[union-attr]
        ph.add_row(k, f"{v:.2f}")
    ph.add_row("[bold]CLI wall clock (separate run)", f"[bold]{cmd['cli_seconds']:.1f}")
    Console().print(ph)
    out = {
        "workload": w.name,
        "requests_per_day": w.requests_per_day(),
        "periods": prob.T,
        "offerings": len(offs),
        "pools": len(prob.pools),
        "pools_with_billing_units": int(prob.pool_units.sum()),
        "columns": len(prob.columns),
        "tp_sizes": sorted({c.rtype.tp for c in prob.columns}),
        "integer_variables": n_int,
        "build_seconds": build_s,
        "lp_bound": bound,
        "time_limit_s": args.time_limit,
        "results": results,
        "whole_command": cmd,
        "machine": {
            "nproc": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_1m": os.getloadavg()[0],
        },
    }
    dest = ROOT / "benchmarks/results/bench_planner.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1))
    Console().print(
        f"offerings {len(offs)}, pools {len(prob.pools)} ({int(prob.pool_units.sum())} with "
        f"billing units), columns {len(prob.columns)}, integer variables {n_int:,}; "
        f"whole command {cmd['cli_seconds']:.1f} s at gap {cmd['optimality_gap']}; wrote {dest}"
    )


if __name__ == "__main__":
    main()
