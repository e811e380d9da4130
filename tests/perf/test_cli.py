"""`skyfleet profile` and `skyfleet profile-fit` as a user runs them (real processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from skyfleet.errors import ConfigError
from skyfleet.perf import Profile, parse_profile_spec
from skyfleet.perf.fitfile import fit_from_file


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from skyfleet.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_profile_json_reports_the_models_numbers(tmp_path: Path) -> None:
    out = tmp_path / "p.yaml"
    r = run("profile", "Llama-3.1-8B@H100:trtllm-2025", "--json", "--save", str(out))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    p = parse_profile_spec("Llama-3.1-8B@H100", preset="trtllm-2025")
    assert data["source"] == "roofline:trtllm-2025"
    assert data["kv_capacity_tokens"] == p.kv_capacity_tokens
    assert data["prefill_ms"] == p.prefill_time(1000) * 1e3
    assert 0 < data["max_rate_at_slo"] <= data["max_rate"]
    assert Profile.load(out) == p


def test_profile_fit_reads_points_and_writes_a_profile(tmp_path: Path) -> None:
    # Splitwise's H100 TP8 Llama-2-70B decode and prefill (research/bench-resilience.md §1.8).
    points = {
        "base": "Llama-2-70B@H100x8",
        "source": "splitwise perf_model.csv",
        "decode": [
            {"batch": b, "context": b * 576, "seconds": ms / 1e3}
            for b, ms in [(1, 30.6), (8, 32.5), (16, 34.2), (32, 38.6), (64, 50.2)]
        ],
        "prefill": [
            {"tokens": n, "seconds": ms / 1e3}
            for n, ms in [(512, 54), (1024, 78), (2048, 137), (8192, 845)]
        ],
    }
    f = tmp_path / "points.yaml"
    f.write_text(yaml.safe_dump(points))
    out = tmp_path / "fitted.yaml"
    r = run("profile-fit", str(f), "--json", "--save", str(out))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["max_error"] <= 0.10
    fitted = Profile.load(out)
    assert fitted.source == "splitwise perf_model.csv"
    assert abs(fitted.decode_step_time(1, 576) - 0.0306) / 0.0306 <= 0.10


def test_bad_input_is_one_clean_line() -> None:
    r = run("profile", "Llama-3.1-8B@H100:no-such-preset")
    assert r.returncode == 2
    err = " ".join(r.stderr.split())
    assert "known presets: splitwise-2023, trtllm-2025, vllm-2025" in err
    assert "Traceback" not in err


def test_points_file_errors_name_the_file_and_key(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("base: Llama-3.1-8B@H100\ndecode:\n  - {batch: 1, seconds: 0.01}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: key 'decode\.0\.context'"):
        fit_from_file(f)
    f.write_text("decode: []\n")
    with pytest.raises(ConfigError, match="key 'base'"):
        fit_from_file(f)
