"""Property tests (hypothesis) of the perf model's monotonicity and of fit_profile."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skyfleet.catalog import get_accelerator, get_model
from skyfleet.errors import DoesNotFitError
from skyfleet.perf import (
    EFFICIENCY_PRESETS,
    DecodePoint,
    EngineSettings,
    PrefillPoint,
    RequestSizes,
    default_profile,
    fit_profile,
    kv_capacity_tokens,
    max_rate_at_slo,
)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SPECS = [
    ("Llama-3.1-8B", "H100-SXM-80GB", 1),
    ("Llama-3.1-8B", "L4", 1),
    ("Llama-3.1-70B", "H100-SXM-80GB", 4),
    ("Mixtral-8x7B", "A100-80GB", 2),
    ("Qwen2.5-32B", "MI300X", 1),
    ("SmolLM2-135M", "TPU-v5e", 1),
]
spec = st.sampled_from(SPECS)
preset = st.sampled_from(sorted(EFFICIENCY_PRESETS))


@FAST
@given(
    spec=spec,
    preset=preset,
    b=st.floats(0, 2048),
    db=st.floats(0, 512),
    ctx=st.floats(0, 2e6),
    dctx=st.floats(0, 1e6),
)
def test_decode_step_non_decreasing_in_batch_and_context(
    spec: tuple[str, str, int], preset: str, b: float, db: float, ctx: float, dctx: float
) -> None:
    p = default_profile(*spec, efficiency=preset)
    t = p.decode_step_time(b, ctx)
    assert p.decode_step_time(b + db, ctx) >= t
    assert p.decode_step_time(b, ctx + dctx) >= t


@FAST
@given(
    spec=spec,
    i=st.integers(16, 4000),
    o=st.integers(2, 1000),
    ttft=st.floats(0.05, 5.0),
    tpot=st.floats(0.005, 0.2),
    tighten=st.floats(0.3, 1.0),
)
def test_capacity_at_slo_non_increasing_as_slo_tightens(
    spec: tuple[str, str, int], i: int, o: int, ttft: float, tpot: float, tighten: float
) -> None:
    p = default_profile(*spec)
    sizes = RequestSizes(i, o)
    loose = max_rate_at_slo(p, sizes, ttft, tpot)
    # Bisection resolves the boundary to 1e-4 relative: allow that much.
    slack = 1e-3 * loose + 1e-9
    assert max_rate_at_slo(p, sizes, ttft * tighten, tpot) <= loose + slack
    assert max_rate_at_slo(p, sizes, ttft, tpot * tighten) <= loose + slack


@FAST
@given(
    model=st.sampled_from(["Llama-3.1-8B", "Llama-3.1-70B", "Mixtral-8x7B", "Qwen2.5-32B"]),
    accel=st.sampled_from(["H100-SXM-80GB", "A100-80GB", "H200", "MI300X", "L40S"]),
    tp=st.sampled_from([1, 2, 4]),
    util=st.floats(0.5, 0.9),
    dutil=st.floats(0, 0.1),
)
def test_kv_capacity_non_decreasing_in_tp_and_memory_utilisation(
    model: str, accel: str, tp: int, util: float, dutil: float
) -> None:
    m, a = get_model(model), get_accelerator(accel)

    def cap(tp_: int, u: float) -> float:
        try:
            return kv_capacity_tokens(m, a, tp_, EngineSettings(gpu_memory_utilization=u))
        except DoesNotFitError:
            return 0.0

    base = cap(tp, util)
    assert cap(tp * 2, util) >= base
    assert cap(tp, min(1.0, util + dutil)) >= base


@FAST
@given(
    spec=spec,
    preset=preset,
    scale=st.floats(0.3, 3.0),
    quad_scale=st.floats(0.0, 3.0),
)
def test_fit_profile_recovers_its_own_parameters(
    spec: tuple[str, str, int], preset: str, scale: float, quad_scale: float
) -> None:
    truth = default_profile(*spec, efficiency=preset)
    truth = truth.model_copy(
        update={
            "decode_base_s": truth.decode_base_s * scale,
            "decode_per_seq_s": truth.decode_per_seq_s / scale,
            "prefill_quad_s": truth.prefill_quad_s * quad_scale,
        }
    )
    dec = [
        DecodePoint(batch=b, context=b * c, seconds=truth.decode_step_time(b, b * c))
        for b, c in [(1, 200), (8, 1000), (32, 300), (64, 2000), (128, 800), (256, 1500)]
    ]
    pre = [PrefillPoint(tokens=n, seconds=truth.prefill_time(n)) for n in (64, 512, 2048, 8192)]
    start = default_profile(*spec)
    fitted = fit_profile(start, dec, pre)
    for name in (
        "decode_base_s",
        "decode_per_seq_s",
        "decode_per_ctx_token_s",
        "prefill_base_s",
        "prefill_per_token_s",
        "prefill_quad_s",
    ):
        want, got = getattr(truth, name), getattr(fitted, name)
        assert math.isclose(got, want, rel_tol=0.01, abs_tol=1e-4 * _scale_of(truth, name)), name


def _scale_of(p: object, name: str) -> float:
    """A parameter's typical contribution, so near-zero terms are compared absolutely."""
    size = {"decode_per_seq_s": 1 / 256, "decode_per_ctx_token_s": 1 / 3e5}.get(name, 1.0)
    size = {"prefill_per_token_s": 1 / 8192, "prefill_quad_s": 1 / 8192**2}.get(name, size)
    return float(p.decode_base_s) * size
