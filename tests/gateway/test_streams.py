"""Streams: mid-stream failure, client disconnect, graceful drain."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from skyfleet.emulator.process import EmulatorProcess
from skyfleet.gateway.process import GatewayProcess

from .conftest import HTTP, KEY, fleet_config, ledger_rows

H = {"Authorization": f"Bearer {KEY}"}


def body(max_tokens: int) -> dict[str, object]:
    return {
        "model": "chat",
        "messages": [{"role": "user", "content": "tell me a story"}],
        "max_tokens": max_tokens,
        "stream": True,
    }


def running(emu: EmulatorProcess) -> float:
    return sum(v for k, v in emu.metrics().items() if k.startswith("vllm:num_requests_running"))


def test_cut_mid_stream_ends_with_error_event_and_partial_usage(
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
    a0.inject("cut", cut_after_tokens=5)
    g0.inject("cut", cut_after_tokens=5)
    with HTTP.stream("POST", gw.base_url + "/chat/completions", json=body(50), headers=H) as r:
        assert r.status_code == 200
        lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
    content = [ln for ln in lines if '"delta"' in ln]
    assert len(content) == 5  # what the provider sent before it broke reached the client
    err = json.loads(lines[-1][6:])["error"]
    assert err["code"] == 502
    assert "mid-stream" in err["message"] or "before it finished" in err["message"]
    rid = r.headers["x-request-id"]
    rows = [x for x in ledger_rows(tmp_path, wait_for=1) if x["request_id"] == rid]
    assert len(rows) == 1
    assert rows[0]["status"] == 502 and rows[0]["error"] == "mid_stream"
    assert rows[0]["completion_tokens"] == 5 and rows[0]["usage_estimated"] == 1
    assert rows[0]["attempts"] == 1  # never retried once bytes reached the client


def test_client_disconnect_cancels_upstream(
    tmp_path: Path,
    emulators: Callable[..., EmulatorProcess],
    gateway: Callable[..., GatewayProcess],
) -> None:
    a0 = emulators(time_scale=2)
    cfg = fleet_config(
        tmp_path / "fleet.yaml", [{"name": "a0", "provider": "azure", "url": a0.base_url}]
    )
    gw = gateway(cfg)
    with HTTP.stream("POST", gw.base_url + "/chat/completions", json=body(4000), headers=H) as r:
        it = r.iter_lines()
        got = [next(it) for _ in range(4)]
        assert any(ln.startswith("data: ") for ln in got)
        assert running(a0) == 1
    deadline = time.monotonic() + 3  # the upstream request is aborted right away
    while running(a0) > 0:
        assert time.monotonic() < deadline, "upstream still generating after client left"
        time.sleep(0.05)
    rows = ledger_rows(tmp_path, wait_for=1)
    assert [x["status"] for x in rows] == [499]
    assert rows[0]["error"] == "client_disconnected"


def test_graceful_shutdown_drains_open_streams(
    tmp_path: Path,
    emulators: Callable[..., EmulatorProcess],
    gateway: Callable[..., GatewayProcess],
) -> None:
    a0 = emulators(time_scale=10)
    cfg = fleet_config(
        tmp_path / "fleet.yaml", [{"name": "a0", "provider": "azure", "url": a0.base_url}]
    )
    gw = gateway(cfg)
    results: list[list[str]] = []

    def client() -> None:
        with httpx.stream(
            "POST", gw.base_url + "/chat/completions", json=body(60), headers=H, timeout=30
        ) as r:
            results.append([ln for ln in r.iter_lines() if ln])

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.4)  # streams are open
    assert gw.stop(timeout=30) == 0
    for t in threads:
        t.join()
    assert len(results) == 3
    assert all(
        lines[-1] == "data: [DONE]" and not any('"error"' in x for x in lines) for lines in results
    )
    rows = ledger_rows(tmp_path)
    assert len(rows) == 3 and {x["status"] for x in rows} == {200}
    assert all(x["completion_tokens"] == 60 for x in rows)
