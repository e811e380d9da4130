"""The demo's live terminal view (rich): traffic per provider, TTFT, spillovers, retries,
shed load and cost, refreshed twice a second; or one log line every few seconds."""

from __future__ import annotations

import asyncio
import time
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


def status_line(demo: Demo) -> Text:
    st = demo.monitor.state(60.0)
    tot = st.get("totals", {})
    shed = sum(tot.get("shed", {}).values()) if tot else 0
    sc = demo.scenario
    off = demo.load_offset()
    phase = sc.phase_at(off) if sc is not None and demo.phase == "load" else demo.phase
    rate = sc.rate(off) if sc is not None else 0.0
    cost = tot.get("usage_cost") or tot.get("fleet_cost") or 0.0
    out = Text()
    out.append(f"{phase}", style="bold magenta")
    out.append(f" · offered {rate:.1f} req/s · retries {tot.get('retries', 0):.0f}")
    out.append(f" · spillovers {tot.get('spillovers', 0):.0f} · shed {shed:.0f}")
    out.append(f" · cost ${cost:.4f} · fleet ${tot.get('cost_per_hour', 0):.2f}/h")
    o = demo.outage
    if o is not None and o.down_at is not None:
        since = o.down_at - demo.load_wall_start
        if o.up_at is None:
            out.append(f" · {o.provider} DOWN since {since:.0f}s", style="bold red")
        else:
            out.append(f" · {o.provider} back at {o.up_at - demo.load_wall_start:.0f}s", "green")
    return out


def render(demo: Demo) -> Panel:
    elapsed = time.monotonic() - demo.t_start
    title = f"skyfleet demo · {elapsed:5.1f}s / {demo.opts.duration_s:.0f}s" + (
        f" · {demo.gateway.url}/dashboard/" if demo.gateway else ""
    )
    body = Group(status_line(demo), providers_table(demo), clients_table(demo))
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
            d = self.demo
            c = d.log.classes["critical"]
            crit = "–" if c.success_rate is None else f"{100 * c.success_rate:.1f}%"
            line = status_line(d)
            line.append(f" · sent {d.log.sent} · ok {d.log.ok} · critical ok {crit}")
            d.console.print(Text(f"{time.monotonic() - d.t_start:6.1f}s ", style="dim") + line)

    def close(self) -> None:
        if self._live is not None:
            self._live.update(render(self.demo), refresh=True)
            self._live.stop()
            self._live = None
