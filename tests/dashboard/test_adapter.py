"""The adapter reads the gateway's real metrics registry and the ledger's real schema."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from skyfleet.config import parse_config
from skyfleet.dashboard.adapter import sample_from
from skyfleet.dashboard.ledger_tail import LedgerTail
from skyfleet.gateway.fleet import Fleet
from skyfleet.gateway.ledger import Ledger, UsageRecord
from skyfleet.gateway.metrics import GatewayMetrics

CFG = {
    "providers": [{"name": "azure"}, {"name": "gcp"}],
    "endpoints": [
        {"name": "a0", "provider": "azure", "url": "http://127.0.0.1:1/v1", "model": "m"},
        {"name": "g0", "provider": "gcp", "url": "http://127.0.0.1:2/v1", "model": "m"}
        | {"tier": "spillover", "price": {"per_hour": 2.5}},
    ],
    "models": [{"name": "chat", "endpoints": ["a0", "g0"]}],
}


def test_gateway_metrics_map_to_a_sample() -> None:
    fleet = Fleet(parse_config(CFG))
    gm = GatewayMetrics(fleet)
    gm.attempts.labels("a0", "ok").inc(7)
    gm.attempts.labels("g0", "ok").inc(2)
    gm.attempts.labels("a0", "connect_error").inc(3)
    gm.retries.labels("chat", "connect_error").inc(3)
    gm.spillovers.labels("chat", "spillover").inc(2)
    rows = [{"name": "a0", "provider": "azure", "tier": "primary", "healthy": False}]
    rows[0] |= {"probe_down": True, "capacity": 32}
    rows.append({"name": "g0", "provider": "gcp", "tier": "spillover", "healthy": True})
    s = sample_from(gm.render().decode(), rows, 1.0)
    assert s.requests == {"a0": 7.0, "g0": 2.0}
    assert s.errors == {"a0": 3.0}
    assert s.retries == 3.0
    assert s.spillovers == 2.0
    assert [e.status for e in s.endpoints] == ["down", "up"]


def test_endpoints_fall_back_to_metric_gauges() -> None:
    fleet = Fleet(parse_config(CFG))
    s = sample_from(GatewayMetrics(fleet).render().decode(), [], 1.0)
    assert {(e.name, e.provider, e.tier) for e in s.endpoints} == {
        ("a0", "azure", "primary"),
        ("g0", "gcp", "spillover"),
    }


def test_garbage_metrics_give_an_empty_sample() -> None:
    s = sample_from("this is { not prometheus", [], 1.0)
    assert s.requests == {} and s.endpoints == ()


@pytest.mark.asyncio
async def test_ledger_tail_reads_new_rows_only(tmp_path: Path) -> None:
    db = tmp_path / "usage.sqlite"
    led = Ledger(db, flush_interval_s=10)
    await led.start()
    tail = LedgerTail(db, {"vip": "critical"})
    now = time.time()
    led.add(UsageRecord("r1", now, "vip", "chat", "a0", "azure", "primary", 200, ttft_s=0.1))
    led.add(UsageRecord("r2", now, "anon", "chat", "g0", "gcp", "spillover", 200, ttft_s=0.3))
    led.add(UsageRecord("r3", now, "vip", "chat", "a0", "azure", "primary", 502, cost_usd=0.5))
    await led.flush()
    t = await tail.apoll()
    assert t.ttft_count == {"azure": 1.0, "gcp": 1.0}
    assert t.ttft_sum["gcp"] == pytest.approx(0.3)
    assert t.by_priority == {"critical": 2.0, "standard": 1.0}
    assert t.failed_by_priority == {"critical": 1.0}
    assert t.cost == pytest.approx(0.5)
    t = await asyncio.to_thread(tail.poll)  # nothing new: totals unchanged
    assert t.rows == 3
    await led.close()
    tail.close()


def test_ledger_tail_without_a_file_is_empty(tmp_path: Path) -> None:
    assert LedgerTail(tmp_path / "missing.sqlite").poll().rows == 0
