"""Trace rescaling, and the `skyfleet simulate` command end to end (terminal, JSON, HTML)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from skyfleet.sim import load_trace, sample_trace_path
from skyfleet.sim.trace import DAY, replay_arrivals

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from skyfleet.cli import main; main()", "simulate", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_rescaling_hits_the_daily_volume_and_keeps_burstiness() -> None:
    tr = load_trace(sample_trace_path())
    base = tr.rate_series(60.0, DAY, None)
    big = tr.rate_series(60.0, DAY, 2.5e9)
    assert abs(big.sum() * 60.0 / 2.5e9 - 1.0) < 1e-3  # the day's volume is the target

    def cv(x: np.ndarray) -> float:
        return float(x.std() / x.mean())

    assert abs(cv(big) - cv(base)) < 1e-9  # same shape and burstiness, only scaled
    assert cv(base) > 0.3  # the sample is bursty (diurnal + bursts + gamma arrivals)
    # request-level replay: each trace request stands for k requests at its own time
    t, i, o = replay_arrivals(tr, 200_000, 6 * 3600, np.random.default_rng(0))
    k = tr.scale_for(200_000)
    expected = k * (tr.times < 6 * 3600).sum()
    assert abs(len(t) / expected - 1.0) < 0.05
    assert np.all(np.diff(t) >= 0)
    assert i.min() >= 1 and o.min() >= 1


def test_cli_runs_a_drill_and_writes_json_and_html(tmp_path: Path) -> None:
    html = tmp_path / "r.html"
    r = cli(
        "--plan",
        str(DATA / "plan-small.yaml"),
        "--workload",
        str(DATA / "workload-small.yaml"),
        "--scenario",
        "examples/scenarios/region-power-loss.yaml",
        "--json",
        "--html",
        str(html),
        "--value-per-request",
        "0.01",
        "--step",
        "300",
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    s = doc["summary"]
    assert abs(s["requests"] - s["served"] - s["shed"] - s["failed"]) < 1e-6 * s["requests"]
    assert s["outages"][0]["provider"] == "azure"  # @largest resolved
    providers = {row["provider"] for row in doc["business_impact"]["providers"]}
    assert providers == {"azure", "gcp", "coreweave"}
    assert len(doc["series"]["slo_attainment"]) == 24 * 60 // 5
    text = html.read_text()
    assert text.count("data:image/png;base64,") >= 4 and "Business impact" in text


def test_cli_terminal_summary_with_a_trace() -> None:
    r = cli(
        "--plan",
        str(DATA / "plan-small.yaml"),
        "--trace",
        "sample",
        "--daily-volume",
        "5000000",
        "--no-impact",
        "--hours",
        "6",
    )
    assert r.returncode == 0, r.stderr
    assert "SLO attainment" in r.stdout and "by priority" in r.stdout


def test_cli_bad_scenario_is_one_clean_line_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("outages:\n  - provider: nosuch\n    start: 1h\n    duration: 1h\n")
    r = cli("--plan", str(DATA / "plan-small.yaml"), "--scenario", str(bad))
    assert r.returncode == 2
    err = " ".join(r.stderr.split())  # rich wraps long lines
    assert "bad.yaml:2: key 'outages.0.provider': unknown provider 'nosuch'" in err
    assert "Traceback" not in r.stderr


def test_cli_simulates_a_gateway_config() -> None:
    r = cli(
        "--config",
        str(DATA / "fleet-small.yaml"),
        "--workload",
        str(DATA / "workload-small.yaml"),
        "--scenario",
        "examples/scenarios/region-power-loss.yaml",
        "--json",
        "--step",
        "300",
        "--daily-volume",
        "3000000",
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["meta"]["fleet"].startswith("config: 3 groups")
    assert abs(doc["summary"]["requests"] / 3e6 - 1) < 0.01
    assert 0.5 < doc["summary"]["slo_attainment"] < 0.99  # no N-1: losing aws hurts
    served = doc["summary"]["served"]
    assert served > 0
    assert {row["provider"] for row in doc["business_impact"]["providers"]} == {"aws", "gcp"}
