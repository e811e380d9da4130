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
        return next((c.success_rate for c in self.classes if c.priority == "critical"), None)

    def to_json(self) -> str:
        d = asdict(self)
        d["critical_success_rate"] = self.critical_success
        return json.dumps(d, indent=2, default=float)


def _row(p: str, c: Any) -> ClassRow:
    return ClassRow(p, c.sent, c.ok, c.shed, c.failed, c.success_rate, c.ttft_ms(50), c.ttft_ms(99))


def _baseline(baselines: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """A feasible comparison of the plan by name (the planner's like-for-like baselines)."""
    return next(
        (b for b in baselines if b.get("name") == name and b.get("cost_per_day") is not None),
        None,
    )


def summarize(run: DemoRun) -> Summary:
    """The report's numbers from what the clients saw and what the gateway reported."""
    log, mon, out, sc = run.log, run.monitor, run.outage, run.scenario
    w0 = run.load_wall_start
    down = None if out.down_at is None else out.down_at - w0
    up = None if out.up_at is None else out.up_at - w0
    mine = set(out.endpoints)
    failover = recovery = serving = None
    if out.down_at is not None:
        gone: dict[str, float] = {}
        for ev in mon.events:
            if ev.endpoint in mine and ev.after != "up" and ev.t >= out.down_at:
                gone.setdefault(ev.endpoint, ev.t)
        if mine and set(gone) == mine:
            failover = max(gone.values()) - out.down_at
    if out.up_at is not None:
        back: dict[str, float] = {}
        for ev in mon.events:
            if ev.endpoint in mine and ev.after == "up" and ev.t >= out.up_at:
                back.setdefault(ev.endpoint, ev.t)
        if mine and set(back) == mine:
            recovery = max(back.values()) - out.up_at
        prev = None
        for s in mon.samples:
            if s.t < out.up_at:
                prev = s
                continue
            if prev is not None:
                served = sum(s.requests.get(n, 0.0) - prev.requests.get(n, 0.0) for n in mine)
                if served > 0:
                    serving = s.t - out.up_at
                    break
            prev = s
    window = log.window(down, up if up is not None else math.inf) if down is not None else {}
    providers: list[ProviderRow] = []
    samples = list(mon.samples)
    if samples:
        first, last = samples[0], samples[-1]
        req = {n: v - first.requests.get(n, 0.0) for n, v in last.requests.items()}
        err = {n: v - first.errors.get(n, 0.0) for n, v in last.errors.items()}
        total = sum(req.values()) or 1.0
        rows: dict[str, ProviderRow] = {}
        for e in last.endpoints:
            r = rows.setdefault(
                e.provider, ProviderRow(e.provider, "", 0, 0.0, 0.0, None, 0.0, 0.0)
            )
            r.endpoints += 1
            r.requests += req.get(e.name, 0.0)
            r.failed_attempts += err.get(e.name, 0.0)
            r.price_per_hour += e.price_per_hour
            if e.tier not in r.tiers.split(", "):
                r.tiers = ", ".join(x for x in (r.tiers, e.tier) if x)
        for p, r in rows.items():
            r.share = r.requests / total
            c = last.ttft_count.get(p, 0.0)
            r.ttft_avg_ms = 1000.0 * last.ttft_sum.get(p, 0.0) / c if c else None
        providers = sorted(rows.values(), key=lambda r: -r.requests)
        tot = mon.state(60.0)["totals"]
    else:
        tot = {"retries": 0.0, "spillovers": 0.0, "shed": {}, "usage_cost": None}
        tot["cost_per_hour"] = 0.0
    plan = run.fleet.plan
    from skyfleet.planner.report import cost_story as plan_cost_story

    baselines = [c.model_dump() for c in plan.comparisons]
    single = _baseline(baselines, "single cloud, region N-1")
    per_day = plan.totals.cost_per_day
    savings = None
    if single is not None and float(single["cost_per_day"]) > 0:
        savings = 1.0 - per_day / float(single["cost_per_day"])
    return Summary(
        duration_s=run.opts.duration_s,
        load_s=sc.load_s,
        startup_s=run.startup_s,
        time_scale=run.opts.time_scale,
        interrupted=run.interrupted,
        requests=log.sent,
        ok=log.ok,
        success_rate=log.ok / log.sent if log.sent else None,
        ttft_p50_ms=log.ttft_ms(50),
        ttft_p99_ms=log.ttft_ms(99),
        classes=[_row(p, log.classes[p]) for p in PRIORITIES],
        outage_provider=out.provider,
        outage_endpoints=list(out.endpoints),
        outage_down_s=down,
        outage_up_s=up,
        failover_s=failover,
        recovery_s=recovery,
        serving_again_s=serving,
        outage_window=[_row(p, c) for p, c in window.items()],
        providers=providers,
        retries=float(tot["retries"]),
        spillovers=float(tot["spillovers"]),
        shed_by_priority=dict(tot["shed"]),
        usage_cost_usd=tot.get("usage_cost"),
        fleet_cost_per_hour=float(tot["cost_per_hour"]),
        plan_cost_per_day=per_day,
        baselines=baselines,
        single_cloud=single,
        single_cloud_no_resilience=_baseline(baselines, "single cloud, no resilience"),
        savings_vs_single_cloud=savings,
        cost_story=plan_cost_story(plan),
        decomposition=[d.model_dump() for d in plan.decomposition],
        errors=log.errors(),
        events=[
            {"t_s": round(ev.t - w0, 2), "endpoint": ev.endpoint, "provider": ev.provider}
            | {"from": ev.before, "to": ev.after}
            for ev in mon.events
        ],
    )


# -- rendering --------------------------------------------------------------------------------
def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}%"


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:,.0f} ms"


