"""Benchmark: how long the fluid engine takes for a 2.5-billion-request day (target < 2 min).

Fleet: examples/workloads/chat-2.5b.yaml (three models, 2.5e9 requests/day) served by four
providers × two offerings per model, each provider sized to half the demand in every hour
(N-1 over four providers), built from the perf model. Scenario: the 4.5-hour region power
loss drill. Also times one day of the request-level engine at a small scale for the ratio,
and a week at full scale. Writes benchmarks/results/bench_sim.json.

    .venv/bin/python benchmarks/bench_sim.py
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from skyfleet.sim import Fleet, business_impact, load_scenario, make_group, simulate
from skyfleet.sim.fleet import loads_from_workload
from skyfleet.sim.impact import Value
from skyfleet.workload import load_workload

ROOT = Path(__file__).resolve().parents[1]
OFFERS = {  # model spec → (accelerator, TP) per provider
    "Llama-3.1-8B": ("H100-SXM-80GB", 1),
    "Llama-3.1-70B": ("H100-SXM-80GB", 4),
    "Qwen2.5-32B": ("H100-SXM-80GB", 2),
}
PROVIDERS = [
    ("azure", "eastus", "primary", 2.9),
    ("gcp", "us-central1", "primary", 3.2),
    ("aws", "us-east-1", "spillover", 3.9),
    ("coreweave", "us-east", "spillover", 3.4),
]


def chat_fleet(days: int) -> Fleet:
    from skyfleet.perf import default_profile

    wl = load_workload(ROOT / "examples/workloads/chat-2.5b.yaml")
    loads = loads_from_workload(wl)
    groups = []
    for name, ml in loads.items():
        ml.demand_rps = ml.demand_rps[: 24 * days]
        acc, tp = OFFERS[ml.spec]
        prof = default_profile(ml.spec, acc, tp)
        for prov, region, tier, price in PROVIDERS:
            g = make_group(
                f"{name}/{prov}", ml, prov, region, prof, [0], price=price * tp, tier=tier
            )
            g.replicas = np.array([math.ceil(d / 3 / g.capacity_rps) for d in ml.demand_rps])
            groups.append(g)
    return Fleet(groups, loads, 3600.0, "chat-2.5b (4 providers, N-1)")


def main() -> None:
    sc, _ = load_scenario(ROOT / "examples/scenarios/region-power-loss.yaml")
    rows = []
    t = time.perf_counter()
    day = chat_fleet(1)
    build_s = time.perf_counter() - t
    res = simulate(day, sc, "fluid")
    rows.append(
        (
            "fluid, 1 day, 2.5B/day, 60 s steps",
            res.total("arrivals"),
            res.wall_s,
            res.slo_attainment,
        )
    )
    t = time.perf_counter()
    imp = business_impact(day, sc, lambda f, s, tl: simulate(f, s, "fluid"), Value())
    imp_s = time.perf_counter() - t
    rows.append(
        (
            "business impact (4 providers × 2 + 2 baselines)",
            10 * res.total("arrivals"),
            imp_s,
            float("nan"),
        )
    )
    week = chat_fleet(7)
    wsc = sc.model_copy(update={"horizon": 7 * 86400.0})
    wres = simulate(week, wsc, "fluid")
    rows.append(
        ("fluid, 1 week, 60 s steps", wres.total("arrivals"), wres.wall_s, wres.slo_attainment)
    )
    # request-level engine on a small fleet for scale: requests simulated per second
    small = chat_fleet(1)
    total = sum(float(ml.demand_rps.mean()) for ml in small.models.values())
    for ml in small.models.values():
        ml.demand_rps = ml.demand_rps * 40.0 / total  # ~40 req/s in all
    for g in small.groups:
        g.replicas = np.array(
            [
                max(1, math.ceil(ml_d / 3 / g.capacity_rps))
                for ml_d in small.models[g.model].demand_rps
            ]
        )
    dsc = sc.model_copy(update={"horizon": 600.0, "outages": []})
    t = time.perf_counter()
    dres = simulate(small, dsc, "des")
    rows.append(
        (
            "request-level, 10 min at ~40 req/s",
            dres.total("arrivals"),
            time.perf_counter() - t,
            dres.slo_attainment,
        )
    )
    tab = Table(title="skyfleet simulate — engine speed (busy shared machine)")
    for h in ("run", "requests simulated", "wall s", "requests / wall s", "SLO attainment"):
        tab.add_column(h, justify="right")
    for name, n, wall, att in rows:
        tab.add_row(
            name,
            f"{n:,.0f}",
            f"{wall:.1f}",
            f"{n / wall:,.0f}",
            "—" if math.isnan(att) else f"{att:.4f}",
        )
    Console().print(tab)
    target = rows[0][2] < 120.0
    ratio = rows[0][1] / rows[0][2] / (rows[3][1] / rows[3][2])
    Console().print(
        f"2.5B-request day in {rows[0][2]:.1f} s (fleet build {build_s:.1f} s): "
        f"{'meets' if target else 'MISSES'} the < 120 s target; "
        f"fluid vs request-level throughput ratio {ratio:,.0f}×"
    )
    out = {
        "machine": {
            "nproc": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "groups": len(day.groups),
        "fleet_build_s": build_s,
        "runs": [
            {
                "run": r[0],
                "requests": r[1],
                "wall_s": r[2],
                "slo_attainment": None if math.isnan(r[3]) else r[3],
            }
            for r in rows
        ],
        "meets_2min_target": target,
        "impact": imp,
    }
    p = ROOT / "benchmarks/results/bench_sim.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(out, indent=1, default=str))
    Console().print(f"wrote {p}")


if __name__ == "__main__":
    main()
