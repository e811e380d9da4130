"""Reports of a simulation: terminal summary (rich), JSON document, self-contained HTML."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from skyfleet.sim.fleet import PRIORITIES
from skyfleet.sim.result import SimResult


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if abs(x) >= 1e9:
        return f"{x / 1e9:.2f}B{unit}"
    if abs(x) >= 1e6:
        return f"{x / 1e6:.2f}M{unit}"
    if abs(x) >= 1e4:
        return f"{x / 1e3:.1f}k{unit}"
    return f"{x:,.4g}{unit}" if abs(x) < 100 else f"{x:,.0f}{unit}"


def document(res: SimResult, meta: dict[str, Any], impact: dict[str, Any] | None) -> dict[str, Any]:
    """Everything as plain data: summary, series (per step) and the impact table."""
    att = res.attainment_series()
    return {
        "meta": meta,
        "summary": res.summary(),
        "series": {
            "step_s": res.step_s,
            "slo_attainment": [round(float(x), 6) for x in att],
            "arrival_rps": [float(x) for x in res.arrivals.sum(axis=1) / res.step_s],
            "capacity_rps": [float(x) for x in res.capacity_rps],
            "shed": {p: [float(x) for x in res.shed[:, k]] for k, p in enumerate(PRIORITIES)},
            "failed": [float(x) for x in res.failed.sum(axis=1)],
            "queued": {p: [float(x) for x in res.queue[:, k]] for k, p in enumerate(PRIORITIES)},
            "cost_usd": [float(x) for x in res.cost],
        },
        "business_impact": impact,
    }


def print_summary(res: SimResult, meta: dict[str, Any], impact: dict[str, Any] | None) -> None:
    """The terminal report."""
    from rich.table import Table

    from skyfleet.console import make_console

    c = make_console()
    s = res.summary()
    ok = s["slo_attainment"] >= s["slo_target"]
    head = Table(
        title=f"skyfleet simulate — {meta.get('scenario', '')} ({s['engine']} engine)",
        show_header=False,
    )
    rows = [
        ("fleet", str(meta.get("fleet", ""))),
        ("horizon", f"{s['horizon_h']:.1f} h in {s['step_s']:g} s steps"),
        ("requests", _fmt(s["requests"])),
        (
            "SLO attainment",
            f"[{'green' if ok else 'red'}]{s['slo_attainment']:.4%}[/] "
            f"(target {s['slo_target']:.2%})",
        ),
        ("served within SLO / degraded", f"{_fmt(s['served_within_slo'])} / {_fmt(s['degraded'])}"),
        ("shed / failed", f"{_fmt(s['shed'])} / {_fmt(s['failed'])}"),
        ("goodput", f"{_fmt(s['goodput_rps'])} req/s"),
        ("TTFT p50 / p99", f"{s['ttft_p50_s'] * 1e3:,.0f} ms / {s['ttft_p99_s'] * 1e3:,.0f} ms"),
        ("minutes out of SLO", f"{s['minutes_out_of_slo']:,.0f}"),
        ("cost", f"${s['cost_usd']:,.0f}"),
        ("simulated in", f"{s['wall_s']:.1f} s"),
    ]
    for k, v in rows:
        head.add_row(k, v)
    c.print(head)
    t = Table(title="by priority")
    for h in ("priority", "arrived", "served", "within SLO", "shed", "failed", "peak queued"):
        t.add_column(h, justify="right")
    for r in s["by_priority"]:
        t.add_row(
            r["priority"],
            *(
                _fmt(r[k])
                for k in ("arrived", "served", "within_slo", "shed", "failed", "peak_queued")
            ),
        )
    c.print(t)
    if s["outages"]:
        t = Table(title="outages and recovery (failure → SLO attainment back above target)")
        for h in ("outage", "start", "duration", "recovery"):
            t.add_column(h, justify="right")
        for o in s["outages"]:
            rec = o["recovery_min"]
            t.add_row(
                o["label"],
                f"{o['start_h']:.2f} h",
                f"{o['duration_h']:.2f} h",
                "not within the run" if rec is None else f"{rec:,.0f} min",
            )
        c.print(t)
    if impact:
        o = impact["outage"]
        size = "full" if o["fraction"] >= 1 else f"{o['fraction']:.0%}"
        t = Table(
            title=f"business impact per provider — {o['duration_h']:.1f} h {size} outage "
            f"at {o['start_h']:.1f} h; {impact['value_basis']}"
        )
        t.add_column("provider fails")
        for v in ("with N-1 spare", "spare removed"):
            for h in ("degraded", "lost", "min out of SLO", "$ lost"):
                t.add_column(f"{h}\n({v})", justify="right")
        for r in impact["providers"]:
            cells = [r["provider"]]
            for k in ("with_spare", "without_spare"):
                d = r[k]
                cells += [
                    _fmt(d["requests_degraded"]),
                    _fmt(d["requests_lost"]),
                    f"{d['minutes_out_of_slo']:,.0f}",
                    f"${d['money_lost_usd']:,.0f}",
                ]
            t.add_row(*cells)
        c.print(t)
        c.print(
            f"fleet cost over the run: ${impact['cost_with_spare_usd']:,.0f} with the spare, "
            f"${impact['cost_without_spare_usd']:,.0f} without"
        )


def _shade(ax: Any, res: SimResult) -> None:
    for o in res.outages:
        ax.axvspan(o.start / 3600, o.end / 3600, color="#d33", alpha=0.12)


def write_html(
    res: SimResult, meta: dict[str, Any], impact: dict[str, Any] | None, path: str | Path
) -> Path:
    """Self-contained HTML: key figures, charts (inline PNG) and tables."""
    from skyfleet.report import HtmlReport
    from skyfleet.report.charts import new_figure

    s = res.summary()
    rep = HtmlReport(
        f"Simulation: {meta.get('scenario', '')}",
        f"{meta.get('fleet', '')} · {s['engine']} engine · {s['horizon_h']:.1f} h",
    )
    if meta.get("description"):
        rep.paragraph(str(meta["description"]))
    rep.kpis(
        [
            ("SLO attainment", f"{s['slo_attainment']:.3%}"),
            ("requests", _fmt(s["requests"])),
            ("goodput", f"{_fmt(s['goodput_rps'])} req/s"),
            ("shed + failed", _fmt(s["shed"] + s["failed"])),
            ("TTFT p99", f"{s['ttft_p99_s'] * 1e3:,.0f} ms"),
            ("minutes out of SLO", f"{s['minutes_out_of_slo']:,.0f}"),
            ("cost", f"${s['cost_usd']:,.0f}"),
        ]
    )
    h = res.times / 3600
    rep.heading("SLO attainment over time")
    fig, ax = new_figure()
    ax.plot(h, res.attainment_series() * 100, lw=1.2, label="attainment")
    ax.axhline(res.slo_target * 100, color="k", ls="--", lw=0.8, label="target")
    _shade(ax, res)
    ax.set_xlabel("hours")
    ax.set_ylabel("% of requests within SLO")
    ax.legend(loc="lower left")
    rep.figure(fig, "SLO attainment over time")
    rep.heading("Demand and capacity")
    fig, ax = new_figure()
    ax.plot(h, res.arrivals.sum(axis=1) / res.step_s, label="arrivals (req/s)")
    ax.plot(h, res.capacity_rps, label="routable capacity (req/s)")
    _shade(ax, res)
    ax.set_xlabel("hours")
    ax.legend(loc="upper left")
    rep.figure(fig, "demand and capacity")
    rep.heading("Served by provider")
    fig, ax = new_figure()
    provs = sorted(res.served_by_provider)
    if provs:
        ax.stackplot(h, *[res.served_by_provider[p] / res.step_s for p in provs], labels=provs)
        ax.legend(loc="upper left")
    _shade(ax, res)
    ax.set_xlabel("hours")
    ax.set_ylabel("req/s")
    rep.figure(fig, "served by provider")
    rep.heading("Queued and shed by priority")
    fig, ax = new_figure()
    for k, p in enumerate(PRIORITIES):
        ax.plot(h, res.shed[:, k] / res.step_s, label=f"shed {p} (req/s)")
    ax.plot(h, res.failed.sum(axis=1) / res.step_s, label="failed (req/s)", color="k", lw=0.8)
    _shade(ax, res)
    ax.set_xlabel("hours")
    ax.legend(loc="upper left")
    rep.figure(fig, "shed by priority")
    rep.table(
        ["priority", "arrived", "served", "within SLO", "shed", "failed", "peak queued"],
        [
            [
                r["priority"],
                *(
                    _fmt(r[k])
                    for k in ("arrived", "served", "within_slo", "shed", "failed", "peak_queued")
                ),
            ]
            for r in s["by_priority"]
        ],
    )
    rep.heading("Cost")
    fig, ax = new_figure()
    ax.plot(h, np.cumsum(res.cost))
    ax.set_xlabel("hours")
    ax.set_ylabel("cumulative $")
    rep.figure(fig, "cumulative cost")
    if s["outages"]:
        rep.heading("Outages and recovery")
        rep.table(
            ["outage", "start (h)", "duration (h)", "recovery (min)"],
            [
                [
                    o["label"],
                    o["start_h"],
                    o["duration_h"],
                    "not within the run" if o["recovery_min"] is None else o["recovery_min"],
                ]
                for o in s["outages"]
            ],
        )
    if impact:
        o = impact["outage"]
        rep.heading("Business impact per provider")
        rep.paragraph(
            f"Each provider in turn loses {o['fraction']:.0%} of its capacity for "
            f"{o['duration_h']:.1f} h from hour {o['start_h']:.1f}; figures are beyond the same "
            f"fleet's run without the outage. Money: {impact['value_basis']}."
        )
        rows: list[list[Any]] = []
        for r in impact["providers"]:
            for key, lab in (("with_spare", "with N-1 spare"), ("without_spare", "spare removed")):
                d = r[key]
                rows.append(
                    [
                        r["provider"],
                        lab,
                        _fmt(d["requests_degraded"]),
                        _fmt(d["requests_lost"]),
                        round(d["minutes_out_of_slo"]),
                        "—" if d["recovery_min"] is None else round(d["recovery_min"]),
                        f"${d['money_lost_usd']:,.0f}",
                    ]
                )
        rep.table(
            [
                "provider fails",
                "fleet",
                "degraded",
                "lost",
                "min out of SLO",
                "recovery (min)",
                "money lost",
            ],
            rows,
        )
        rep.paragraph(
            f"Fleet cost over the run: ${impact['cost_with_spare_usd']:,.0f} with the spare, "
            f"${impact['cost_without_spare_usd']:,.0f} without."
        )
    return rep.write(path)
