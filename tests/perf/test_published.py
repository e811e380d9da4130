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
    max_rate_at_slo,
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


def _405b_cases() -> list[tuple[str, str, float]]:
    block = published()["trtllm_405b_tp8"]
    return [
        (s["accelerator"], k, v) for s in block["systems"] for k, v in s["output_tok_s"].items()
    ]


@pytest.mark.parametrize(("accelerator", "shape", "tok_s"), _405b_cases())
def test_405b_tp8_throughput_within_tolerance(accelerator: str, shape: str, tok_s: float) -> None:
    """Llama-3.1-405B at TP8: the all-reduce of every decoding sequence's activations counts."""
    b = published()["trtllm_405b_tp8"]
    eng = EngineSettings(**b["engine"])
    p = default_profile(b["model"], accelerator, b["tp"], eng, b["preset"])
    i, o = (int(x) for x in shape.split("/"))
    got = max_throughput(p, RequestSizes(i, o)) * o
    assert rel(got, tok_s) <= b["tolerance"], f"{accelerator} {shape}: {got:.0f} vs {tok_s}"


def test_tp8_decode_pays_for_the_all_reduce_of_each_sequence() -> None:
    """Per-sequence decode time grows with TP's activation traffic; TP1 has none of it."""
    p1 = default_profile("Llama-3.1-8B", "H100", 1)
    p8 = default_profile("Llama-3.1-8B", "H100", 8)
    overhead = 3e-6  # vllm-2025 per-sequence overhead
    flops_share = (p1.decode_per_seq_s - overhead) / 8  # the matmuls split over 8 devices
    assert p8.decode_per_seq_s - overhead > 2 * flops_share


def test_mlperf_v41_mi300x_offline_and_server() -> None:
    """AMD's MLPerf v4.1 Llama-2-70B results with the default (ROCm) preset for MI300X."""
    b = published()["mlperf_v41_amd"]
    eng = EngineSettings(**b["engine"])
    p = default_profile(b["model"], b["accelerator"], b["tp"], eng, b["preset"])
    assert p.source == "roofline:vllm-rocm-2024"
    sizes = RequestSizes(b["input_tokens"], b["output_tokens"], b["output_scv"])
    per_gpu = max_throughput(p, sizes) * b["output_tokens"]
    for gpus, tok_s in b["offline_tok_s"].items():
        assert rel(per_gpu * gpus, tok_s) <= b["tolerance"], f"{gpus}x: {per_gpu * gpus:.0f}"
    sv = b["server"]
    rate = max_rate_at_slo(p, sizes, sv["ttft_ms"] / 1e3, sv["tpot_ms"] / 1e3, 0.99)
    got = rate * b["output_tokens"] * sv["gpus"]
    assert rel(got, sv["tok_s"]) <= b["tolerance"], f"server {got:.0f} vs {sv['tok_s']}"


def test_oci_vllm_405b_on_mi300x_latency_and_throughput() -> None:
    """vLLM's benchmark_latency (one batched prefill, then 127 decode steps) and
    benchmark_throughput on 8×MI300X, with the default (ROCm) preset."""
    b = published()["oci_vllm_mi300x_405b"]
    eng = EngineSettings(**b["engine"])
    p = default_profile(b["model"], b["accelerator"], b["tp"], eng, b["preset"])
    for batch, seconds in b["latency_128_128_s"].items():
        prefill = p.prefill_base_s + batch * (
            p.prefill_per_token_s * 128 + p.prefill_quad_s * 128**2
        )
        decode = sum(p.decode_step_time(batch, batch * (128 + k)) for k in range(1, 128))
        assert rel(prefill + decode, seconds) <= b["tolerance"], f"B={batch}"
    for shape, tok_s in b["throughput_tok_s"].items():
        i, o = (int(x) for x in shape.split("/"))
        got = max_throughput(p, RequestSizes(i, o)) * o
        assert rel(got, tok_s) <= b["tolerance"], f"{shape}: {got:.0f} vs {tok_s}"


def test_the_vllm_2025_preset_misses_mi300x_which_is_why_amd_has_its_own() -> None:
    """The CUDA-tuned default over-predicts MI300X by more than half; the ROCm one does not."""
    b = published()["mlperf_v41_amd"]
    eng = EngineSettings(**b["engine"])
    sizes = RequestSizes(b["input_tokens"], b["output_tokens"], b["output_scv"])
    cuda = default_profile(b["model"], b["accelerator"], 1, eng, "vllm-2025")
    assert max_throughput(cuda, sizes) * b["output_tokens"] > 1.5 * b["offline_tok_s"][1]
