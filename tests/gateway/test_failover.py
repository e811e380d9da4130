"""A provider fails under steady load: no failed request, streams retried, endpoint returns."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from skyfleet.emulator.process import EmulatorProcess
from skyfleet.gateway.process import GatewayProcess

from .conftest import ADMIN_KEY, HTTP, fleet_config, ledger_rows, one_request, run_load


def endpoint_state(gw: GatewayProcess, name: str) -> dict[str, object]:
    r = HTTP.get(gw.url + "/admin/endpoints", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    return next(e for e in r.json()["endpoints"] if e["name"] == name)


def wait_healthy(gw: GatewayProcess, name: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not endpoint_state(gw, name)["healthy"]:
        assert time.monotonic() < deadline, f"{name} did not come back"
        time.sleep(0.1)


@pytest.mark.slow
def test_provider_down_under_load(
    tmp_path: Path,
    emulators: Callable[..., EmulatorProcess],
    gateway: Callable[..., GatewayProcess],
) -> None:
    a0, g0 = emulators(time_scale=50), emulators(time_scale=50, seed=1)
    cfg = fleet_config(
        tmp_path / "fleet.yaml",
        [
            {"name": "a0", "provider": "azure", "url": a0.base_url},
            {"name": "g0", "provider": "gcp", "url": g0.base_url},
        ],
    )
    gw = gateway(cfg)
    results = run_load(
        gw, 6.0, workers=4, events=[(1.5, lambda: a0.inject("down", duration_s=2.0))]
    )
    failed = [r for r in results if not r.ok]
    assert not failed, failed[:3]
    assert len(results) > 40
    during = [r for r in results if 2.3 < r.t < 3.4]  # fault: 1.5 s → 3.5 s
    assert during and all(r.endpoint == "g0" for r in during if r.attempts == 1)
    retried = [r for r in results if r.attempts > 1]
    assert retried and {r.endpoint for r in retried} == {"g0"}  # retried on the other provider
    wait_healthy(gw, "a0")
    with httpx.Client(timeout=30) as c:
        back = [one_request(c, gw, stream=False).endpoint for _ in range(30)]
    assert "a0" in back  # the endpoint takes traffic again after recovery
    assert endpoint_state(gw, "a0")["ejections"] >= 1 or "down (probe)" in gw.log()
    rows = ledger_rows(tmp_path, wait_for=len(results) + 30)
    assert len(rows) == len(results) + 30
    assert sum(r["attempts"] for r in rows) == len(rows) + len(retried)


@pytest.mark.slow
def test_hang_and_throttle_are_retried_elsewhere(
    tmp_path: Path,
    emulators: Callable[..., EmulatorProcess],
    gateway: Callable[..., GatewayProcess],
) -> None:
    a0, g0 = emulators(time_scale=50), emulators(time_scale=50, seed=1)
    cfg = fleet_config(
        tmp_path / "fleet.yaml",
        [
            {"name": "a0", "provider": "azure", "url": a0.base_url, "timeouts": {"ttfb_s": 0.8}},
            {"name": "g0", "provider": "gcp", "url": g0.base_url},
        ],
        routing={"retry_budget_min": 50},
    )
    gw = gateway(cfg)
    a0.inject("throttle", retry_after_s=1)
    with httpx.Client(timeout=30) as c:
        rs = [one_request(c, gw, stream=i % 2 == 1) for i in range(12)]
        assert all(r.ok and r.endpoint == "g0" for r in rs)
        assert endpoint_state(gw, "a0")["healthy"]  # 429 is back-pressure, not a fault
        a0.clear_faults()
        time.sleep(1.2)  # a0's Retry-After passes: it is routable again
        a0.inject("hang")
        t = time.monotonic()
        rs = [one_request(c, gw, stream=i % 2 == 1) for i in range(12)]
        assert all(r.ok and r.endpoint == "g0" for r in rs), [
            r for r in rs if not r.ok or r.endpoint != "g0"
        ]
        assert time.monotonic() - t < 12 * 0.8  # the hung endpoint was ejected on the way
        a0.clear_faults()
    m = HTTP.get(gw.url + "/metrics").text
    assert 'skyfleet_upstream_attempts_total{endpoint="a0",outcome="upstream_timeout"}' in m
    assert 'skyfleet_upstream_attempts_total{endpoint="a0",outcome="upstream_429"}' in m


def test_stream_not_started_is_retried_on_another_endpoint(
    tmp_path: Path,
    emulators: Callable[..., EmulatorProcess],
    gateway: Callable[..., GatewayProcess],
) -> None:
    a0, g0 = emulators(time_scale=50), emulators(time_scale=50, seed=1)
    cfg = fleet_config(
        tmp_path / "fleet.yaml",
        [
            {"name": "a0", "provider": "azure", "url": a0.base_url},
            {"name": "g0", "provider": "gcp", "url": g0.base_url, "tier": "spillover"},
        ],
    )
    gw = gateway(cfg)
    a0.inject("error", status=503)  # /health still answers: only requests fail
    with httpx.Client(timeout=30) as c:
        for stream in (True, False):
            r = one_request(c, gw, stream=stream)
            assert r.ok and r.endpoint == "g0" and r.attempts == 2, r
