"""Reports of a simulation: terminal summary (rich), JSON document, self-contained HTML."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from skyfleet.sim.fleet import PRIORITIES
from skyfleet.sim.result import SimResult


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if abs(value) >= 1e9:
        return f"{value / 1e9:.2f}B{unit}"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.2f}M{unit}"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.1f}k{unit}"
    return f"{value:,.4g}{unit}" if abs(value) < 100 else f"{value:,.0f}{unit}"


def _floats(values: Any) -> list[float]:
    return [float(value) for value in values]


def document(
    result: SimResult, meta: dict[str, Any], impact: dict[str, Any] | None
) -> dict[str, Any]:
    """Everything as plain data: summary, series (per step) and the impact table."""
    attainment = result.attainment_series()
    return {
        "meta": meta,
        "summary": result.summary(),
        "series": {
            "step_s": result.step_s,
            "slo_attainment": [round(float(value), 6) for value in attainment],
            "arrival_rps": _floats(result.arrivals.sum(axis=1) / result.step_s),
            "capacity_rps": _floats(result.capacity_rps),
            "shed": {
                priority: _floats(result.shed[:, column])
                for column, priority in enumerate(PRIORITIES)
            },
            "failed": _floats(result.failed.sum(axis=1)),
            "queued": {
                priority: _floats(result.queue[:, column])
                for column, priority in enumerate(PRIORITIES)
            },
            "cost_usd": _floats(result.cost),
        },
        "business_impact": impact,
    }


_PRIORITY_COLUMNS = ("arrived", "served", "within_slo", "shed", "failed", "peak_queued")
_PRIORITY_HEADINGS = [
    "priority",
    "arrived",
    "served",
    "within SLO",
    "shed",
    "failed",
    "peak queued",
]


def _priority_cells(row: dict[str, Any]) -> list[str]:
    """One row of the by-priority table: the class, then its counts."""
    return [row["priority"], *(_fmt(row[column]) for column in _PRIORITY_COLUMNS)]


def print_summary(result: SimResult, meta: dict[str, Any], impact: dict[str, Any] | None) -> None:
    """The terminal report."""
    from rich.table import Table

    from skyfleet.console import make_console

    console = make_console()
    summary = result.summary()
    met = summary["slo_attainment"] >= summary["slo_target"]
    head = Table(
        title=f"skyfleet simulate — {meta.get('scenario', '')} ({summary['engine']} engine)",
        show_header=False,
    )
    rows = [
        ("fleet", str(meta.get("fleet", ""))),
        ("horizon", f"{summary['horizon_h']:.1f} h in {summary['step_s']:g} s steps"),
        ("requests", _fmt(summary["requests"])),
        (
            "SLO attainment",
            f"[{'green' if met else 'red'}]{summary['slo_attainment']:.4%}[/] "
            f"(target {summary['slo_target']:.2%})",
        ),
        (
            "served within SLO / degraded",
            f"{_fmt(summary['served_within_slo'])} / {_fmt(summary['degraded'])}",
        ),
        ("shed / failed", f"{_fmt(summary['shed'])} / {_fmt(summary['failed'])}"),
        ("goodput", f"{_fmt(summary['goodput_rps'])} req/s"),
        (
            "TTFT p50 / p99",
            f"{summary['ttft_p50_s'] * 1e3:,.0f} ms / {summary['ttft_p99_s'] * 1e3:,.0f} ms",
        ),
        ("minutes out of SLO", f"{summary['minutes_out_of_slo']:,.0f}"),
        ("cost", f"${summary['cost_usd']:,.0f}"),
        ("simulated in", f"{summary['wall_s']:.1f} s"),
    ]
    for label, value in rows:
        head.add_row(label, value)
    console.print(head)
    table = Table(title="by priority")
    for heading in _PRIORITY_HEADINGS:
        table.add_column(heading, justify="right")
    for row in summary["by_priority"]:
        table.add_row(*_priority_cells(row))
    console.print(table)
    if summary["outages"]:
        table = Table(title="outages and recovery (failure → SLO attainment back above target)")
        for heading in ("outage", "start", "duration", "recovery"):
            table.add_column(heading, justify="right")
        for outage in summary["outages"]:
            recovery = outage["recovery_min"]
            table.add_row(
                outage["label"],
                f"{outage['start_h']:.2f} h",
                f"{outage['duration_h']:.2f} h",
                "not within the run" if recovery is None else f"{recovery:,.0f} min",
            )
        console.print(table)
    if impact:
        outage = impact["outage"]
        size = "full" if outage["fraction"] >= 1 else f"{outage['fraction']:.0%}"
        table = Table(
            title=f"business impact per provider — {outage['duration_h']:.1f} h {size} outage "
            f"at {outage['start_h']:.1f} h; {impact['value_basis']}"
        )
        table.add_column("provider fails")
        for variant in ("with N-1 spare", "spare removed"):
            for heading in ("degraded", "lost", "min out of SLO", "$ lost"):
                table.add_column(f"{heading}\n({variant})", justify="right")
        for row in impact["providers"]:
            cells = [row["provider"]]
            for key in ("with_spare", "without_spare"):
                delta = row[key]
                cells += [
                    _fmt(delta["requests_degraded"]),
                    _fmt(delta["requests_lost"]),
                    f"{delta['minutes_out_of_slo']:,.0f}",
                    f"${delta['money_lost_usd']:,.0f}",
                ]
            table.add_row(*cells)
        console.print(table)
        console.print(
            f"fleet cost over the run: ${impact['cost_with_spare_usd']:,.0f} with the spare, "
            f"${impact['cost_without_spare_usd']:,.0f} without"
        )


def _shade(axes: Any, result: SimResult) -> None:
    for outage in result.outages:
        axes.axvspan(outage.start / 3600, outage.end / 3600, color="#d33", alpha=0.12)


def write_html(
    result: SimResult, meta: dict[str, Any], impact: dict[str, Any] | None, path: str | Path
) -> Path:
    """Self-contained HTML: key figures, charts (inline PNG) and tables."""
    from skyfleet.report import HtmlReport
    from skyfleet.report.charts import new_figure

    summary = result.summary()
    report = HtmlReport(
        f"Simulation: {meta.get('scenario', '')}",
        f"{meta.get('fleet', '')} · {summary['engine']} engine · {summary['horizon_h']:.1f} h",
    )
    if meta.get("description"):
        report.paragraph(str(meta["description"]))
    report.kpis(
        [
            ("SLO attainment", f"{summary['slo_attainment']:.3%}"),
            ("requests", _fmt(summary["requests"])),
            ("goodput", f"{_fmt(summary['goodput_rps'])} req/s"),
            ("shed + failed", _fmt(summary["shed"] + summary["failed"])),
            ("TTFT p99", f"{summary['ttft_p99_s'] * 1e3:,.0f} ms"),
            ("minutes out of SLO", f"{summary['minutes_out_of_slo']:,.0f}"),
            ("cost", f"${summary['cost_usd']:,.0f}"),
        ]
    )
    hours = result.times / 3600
    report.heading("SLO attainment over time")
    figure, axes = new_figure()
    axes.plot(hours, result.attainment_series() * 100, lw=1.2, label="attainment")
    axes.axhline(result.slo_target * 100, color="k", ls="--", lw=0.8, label="target")
    _shade(axes, result)
    axes.set_xlabel("hours")
    axes.set_ylabel("% of requests within SLO")
    axes.legend(loc="lower left")
    report.figure(figure, "SLO attainment over time")
    report.heading("Demand and capacity")
    figure, axes = new_figure()
    axes.plot(hours, result.arrivals.sum(axis=1) / result.step_s, label="arrivals (req/s)")
    axes.plot(hours, result.capacity_rps, label="routable capacity (req/s)")
    _shade(axes, result)
    axes.set_xlabel("hours")
    axes.legend(loc="upper left")
    report.figure(figure, "demand and capacity")
    report.heading("Served by provider")
    figure, axes = new_figure()
    providers = sorted(result.served_by_provider)
    if providers:
        served = [result.served_by_provider[provider] / result.step_s for provider in providers]
        axes.stackplot(hours, *served, labels=providers)
        axes.legend(loc="upper left")
    _shade(axes, result)
    axes.set_xlabel("hours")
    axes.set_ylabel("req/s")
    report.figure(figure, "served by provider")
    report.heading("Queued and shed by priority")
    figure, axes = new_figure()
    for column, priority in enumerate(PRIORITIES):
        axes.plot(hours, result.shed[:, column] / result.step_s, label=f"shed {priority} (req/s)")
    failed = result.failed.sum(axis=1) / result.step_s
    axes.plot(hours, failed, label="failed (req/s)", color="k", lw=0.8)
    _shade(axes, result)
    axes.set_xlabel("hours")
    axes.legend(loc="upper left")
    report.figure(figure, "shed by priority")
    report.table(_PRIORITY_HEADINGS, [_priority_cells(row) for row in summary["by_priority"]])
    report.heading("Cost")
    figure, axes = new_figure()
    axes.plot(hours, np.cumsum(result.cost))
    axes.set_xlabel("hours")
    axes.set_ylabel("cumulative $")
    report.figure(figure, "cumulative cost")
    if summary["outages"]:
        report.heading("Outages and recovery")
        report.table(
            ["outage", "start (h)", "duration (h)", "recovery (min)"],
            [
                [
                    outage["label"],
                    outage["start_h"],
                    outage["duration_h"],
                    "not within the run"
                    if outage["recovery_min"] is None
                    else outage["recovery_min"],
                ]
                for outage in summary["outages"]
            ],
        )
    if impact:
        outage = impact["outage"]
        report.heading("Business impact per provider")
        report.paragraph(
            f"Each provider in turn loses {outage['fraction']:.0%} of its capacity for "
            f"{outage['duration_h']:.1f} h from hour {outage['start_h']:.1f}; figures are beyond "
            f"the same fleet's run without the outage. Money: {impact['value_basis']}."
        )
        rows: list[list[Any]] = []
        for row in impact["providers"]:
            for key, label in (
                ("with_spare", "with N-1 spare"),
                ("without_spare", "spare removed"),
            ):
                delta = row[key]
                rows.append(
                    [
                        row["provider"],
                        label,
                        _fmt(delta["requests_degraded"]),
                        _fmt(delta["requests_lost"]),
                        round(delta["minutes_out_of_slo"]),
                        "—" if delta["recovery_min"] is None else round(delta["recovery_min"]),
                        f"${delta['money_lost_usd']:,.0f}",
                    ]
                )
        report.table(
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
        report.paragraph(
            f"Fleet cost over the run: ${impact['cost_with_spare_usd']:,.0f} with the spare, "
            f"${impact['cost_without_spare_usd']:,.0f} without."
        )
    return report.write(path)
