"""Workload and offerings files: examples load, generators shape demand, errors name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyfleet.catalog.offerings import load_offerings
from skyfleet.errors import ConfigError
from skyfleet.workload import load_workload

EXAMPLES = Path(__file__).parents[2] / "examples" / "workloads"


def test_chat_example_is_two_and_a_half_billion_prompts_a_day() -> None:
    w = load_workload(EXAMPLES / "chat-2.5b.yaml")
    assert len(w.models) == 3 and w.n_periods == 168
    assert w.requests_per_day() == pytest.approx(2.5e9, rel=0.01)


def test_generator_follows_diurnal_weekly_and_growth() -> None:
    w = load_workload(EXAMPLES / "chat-2.5b.yaml")
    d = w.demand("assistant")
    gen = w.models[0].demand
    assert not isinstance(gen, list)
    assert max(d[:24]) == pytest.approx(gen.peak_rps, rel=0.001)  # Monday's peak hour
    assert min(d[:24]) == pytest.approx(0.5 * gen.peak_rps, rel=0.01)  # chat trough
    assert d[24 * 5 + 14] < d[14]  # Saturday below Monday
    assert d[24 + 14] > d[14]  # growth
    assert w.demand("Llama-3.1-8B") == d  # by catalog model name too


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("models: []", "key 'models'"),
        ("periods: 2\nmodels: [{name: a, model: SmolLM2-135M, demand: [1, 2, 3]}]", "periods"),
        ("models: [{name: a, model: m, demand: [1], slo: {percentile: 150}}]", "slo.percentile"),
        ("models: [{name: a, model: m, demand: [1], priority: {critical: 0.9}}]", "priority"),
        ("models: [{name: a, model: m, demand: {peak_rps: 5, diurnal: [1, 2]}}]", "diurnal"),
    ],
)
def test_bad_workload_errors_name_file_and_key(tmp_path: Path, text: str, where: str) -> None:
    p = tmp_path / "w.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_workload(p)
    assert str(p) in str(e.value) and where in str(e.value)


def test_catalog_rows_have_date_source_and_cover_the_market() -> None:
    rows = load_offerings()
    assert all(r.date and r.source for r in rows)
    providers = {r.provider for r in rows}
    assert {"aws", "gcp", "azure", "oracle", "coreweave", "lambda", "nebius", "onprem"} <= providers
    accels = {r.accelerator for r in rows}
    assert {
        "H100-SXM-80GB",
        "H200",
        "B200",
        "GB200",
        "A100-80GB",
        "L4",
        "L40S",
        "TPU-v5e",
        "TPU-v6e",
        "MI300X",
    } <= accels
    tiers = sum(
        1 for r in rows for t in ("on_demand", "spot", "reserved_1y", "owned") if r.price(t)
    )
    assert tiers >= 120


def test_override_file_merges_by_key(write_yaml) -> None:  # type: ignore[no-untyped-def]
    path = write_yaml(
        "mine.yaml",
        {
            "offerings": [
                {
                    "provider": "aws",
                    "region": "us-east-1",
                    "accelerator": "H100",
                    "reserved_1y": 3.1,
                    "quota": 64,
                },
                {
                    "provider": "lambda",
                    "region": "us-east-1",
                    "accelerator": "H100",
                    "remove": True,
                },
                {
                    "provider": "acme",
                    "region": "x",
                    "accelerator": "L4",
                    "on_demand": 0.5,
                    "date": "2026-11-25",
                    "source": "our contract",
                },
            ]
        },
    )
    rows = {r.key: r for r in load_offerings([path])}
    aws = rows[("aws", "us-east-1", "H100-SXM-80GB")]
    assert aws.reserved_1y == 3.1 and aws.quota == 64 and aws.on_demand == 6.88
    assert ("lambda", "us-east-1", "H100-SXM-80GB") not in rows
    assert rows[("acme", "x", "L4")].source == "our contract"


def test_bad_override_names_file_and_key(write_yaml) -> None:  # type: ignore[no-untyped-def]
    path = write_yaml(
        "bad.yaml",
        {"offerings": [{"provider": "x", "region": "y", "accelerator": "H100", "on_demand": -1}]},
    )
    with pytest.raises(ConfigError, match=r"bad\.yaml.*on_demand"):
        load_offerings([path])


def test_measured_profile_overrides_the_roofline(tmp_path: Path, write_yaml) -> None:  # type: ignore[no-untyped-def]
    from skyfleet.perf import default_profile
    from skyfleet.planner.api import plan_workload

    slow = default_profile("SmolLM2-135M", "H100-SXM-80GB")
    slow = slow.model_copy(update={"decode_base_s": slow.decode_base_s * 3, "source": "measured"})
    slow.save(tmp_path / "h100.yaml")
    rows = write_yaml(
        "o.yaml",
        {
            "offerings": [
                {
                    "provider": p,
                    "region": "r",
                    "accelerator": "H100",
                    "on_demand": 3.0,
                    "quota": 64,
                    "date": "2026-11-20",
                    "source": "test",
                }
                for p in ("a", "b")
            ]
        },
    )
    base = {
        "name": "chat",
        "model": "SmolLM2-135M",
        "demand": [400.0],
        "slo": {"ttft_ms": 500, "tpot_ms": 30},
    }
    (tmp_path / "w1.yaml").write_text(
        yaml_dump({"models": [base], "planning": {"providers": ["a", "b"]}})
    )
    (tmp_path / "w2.yaml").write_text(
        yaml_dump(
            {"models": [{**base, "profiles": ["h100.yaml"]}], "planning": {"providers": ["a", "b"]}}
        )
    )
    fast = plan_workload(load_workload(tmp_path / "w1.yaml"), [rows], baselines=False).plan
    meas = plan_workload(load_workload(tmp_path / "w2.yaml"), [rows], baselines=False).plan
    assert meas.entries[0].capacity_rps_per_replica < fast.entries[0].capacity_rps_per_replica
    assert sum(max(e.replicas) for e in meas.entries) >= sum(max(e.replicas) for e in fast.entries)


def yaml_dump(data: object) -> str:
    import yaml

    return yaml.safe_dump(data)
