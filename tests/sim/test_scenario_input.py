"""Scenario and trace files: durations, and bad input named by file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyfleet.errors import ConfigError
from skyfleet.sim import build_fleet, load_scenario, load_trace, sample_trace_path, simulate
from skyfleet.sim.scenario import parse_seconds

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[2]
PLAN = DATA / "plan-small.yaml"
WORKLOAD = DATA / "workload-small.yaml"


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_durations_accept_seconds_units_and_clock_times() -> None:
    assert parse_seconds(90) == 90
    assert parse_seconds("4h30m") == 4.5 * 3600
    assert parse_seconds("1.5h") == 5400
    assert parse_seconds("10:40") == 10 * 3600 + 40 * 60
    with pytest.raises(ValueError, match="not a duration"):
        parse_seconds("soon")


def test_negative_duration_names_line_and_key(tmp_path: Path) -> None:
    p = write(
        tmp_path, "name: x\noutages:\n  - provider: azure\n    start: 1h\n    duration: -5m\n"
    )
    with pytest.raises(
        ConfigError, match=r"s\.yaml:5: key 'outages\.0\.duration': must be positive"
    ):
        load_scenario(p)


def test_negative_start_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, "surges:\n  - start: -1h\n    duration: 1h\n    multiplier: 2\n")
    with pytest.raises(ConfigError, match=r":2: key 'surges\.0\.start': must not be negative"):
        load_scenario(p)


def test_overlapping_outages_of_one_provider_are_refused(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "outages:\n"
        "  - {provider: azure, start: 1h, duration: 2h}\n"
        "  - {provider: azure, start: 2h, duration: 1h}\n",
    )
    with pytest.raises(ConfigError, match=r":3: key 'outages\.1\.start': .*overlaps outage 0"):
        load_scenario(p)


def test_unknown_key_is_named(tmp_path: Path) -> None:
    p = write(tmp_path, "name: x\noutage: []\n")
    with pytest.raises(ConfigError, match=r":2: key 'outage': unknown key"):
        load_scenario(p)


def test_provider_not_in_the_plan_is_named_with_the_known_ones(tmp_path: Path) -> None:
    p = write(
        tmp_path, "name: x\noutages:\n  - provider: oracle\n    start: 1h\n    duration: 1h\n"
    )
    sc, lines = load_scenario(p)
    fleet = build_fleet(plan=PLAN, workload=WORKLOAD)
    with pytest.raises(
        ConfigError,
        match=r":3: key 'outages\.0\.provider': unknown provider 'oracle'.*azure, coreweave, gcp",
    ):
        simulate(fleet, sc, scenario_path=p, lines=lines)


def test_trace_with_missing_column_names_it(tmp_path: Path) -> None:
    p = write(tmp_path, "timestamp,input_tokens\n0,10\n", "t.csv")
    with pytest.raises(ConfigError, match=r"t\.csv:1: trace is missing column\(s\) output_tokens"):
        load_trace(p)


def test_trace_with_a_bad_value_names_the_line(tmp_path: Path) -> None:
    p = write(tmp_path, "timestamp,input_tokens,output_tokens\n0,10,5\n1.5,ten,5\n", "t.csv")
    with pytest.raises(ConfigError, match=r"t\.csv:3: column 'input_tokens': not a number"):
        load_trace(p)


def test_public_trace_column_names_are_understood(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n",
        "azure.csv",
    )
    tr = load_trace(p)
    assert len(tr) == 2
    assert tr.times[1] == pytest.approx(4.3146, abs=1e-3)


@pytest.mark.parametrize(
    "drill", ["region-power-loss", "fleet-network-loss", "control-plane-bug", "surge-and-spot"]
)
def test_shipped_drills_run_against_a_plan(drill: str) -> None:
    sc, lines = load_scenario(ROOT / "examples/scenarios" / f"{drill}.yaml")
    fleet = build_fleet(plan=PLAN, workload=WORKLOAD)
    res = simulate(fleet, sc, lines=lines)
    s = res.summary()
    assert s["requests"] > 0
    assert len(s["outages"]) == len(sc.outages)


def test_sample_trace_is_shipped_and_loads() -> None:
    tr = load_trace(sample_trace_path())
    assert len(tr) >= 10_000
    assert 20 * 3600 < tr.span <= 24 * 3600
