"""The demo's live terminal view (rich): traffic per provider, TTFT, spillovers, retries,
shed load and cost, refreshed twice a second; or one log line every few seconds."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from skyfleet.dashboard.model import PRIORITIES

if TYPE_CHECKING:
    from skyfleet.demo.run import Demo

STATUS_STYLE = {"up": "green", "ejected": "yellow", "down": "bold red", "degraded": "yellow"}


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:,.0f}"


def providers_table(demo: Demo) -> Table:
    state = demo.monitor.state(60.0)
    t = Table(expand=True, title="Providers", title_justify="left", box=None, pad_edge=False)
    for col in ("provider", "tier", "up", "req/s", "TTFT ms", "in flight", "$/hour"):
        t.add_column(col, justify="left" if col in ("provider", "tier") else "right")
    eps = state.get("endpoints", [])
    for p in state.get("providers", []):
        mine = [e for e in eps if e["provider"] == p["name"]]
        infl = sum(e["in_flight"] for e in mine)
        cap = sum(e["capacity"] for e in mine)
        st = p["status"]
        t.add_row(
            Text(p["name"], style=STATUS_STYLE.get(st, "")),
            ", ".join(p["tiers"]),
            Text(f"{p['endpoints_up']}/{p['endpoints']}", style=STATUS_STYLE.get(st, "")),
            f"{p['rps']:.1f}",
            _ms(p["ttft_ms"]),
            f"{infl:.0f}/{cap:.0f}",
            f"{p['cost_per_hour']:.2f}",
        )
    return t


def clients_table(demo: Demo) -> Table:
    t = Table(expand=True, title="Clients by priority", title_justify="left", box=None)
    for col in ("priority", "sent", "ok", "shed", "failed", "success", "TTFT p50", "p99"):
        t.add_column(col, justify="left" if col == "priority" else "right")
    for p in PRIORITIES:
        c = demo.log.classes[p]
        sr = c.success_rate
        style = "" if sr is None else ("green" if sr >= 0.99 else "yellow" if sr >= 0.9 else "red")
        t.add_row(
            p,
            str(c.sent),
            str(c.ok),
            str(c.shed),
            str(c.failed),
            Text("–" if sr is None else f"{100 * sr:.1f}%", style=style),
            _ms(c.ttft_ms(50)),
            _ms(c.ttft_ms(99)),
        )
    return t


def _outage_text(demo: Demo, short: bool = False) -> Text:
    o = demo.outage
    if o is None or o.down_at is None:
        return Text()
    if o.up_at is None:
        since = "" if short else "since "
        return Text(f"{o.provider} DOWN {since}{o.down_at - demo.load_wall_start:.0f}s", "bold red")
    at = "" if short else "at "
    return Text(f"{o.provider} back {at}{o.up_at - demo.load_wall_start:.0f}s", "green")


@dataclass(frozen=True, slots=True)
class _Status:
    phase: str
    offered_rps: float
    retries: float
    spillovers: float
    shed: float
    cost: float
    fleet_per_hour: float


def _status(demo: Demo) -> _Status:
    tot = demo.monitor.state(60.0).get("totals", {})
    sc = demo.scenario
    off = demo.load_offset()
    return _Status(
        phase=sc.phase_at(off) if sc is not None and demo.phase == "load" else demo.phase,
        offered_rps=sc.rate(off) if sc is not None else 0.0,
        retries=tot.get("retries", 0),
        spillovers=tot.get("spillovers", 0),
        shed=sum(tot.get("shed", {}).values()) if tot else 0,
        cost=tot.get("usage_cost") or tot.get("fleet_cost") or 0.0,
        fleet_per_hour=tot.get("cost_per_hour", 0),
    )


def status_lines(demo: Demo) -> tuple[Text, Text]:
    """The phase line (phase, offered load, outage) and the counters line, each ≤ 80 columns."""
    s = _status(demo)
    head = Text(s.phase, style="bold magenta")
    head.append(f" · offered {s.offered_rps:.1f} req/s")
    outage = _outage_text(demo)
    if outage:
        head.append(" · ")
        head.append_text(outage)
    counts = Text(
        f"retries {s.retries:.0f} · spillovers {s.spillovers:.0f} · shed {s.shed:.0f}"
        f" · cost ${s.cost:.4f} · fleet ${s.fleet_per_hour:.2f}/h"
    )
    return head, counts


def status_line(demo: Demo) -> Text:
    """Both status lines as one."""
    head, counts = status_lines(demo)
    return head + Text(" · ") + counts


def log_line(demo: Demo, elapsed_s: float) -> Text:
    """One compact progress line for a log or a pipe (≤ 120 columns)."""
    s = _status(demo)
    c = demo.log.classes["critical"]
    crit = "–" if c.success_rate is None else f"{100 * c.success_rate:.1f}%"
    line = Text(f"{elapsed_s:5.0f}s ", style="dim")
    line.append(f"{s.phase:<8}", style="bold magenta")
    line.append(
        f" {s.offered_rps:5.1f} rps  sent {demo.log.sent} ok {demo.log.ok} crit {crit}"
        f"  retry {s.retries:.0f} spill {s.spillovers:.0f} shed {s.shed:.0f}"
        f"  ${s.fleet_per_hour:.2f}/h"
    )
    outage = _outage_text(demo, short=True)
    if outage:
        line.append("  ")
        line.append_text(outage)
    return line


def render(demo: Demo) -> Panel:
    elapsed = time.monotonic() - demo.t_start
    title = f"skyfleet demo · {elapsed:5.1f}s / {demo.opts.duration_s:.0f}s" + (
        f" · {demo.gateway.url}/dashboard/" if demo.gateway else ""
    )
    body = Group(*status_lines(demo), providers_table(demo), clients_table(demo))
    return Panel(body, title=title, title_align="left", border_style="cyan")


class LiveView:
    """Refreshes a rich Live panel (or prints a line every `every_s` without a terminal)."""

    def __init__(self, demo: Demo, live: bool, every_s: float = 5.0) -> None:
        self.demo = demo
        self.use_live = live and demo.console.is_terminal
        self.every_s = every_s
        self._live: Live | None = None

    async def run(self) -> None:
        if self.use_live:
            self._live = Live(
                render(self.demo), console=self.demo.console, auto_refresh=False, transient=False
            )
            self._live.start()
            while True:
                await asyncio.sleep(0.5)
                self._live.update(render(self.demo), refresh=True)
        while True:
            await asyncio.sleep(self.every_s)
            self.demo.console.print(log_line(self.demo, time.monotonic() - self.demo.t_start))

    def close(self) -> None:
        if self._live is not None:
            self._live.update(render(self.demo), refresh=True)
            self._live.stop()
            self._live = None
