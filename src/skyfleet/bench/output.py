"""Tables, JSON and charts (PNG, self-contained HTML) for bench runs and sweeps."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from skyfleet.bench.metrics import Stats, Summary

if TYPE_CHECKING:
    from skyfleet.bench.loadgen import RunResult
    from skyfleet.bench.sweep import SweepResult


def _f(v: float | None, fmt: str = ",.2f") -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def summary_table(s: Summary, title: str = "bench run") -> Table:
    """Throughput block plus a latency table (ms): mean, p50, p90, p95, p99."""
    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("metric")
    for c in ("mean", "p50", "p90", "p95", "p99", "max"):
        t.add_column(c, justify="right")
    rows: list[tuple[str, Stats]] = [
        ("TTFT (ms)", s.ttft),
        ("TPOT (ms)", s.tpot),
        ("ITL (ms)", s.itl),
        ("E2E (ms)", s.e2e),
        ("send lag (ms)", s.lag),
    ]
    for name, st in rows:
        if st.count:
            vals = (st.mean, st.p50, st.p90, st.p95, st.p99, st.max)
            t.add_row(name, *(_f(v * 1e3) for v in vals))
    return t


def throughput_table(s: Summary) -> Table:
    t = Table(show_header=False, title="totals")
    t.add_column("k")
    t.add_column("v", justify="right")
    rows = [
        ("requests (completed / failed)", f"{s.completed:,} / {s.failed:,}"),
        ("duration (s)", _f(s.duration_s)),
        ("request throughput (req/s)", _f(s.request_throughput)),
        ("input token throughput (tok/s)", _f(s.input_token_throughput, ",.0f")),
        ("output token throughput (tok/s)", _f(s.output_token_throughput, ",.0f")),
        ("mean input / output tokens", f"{s.mean_input_tokens:.0f} / {s.mean_output_tokens:.0f}"),
        ("max concurrency", f"{s.max_concurrency}"),
    ]
    if s.goodput is not None:
        rows.append((f"goodput at {s.slo} (req/s)", _f(s.goodput)))
        rows.append(("SLO attainment", _f((s.slo_attainment or 0) * 100, ".1f") + " %"))
    for kind, n in sorted(s.errors.items()):
        rows.append((f"errors: {kind}", f"{n:,}  ({s.error_examples.get(kind, '')[:60]})"))
    for k, v in rows:
        t.add_row(k, v)
    return t


def run_json(rr: RunResult, s: Summary, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every figure of a run plus its settings (and per-label summaries for mixes)."""
    out: dict[str, Any] = {
        "settings": rr.settings | (extra or {}),
        "interrupted": rr.interrupted,
        "incomplete": rr.incomplete,
        "warnings": rr.warnings,
        "summary": s.as_dict(),
        "mean_running_batch_scraped": rr.mean_batch(),
    }
    labels = [x for x in rr.labels() if x]
    if labels:
        ts = float((extra or {}).get("time_scale", 1.0))
        out["by_label"] = {x: rr.summary(s.slo, x, ts).as_dict() for x in labels}
    return out


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data, indent=2, default=str))
    return p


