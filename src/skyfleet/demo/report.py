"""The demo's final report: key numbers (pure), a terminal summary and a self-contained HTML
file with charts."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyfleet.dashboard.model import PRIORITIES

if TYPE_CHECKING:
    from rich.console import Console

    from skyfleet.demo.run import DemoRun


@dataclass
class ClassRow:
    priority: str
    sent: int
    ok: int
    shed: int
    failed: int
    success_rate: float | None
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None


@dataclass
class ProviderRow:
    provider: str
    tiers: str
    endpoints: int
    requests: float
    share: float
    ttft_avg_ms: float | None
    failed_attempts: float
    price_per_hour: float


@dataclass
class Summary:
    """Everything the report states, JSON-serialisable."""

    duration_s: float
    load_s: float
    startup_s: float
    time_scale: float
    interrupted: bool
    requests: int
    ok: int
    success_rate: float | None
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    classes: list[ClassRow]
    outage_provider: str
    outage_endpoints: list[str]
    outage_down_s: float | None  # offsets from the start of the load
    outage_up_s: float | None
    failover_s: float | None  # injection → every endpoint of the provider out of rotation
    recovery_s: float | None  # provider back → every endpoint back in rotation
    serving_again_s: float | None  # provider back → first request it served
    outage_window: list[ClassRow]
    providers: list[ProviderRow]
    retries: float
    spillovers: float
    shed_by_priority: dict[str, float]
    usage_cost_usd: float | None
    fleet_cost_per_hour: float
    plan_cost_per_day: float
    baselines: list[dict[str, Any]]
    single_cloud: dict[str, Any] | None  # the cheapest one-provider fleet surviving a region loss
    single_cloud_no_resilience: dict[str, Any] | None  # one provider, surviving nothing
    savings_vs_single_cloud: float | None  # vs single_cloud (like for like)
    cost_story: list[str]  # the planner's own sentences (skyfleet plan says the same)
    decomposition: list[dict[str, Any]]  # where the plan's cost comes from, step by step
    errors: dict[str, int]
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def critical_success(self) -> float | None:
        return next((row.success_rate for row in self.classes if row.priority == "critical"), None)

    def to_json(self) -> str:
        data = asdict(self)
        data["critical_success_rate"] = self.critical_success
        return json.dumps(data, indent=2, default=float)


def _row(priority: str, stats: Any) -> ClassRow:
    return ClassRow(
        priority,
        stats.sent,
        stats.ok,
        stats.shed,
        stats.failed,
        stats.success_rate,
        stats.ttft_ms(50),
        stats.ttft_ms(99),
    )


def _baseline(baselines: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """A feasible comparison of the plan by name (the planner's like-for-like baselines)."""
    return next(
        (
            baseline
            for baseline in baselines
            if baseline.get("name") == name and baseline.get("cost_per_day") is not None
        ),
        None,
    )


def summarize(run: DemoRun) -> Summary:
    """The report's numbers from what the clients saw and what the gateway reported."""
    log, monitor, outage, scenario = run.log, run.monitor, run.outage, run.scenario
    load_start = run.load_wall_start
    down_s = None if outage.down_at is None else outage.down_at - load_start
    up_s = None if outage.up_at is None else outage.up_at - load_start
    mine = set(outage.endpoints)
    failover = recovery = serving = None
    if outage.down_at is not None:
        gone: dict[str, float] = {}
        for event in monitor.events:
            if event.endpoint in mine and event.after != "up" and event.seen_at >= outage.down_at:
                gone.setdefault(event.endpoint, event.seen_at)
        if mine and set(gone) == mine:
            failover = max(gone.values()) - outage.down_at
    if outage.up_at is not None:
        back: dict[str, float] = {}
        for event in monitor.events:
            if event.endpoint in mine and event.after == "up" and event.seen_at >= outage.up_at:
                back.setdefault(event.endpoint, event.seen_at)
        if mine and set(back) == mine:
            recovery = max(back.values()) - outage.up_at
        prev = None
        for sample in monitor.samples:
            if sample.scraped_at < outage.up_at:
                prev = sample
                continue
            if prev is not None:
                served = sum(
                    sample.requests.get(name, 0.0) - prev.requests.get(name, 0.0) for name in mine
                )
                if served > 0:
                    serving = sample.scraped_at - outage.up_at
                    break
            prev = sample
    window = (
        log.window(down_s, up_s if up_s is not None else math.inf) if down_s is not None else {}
    )
    providers: list[ProviderRow] = []
    samples = list(monitor.samples)
    if samples:
        first, last = samples[0], samples[-1]
        answered = {
            name: value - first.requests.get(name, 0.0) for name, value in last.requests.items()
        }
        failed = {name: value - first.errors.get(name, 0.0) for name, value in last.errors.items()}
        total = sum(answered.values()) or 1.0
        rows: dict[str, ProviderRow] = {}
        for endpoint in last.endpoints:
            row = rows.setdefault(
                endpoint.provider, ProviderRow(endpoint.provider, "", 0, 0.0, 0.0, None, 0.0, 0.0)
            )
            row.endpoints += 1
            row.requests += answered.get(endpoint.name, 0.0)
            row.failed_attempts += failed.get(endpoint.name, 0.0)
            row.price_per_hour += endpoint.price_per_hour
            if endpoint.tier not in row.tiers.split(", "):
                row.tiers = ", ".join(tier for tier in (row.tiers, endpoint.tier) if tier)
        for provider, row in rows.items():
            row.share = row.requests / total
            count = last.ttft_count.get(provider, 0.0)
            row.ttft_avg_ms = 1000.0 * last.ttft_sum.get(provider, 0.0) / count if count else None
        providers = sorted(rows.values(), key=lambda row: -row.requests)
        totals = monitor.state(60.0)["totals"]
    else:
        totals = {"retries": 0.0, "spillovers": 0.0, "shed": {}, "usage_cost": None}
        totals["cost_per_hour"] = 0.0
    plan = run.fleet.plan
    from skyfleet.planner.report import cost_story as plan_cost_story

    baselines = [comparison.model_dump() for comparison in plan.comparisons]
    single = _baseline(baselines, "single cloud, region N-1")
    per_day = plan.totals.cost_per_day
    savings = None
    if single is not None and float(single["cost_per_day"]) > 0:
        savings = 1.0 - per_day / float(single["cost_per_day"])
    return Summary(
        duration_s=run.opts.duration_s,
        load_s=scenario.load_s,
        startup_s=run.startup_s,
        time_scale=run.opts.time_scale,
        interrupted=run.interrupted,
        requests=log.sent,
        ok=log.ok,
        success_rate=log.ok / log.sent if log.sent else None,
        ttft_p50_ms=log.ttft_ms(50),
        ttft_p99_ms=log.ttft_ms(99),
        classes=[_row(priority, log.classes[priority]) for priority in PRIORITIES],
        outage_provider=outage.provider,
        outage_endpoints=list(outage.endpoints),
        outage_down_s=down_s,
        outage_up_s=up_s,
        failover_s=failover,
        recovery_s=recovery,
        serving_again_s=serving,
        outage_window=[_row(priority, stats) for priority, stats in window.items()],
        providers=providers,
        retries=float(totals["retries"]),
        spillovers=float(totals["spillovers"]),
        shed_by_priority=dict(totals["shed"]),
        usage_cost_usd=totals.get("usage_cost"),
        fleet_cost_per_hour=float(totals["cost_per_hour"]),
        plan_cost_per_day=per_day,
        baselines=baselines,
        single_cloud=single,
        single_cloud_no_resilience=_baseline(baselines, "single cloud, no resilience"),
        savings_vs_single_cloud=savings,
        cost_story=plan_cost_story(plan),
        decomposition=[step.model_dump() for step in plan.decomposition],
        errors=log.errors(),
        events=[
            {
                "t_s": round(event.seen_at - load_start, 2),
                "endpoint": event.endpoint,
                "provider": event.provider,
            }
            | {"from": event.before, "to": event.after}
            for event in monitor.events
        ],
    )


# -- rendering --------------------------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def _millis(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} ms"


def _seconds(value: float | None) -> str:
    return "not observed" if value is None else f"{value:.1f} s"


def headline(summary: Summary) -> list[tuple[str, str]]:
    """The key numbers as (label, value) pairs, shared by the terminal and the HTML."""
    out = [
        ("requests", f"{summary.requests:,}"),
        ("success (all)", _pct(summary.success_rate)),
        ("success (critical)", _pct(summary.critical_success)),
        ("TTFT p50", _millis(summary.ttft_p50_ms)),
        ("TTFT p99", _millis(summary.ttft_p99_ms)),
        (f"failover ({summary.outage_provider} out of rotation)", _seconds(summary.failover_s)),
        (f"recovery ({summary.outage_provider} back in rotation)", _seconds(summary.recovery_s)),
        ("plan cost / day", f"${summary.plan_cost_per_day:,.0f}"),
    ]
    if summary.single_cloud is not None:
        what = str(summary.single_cloud.get("description", "")).split(":")[0].replace("only ", "")
        out.append(
            (
                f"single cloud surviving a region loss ({what}) / day",
                f"${float(summary.single_cloud['cost_per_day']):,.0f}",
            )
        )
    if summary.savings_vs_single_cloud is not None:
        savings = summary.savings_vs_single_cloud
        label = "plan vs that (like for like)"
        out.append((label, f"{-100 * savings:+.0f}%"))
    if summary.single_cloud_no_resilience is not None:
        baseline = summary.single_cloud_no_resilience
        what = str(baseline.get("description", "")).split(":")[0].replace("only ", "")
        out.append(
            (
                f"single cloud surviving nothing ({what}) / day",
                f"${float(baseline['cost_per_day']):,.0f}",
            )
        )
    return out


def cost_story(summary: Summary) -> str:
    """The bill against like-for-like single-cloud fleets, and where it comes from — the same
    sentences `skyfleet plan` prints for this plan."""
    if not summary.cost_story:
        return f"The plan costs ${summary.plan_cost_per_day:,.0f}/day."
    return " ".join(summary.cost_story)


def class_rows(rows: list[ClassRow]) -> list[list[str]]:
    return [
        [
            row.priority,
            str(row.sent),
            str(row.ok),
            str(row.shed),
            str(row.failed),
            _pct(row.success_rate),
            _millis(row.ttft_p50_ms),
            _millis(row.ttft_p99_ms),
        ]
        for row in rows
    ]


CLASS_HEADER = ["priority", "sent", "ok", "shed (429/503)", "failed", "success", "TTFT p50", "p99"]
PROVIDER_HEADER = ["provider", "tier", "endpoints", "requests", "share", "TTFT avg", "failed tries"]


def provider_rows(summary: Summary) -> list[list[str]]:
    return [
        [
            row.provider,
            row.tiers,
            str(row.endpoints),
            f"{row.requests:,.0f}",
            f"{100 * row.share:.0f}%",
            _millis(row.ttft_avg_ms),
            f"{row.failed_attempts:,.0f}",
        ]
        for row in summary.providers
    ]


def story(summary: Summary) -> list[str]:
    """The outage in sentences."""
    if summary.outage_down_s is None:
        return ["The run ended before the outage was injected."]
    lines = [
        f"At {summary.outage_down_s:.1f}s the provider {summary.outage_provider} "
        f"({', '.join(summary.outage_endpoints)}) was taken down by fault injection "
        "(connections refused)."
    ]
    if summary.failover_s is not None:
        lines.append(
            f"The gateway took it out of rotation after {summary.failover_s:.1f}s and routed its "
            "traffic to the other providers; requests caught mid-failover were retried before "
            "any byte reached the client."
        )
    else:
        lines.append("The gateway's health state for it did not change while it was down.")
    if summary.outage_up_s is not None:
        back = f"At {summary.outage_up_s:.1f}s it came back; "
        if summary.recovery_s is not None:
            back += f"active probes returned it to rotation after {summary.recovery_s:.1f}s"
            if summary.serving_again_s is not None:
                back += f" and it served traffic again after {summary.serving_again_s:.1f}s."
            else:
                back += "."
        else:
            back += "it was not seen back in rotation before the end of the run."
        lines.append(back)
    crit = next((row for row in summary.outage_window if row.priority == "critical"), None)
    if crit is not None and crit.sent:
        lines.append(
            f"During the outage, critical traffic succeeded {_pct(crit.success_rate)} "
            f"({crit.ok}/{crit.sent})."
        )
    return lines


def print_report(summary: Summary, console: Console, html: Path | None) -> None:
    from rich.table import Table

    console.rule("[bold]skyfleet demo · final report")
    key_numbers = Table(show_header=False, box=None)
    key_numbers.add_column(style="dim")
    key_numbers.add_column(style="bold")
    for label, value in headline(summary):
        key_numbers.add_row(label, value)
    console.print(key_numbers)
    for line in story(summary):
        console.print(f"• {line}")
    table = Table(title="Success by priority", title_justify="left")
    for header in CLASS_HEADER:
        table.add_column(header, justify="left" if header == "priority" else "right")
    for row in class_rows(summary.classes):
        table.add_row(*row)
    console.print(table)
    provider_table = Table(title="Traffic by provider (gateway)", title_justify="left")
    for header in PROVIDER_HEADER:
        provider_table.add_column(
            header, justify="left" if header in ("provider", "tier") else "right"
        )
    for row in provider_rows(summary):
        provider_table.add_row(*row)
    console.print(provider_table)
    shed = sum(summary.shed_by_priority.values())
    console.print(
        f"retries {summary.retries:.0f} · spillovers {summary.spillovers:.0f} · shed {shed:.0f} · "
        f"fleet ${summary.fleet_cost_per_hour:.2f}/h"
        + (f" · usage cost ${summary.usage_cost_usd:.4f}" if summary.usage_cost_usd else "")
    )
    console.print(cost_story(summary))
    if html is not None:
        console.print(f"HTML report: [bold]{html}[/]")


def _shade(axes: Any, summary: Summary, end: float) -> None:
    if summary.outage_down_s is not None:
        axes.axvspan(
            summary.outage_down_s,
            summary.outage_up_s if summary.outage_up_s is not None else end,
            color="#f31260",
            alpha=0.12,
            label=f"{summary.outage_provider} down",
        )


def write_html(summary: Summary, run: DemoRun, path: Path) -> Path:
    """The report as one self-contained HTML file (inline PNG charts)."""
    from skyfleet.report import HtmlReport
    from skyfleet.report.charts import new_figure

    rep = HtmlReport(
        "skyfleet demo report",
        f"{len(run.fleet.endpoints)} replicas over {', '.join(run.fleet.providers())} · "
        f"{summary.load_s:.0f}s of load at time scale {summary.time_scale:g} · surge ×"
        f"{run.opts.surge_factor:g} · {summary.outage_provider} taken down and brought back",
    )
    rep.kpis(headline(summary))
    rep.heading("The outage")
    for line in story(summary):
        rep.paragraph(line)
    load_start = run.load_wall_start
    series = run.monitor.series(run.monitor.keep_s, smooth_s=3.0)
    times = [wall - load_start for wall in series["t"]]
    end = summary.load_s
    if times:
        fig, axes = new_figure(9.0, 3.2)
        for provider, values in series["rps"].items():
            axes.plot(times, values, label=provider, lw=1.6)
        _shade(axes, summary, end)
        axes.set_xlabel("seconds since the load started")
        axes.set_ylabel("requests/s served")
        axes.set_title("Traffic per provider (gateway)")
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        rep.figure(fig, "requests per second per provider")
    per_second = run.log.per_second(summary.load_s + 2.0)
    fig, axes = new_figure(9.0, 3.2)
    seconds = per_second["t"]
    axes.plot(
        seconds,
        [run.scenario.rate(second) for second in seconds],
        color="#444",
        ls="--",
        lw=1,
        label="offered",
    )
    colors = {"critical": "#f31260", "standard": "#4f8cff", "sheddable": "#8b93a7"}
    for priority in PRIORITIES:
        axes.plot(
            seconds,
            per_second[f"ok:{priority}"],
            color=colors[priority],
            lw=1.4,
            label=f"ok {priority}",
        )
    bad = [
        sum(per_second[f"bad:{priority}"][i] for priority in PRIORITIES)
        for i in range(len(seconds))
    ]
    axes.bar(seconds, bad, width=0.9, color="#f5a524", alpha=0.6, label="shed or failed")
    _shade(axes, summary, end)
    axes.set_xlabel("seconds since the load started (by send time)")
    axes.set_ylabel("requests/s")
    axes.set_title("What the clients got")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    rep.figure(fig, "client outcomes per second")
    fig, axes = new_figure(9.0, 3.0)
    axes.plot(seconds, per_second["ttft_p50"], label="p50", lw=1.4)
    axes.plot(seconds, per_second["ttft_p99"], label="p99", lw=1.4)
    _shade(axes, summary, end)
    axes.set_xlabel("seconds since the load started")
    axes.set_ylabel("TTFT (ms)")
    axes.set_title("Time to first token seen by the clients")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    rep.figure(fig, "TTFT over time")
    rep.heading("Success by priority")
    rep.table(CLASS_HEADER, class_rows(summary.classes))
    if summary.outage_window:
        rep.heading("During the outage")
        rep.table(CLASS_HEADER, class_rows(summary.outage_window))
    rep.heading("Traffic by provider")
    rep.table(PROVIDER_HEADER, provider_rows(summary))
    shed = sum(summary.shed_by_priority.values())
    rep.paragraph(
        f"Gateway counters: {summary.retries:.0f} retries, {summary.spillovers:.0f} spillovers, "
        f"{shed:.0f} shed. Fleet price ${summary.fleet_cost_per_hour:.2f}/hour."
    )
    rep.heading("Cost: the plan against like-for-like fleets, and where it comes from")
    for line in summary.cost_story:
        rep.paragraph(line)
    rows: list[list[str]] = [["this plan", f"${summary.plan_cost_per_day:,.0f}", "see above", ""]]
    for baseline in summary.baselines:
        cost_per_day = baseline.get("cost_per_day")
        rows.append(
            [
                str(baseline["name"]),
                "infeasible" if cost_per_day is None else f"${cost_per_day:,.0f}",
                str(baseline.get("survives", "")),
                baseline["description"],
            ]
        )
    rep.table(["plan", "cost / day", "survives the loss of", "what it is"], rows)
    if summary.decomposition:
        rep.table(
            ["step (constraints added in this order)", "cost / day", "change"],
            [
                [
                    str(step["name"]),
                    "infeasible"
                    if step["cost_per_day"] is None
                    else f"${step['cost_per_day']:,.0f}",
                    "" if step["delta_per_day"] is None else f"{step['delta_per_day']:+,.0f}",
                ]
                for step in summary.decomposition
            ],
        )
    rep.heading("The plan")
    plan = run.fleet.plan
    rep.table(
        ["provider", "region", "accelerator", "tier", "peak replicas", "$/replica-hour", "why"],
        [
            [
                entry.provider,
                entry.region,
                f"{entry.accelerator}x{entry.accelerators_per_replica}",
                entry.tier,
                str(max(entry.replicas, default=0)),
                f"{entry.price_per_replica_hour:.2f}",
                entry.reason,
            ]
            for entry in plan.entries
            if any(entry.replicas)
        ],
    )
    if summary.events:
        rep.heading("Health events seen by the gateway")
        rep.table(
            ["t (s)", "provider", "endpoint", "from", "to"],
            [
                [
                    f"{event['t_s']:.1f}",
                    event["provider"],
                    event["endpoint"],
                    event["from"],
                    event["to"],
                ]
                for event in summary.events
            ],
        )
    if summary.errors:
        rep.heading("Client errors")
        rep.table(["kind", "count"], sorted(summary.errors.items(), key=lambda item: -item[1]))
    rep.paragraph(
        "Latencies are measured on this machine with the emulators in slow motion "
        f"(time scale {summary.time_scale:g}), through the gateway, by the clients."
    )
    return rep.write(path)
