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


def _format_ms(milliseconds: float | None) -> str:
    return "–" if milliseconds is None else f"{milliseconds:,.0f}"


def providers_table(demo: Demo) -> Table:
    state = demo.monitor.state(60.0)
    table = Table(expand=True, title="Providers", title_justify="left", box=None, pad_edge=False)
    for column in ("provider", "tier", "up", "req/s", "TTFT ms", "in flight", "$/hour"):
        table.add_column(column, justify="left" if column in ("provider", "tier") else "right")
    endpoints = state.get("endpoints", [])
    for provider in state.get("providers", []):
        mine = [endpoint for endpoint in endpoints if endpoint["provider"] == provider["name"]]
        in_flight = sum(endpoint["in_flight"] for endpoint in mine)
        capacity = sum(endpoint["capacity"] for endpoint in mine)
        style = STATUS_STYLE.get(provider["status"], "")
        table.add_row(
            Text(provider["name"], style=style),
            ", ".join(provider["tiers"]),
            Text(f"{provider['endpoints_up']}/{provider['endpoints']}", style=style),
            f"{provider['rps']:.1f}",
            _format_ms(provider["ttft_ms"]),
            f"{in_flight:.0f}/{capacity:.0f}",
            f"{provider['cost_per_hour']:.2f}",
        )
    return table


def clients_table(demo: Demo) -> Table:
    table = Table(expand=True, title="Clients by priority", title_justify="left", box=None)
    for column in ("priority", "sent", "ok", "shed", "failed", "success", "TTFT p50", "p99"):
        table.add_column(column, justify="left" if column == "priority" else "right")
    for priority in PRIORITIES:
        stats = demo.log.classes[priority]
        rate = stats.success_rate
        style = (
            ""
            if rate is None
            else ("green" if rate >= 0.99 else "yellow" if rate >= 0.9 else "red")
        )
        table.add_row(
            priority,
            str(stats.sent),
            str(stats.ok),
            str(stats.shed),
            str(stats.failed),
            Text("–" if rate is None else f"{100 * rate:.1f}%", style=style),
            _format_ms(stats.ttft_ms(50)),
            _format_ms(stats.ttft_ms(99)),
        )
    return table


def _outage_text(demo: Demo, short: bool = False) -> Text:
    outage = demo.outage
    if outage is None or outage.down_at is None:
        return Text()
    if outage.up_at is None:
        since = "" if short else "since "
        down_s = outage.down_at - demo.load_wall_start
        return Text(f"{outage.provider} DOWN {since}{down_s:.0f}s", "bold red")
    at_word = "" if short else "at "
    back_s = outage.up_at - demo.load_wall_start
    return Text(f"{outage.provider} back {at_word}{back_s:.0f}s", "green")


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
    totals = demo.monitor.state(60.0).get("totals", {})
    scenario = demo.scenario
    offset = demo.load_offset()
    return _Status(
        phase=(
            scenario.phase_at(offset)
            if scenario is not None and demo.phase == "load"
            else demo.phase
        ),
        offered_rps=scenario.rate(offset) if scenario is not None else 0.0,
        retries=totals.get("retries", 0),
        spillovers=totals.get("spillovers", 0),
        shed=sum(totals.get("shed", {}).values()) if totals else 0,
        cost=totals.get("usage_cost") or totals.get("fleet_cost") or 0.0,
        fleet_per_hour=totals.get("cost_per_hour", 0),
    )


def status_lines(demo: Demo) -> tuple[Text, Text]:
    """The phase line (phase, offered load, outage) and the counters line, each ≤ 80 columns."""
    status = _status(demo)
    head = Text(status.phase, style="bold magenta")
    head.append(f" · offered {status.offered_rps:.1f} req/s")
    outage = _outage_text(demo)
    if outage:
        head.append(" · ")
        head.append_text(outage)
    counts = Text(
        f"retries {status.retries:.0f} · spillovers {status.spillovers:.0f}"
        f" · shed {status.shed:.0f} · cost ${status.cost:.4f}"
        f" · fleet ${status.fleet_per_hour:.2f}/h"
    )
    return head, counts


def status_line(demo: Demo) -> Text:
    """Both status lines as one."""
    head, counts = status_lines(demo)
    return head + Text(" · ") + counts


def log_line(demo: Demo, elapsed_s: float) -> Text:
    """One compact progress line for a log or a pipe (≤ 120 columns)."""
    status = _status(demo)
    critical = demo.log.classes["critical"].success_rate
    critical_text = "–" if critical is None else f"{100 * critical:.1f}%"
    line = Text(f"{elapsed_s:5.0f}s ", style="dim")
    line.append(f"{status.phase:<8}", style="bold magenta")
    line.append(
        f" {status.offered_rps:5.1f} rps  sent {demo.log.sent} ok {demo.log.ok}"
        f" crit {critical_text}"
        f"  retry {status.retries:.0f} spill {status.spillovers:.0f} shed {status.shed:.0f}"
        f"  ${status.fleet_per_hour:.2f}/h"
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
