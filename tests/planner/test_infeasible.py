"""Infeasible inputs get a plain statement of the binding constraint, never a solver dump."""

from __future__ import annotations

import pytest

from skyfleet.planner.api import PlanInfeasibleError, plan_workload

from .planner_instances import workload


def _rows(quota: int) -> dict[str, object]:
    return {
        "offerings": [
            {
                "provider": p,
                "region": "r1",
                "accelerator": "H100",
                "on_demand": 3.0,
                "per_instance": 1,
                "quota": quota,
                "date": "2026-11-20",
                "source": "test",
            }
            for p in ("alpha", "beta", "gamma")
        ]
    }


def test_quota_too_small_says_by_how_much(write_yaml) -> None:  # type: ignore[no-untyped-def]
    w = workload([5000.0], providers=["alpha", "beta", "gamma"])
    with pytest.raises(PlanInfeasibleError, match=r"quota too small: .* at most \d+% .*more quota"):
        plan_workload(w, [write_yaml("o.yaml", _rows(2))], baselines=False)


def test_n1_binds_with_one_provider(write_yaml) -> None:  # type: ignore[no-untyped-def]
    w = workload([100.0], providers=["alpha"])
    with pytest.raises(PlanInfeasibleError, match=r"N-1 resilience \(provider\) binds"):
        plan_workload(w, [write_yaml("o.yaml", _rows(8))], baselines=False)


def test_slo_impossible_everywhere() -> None:
    w = workload([10.0], model="Llama-3.1-8B", accelerators=["L4", "A100-80GB"])
    w = w.model_copy(
        update={
            "models": [
                w.models[0].model_copy(
                    update={"slo": w.models[0].slo.model_copy(update={"tpot_ms": 1.0})}
                )
            ]
        }
    )
    with pytest.raises(PlanInfeasibleError, match="SLO impossible on every accelerator"):
        plan_workload(w, baselines=False)


def test_model_too_large() -> None:
    w = workload([10.0], model="Llama-3.1-405B-FP8", accelerators=["L4"])
    with pytest.raises(PlanInfeasibleError, match=r"model too large: .*GB per device"):
        plan_workload(w, baselines=False)


def test_max_share_binds(write_yaml) -> None:  # type: ignore[no-untyped-def]
    w = workload([100.0], providers=["alpha", "beta", "gamma"])
    with pytest.raises(PlanInfeasibleError, match=r"max share 20% per provider binds"):
        plan_workload(w, [write_yaml("o.yaml", _rows(8))], max_share=0.2, baselines=False)