def _s(v: float | None) -> str:
    return "not observed" if v is None else f"{v:.1f} s"


def headline(s: Summary) -> list[tuple[str, str]]:
    """The key numbers as (label, value) pairs, shared by the terminal and the HTML."""
    out = [
        ("requests", f"{s.requests:,}"),
        ("success (all)", _pct(s.success_rate)),
        ("success (critical)", _pct(s.critical_success)),
        ("TTFT p50", _ms(s.ttft_p50_ms)),
        ("TTFT p99", _ms(s.ttft_p99_ms)),
        (f"failover ({s.outage_provider} out of rotation)", _s(s.failover_s)),
        (f"recovery ({s.outage_provider} back in rotation)", _s(s.recovery_s)),
        ("plan cost / day", f"${s.plan_cost_per_day:,.0f}"),
    ]
    if s.single_cloud is not None:
        what = str(s.single_cloud.get("description", "")).split(":")[0].replace("only ", "")
        out.append(
            (
                f"single cloud surviving a region loss ({what}) / day",
                f"${float(s.single_cloud['cost_per_day']):,.0f}",
            )
        )
    if s.savings_vs_single_cloud is not None:
        v = s.savings_vs_single_cloud
        label = "plan vs that (like for like)"
        out.append((label, f"{-100 * v:+.0f}%"))
    if s.single_cloud_no_resilience is not None:
        b = s.single_cloud_no_resilience
        what = str(b.get("description", "")).split(":")[0].replace("only ", "")
        out.append(
            (f"single cloud surviving nothing ({what}) / day", f"${float(b['cost_per_day']):,.0f}")
        )
    return out


def cost_story(s: Summary) -> str:
    """The bill against like-for-like single-cloud fleets, and where it comes from — the same
    sentences `skyfleet plan` prints for this plan."""
    if not s.cost_story:
        return f"The plan costs ${s.plan_cost_per_day:,.0f}/day."
    return " ".join(s.cost_story)


def class_rows(rows: list[ClassRow]) -> list[list[str]]:
    return [
        [
            r.priority,
            str(r.sent),
            str(r.ok),
            str(r.shed),
            str(r.failed),
            _pct(r.success_rate),
            _ms(r.ttft_p50_ms),
            _ms(r.ttft_p99_ms),
        ]
        for r in rows
    ]


CLASS_HEADER = ["priority", "sent", "ok", "shed (429/503)", "failed", "success", "TTFT p50", "p99"]
PROVIDER_HEADER = ["provider", "tier", "endpoints", "requests", "share", "TTFT avg", "failed tries"]


def provider_rows(s: Summary) -> list[list[str]]:
    return [
        [
            p.provider,
            p.tiers,
            str(p.endpoints),
            f"{p.requests:,.0f}",
            f"{100 * p.share:.0f}%",
            _ms(p.ttft_avg_ms),
            f"{p.failed_attempts:,.0f}",
        ]
        for p in s.providers
    ]


