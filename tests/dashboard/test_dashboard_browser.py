"""The dashboard in a real browser (Debian's headless Chromium via Playwright): it loads from
the gateway, its charts update under load, and a provider outage shows within 5 seconds."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from skyfleet.config import hash_key
from skyfleet.emulator.process import EmulatorProcess, start_emulator
from skyfleet.gateway.process import GatewayProcess, start_gateway

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN, USER = "sk-admin-dashboard-test", "sk-user-dashboard-test"
PROVIDERS = (("onprem", "primary"), ("azure", "primary"), ("gcp", "spillover"))

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed"),
]


@dataclass
class Fleet:
    gateway: GatewayProcess
    emulators: dict[str, EmulatorProcess]


def _config(tmp: Path, emus: dict[str, EmulatorProcess]) -> Path:
    cfg: dict[str, Any] = {
        "server": {"admin_api_keys": [hash_key(ADMIN)], "drain_timeout_s": 1.0},
        "ledger": {"path": str(tmp / "usage.sqlite"), "flush_interval_s": 0.2},
        "health": {
            "consecutive_failures": 2,
            "base_ejection_s": 1.0,
            "probe_interval_s": 0.5,
            "probe_timeout_s": 0.5,
            "unhealthy_after_probe_failures": 1,
        },
        "providers": [{"name": p} for p, _ in PROVIDERS],
        "endpoints": [
            {
                "name": f"{p}-0",
                "provider": p,
                "url": emus[p].base_url,
                "model": "SmolLM2-135M",
                "tier": tier,
                "capacity": 3,
                "accelerator": "H100",
                "price": {"per_hour": 2.0},
            }
            for p, tier in PROVIDERS
        ],
        "models": [{"name": "chat", "endpoints": [f"{p}-0" for p, _ in PROVIDERS]}],
        "tenants": [{"name": "app", "api_keys": [hash_key(USER)], "priority": "critical"}],
    }
    path = tmp / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class _Load(threading.Thread):
    """Steady streaming load on the gateway from a background event loop."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop_event: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.results = 0

    def run(self) -> None:
        from skyfleet.bench.loadgen import Load, Target, run_load
        from skyfleet.bench.workload import SyntheticRequests

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.stop_event = asyncio.Event()
            target = Target(url=self.url, model="chat", api_key=USER, timeout_s=30)
            res = await run_load(
                target,
                SyntheticRequests(64, 24, seed=1),
                Load(rate=6.0, duration_s=120.0),
                stop=self.stop_event,
                scrape_metrics=False,
            )
            self.results = len(res.results)

        asyncio.run(main())

    def stop(self) -> None:
        if self.loop is not None and self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.join(15)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp_path = tmp_path_factory.mktemp("dashboard")
    emus: dict[str, EmulatorProcess] = {}
    gw: GatewayProcess | None = None
    load: _Load | None = None
    try:
        for i, (p, _) in enumerate(PROVIDERS):
            emus[p] = start_emulator(
                "SmolLM2-135M@H100", time_scale=0.5, seed=i, served_model_name="SmolLM2-135M"
            )
        gw = start_gateway(_config(tmp_path, emus))
        load = _Load(gw.url)
        load.start()
        yield Fleet(gw, emus)
    finally:
        if load is not None:
            load.stop()
        if gw is not None:
            gw.stop(10)
        for e in emus.values():
            e.stop()


@pytest.fixture
def page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            yield pg
        finally:
            browser.close()


def _points(page: Any) -> int:
    return int(page.get_attribute("#c-rps", "data-points") or 0)


def _updates(page: Any) -> int:
    return int(page.get_attribute("body", "data-updates") or 0)


def _wait(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll from Python: the page's CSP (rightly) forbids the eval of wait_for_function."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_dashboard_loads_updates_and_shows_an_outage(fleet: Fleet, page: Any) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    external: list[str] = []
    page.on(
        "request",
        lambda r: external.append(r.url) if not r.url.startswith(fleet.gateway.url) else None,
    )
    page.goto(f"{fleet.gateway.url}/dashboard/#key={ADMIN}")
    _wait(lambda: _updates(page) >= 2, 15, "two dashboard updates")
    assert page.title().startswith("skyfleet")
    rows = page.locator(".ep")
    assert rows.count() == len(PROVIDERS)
    assert page.locator('.tier[data-tier="spillover"] .ep').count() == 1

    # charts update: more points and a later last timestamp a couple of seconds later
    _wait(lambda: _points(page) >= 3, 15, "three points on the requests chart")
    before = (_points(page), float(page.get_attribute("#c-rps", "data-last-t") or 0))
    page.wait_for_timeout(2500)
    after = (_points(page), float(page.get_attribute("#c-rps", "data-last-t") or 0))
    assert after[1] > before[1]
    assert after[0] >= before[0]
    assert page.locator("#k-requests").inner_text() not in ("–", "0")

    # a provider outage shows within 5 seconds of the injection
    assert page.get_attribute('.ep[data-provider="azure"]', "data-status") == "up"
    t0 = time.monotonic()
    fleet.emulators["azure"].inject("down")
    page.wait_for_selector(
        '.ep[data-provider="azure"]:not([data-status="up"])', state="attached", timeout=5_000
    )
    seen = time.monotonic() - t0
    assert seen <= 5.0
    assert page.get_attribute('#plan tr[data-provider="azure"]', "data-status") == "down"
    assert "azure" in page.locator("#events").inner_text()
    assert errors == [], errors
    assert external == [], f"the page loaded resources from elsewhere: {external}"


def test_state_api_needs_the_admin_key_and_the_page_is_locked_down(fleet: Fleet) -> None:
    import urllib.error
    import urllib.request

    url = f"{fleet.gateway.url}/dashboard/api/state"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url, timeout=5)
    assert e.value.code == 401
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200
    with urllib.request.urlopen(f"{fleet.gateway.url}/dashboard/", timeout=5) as r:
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{fleet.gateway.url}/dashboard/static/../../etc/passwd", timeout=5)
    assert e.value.code == 404
