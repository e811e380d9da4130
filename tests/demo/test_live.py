"""The live terminal view renders from the start (no samples yet) to a busy fleet."""

from __future__ import annotations

import io

from rich.console import Console

from skyfleet.bench.metrics import RequestResult
from skyfleet.dashboard.model import EndpointState, GatewaySample
from skyfleet.demo.live import log_line, render, status_line
from skyfleet.demo.procs import ChildGroup
from skyfleet.demo.run import Demo, DemoOptions, Outage
from skyfleet.demo.scenario import Scenario


def _demo(width: int = 120) -> tuple[Demo, io.StringIO]:
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=False)
    demo = Demo(DemoOptions(duration_s=60), console, ChildGroup())
    return demo, buf


def test_renders_before_any_sample() -> None:
    demo, buf = _demo()
    try:
        demo.console.print(render(demo))
        assert "planning" in buf.getvalue()
    finally:
        demo.cleanup()


def test_renders_providers_clients_and_the_outage() -> None:
    demo, buf = _demo()
    try:
        eps = (
            EndpointState("a0", "azure", "primary", capacity=8, price_per_hour=2.0),
            EndpointState("g0", "gcp", "spillover", capacity=8, status="down"),
        )
        for i in range(3):
            demo.monitor.add(
                GatewaySample(
                    scraped_at=100.0 + i, endpoints=eps, requests={"a0": 5.0 * i}, retries=i
                )
            )
        r = RequestResult(0, "critical", 0.0, 0.0)
        r.ttft, r.e2e = 0.1, 0.5
        demo.log.add(r)
        demo.scenario = Scenario(load_s=40.0, base_rps=10.0, outage_provider="gcp")
        demo.outage = Outage("gcp", ["g0"], down_at=105.0)
        demo.load_wall_start = 100.0
        demo.phase = "load"
        demo.console.print(render(demo))
        out = buf.getvalue()
        assert "azure" in out and "gcp" in out and "0/1" in out
        assert "critical" in out and "100.0%" in out
        assert "gcp DOWN since 5s" in status_line(demo).plain
    finally:
        demo.cleanup()


def _busy(demo: Demo) -> None:
    """A long run's worst case: large counters, an outage, long provider names."""
    eps = (
        EndpointState("a0", "azure-westeurope", "primary", capacity=64, price_per_hour=98.0),
        EndpointState("g0", "coreweave", "spillover", capacity=64, status="down"),
    )
    for i in range(3):
        demo.monitor.add(
            GatewaySample(
                scraped_at=100.0 + i, endpoints=eps, requests={"a0": 99999.0 * i}, retries=12345 * i
            )
        )
    for _ in range(3):
        r = RequestResult(0, "critical", 0.0, 0.0)
        r.ttft, r.e2e = 12.3, 45.6
        demo.log.add(r)
    for p in ("standard", "sheddable"):
        c = demo.log.classes[p]
        c.sent, c.ok, c.shed, c.failed = 617_282, 600_000, 17_000, 282
    demo.scenario = Scenario(load_s=400.0, base_rps=1000.0, outage_provider="coreweave")
    demo.outage = Outage("coreweave", ["g0"], down_at=105.0)
    demo.load_wall_start = 100.0
    demo.phase = "load"


def test_live_view_fits_an_80_column_terminal() -> None:
    demo, buf = _demo(width=80)
    try:
        _busy(demo)
        demo.console.print(render(demo))
        lines = buf.getvalue().splitlines()
        assert max(len(ln) for ln in lines) <= 80
        text = buf.getvalue()
        assert "coreweave DOWN since 5s" in text  # the outage is not cut off
        assert "fleet $" in text and "shed" in text
    finally:
        demo.cleanup()


def test_log_line_fits_120_columns() -> None:
    demo, _ = _demo()
    try:
        _busy(demo)
        line = log_line(demo, 1234.5).plain
        assert len(line) <= 120, line
        assert "sent 1234567" in line and "coreweave DOWN 5s" in line
    finally:
        demo.cleanup()