def story(s: Summary) -> list[str]:
    """The outage in sentences."""
    if s.outage_down_s is None:
        return ["The run ended before the outage was injected."]
    lines = [
        f"At {s.outage_down_s:.1f}s the provider {s.outage_provider} "
        f"({', '.join(s.outage_endpoints)}) was taken down by fault injection "
        "(connections refused)."
    ]
    if s.failover_s is not None:
        lines.append(
            f"The gateway took it out of rotation after {s.failover_s:.1f}s and routed its "
            "traffic to the other providers; requests caught mid-failover were retried before "
            "any byte reached the client."
        )
    else:
        lines.append("The gateway's health state for it did not change while it was down.")
    if s.outage_up_s is not None:
        back = f"At {s.outage_up_s:.1f}s it came back; "
        if s.recovery_s is not None:
            back += f"active probes returned it to rotation after {s.recovery_s:.1f}s"
            if s.serving_again_s is not None:
                back += f" and it served traffic again after {s.serving_again_s:.1f}s."
            else:
                back += "."
        else:
            back += "it was not seen back in rotation before the end of the run."
        lines.append(back)
    crit = next((c for c in s.outage_window if c.priority == "critical"), None)
    if crit is not None and crit.sent:
        lines.append(
            f"During the outage, critical traffic succeeded {_pct(crit.success_rate)} "
            f"({crit.ok}/{crit.sent})."
        )
    return lines


def print_report(s: Summary, console: Console, html: Path | None) -> None:
    from rich.table import Table

    console.rule("[bold]skyfleet demo · final report")
    kp = Table(show_header=False, box=None)
    kp.add_column(style="dim")
    kp.add_column(style="bold")
    for k, v in headline(s):
        kp.add_row(k, v)
    console.print(kp)
    for line in story(s):
        console.print(f"• {line}")
    t = Table(title="Success by priority", title_justify="left")
    for h in CLASS_HEADER:
        t.add_column(h, justify="left" if h == "priority" else "right")
    for r in class_rows(s.classes):
        t.add_row(*r)
    console.print(t)
    pt = Table(title="Traffic by provider (gateway)", title_justify="left")
    for h in PROVIDER_HEADER:
        pt.add_column(h, justify="left" if h in ("provider", "tier") else "right")
    for r in provider_rows(s):
        pt.add_row(*r)
    console.print(pt)
    shed = sum(s.shed_by_priority.values())
    console.print(
        f"retries {s.retries:.0f} · spillovers {s.spillovers:.0f} · shed {shed:.0f} · "
        f"fleet ${s.fleet_cost_per_hour:.2f}/h"
        + (f" · usage cost ${s.usage_cost_usd:.4f}" if s.usage_cost_usd else "")
    )
    console.print(cost_story(s))
    if html is not None:
        console.print(f"HTML report: [bold]{html}[/]")


def _shade(ax: Any, s: Summary, end: float) -> None:
    if s.outage_down_s is not None:
        ax.axvspan(
            s.outage_down_s,
            s.outage_up_s if s.outage_up_s is not None else end,
            color="#f31260",
            alpha=0.12,
            label=f"{s.outage_provider} down",
        )


