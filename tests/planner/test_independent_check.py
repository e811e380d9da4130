"""Written plans keep their promises, as an independent checker (plan_checker.py) sees them:
quotas per catalog row and tier, and the served share after each provider and region loss
with spot removed — on the shipped examples and on adversarial workloads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from skyfleet.planner.api import PlanInfeasibleError, plan_workload
from skyfleet.workload import Workload, load_workload

from .plan_checker import _Caps, check_plan

ROOT = Path(__file__).parents[2]
SKYFLEET = str(Path(sys.executable).with_name("skyfleet"))


def _row(provider: str, region: str, accel: str, **kw: Any) -> dict[str, Any]:
    return {
        "provider": provider,
        "region": region,
        "accelerator": accel,
        "date": "2026-11-20",
        "source": "test",
        **kw,
    }


def _workload(models: list[dict[str, Any]], providers: list[str], **planning: Any) -> Workload:
    return Workload.model_validate(
        {
            "name": "adversarial",
            "period_hours": 1,
            "models": models,
            "planning": {"providers": providers, **planning},
        }
    )


def _model(name: str, spec: str, demand: list[float], **kw: Any) -> dict[str, Any]:
    return {
        "name": name,
        "model": spec,
        "demand": demand,
        "sizes": kw.pop("sizes", [{"input_tokens": 500, "output_tokens": 200}]),
        "slo": kw.pop("slo", {"ttft_ms": 2000, "tpot_ms": 60}),
        **kw,
    }


def _plan_and_check(tmp_path: Path, w: Workload, rows: list[dict[str, Any]], **kw: Any) -> Any:
    offers = tmp_path / "offerings.yaml"
    offers.write_text(yaml.safe_dump({"offerings": rows}))
    result = plan_workload(w, [offers], baselines=False, time_limit_s=30, **kw)
    path = result.plan.save(tmp_path / "plan.yaml")
    return result.plan, check_plan(path, w, [offers])


@pytest.mark.parametrize(
    "workload", ["examples/workloads/demo-small.yaml", "src/skyfleet/demo/workload.yaml"]
)
def test_shipped_example_plans_pass_the_independent_check(tmp_path: Path, workload: str) -> None:
    out = tmp_path / "plan.yaml"
    r = subprocess.run(
        [SKYFLEET, "plan", str(ROOT / workload), "--out", str(out), "--no-baselines", "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    check = check_plan(out, load_workload(ROOT / workload))
    assert check.problems == []
    assert check.after_provider_loss >= 1.0  # no shedding in these workloads, 10 % headroom
    assert check.normal >= 1.1 - 1e-6


def test_chat_example_plan_passes_the_independent_check(tmp_path: Path) -> None:
    """The 2.5 B prompts/day week: 3 models, mixed TP, ~70 pools, 168 periods."""
    w = load_workload(ROOT / "examples/workloads/chat-2.5b.yaml")
    result = plan_workload(w, baselines=False, time_limit_s=60)
    path = result.plan.save(tmp_path / "plan.yaml")
    check = check_plan(path, w)
    assert check.problems == []
    assert check.after_provider_loss >= 1.1 - 1e-6
    tps = {e.accelerators_per_replica for e in result.plan.entries}
    assert len(tps) >= 2, "the optimiser chose among TP sizes"


def test_mixed_tp_and_quotas_that_are_not_multiples_of_tp(tmp_path: Path) -> None:
    """70B at TP ≥ 4 and 8B at TP 1 share per-GPU-rented H100 regions of 12, 20 and 6 GPUs
    (pooling those would overstate them) and an 8-GPU-instance A100 cloud."""
    rows = (
        [
            _row("alpha", r, "H100", per_instance=8, billing_unit=1, on_demand=3.0, quota=q)
            for r, q in (("r1", 12), ("r2", 20), ("r3", 6))
        ]
        + [
            _row("beta", r, "A100-80GB", per_instance=8, on_demand=2.0, quota=q)
            for r, q in (("r1", 16), ("r2", 24))
        ]
        + [_row("gamma", "r1", "H100", per_instance=8, on_demand=4.0, quota=16)]
    )
    w = _workload(
        [
            _model("big", "Llama-3.1-70B", [3.0, 5.0, 4.0]),
            _model("small", "Llama-3.1-8B", [20.0, 35.0, 25.0]),
        ],
        ["alpha", "beta", "gamma"],
    )
    plan, check = _plan_and_check(tmp_path, w, rows)
    assert check.problems == [], check.problems
    assert check.after_provider_loss >= 1.1 - 1e-6
    used = {(e.provider, e.region) for e in plan.entries}
    assert len(used) >= 3


def _tp4_capacity() -> float:
    caps = _Caps(_workload([_model("big", "Llama-3.1-70B", [1.0])], ["x"]))
    return float(caps("big", "Llama-3.1-70B", "H100-SXM-80GB", 4)[0])


def _six_gpu_regions(demand: float) -> tuple[Workload, list[dict[str, Any]]]:
    rows = [
        _row(p, r, "H100", per_instance=4, billing_unit=1, on_demand=3.0, quota=6)
        for p, regions in (("alpha", ("r1", "r2", "r3")), ("beta", ("r1", "r2")))
        for r in regions
    ]
    w = _workload([_model("big", "Llama-3.1-70B", [demand])], ["alpha", "beta"])
    return w, rows


def test_six_gpu_regions_hold_one_tp4_replica_each_so_this_is_infeasible(tmp_path: Path) -> None:
    """Pooled, alpha's 3 × 6 GPUs look like 4 TP4 replicas; kept apart they are 3. After
    losing alpha, beta's two regions carry 2 replicas: 2.5 replicas' worth cannot be planned."""
    c = _tp4_capacity()
    w, rows = _six_gpu_regions(2.5 * c / 1.1)
    offers = tmp_path / "o.yaml"
    offers.write_text(yaml.safe_dump({"offerings": rows}))
    with pytest.raises(PlanInfeasibleError, match="N-1"):
        plan_workload(w, [offers], baselines=False, time_limit_s=20)


def test_six_gpu_regions_feasible_demand_is_planned_within_each_region(tmp_path: Path) -> None:
    c = _tp4_capacity()
    w, rows = _six_gpu_regions(1.5 * c / 1.1)
    plan, check = _plan_and_check(tmp_path, w, rows)
    assert check.problems == [], check.problems
    for e in plan.entries:
        assert max(e.replicas) * e.accelerators_per_replica <= 6


SPOT_ROWS = [
    _row(p, r, "A100-80GB", per_instance=1, on_demand=3.0, spot=0.6, quota=64, spot_quota=256)
    for p in ("alpha", "beta", "gamma")
    for r in ("r1", "r2")
]


def test_spot_heavy_plan_survives_a_loss_with_all_spot_reclaimed(tmp_path: Path) -> None:
    """Only critical traffic must survive a loss, so most capacity can be cheap spot; after a
    loss with every spot replica reclaimed, the critical share (plus headroom) still runs."""
    w = _workload(
        [
            _model(
                "chat",
                "Llama-3.1-8B",
                [300.0, 600.0, 450.0],
                priority={"critical": 0.3, "standard": 0.4, "sheddable": 0.3},
            )
        ],
        ["alpha", "beta", "gamma"],
        shed_on_loss=["sheddable", "standard"],
    )
    plan, check = _plan_and_check(tmp_path, w, SPOT_ROWS)
    assert check.problems == [], check.problems
    spot = sum(max(e.replicas) for e in plan.entries if e.tier == "spot")
    assert spot > sum(max(e.replicas) for e in plan.entries if e.tier != "spot")
    assert check.after_provider_loss >= 0.3 * 1.1 - 1e-6
    assert check.normal >= 1.1 - 1e-6


def test_counting_spot_in_survivors_is_what_breaks_when_spot_is_reclaimed(tmp_path: Path) -> None:
    """The old behaviour (spot counted after a loss at its availability) is still available as
    `spot_in_survivors: discounted`; the checker shows what it costs when spot goes too."""
    w = _workload(
        [_model("chat", "Llama-3.1-8B", [30.0, 60.0, 45.0])],
        ["alpha", "beta", "gamma"],
        spot_in_survivors="discounted",
    )
    plan, check = _plan_and_check(tmp_path, w, SPOT_ROWS)
    assert plan.meta.spot_in_survivors == "discounted"
    assert check.after_provider_loss < 0.9  # most capacity was spot
    assert any("spot gone" in p for p in check.problems)


def test_shedding_sheddable_traffic_during_a_loss_is_planned_and_reported(tmp_path: Path) -> None:
    w = _workload(
        [
            _model(
                "chat",
                "Llama-3.1-8B",
                [30.0, 60.0],
                priority={"critical": 0.2, "standard": 0.5, "sheddable": 0.3},
            )
        ],
        ["alpha", "beta", "gamma"],
        shed_on_loss=["sheddable"],
    )
    plan, check = _plan_and_check(tmp_path, w, SPOT_ROWS)
    assert check.problems == [], check.problems
    assert check.after_provider_loss >= 0.7 * 1.1 - 1e-6
    (cov,) = plan.coverage
    assert cov.required == pytest.approx(0.7)
    assert cov.served_after_worst_loss >= 0.77 - 1e-6


ONE_PROVIDER_ROWS = [
    _row("alpha", r, "H200", per_instance=8, on_demand=4.0, quota=16) for r in ("r1", "r2")
] + [_row(p, "r1", "L40S", per_instance=8, on_demand=1.0, quota=64) for p in ("beta", "gamma")]


def _big_model_workload(**planning: Any) -> Workload:
    return _workload(
        [
            _model(
                "frontier", "Llama-3.1-405B-FP8", [0.2, 0.4], slo={"ttft_ms": 5000, "tpot_ms": 120}
            )
        ],
        ["alpha", "beta", "gamma"],
        **planning,
    )


def test_a_model_only_one_provider_can_run_says_so(tmp_path: Path) -> None:
    offers = tmp_path / "o.yaml"
    offers.write_text(yaml.safe_dump({"offerings": ONE_PROVIDER_ROWS}))
    with pytest.raises(PlanInfeasibleError, match=r"can run only on alpha"):
        plan_workload(_big_model_workload(), [offers], baselines=False, time_limit_s=20)


def test_a_model_only_one_provider_can_run_survives_a_region_loss(tmp_path: Path) -> None:
    w = _big_model_workload(resilience="region")
    plan, check = _plan_and_check(tmp_path, w, ONE_PROVIDER_ROWS)
    assert check.problems == [], check.problems
    assert check.after_region_loss >= 1.1 - 1e-6
    assert {e.region for e in plan.entries} == {"r1", "r2"}


def test_the_checker_fails_a_plan_that_breaks_its_promise(tmp_path: Path) -> None:
    """Take one provider's replicas out of a good plan file: the checker must object."""
    w = _workload([_model("chat", "Llama-3.1-8B", [30.0, 60.0])], ["alpha", "beta", "gamma"])
    _, check = _plan_and_check(tmp_path, w, SPOT_ROWS)
    assert check.problems == []
    data = yaml.safe_load((tmp_path / "plan.yaml").read_text())
    victim = next(e["provider"] for e in data["entries"] if e["tier"] != "spot")
    for e in data["entries"]:
        if e["provider"] != victim and e["tier"] != "spot":
            e["replicas"] = [max(0, n - 1) for n in e["replicas"]]
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(data))
    bad = check_plan(broken, w, [tmp_path / "offerings.yaml"])
    assert any(f"losing provider {victim}" in p for p in bad.problems), bad.problems
    for e in data["entries"]:
        e["replicas"] = [n + 300 for n in e["replicas"]]
    broken.write_text(yaml.safe_dump(data))
    assert any(
        p.startswith("quota") for p in check_plan(broken, w, [tmp_path / "offerings.yaml"]).problems
    )
