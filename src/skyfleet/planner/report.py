"""Plan reports: rich terminal summary, JSON and a self-contained HTML page with charts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyfleet.planner.plan import Comparison, CostStep, Plan

if TYPE_CHECKING:
    from skyfleet.planner.diff import PlanDiff


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


def _money(x: float | None) -> str:
    return "infeasible" if x is None else f"${x:,.0f}"


def _signed(x: float | None) -> str:
    return "" if x is None else f"{'+' if x >= 0 else '−'}${abs(x):,.0f}"


def _comparison(plan: Plan, name: str) -> Comparison | None:
    return next((c for c in plan.comparisons if c.name == name), None)


def cost_story(plan: Plan) -> list[str]:
    """The plan's cost against like-for-like single-cloud fleets, and where it comes from
    (the planner's own decomposition), in sentences."""
    t, m = plan.totals, plan.meta
    out: list[str] = []
    spot = "spot not counted after a loss" if m.spot_in_survivors == "none" else "spot discounted"
    what = (
        f"survives the loss of any one {m.resilience} ({spot})"
        if m.resilience != "none"
        else "survives no loss (resilience none)"
    )
    out.append(f"This plan costs ${t.cost_per_day:,.0f}/day and {what}.")
    region = _comparison(plan, "single cloud, region N-1")
    bare = _comparison(plan, "single cloud, no resilience")
    if region is not None:
        if region.cost_per_day is None:
            out.append(
                "No single provider can meet the same SLO and survive the loss of one of its "
                "regions within its quotas."
            )
        else:
            rel = t.cost_per_day / region.cost_per_day - 1 if region.cost_per_day else 0.0
            cmp = f"{abs(rel):.0%} {'cheaper' if rel < 0 else 'more'}"
            out.append(
                f"Like for like, the cheapest single-cloud fleet with the same SLO and headroom "
                f"that survives a region loss ({region.description.split(':')[0]}) costs "
                f"${region.cost_per_day:,.0f}/day: the plan is {cmp}"
                + (
                    ", and it also survives losing a whole provider."
                    if m.resilience == "provider"
                    else "."
                )
            )
    if bare is not None and bare.cost_per_day is not None:
        out.append(
            f"A single cloud with no resilience at all ({bare.description.split(':')[0]}) "
            f"would cost ${bare.cost_per_day:,.0f}/day — but one outage would stop the service."
        )
    steps = [s for s in plan.decomposition[1:] if s.delta_per_day is not None]
    if steps:

        def label(s: CostStep) -> str:
            return "whole replicas" if s.name.startswith("=") else s.name.lstrip("+ ")

        parts = [f"{label(s)} {_signed(s.delta_per_day)}" for s in steps]
        first = plan.decomposition[0]
        big = max(steps, key=lambda s: abs(s.delta_per_day or 0.0))
        out.append(
            f"Where the cost comes from: {first.name} {_money(first.cost_per_day)}, then "
            + ", ".join(parts)
            + f" per day; the largest step is {label(big)}."
        )
    for c in plan.coverage:
        if c.shed_rps_peak > 0:
            out.append(
                f"{c.model}: after losing {c.worst_loss} the plan may shed up to "
                f"{c.shed_rps_peak:,.1f} req/s ({c.shed_share_peak:.0%}) of "
                f"{', '.join(m.shed_on_loss)} traffic."
            )
    return out


def decomposition_rows(plan: Plan) -> list[list[str]]:
    return [
        [s.name, _money(s.cost_per_day), _signed(s.delta_per_day), s.description]
        for s in plan.decomposition
    ]


def binding_rows(plan: Plan) -> list[list[str]]:
    return [[b.what, b.step, f"${b.saves_per_day:,.0f}/day"] for b in plan.binding]


def coverage_rows(plan: Plan) -> list[list[str]]:
    return [
        [
            c.model,
            c.worst_loss,
            f"{c.required:.0%}",
            f"{c.served_after_worst_loss:.0%}",
            f"{c.shed_rps_peak:,.1f} req/s ({c.shed_share_peak:.0%})"
            if c.shed_rps_peak
            else "none",
        ]
        for c in plan.coverage
    ]


COVERAGE_HEADER = ["model", "worst loss", "must keep", "keeps (capacity ÷ demand)", "may shed"]
DECOMPOSITION_HEADER = ["step", "cost/day", "change", "what"]
BINDING_HEADER = ["binding constraint", "relax by", "saves (LP estimate)"]


def _comparison_rows(plan: Plan) -> list[list[str]]:
    t = plan.totals
    return [
        [
            x.name,
            _money(x.cost_per_day),
            ""
            if x.cost_per_day is None or t.cost_per_day <= 0
            else f"{x.cost_per_day / t.cost_per_day - 1:+.1%}",
            x.survives or "",
            x.basis,
            x.description,
        ]
        for x in plan.comparisons
    ]


COMPARISON_HEADER = ["compared with", "cost/day", "vs plan", "survives", "basis", "what"]


def print_report(plan: Plan) -> None:
    """A terminal summary: totals, entries with reasons, baselines."""
    from rich.table import Table

    from skyfleet.console import make_console

    c = make_console()  # piped or captured: wide tables, unwrapped lines
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
    for title, header, rows in (
        ("N-1 coverage after the worst single loss", COVERAGE_HEADER, coverage_rows(plan)),
        (
            "baselines and the price of resilience ($/day)",
            COMPARISON_HEADER,
            _comparison_rows(plan),
        ),
        (
            "where the cost comes from (constraints added in this order)",
            DECOMPOSITION_HEADER,
            decomposition_rows(plan),
        ),
        ("binding constraints", BINDING_HEADER, binding_rows(plan)),
    ):
        if not rows:
            continue
        tab = Table(title=title)
        for h in header:
            tab.add_column(h, overflow="fold")
        for r in rows:
            tab.add_row(*r)
        c.print(tab)
    if plan.idle:
        idle = sum(max(i.accelerators) for i in plan.idle)
        c.print(f"idle: up to {idle} accelerators are paid for as the rest of rented instances")
    for line in cost_story(plan):
        c.print(line)
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
        rep.table(COMPARISON_HEADER, _comparison_rows(plan))
    if plan.decomposition or plan.comparisons:
        rep.heading("The cost story: like for like, and where the cost comes from")
        for line in cost_story(plan):
            rep.paragraph(line)
        if plan.decomposition:
            rep.table(DECOMPOSITION_HEADER, decomposition_rows(plan))
    if plan.coverage:
        rep.heading("N-1 coverage after the worst single loss")
        rep.table(COVERAGE_HEADER, coverage_rows(plan))
    if plan.binding:
        rep.heading("Binding constraints and their shadow prices")
        rep.table(BINDING_HEADER, binding_rows(plan))
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


def print_diff(d: PlanDiff, old: str, new: str) -> None:
    """`skyfleet plan diff` in the terminal."""
    from rich.table import Table

    from skyfleet.console import make_console

    c = make_console()
    rel = d.delta_per_day / d.old_cost_per_day if d.old_cost_per_day else 0.0
    c.print(
        f"[bold]{old} → {new}[/]: ${d.old_cost_per_day:,.0f} → ${d.new_cost_per_day:,.0f}/day "
        f"({_signed(d.delta_per_day)}, {rel:+.1%})"
    )
    for k, (a, b) in d.settings.items():
        c.print(f"  {k}: {a} → {b}")
    if d.providers_added or d.providers_removed:
        c.print(
            f"  providers: +{', '.join(d.providers_added) or '–'} "
            f"−{', '.join(d.providers_removed) or '–'}"
        )
    for m, (a, b) in d.coverage.items():
        fa = "–" if a is None else f"{a:.0%}"
        fb = "–" if b is None else f"{b:.0%}"
        c.print(f"  {m}: kept after the worst loss {fa} → {fb}")
    for n in d.notes:
        c.print(f"  note: {n}")
    if not d.entries:
        c.print("no entry changed")
        return
    tab = Table(title="entries that changed (largest cost change first)")
    for h in ["entry", "change", "peak replicas", "cost/day"]:
        tab.add_column(h, overflow="fold")
    for e in d.entries:
        tab.add_row(
            e.key,
            e.change,
            f"{e.old_peak} → {e.new_peak}",
            f"${e.old_cost_per_day:,.0f} → ${e.new_cost_per_day:,.0f}",
        )
    c.print(tab)