def write_html(s: Summary, run: DemoRun, path: Path) -> Path:
    """The report as one self-contained HTML file (inline PNG charts)."""
    from skyfleet.report import HtmlReport
    from skyfleet.report.charts import new_figure

    rep = HtmlReport(
        "skyfleet demo report",
        f"{len(run.fleet.endpoints)} replicas over {', '.join(run.fleet.providers())} · "
        f"{s.load_s:.0f}s of load at time scale {s.time_scale:g} · surge ×"
        f"{run.opts.surge_factor:g} · {s.outage_provider} taken down and brought back",
    )
    rep.kpis(headline(s))
    rep.heading("The outage")
    for line in story(s):
        rep.paragraph(line)
    w0 = run.load_wall_start
    ser = run.monitor.series(run.monitor.keep_s, smooth_s=3.0)
    t = [x - w0 for x in ser["t"]]
    end = s.load_s
    if t:
        fig, ax = new_figure(9.0, 3.2)
        for p, ys in ser["rps"].items():
            ax.plot(t, ys, label=p, lw=1.6)
        _shade(ax, s, end)
        ax.set_xlabel("seconds since the load started")
        ax.set_ylabel("requests/s served")
        ax.set_title("Traffic per provider (gateway)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        rep.figure(fig, "requests per second per provider")
    per = run.log.per_second(s.load_s + 2.0)
    fig, ax = new_figure(9.0, 3.2)
    xs = per["t"]
    ax.plot(xs, [run.scenario.rate(x) for x in xs], color="#444", ls="--", lw=1, label="offered")
    colors = {"critical": "#f31260", "standard": "#4f8cff", "sheddable": "#8b93a7"}
    for p in PRIORITIES:
        ax.plot(xs, per[f"ok:{p}"], color=colors[p], lw=1.4, label=f"ok {p}")
    bad = [sum(per[f"bad:{p}"][i] for p in PRIORITIES) for i in range(len(xs))]
    ax.bar(xs, bad, width=0.9, color="#f5a524", alpha=0.6, label="shed or failed")
    _shade(ax, s, end)
    ax.set_xlabel("seconds since the load started (by send time)")
    ax.set_ylabel("requests/s")
    ax.set_title("What the clients got")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    rep.figure(fig, "client outcomes per second")
    fig, ax = new_figure(9.0, 3.0)
    ax.plot(xs, per["ttft_p50"], label="p50", lw=1.4)
    ax.plot(xs, per["ttft_p99"], label="p99", lw=1.4)
    _shade(ax, s, end)
    ax.set_xlabel("seconds since the load started")
    ax.set_ylabel("TTFT (ms)")
    ax.set_title("Time to first token seen by the clients")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    rep.figure(fig, "TTFT over time")
    rep.heading("Success by priority")
    rep.table(CLASS_HEADER, class_rows(s.classes))
    if s.outage_window:
        rep.heading("During the outage")
        rep.table(CLASS_HEADER, class_rows(s.outage_window))
    rep.heading("Traffic by provider")
    rep.table(PROVIDER_HEADER, provider_rows(s))
    shed = sum(s.shed_by_priority.values())
    rep.paragraph(
        f"Gateway counters: {s.retries:.0f} retries, {s.spillovers:.0f} spillovers, "
        f"{shed:.0f} shed. Fleet price ${s.fleet_cost_per_hour:.2f}/hour."
    )
    rep.heading("Cost: the plan against like-for-like fleets, and where it comes from")
    for line in s.cost_story:
        rep.paragraph(line)
    rows: list[list[str]] = [["this plan", f"${s.plan_cost_per_day:,.0f}", "see above", ""]]
    for b in s.baselines:
        cpd = b.get("cost_per_day")
        rows.append(
            [
                str(b["name"]),
                "infeasible" if cpd is None else f"${cpd:,.0f}",
                str(b.get("survives", "")),
                b["description"],
            ]
        )
    rep.table(["plan", "cost / day", "survives the loss of", "what it is"], rows)
    if s.decomposition:
        rep.table(
            ["step (constraints added in this order)", "cost / day", "change"],
            [
                [
                    str(d["name"]),
                    "infeasible" if d["cost_per_day"] is None else f"${d['cost_per_day']:,.0f}",
                    "" if d["delta_per_day"] is None else f"{d['delta_per_day']:+,.0f}",
                ]
                for d in s.decomposition
            ],
        )
    rep.heading("The plan")
    plan = run.fleet.plan
    rep.table(
        ["provider", "region", "accelerator", "tier", "peak replicas", "$/replica-hour", "why"],
        [
            [
                e.provider,
                e.region,
                f"{e.accelerator}x{e.accelerators_per_replica}",
                e.tier,
                str(max(e.replicas, default=0)),
                f"{e.price_per_replica_hour:.2f}",
                e.reason,
            ]
            for e in plan.entries
            if any(e.replicas)
        ],
    )
    if s.events:
        rep.heading("Health events seen by the gateway")
        rep.table(
            ["t (s)", "provider", "endpoint", "from", "to"],
            [
                [f"{e['t_s']:.1f}", e["provider"], e["endpoint"], e["from"], e["to"]]
                for e in s.events
            ],
        )
    if s.errors:
        rep.heading("Client errors")
        rep.table(["kind", "count"], sorted(s.errors.items(), key=lambda kv: -kv[1]))
    rep.paragraph(
        "Latencies are measured on this machine with the emulators in slow motion "
        f"(time scale {s.time_scale:g}), through the gateway, by the clients."
    )
    return rep.write(path)
