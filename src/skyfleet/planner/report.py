"""Plan reports: rich terminal summary, JSON and a self-contained HTML page with charts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from skyfleet.planner.plan import Plan


def utilisation(plan: Plan) -> dict[str, list[float]]:
    """Demand ÷ effective capacity (spot × availability) per model per period."""
    out: dict[str, list[float]] = {}
    for m in plan.models:
        series = []
        for t, d in enumerate(m.demand_rps):
            cap = sum(plan.capacity_by_provider(m.name, t, effective=True).values())
            series.append(round(d / cap, 4) if cap > 0 else 0.0)
        out[m.name] = series
    return out


def replicas_by_provider(plan: Plan) -> dict[str, list[int]]:
    """Replicas per provider per period (all models)."""
    out: dict[str, list[int]] = {p: [0] * plan.meta.periods for p in plan.providers}
    for e in plan.entries:
        if e.provider in out:
            for t, n in enumerate(e.replicas):
                out[e.provider][t] += n
    return out


def to_json(plan: Plan) -> dict[str, Any]:
    """The plan plus derived series (cost per period, utilisation, replicas by provider)."""
    return {
        "plan": plan.model_dump(mode="json"),
        "cost_per_period": [round(x, 2) for x in plan.cost_per_period()],
        "utilisation": utilisation(plan),
        "replicas_by_provider": replicas_by_provider(plan),
    }


def write_json(plan: Plan, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(to_json(plan), indent=1))
    return p


def _entry_rows(plan: Plan) -> list[list[str]]:
    rows = []
    for e in plan.entries:
        lo, hi = min(e.replicas), max(e.replicas)
        rows.append(
            [
                e.model,
                f"{e.provider}/{e.region}",
                f"{e.accelerator}×{e.accelerators_per_replica}",
                e.tier,
                f"{lo}" if lo == hi else f"{lo}–{hi}",
                f"{e.capacity_rps_per_replica:.2f}",
                f"${e.price_per_replica_hour:,.2f}",
                e.reason,
            ]
        )
    return rows


def print_report(plan: Plan) -> None:
    """A terminal summary: totals, entries with reasons, baselines."""
    from rich.console import Console
    from rich.table import Table

    c = Console()
    if not c.is_terminal:
        c = Console(width=160)  # piped or captured: don't squeeze the table to 80 columns
    m = plan.meta
    gap = "" if m.optimality_gap is None else f", proven gap {m.optimality_gap:.2%}"
    c.print(
        f"[bold]plan for {m.workload}[/]: {m.periods} × {m.period_hours:g} h periods, "
        f"resilience {m.resilience}; solver {m.solver} [bold]{m.status}[/]{gap} "
        f"in {m.solve_seconds:.1f} s"
    )
    t = plan.totals
    c.print(
        f"cost ${t.cost_per_day:,.0f}/day · ${t.cost_per_month:,.0f}/month · "
        f"${t.usd_per_million_tokens:.4f} per 1M tokens · providers: {', '.join(plan.providers)}"
    )
    tab = Table(title="offerings in the plan")
    for h in ["model", "where", "accel×TP", "tier", "replicas", "req/s each", "$/h each"]:
        tab.add_column(h, no_wrap=True)
    tab.add_column("why", overflow="fold", min_width=30)
    for r in _entry_rows(plan):
        tab.add_row(*r)
    c.print(tab)
    if plan.comparisons:
        cmp = Table(title="baselines and the price of resilience ($/day)")
        for h in ["compared with", "cost/day", "vs plan", "basis", "what"]:
            cmp.add_column(h, overflow="fold")
        for x in plan.comparisons:
            cost = "infeasible" if x.cost_per_day is None else f"${x.cost_per_day:,.0f}"
            ratio = (
                ""
                if x.cost_per_day is None or t.cost_per_day <= 0
                else f"{x.cost_per_day / t.cost_per_day - 1:+.1%}"
            )
            cmp.add_row(x.name, cost, ratio, x.basis, x.description)
        c.print(cmp)
    for n in m.notes:
        c.print(f"note: {n}")


def write_html(plan: Plan, path: str | Path) -> Path:
    """A self-contained HTML report with inline charts."""
    from skyfleet.report import HtmlReport
    from skyfleet.report.charts import new_figure

    m, t = plan.meta, plan.totals
    rep = HtmlReport(
        f"skyfleet plan — {m.workload}",
        f"{m.periods} periods of {m.period_hours:g} h · created {m.created} · solver {m.solver} "
        f"({m.status}{'' if m.optimality_gap is None else f', gap {m.optimality_gap:.2%}'})",
    )
    rep.kpis(
        [
            ("cost per day", f"${t.cost_per_day:,.0f}"),
            ("cost per month", f"${t.cost_per_month:,.0f}"),
            ("$ per 1M tokens", f"${t.usd_per_million_tokens:.4f}"),
            ("providers", str(len(plan.providers))),
            ("resilience", m.resilience),
        ]
    )
    hours = [i * m.period_hours for i in range(m.periods)]
    rep.heading("Replicas by provider over time")
    fig, ax = new_figure()
    rbp = replicas_by_provider(plan)
    ax.stackplot(hours, *rbp.values(), labels=list(rbp), step="post")
    ax.set_xlabel("hours from start")
    ax.set_ylabel("replicas")
    ax.legend(loc="upper left", fontsize=8, ncol=4)
    rep.figure(fig, "replicas by provider")
    rep.heading("Cost over time")
    fig, ax = new_figure()
    cpp = plan.cost_per_period()
    ax.step(hours, [x / m.period_hours for x in cpp], where="post")
    ax.set_xlabel("hours from start")
    ax.set_ylabel("$ per hour")
    rep.figure(fig, "cost per hour")
    tokens = [
        sum(dm.demand_rps[i] * dm.tokens_per_request for dm in plan.models) * 3600 * m.period_hours
        for i in range(m.periods)
    ]
    fig, ax = new_figure(height=3.0)
    ax.step(
        hours,
        [c / tok * 1e6 if tok > 0 else 0.0 for c, tok in zip(cpp, tokens, strict=True)],
        where="post",
        color="#a52",
    )
    ax.set_xlabel("hours from start")
    ax.set_ylabel("$ per 1M tokens")
    rep.figure(fig, "dollars per million tokens")
    rep.paragraph(
        f"Total ${t.cost_horizon:,.0f} over the horizon = ${t.cost_per_day:,.0f} per day, "
        f"${t.cost_per_month:,.0f} per month; {t.tokens_per_day / 1e9:,.2f} B tokens per day "
        f"→ ${t.usd_per_million_tokens:.4f} per 1M tokens."
    )
    rep.heading("Utilisation (demand ÷ capacity at the SLO)")
    fig, ax = new_figure()
    for name, series in utilisation(plan).items():
        ax.step(hours, series, where="post", label=name)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("utilisation")
    ax.legend(fontsize=8)
    rep.figure(fig, "utilisation")
    if plan.comparisons:
        rep.heading("Price of resilience and baselines (cost per day)")
        fig, ax = new_figure(height=3.2)
        names = ["this plan"] + [c.name for c in plan.comparisons]
        vals = [t.cost_per_day] + [c.cost_per_day or 0.0 for c in plan.comparisons]
        ax.barh(names, vals, color=["#2a6"] + ["#88a"] * len(plan.comparisons))
        ax.invert_yaxis()
        ax.set_xlabel("$ per day (0 = infeasible)")
        rep.figure(fig, "baselines")
        rep.table(
            ["compared with", "$/day", "vs plan", "basis", "what"],
            [
                [
                    c.name,
                    "infeasible" if c.cost_per_day is None else f"${c.cost_per_day:,.0f}",
                    ""
                    if c.cost_per_day is None or t.cost_per_day <= 0
                    else f"{c.cost_per_day / t.cost_per_day - 1:+.1%}",
                    c.basis,
                    c.description,
                ]
                for c in plan.comparisons
            ],
        )
    rep.heading("Offerings in the plan, and why")
    rep.table(
        ["model", "where", "accel×TP", "tier", "replicas", "req/s each", "$/h each", "why"],
        _entry_rows(plan),
    )
    rep.heading("Demand")
    fig, ax = new_figure()
    for dm in plan.models:
        ax.step(hours, dm.demand_rps, where="post", label=f"{dm.name} ({dm.model})")
    ax.set_ylabel("req/s")
    ax.legend(fontsize=8)
    rep.figure(fig, "demand")
    for n in m.notes:
        rep.paragraph(f"Note: {n}")
    return rep.write(path)