def run_figure(s: Summary) -> Any:
    """Bar chart of TTFT / TPOT / ITL / E2E percentiles (ms)."""
    from skyfleet.report.charts import new_figure

    fig, _ = new_figure(10, 3.2)
    fig.clf()
    names = [("TTFT", s.ttft), ("TPOT", s.tpot), ("ITL", s.itl), ("E2E", s.e2e)]
    names = [(n, st) for n, st in names if st.count]
    for k, (name, st) in enumerate(names):
        ax = fig.add_subplot(1, len(names), k + 1)
        qs = ["mean", "p50", "p90", "p95", "p99"]
        ax.bar(qs, [getattr(st, q) * 1e3 for q in qs], color="#4063d8")
        ax.set_title(f"{name} (ms)")
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def sweep_figure(res: SweepResult) -> Any:
    """Latency percentiles and goodput vs offered rate."""
    import matplotlib.pyplot as plt

    pts = sorted((p for p in res.points if p.kind == "rate" and p.rate), key=lambda p: p.rate or 0)
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 3.6))
    x = [p.rate for p in pts]
    for q, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
        a1.plot(x, [getattr(p.summary.ttft, q) * 1e3 for p in pts], style, marker="o", label=q)
        a2.plot(x, [getattr(p.summary.tpot, q) * 1e3 for p in pts], style, marker="o", label=q)
    a2.plot(x, [p.summary.tpot.mean * 1e3 for p in pts], "-", color="k", alpha=0.5, label="mean")
    for ax, slo, name in ((a1, res.slo.ttft_s, "TTFT (ms)"), (a2, res.slo.tpot_s, "TPOT (ms)")):
        if slo is not None:
            ax.axhline(slo * 1e3, color="#b00020", lw=1, label="SLO")
        ax.set_title(name)
    a3.plot(x, [p.summary.request_throughput for p in pts], marker="o", label="throughput")
    a3.plot(x, [p.summary.goodput or 0.0 for p in pts], marker="s", label="goodput")
    if res.max_rate:
        a3.axvline(res.max_rate, color="#0a7d32", lw=1, label=f"max at SLO {res.max_rate:.3g}")
    a3.set_title("req/s")
    for ax in (a1, a2, a3):
        ax.set_xlabel("offered rate (req/s)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def run_html(rr: RunResult, s: Summary, path: str | Path) -> Path:
    from skyfleet.report import HtmlReport

    load = rr.settings.get("load", {})
    rep = HtmlReport("skyfleet bench run", f"{rr.settings['target']['endpoint']} · {load}")
    rep.kpis(
        [
            ("requests/s", f"{s.request_throughput:.2f}"),
            ("output tok/s", f"{s.output_token_throughput:,.0f}"),
            ("TTFT p99", f"{s.ttft.p99 * 1e3:.0f} ms" if s.ttft.count else "–"),
            ("TPOT mean", f"{s.tpot.mean * 1e3:.1f} ms" if s.tpot.count else "–"),
            ("errors", f"{s.failed}"),
        ]
        + ([("goodput", f"{s.goodput:.2f} req/s")] if s.goodput is not None else [])
    )
    rep.heading("Latency (ms)")
    rep.table(
        ["metric", "mean", "p50", "p90", "p95", "p99"],
        [
            [n, *(getattr(st, q) * 1e3 for q in ("mean", "p50", "p90", "p95", "p99"))]
            for n, st in (("TTFT", s.ttft), ("TPOT", s.tpot), ("ITL", s.itl), ("E2E", s.e2e))
            if st.count
        ],
    )
    rep.figure(run_figure(s), "latency percentiles")
    for w in rr.warnings:
        rep.paragraph(w, "bad")
    return rep.write(path)


def sweep_rows(res: SweepResult) -> list[list[Any]]:
    rows = []
    for p in res.points:
        s = p.summary
        rows.append(
            [
                p.kind,
                "–" if p.rate is None else f"{p.rate:.3g}",
                f"{s.request_throughput:.3g}",
                _f(s.ttft.p50 * 1e3, ".1f"),
                _f(s.ttft.p99 * 1e3, ".1f"),
                _f(s.tpot.mean * 1e3, ".2f"),
                _f(s.tpot.p99 * 1e3, ".2f"),
                _f(p.decode_batch if p.observed_batch is None else p.observed_batch, ".1f"),
                "–" if s.goodput is None else f"{s.goodput:.3g}",
                f"{s.failed}",
                "yes" if p.meets_slo else "no",
            ]
        )
    return rows


SWEEP_HEADER = [
    "run", "rate", "req/s", "TTFT p50", "TTFT p99", "TPOT mean", "TPOT p99",
    "batch", "goodput", "errors", "meets SLO",
]  # fmt: skip


def sweep_table(res: SweepResult) -> Table:
    t = Table(title=f"sweep · SLO {res.slo} (TTFT p{res.percentile:g}, TPOT mean) · ms, req/s")
    for h in SWEEP_HEADER:
        t.add_column(h, justify="left" if h == "run" else "right")
    for r in sweep_rows(res):
        t.add_row(*r)
    return t


def sweep_html(res: SweepResult, path: str | Path) -> Path:
    from skyfleet.report import HtmlReport

    tgt = res.settings["target"]
    rep = HtmlReport("skyfleet bench sweep", f"{tgt['endpoint']} · model {tgt['model']}")
    rep.kpis(
        [
            ("max rate at SLO", f"{res.max_rate:.3g} req/s"),
            ("SLO", str(res.slo)),
            ("runs", str(len(res.points))),
            *(
                [("client overhead", f"{res.client_overhead_s * 1e3:.2f} ms")]
                if res.client_overhead_s is not None
                else []
            ),
        ]
    )
    rep.figure(sweep_figure(res), "latency and goodput vs rate")
    rep.heading("Runs")
    rep.table(SWEEP_HEADER, sweep_rows(res))
    if res.profile is not None:
        rep.heading("Fitted profile")
        rep.table(
            ["parameter", "value"],
            [[k, v] for k, v in res.profile.model_dump(mode="json").items() if k != "engine"],
        )
    for w in res.warnings:
        rep.paragraph(w, "bad")
    return rep.write(path)
