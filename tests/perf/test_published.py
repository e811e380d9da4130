"""Defaults (with the matching engine preset) against published measurements, and the
calibration path (fit_profile) on the same points. Data and tolerances: published.yaml."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from skyfleet.catalog import GIB, get_accelerator, get_model
from skyfleet.perf import (
    DecodePoint,
    EngineSettings,
    PrefillPoint,
    RequestSizes,
    default_profile,
    fit_profile,
    kv_capacity_tokens,
    max_throughput,
    rate_at_concurrency,
    weight_bytes_per_device,
)

DATA = Path(__file__).with_name("published.yaml")


@cache
def published() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DATA.read_text())
    return data


def rel(model: float, measured: float) -> float:
    return abs(model / measured - 1.0)


def splitwise_systems() -> list[dict[str, Any]]:
    systems: list[dict[str, Any]] = published()["splitwise_2023"]["systems"]
    return systems


def _sid(s: dict[str, Any]) -> str:
    return f"{s['accelerator']}x{s['tp']}"


@pytest.mark.parametrize("system", splitwise_systems(), ids=_sid)
def test_splitwise_decode_and_prefill_within_tolerance(system: dict[str, Any]) -> None:
    block = published()["splitwise_2023"]
    tol = block["tolerance"]
    p = default_profile(block["model"], system["accelerator"], system["tp"], None, block["preset"])
    ctx = block["decode_context_per_seq"]
    for batch, ms in system["decode_ms"].items():
        got = p.decode_step_time(batch, batch * ctx) * 1e3
        assert rel(got, ms) <= tol["decode"], f"decode B={batch}: {got:.1f} vs {ms} ms"
    for tokens, ms in system["prefill_ms"].items():
        got = p.prefill_time(tokens) * 1e3
        limit = tol["prefill"] if tokens <= 2048 else tol["prefill_long"]
        assert rel(got, ms) <= limit, f"prefill {tokens}: {got:.0f} vs {ms} ms"


@pytest.mark.parametrize("system", splitwise_systems(), ids=_sid)
def test_fit_profile_reaches_ten_percent_on_splitwise(system: dict[str, Any]) -> None:
    block = published()["splitwise_2023"]
    tol = block["tolerance"]
    ctx = block["decode_context_per_seq"]
    base = default_profile(block["model"], system["accelerator"], system["tp"])
    dec = [
        DecodePoint(batch=b, context=b * ctx, seconds=ms / 1e3)
        for b, ms in system["decode_ms"].items()
    ]
    pre = [PrefillPoint(tokens=n, seconds=ms / 1e3) for n, ms in system["prefill_ms"].items()]
    fitted = fit_profile(base, dec, pre)
    for d in dec:
        assert rel(fitted.decode_step_time(d.batch, d.context), d.seconds) <= tol["fitted"]
    errors = sorted(rel(fitted.prefill_time(q.tokens), q.seconds) for q in pre)
    assert errors[-2] <= tol["fitted"]  # every prefill point but the worst within 10%
    assert errors[-1] <= tol["fitted_outlier"]


def _trt_cases() -> list[tuple[dict[str, Any], str, float]]:
    block = published()["trtllm_max_throughput"]
    return [(s, k, v) for s in block["systems"] for k, v in s["output_tok_s"].items()]


@pytest.mark.parametrize(
    ("system", "shape", "tok_s"), _trt_cases(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_trtllm_max_throughput_within_tolerance(
    system: dict[str, Any], shape: str, tok_s: float
) -> None:
    block = published()["trtllm_max_throughput"]
    eng = EngineSettings(**block["engine"])
    p = default_profile(system["model"], system["accelerator"], system["tp"], eng, block["preset"])
    i, o = (int(x) for x in shape.split("/"))
    got = max_throughput(p, RequestSizes(i, o)) * o
    assert rel(got, tok_s) <= block["tolerance"], f"{system['model']} {shape}: {got:.0f} vs {tok_s}"


def test_nim_concurrency_sweep_within_tolerance() -> None:
    b = published()["nim_concurrency"]
    p = default_profile(b["model"], b["accelerator"], b["tp"], None, b["preset"])
    sizes = RequestSizes(b["input_tokens"], b["output_tokens"])
    for pt in b["points"]:
        s = rate_at_concurrency(p, sizes, pt["users"])
        assert rel(s.ttft_mean * 1e3, pt["ttft_ms"]) <= b["tolerance"], pt
        assert rel(s.tpot_mean * 1e3, pt["itl_ms"]) <= b["tolerance"], pt
        assert rel(s.output_tokens_per_s, pt["output_tok_s"]) <= b["tolerance"], pt


def test_silybench_vllm_closed_loop_throughput_within_tolerance() -> None:
    b = published()["silybench_vllm"]
    eng = EngineSettings(**b["engine"])
    p = default_profile(b["model"], b["accelerator"], b["tp"], eng, b["preset"])
    for pt in b["points"]:
        s = rate_at_concurrency(
            p, RequestSizes(pt["input_tokens"], pt["output_tokens"]), pt["users"]
        )
        assert rel(s.output_tokens_per_s, pt["output_tok_s"]) <= b["tolerance"], pt


@pytest.mark.parametrize(
    "point", published()["kv_capacity"]["points"], ids=lambda p: f"{p['model']}x{p['tp']}"
)
def test_kv_capacity_matches_engine_logs(point: dict[str, Any]) -> None:
    tol = published()["kv_capacity"]["tolerance"]
    m, a = get_model(point["model"]), get_accelerator(point["accelerator"])
    eng = EngineSettings(gpu_memory_utilization=point["gpu_memory_utilization"])
    got = kv_capacity_tokens(m, a, point["tp"], eng)
    assert rel(got, point["tokens"]) <= tol, f"{got} vs {point['tokens']}"
    if "weights_gib" in point:
        assert rel(weight_bytes_per_device(m, point["tp"]) / GIB, point["weights_gib"]) <= 0.01
