"""Spillover only when the primary tier saturates; config reload under load loses nothing."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from skyfleet.emulator.process import EmulatorProcess
from skyfleet.gateway.process import GatewayProcess

from .conftest import HTTP, fleet_config, ledger_rows, one_request, run_load


def burst(gw: GatewayProcess, concurrency: int, per_worker: int) -> list[str | None]:
    def work(_: int) -> list[str | None]:
        with httpx.Client(timeout=30) as c:
            out = []
            for _ in range(per_worker):
                r = one_request(c, gw, stream=False, max_tokens=30)
                assert r.ok, r.error
                out.append(r.endpoint)
            return out

    with ThreadPoolExecutor(concurrency) as ex:
        return [e for chunk in ex.map(work, range(concurrency)) for e in chunk]


def test_spillover_only_when_primary_saturates(
    tmp_path: Path,
    emulators: Callable[..., EmulatorProcess],
    gateway: Callable[..., GatewayProcess],
) -> None:
    p0, s0 = emulators(time_scale=20), emulators(time_scale=20, seed=1)
    cfg = fleet_config(
        tmp_path / "fleet.yaml",
        [
            {"name": "p0", "provider": "azure", "url": p0.base_url, "capacity": 4},
            {"name": "s0", "provider": "gcp", "url": s0.base_url, "tier": "spillover"},
        ],
    )
    gw = gateway(cfg)
    light = burst(gw, concurrency=4, per_worker=4)  # never more than capacity in flight
    assert Counter(light) == {"p0": 16}
    heavy = Counter(burst(gw, concurrency=12, per_worker=3))
    assert heavy["s0"] > 0 and heavy["p0"] >= 4
    m = HTTP.get(gw.url + "/metrics").text
    assert 'skyfleet_spillovers_total{model="chat",tier="spillover"}' in m


@pytest.mark.slow
def test_config_reload_under_load_loses_nothing(
    tmp_path: Path,
    emulators: Callable[..., EmulatorProcess],
    gateway: Callable[..., GatewayProcess],
) -> None:
    a0, g0 = emulators(time_scale=50), emulators(time_scale=50, seed=1)
    path = fleet_config(
        tmp_path / "fleet.yaml", [{"name": "a0", "provider": "azure", "url": a0.base_url}]
    )
    gw = gateway(path)
    doc = yaml.safe_load(path.read_text())

    def add_g0() -> None:  # picked up by the file watcher
        doc["providers"].append({"name": "gcp"})
        doc["endpoints"].append(
            {**doc["endpoints"][0], "name": "g0", "provider": "gcp", "url": g0.base_url}
        )
        doc["models"][0]["endpoints"] = ["a0", "g0"]
        path.write_text(yaml.safe_dump(doc))

    def drop_a0() -> None:  # SIGHUP
        doc["models"][0]["endpoints"] = ["g0"]
        doc["endpoints"] = [e for e in doc["endpoints"] if e["name"] != "a0"]
        doc["providers"] = [{"name": "gcp"}]
        path.write_text(yaml.safe_dump(doc))
        gw.reload()

    def bad_config() -> None:  # an invalid file is refused; the running config stays
        path.write_text("providers: []\n")

    results = run_load(
        gw, 5.0, workers=4, events=[(1.0, add_g0), (2.5, drop_a0), (3.5, bad_config)]
    )
    assert results and all(r.ok for r in results), [r for r in results if not r.ok][:3]
    assert any(r.endpoint == "g0" for r in results if r.t < 2.5)  # added while running
    late = [r.endpoint for r in results if r.t > 3.0]
    assert late and set(late) == {"g0"}  # a0 gone; the bad file changed nothing
    assert len(ledger_rows(tmp_path, wait_for=len(results))) == len(results)
    time.sleep(0.1)
    assert "config reload failed" in gw.log()


def test_workers_share_the_port_and_the_ledger(
    tmp_path: Path,
    emulators: Callable[..., EmulatorProcess],
    gateway: Callable[..., GatewayProcess],
) -> None:
    a0 = emulators(time_scale=50)
    cfg = fleet_config(
        tmp_path / "fleet.yaml", [{"name": "a0", "provider": "azure", "url": a0.base_url}]
    )
    gw = gateway(cfg, workers=2)
    fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection per request
    with httpx.Client(timeout=30, limits=fresh) as c:  # so the kernel spreads them
        for _ in range(30):
            assert one_request(c, gw, stream=False).ok
    assert gw.stop() == 0
    rows = ledger_rows(tmp_path, wait_for=30)
    assert len(rows) == 30
    assert len({x["request_id"][4:16] for x in rows}) == 2  # both worker processes served
    assert gw.log().count("listening on") == 2
