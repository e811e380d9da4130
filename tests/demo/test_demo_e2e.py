"""`skyfleet demo` end to end as a real process: plan, emulators, gateway, surge, outage,
report; exits 0 and leaves no process behind, also on Ctrl-C and on a failed start."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow
Start = Callable[..., Any]  # conftest.run_demo: starts `skyfleet demo ARGS…`, returns a DemoProc


def test_demo_30s_end_to_end(run_demo: Start, out_dir: Path) -> None:
    html, js = out_dir / "demo.html", out_dir / "demo.json"
    t0 = time.monotonic()
    dp = run_demo(
        "--duration", "30", "--no-live", "--port", "0", "--html", str(html), "--json", str(js)
    )
    rc = dp.proc.wait(90)
    took = time.monotonic() - t0
    assert rc == 0, dp.output
    assert dp.seen, "the demo started no child process"
    time.sleep(0.3)
    assert dp.leftovers() == [], f"processes left running: {dp.leftovers()}"
    assert took < 30 + 15, f"the demo took {took:.0f}s for --duration 30"
    s = json.loads(js.read_text())
    assert s["outage_down_s"] is not None and s["outage_up_s"] is not None
    assert s["failover_s"] is not None, "the gateway never took the downed provider out"
    assert s["failover_s"] < 10
    assert s["critical_success_rate"] >= 0.99
    assert s["requests"] > 50
    served = {p["provider"]: p["requests"] for p in s["providers"]}
    # The plan picks its providers (N-1 needs at least two); each of them served traffic.
    assert len(served) >= 2 and all(n > 0 for n in served.values()), served
    assert s["single_cloud"]["survives"] == "region" and s["cost_story"]
    page = html.read_text()
    assert "The outage" in page and "out of rotation" in page
    assert "data:image/png;base64," in page and "http" not in page.split("<body>")[0]
    assert "final report" in dp.output and "success (critical)" in dp.output


def test_ctrl_c_stops_everything(run_demo: Start, out_dir: Path) -> None:
    dp = run_demo("--duration", "120", "--no-live", "--port", "0", "--html", "")
    assert dp.wait_for("gateway up", 60), dp.output
    time.sleep(1.0)
    assert dp.seen
    dp.proc.send_signal(signal.SIGINT)
    rc = dp.proc.wait(30)
    assert rc == 130, dp.output
    assert "interrupted" in dp.output
    time.sleep(0.3)
    assert dp.leftovers() == []


def test_port_in_use_is_a_clear_error(run_demo: Start) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        dp = run_demo("--duration", "30", "--no-live", "--port", str(port))
        rc = dp.proc.wait(30)
    assert rc == 2
    assert f"port {port}" in dp.output and "already in use" in dp.output
    assert "Traceback" not in dp.output
    assert dp.leftovers() == []


def test_a_child_that_fails_to_start_stops_the_rest(run_demo: Start, out_dir: Path) -> None:
    plan = out_dir / "bad-plan.yaml"
    entry = (
        "{model: chat, model_spec: SmolLM2-135M, provider: %s, region: r, accelerator: %s, "
        "tier: on_demand, price_per_replica_hour: 1.0, capacity_rps_per_replica: 10, "
        "concurrency_per_replica: 4, replicas: [1]}"
    )
    plan.write_text(
        "meta: {workload: bad, period_hours: 1, periods: 1}\n"
        "models: [{name: chat, model: SmolLM2-135M, demand_rps: [5], tokens_per_request: 100}]\n"
        "entries:\n"
        f"  - {entry % ('good', 'H100')}\n"
        f"  - {entry % ('broken', 'NO-SUCH-GPU')}\n"
    )
    dp = run_demo("--duration", "30", "--no-live", "--port", "0", "--plan", str(plan))
    rc = dp.proc.wait(60)
    assert rc == 2, dp.output
    assert "could not start the emulator" in dp.output and "NO-SUCH-GPU" in dp.output
    assert "Traceback" not in dp.output
    time.sleep(0.3)
    assert dp.leftovers() == []
