"""Plan files round-trip, export to a valid gateway config, and the CLI writes every output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from skyfleet.config import parse_config
from skyfleet.planner.api import plan_workload
from skyfleet.planner.plan import Plan, export_gateway_config

from .planner_instances import workload

ROWS = {
    "offerings": [
        {
            "provider": "alpha",
            "region": "r1",
            "accelerator": "H100",
            "reserved_1y": 2.0,
            "on_demand": 3.0,
            "quota": 8,
            "date": "2026-11-20",
            "source": "test",
        },
        {
            "provider": "beta",
            "region": "r1",
            "accelerator": "A100-80GB",
            "on_demand": 2.0,
            "quota": 8,
            "date": "2026-11-20",
            "source": "test",
        },
    ]
}
SKYFLEET = str(Path(sys.executable).with_name("skyfleet"))


def test_plan_round_trips_and_answers_queries(tmp_path: Path, write_yaml) -> None:  # type: ignore[no-untyped-def]
    w = workload([300.0, 600.0], providers=["alpha", "beta"])
    plan = plan_workload(w, [write_yaml("o.yaml", ROWS)], baselines=False).plan
    plan.save(tmp_path / "plan.yaml")
    again = Plan.load(tmp_path / "plan.yaml")
    assert again == plan
    assert sum(n for _, n in again.replicas_at(1)) >= sum(n for _, n in again.replicas_at(0))
    caps = again.capacity_by_provider("chat", 1)
    assert set(caps) == {"alpha", "beta"}
    assert sum(caps.values()) - max(caps.values()) >= 600.0 - 1e-6  # N-1


def test_export_is_a_valid_gateway_config(write_yaml) -> None:  # type: ignore[no-untyped-def]
    w = workload([300.0, 600.0], providers=["alpha", "beta"])
    plan = plan_workload(w, [write_yaml("o.yaml", ROWS)], baselines=False).plan
    cfg = export_gateway_config(plan, base_port=9100, served_model={"chat": "SmolLM2-135M"})
    fleet = parse_config(cfg)
    peak = sum(max(e.replicas) for e in plan.entries)
    assert len(fleet.endpoints) == peak
    assert {e.url for e in fleet.endpoints} == {
        f"http://127.0.0.1:{9100 + i}/v1" for i in range(peak)
    }
    for ep in fleet.endpoints:
        assert ep.tier == ("primary" if "reserved" in ep.name else "spillover")
    assert fleet.models[0].name == "chat" and len(fleet.models[0].endpoints) == peak
    fb = {
        "name": "openai-chat",
        "provider": "openai",
        "url": "https://api.openai.com/v1",
        "model": "gpt-4o-mini",
        "attach": "chat",
    }
    with_fb = parse_config(export_gateway_config(plan, fallbacks=[fb]))
    assert with_fb.endpoints[-1].tier == "fallback"
    assert "openai-chat" in with_fb.models[0].endpoints
    grouped = parse_config(export_gateway_config(plan, per_replica=False))
    assert len(grouped.endpoints) == len([e for e in plan.entries if max(e.replicas) > 0])


def test_cli_writes_plan_json_html_and_gateway_config(tmp_path: Path) -> None:
    wl = Path(__file__).parents[2] / "examples" / "workloads" / "demo-small.yaml"
    out = tmp_path / "plan.yaml"
    r = subprocess.run(
        [
            SKYFLEET,
            "plan",
            str(wl),
            "--out",
            str(out),
            "--json",
            str(tmp_path / "p.json"),
            "--html",
            str(tmp_path / "p.html"),
            "--export-gateway",
            str(tmp_path / "fleet.yaml"),
            "--time-limit",
            "10",
            "--no-baselines",
            "--base-port",
            "9300",
            "--fallback",
            "openai=https://api.openai.com/v1#gpt-4o-mini",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    plan = Plan.load(out)
    assert 3 <= sum(max(e.replicas) for e in plan.entries) <= 12  # a handful for the demo
    assert len(plan.providers) == 4
    for t, d in enumerate(plan.demand("chat")):  # N-1 on the shipped catalog, every period
        caps = plan.capacity_by_provider("chat", t, effective=True)
        for p in plan.providers:
            assert sum(caps.values()) - caps.get(p, 0.0) >= d - 1e-6
    assert json.loads((tmp_path / "p.json").read_text())["plan"]["meta"]["workload"] == "demo-small"
    html = (tmp_path / "p.html").read_text()
    assert "data:image/png;base64" in html and "why" in html
    fleet = parse_config(yaml.safe_load((tmp_path / "fleet.yaml").read_text()))
    assert fleet.endpoints[0].url == "http://127.0.0.1:9300/v1"
    assert fleet.endpoints[-1].tier == "fallback" and fleet.endpoints[-1].model == "gpt-4o-mini"


def test_cli_bad_input_is_one_clean_line(tmp_path: Path) -> None:
    bad = tmp_path / "w.yaml"
    bad.write_text("models: [{name: a, model: SmolLM2-135M, demand: [-1]}]\n")
    r = subprocess.run([SKYFLEET, "plan", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "w.yaml" in r.stderr and "demand" in r.stderr and "Traceback" not in r.stderr


def test_plan_diff_shows_what_changed(tmp_path: Path) -> None:
    wl = Path(__file__).parents[2] / "examples" / "workloads" / "demo-small.yaml"
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    quick = ["--no-baselines", "-q", "--max-share", "1.0"]  # the share limit makes it slow
    for out, extra in ((a, []), (b, ["--headroom", "0.3"])):
        r = subprocess.run(
            [SKYFLEET, "plan", str(wl), "--out", str(out), *quick, *extra],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [SKYFLEET, "plan", "diff", str(a), str(b), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["settings"]["headroom"] == [0.1, 0.3]
    assert d["new_cost_per_day"] >= d["old_cost_per_day"]
    assert d["delta_per_day"] == pytest.approx(d["new_cost_per_day"] - d["old_cost_per_day"])
    text = subprocess.run(
        [SKYFLEET, "plan", "diff", str(a), str(b)], capture_output=True, text=True, timeout=60
    )
    assert "headroom: 0.1 → 0.3" in text.stdout and "/day" in text.stdout
    bad = subprocess.run(
        [SKYFLEET, "plan", "diff", str(a), str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "nope.yaml" in bad.stderr


def test_validator_rejects_a_plan_that_breaks_n1_or_a_quota(write_yaml) -> None:  # type: ignore[no-untyped-def]
    from skyfleet.catalog.offerings import expand, load_offerings
    from skyfleet.planner.validate import validate_plan

    w = workload([300.0, 600.0], providers=["alpha", "beta"])
    path = write_yaml("o.yaml", ROWS)
    plan = plan_workload(w, [path], baselines=False).plan
    offs = expand(load_offerings([path]), 0.85)
    assert plan.meta.validated and validate_plan(plan, offs) == []
    weak = plan.model_copy(deep=True)
    for e in weak.entries:
        if e.provider == "alpha":
            e.replicas = [0 for _ in e.replicas]
    assert any("after losing beta" in p for p in validate_plan(weak, offs))
    big = plan.model_copy(deep=True)
    big.entries[0].replicas = [n + 50 for n in big.entries[0].replicas]
    assert any("quota" in p for p in validate_plan(big, offs))


def test_a_binding_quota_has_a_shadow_price_that_relaxing_it_realises(write_yaml) -> None:  # type: ignore[no-untyped-def]
    """The cheap provider's quota binds; the report prices +8 accelerators of it, and a
    re-plan with that quota is cheaper by about as much (an LP estimate)."""

    def rows(quota: int) -> dict[str, object]:
        return {
            "offerings": [
                {
                    "provider": "cheap",
                    "region": "r1",
                    "accelerator": "A100-80GB",
                    "per_instance": 1,
                    "on_demand": 1.0,
                    "quota": quota,
                    "date": "2026-11-20",
                    "source": "test",
                },
                {
                    "provider": "dear",
                    "region": "r1",
                    "accelerator": "A100-80GB",
                    "per_instance": 1,
                    "on_demand": 3.0,
                    "quota": 64,
                    "date": "2026-11-20",
                    "source": "test",
                },
                {
                    "provider": "dear2",
                    "region": "r1",
                    "accelerator": "A100-80GB",
                    "per_instance": 1,
                    "on_demand": 3.2,
                    "quota": 64,
                    "date": "2026-11-20",
                    "source": "test",
                },
            ]
        }

    w = workload(
        [2000.0, 2500.0],
        model="Llama-3.2-1B",
        providers=["cheap", "dear", "dear2"],
        resilience="none",
    )
    plan = plan_workload(w, [write_yaml("a.yaml", rows(8))], time_limit_s=20).plan
    quota = [b for b in plan.binding if b.kind == "quota" and b.what.startswith("cheap")]
    assert quota, plan.binding
    more = plan_workload(w, [write_yaml("b.yaml", rows(16))], baselines=False).plan
    saved = plan.totals.cost_per_day - more.totals.cost_per_day
    assert saved > 0
    assert saved == pytest.approx(quota[0].saves_per_day, rel=0.35)
