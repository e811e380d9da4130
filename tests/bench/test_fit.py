"""Engine iterations recovered from token timestamps, and the profile fit built on them.

The requests are produced by the emulator's own scheduler in virtual time
(`skyfleet.emulator.virtual.run_trace`), so every iteration's true batch, context and
duration are known exactly; client jitter and a per-request client overhead are added
where the test says so.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from skyfleet.bench.arrivals import arrival_times
from skyfleet.bench.fit import TIMING_PARAMS as PARAMS
from skyfleet.bench.fit import decode_points, fit_from_sweep
from skyfleet.bench.iterations import observe_iterations
from skyfleet.bench.metrics import RequestResult, summarize
from skyfleet.bench.sweep import SweepPoint, decode_batch, mean_batch
from skyfleet.emulator.virtual import run_trace
from skyfleet.perf import Profile, default_profile

from .known_engine import TRUE, fit_violations


def requests(
    arrivals: list[float],
    prompt: int,
    output: int,
    *,
    overhead: float = 0.0,
    jitter: float = 0.0,
    seed: int = 0,
    profile: Profile = TRUE,
) -> list[RequestResult]:
    """What a streaming client records for requests sent at `arrivals`: every token
    arrives `overhead` after the engine releases it, plus uniform jitter in [0, jitter)."""
    rng = random.Random(seed)
    tr = run_trace(profile, arrivals, prompt, output)
    out = []
    for i, (sent, toks) in enumerate(zip(arrivals, tr.tokens, strict=True)):
        seen = [t + overhead + rng.random() * jitter for t in toks]
        out.append(
            RequestResult(
                i, "", sent, sent, input_tokens=prompt, output_tokens=len(seen),
                ttft=seen[0] - sent, e2e=seen[-1] - sent, itl=list(np.diff(seen)),
                usage_reported=True,
            )
        )  # fmt: skip
    return out


def closed_loop(n: int, prompt: int, output: int, rounds: int = 3) -> list[float]:
    """Arrivals of `n` requests at a time, `rounds` times, far enough apart."""
    return [r * 1000.0 + i * 1e-3 for r in range(rounds) for i in range(n)]


def test_iterations_are_recovered_exactly_without_jitter() -> None:
    res = requests(list(arrival_times(300, 4.0, seed=3)), 512, 32)
    its = observe_iterations(res)
    tokens = sum(r.output_tokens - 1 for r in res)
    assert sum(i.batch for i in its) > 0.9 * tokens  # nearly every decode token is placed
    clean = [i for i in its if not i.prefills]
    assert len(clean) > 100 and any(i.prefills for i in its)
    for i in its:
        step = TRUE.decode_step_time(i.batch, i.context)
        assert i.duration == pytest.approx(step + sum(map(TRUE.prefill_time, i.prefills)))


def test_an_idle_engine_is_not_an_iteration() -> None:
    """Requests far apart: the gap between one request's last token and the next one's
    first decode token spans idle time and a prefill-only iteration: never reported."""
    res = requests([0.0, 10.0, 20.0], 100, 8)
    its = observe_iterations(res)
    assert len(its) == 3 * 6  # 7 decode tokens each, the first of them has no predecessor
    assert all(i.batch == 1 and not i.prefills for i in its)
    assert max(i.duration for i in its) < 0.1


def test_several_tokens_per_chunk_are_left_out() -> None:
    res = requests([0.0, 0.01], 100, 8)
    for r in res:  # usage says 8 tokens, the stream had 4 chunks
        r.itl = r.itl[:3]
    assert observe_iterations(res) == []


def test_decode_points_are_robust_to_jitter() -> None:
    res = requests(list(arrival_times(400, 4.0, seed=4)), 512, 32, jitter=0.002, seed=1)
    pts = decode_points(observe_iterations(res))
    assert len(pts) >= 5
    for p in pts:
        if p.weight >= 5:  # ≥ 25 iterations
            true = TRUE.decode_step_time(p.batch, p.context)
            assert p.seconds == pytest.approx(true, rel=0.03)


def _point(kind: str, res: list[RequestResult], rate: float | None = None) -> SweepPoint:
    s = summarize(res)
    its = observe_iterations(res)
    window = (min(r.sent for r in res), max(r.done for r in res))
    return SweepPoint(kind, rate, s, True, decode_batch(s), None, its, mean_batch(its, window, 1))


def sweep_points(overhead: float, jitter: float, profile: Profile = TRUE) -> list[SweepPoint]:
    """Probes, the long-context closed loop and three Poisson rates, as a sweep runs them."""
    kw = {"overhead": overhead, "jitter": jitter, "profile": profile}
    pts = [
        _point("probe", requests([k * 100.0 for k in range(3)], n, 32, **kw))
        for n in (128, 512, 1024, 2048)
    ]
    pts.append(_point("context", requests(closed_loop(12, 2048, 32), 2048, 32, **kw)))
    for rate in (2.0, 4.0, 5.0):
        times = list(arrival_times(150, rate, seed=int(rate)))
        pts.append(_point("rate", requests(times, 512, 32, seed=int(rate), **kw), rate))
    return pts


@pytest.mark.parametrize(("overhead", "jitter"), [(0.0, 0.0), (0.012, 0.0), (0.012, 0.003)])
def test_fit_recovers_every_parameter_and_the_client_overhead(
    overhead: float, jitter: float
) -> None:
    base = default_profile("Llama-3.1-8B", "H100-SXM-80GB")
    fit = fit_from_sweep(base, sweep_points(overhead, jitter))
    assert fit.method == "iterations" and not fit.warnings
    tol = 0.01 if jitter == 0 else 0.05
    for k in PARAMS:
        assert getattr(fit.profile, k) == pytest.approx(getattr(TRUE, k), rel=tol), k
    assert fit.client_overhead_s == pytest.approx(overhead, abs=0.002)
    assert fit.profile.kv_capacity_tokens == base.kv_capacity_tokens
    assert fit.profile.source == "bench"


def test_without_visible_iterations_the_fit_falls_back_to_tpot() -> None:
    pts = sweep_points(0.0, 0.0)
    for p in pts:
        p.iterations = []
    fit = fit_from_sweep(default_profile("Llama-3.1-8B", "H100-SXM-80GB"), pts)
    assert fit.method == "tpot" and fit.client_overhead_s is None
    assert "iterations not visible" in fit.warnings[0]
    for b in (1, 4, 8):  # the step is still predicted over the measured range
        c = b * (512 + 16)
        assert fit.profile.decode_step_time(b, c) == pytest.approx(
            TRUE.decode_step_time(b, c), rel=0.10
        )


def test_other_traffic_on_the_endpoint_is_warned_about() -> None:
    pts = sweep_points(0.0, 0.0)
    base = default_profile("Llama-3.1-8B", "H100-SXM-80GB")
    assert not fit_from_sweep(base, pts).warnings
    rate = pts[-1]
    assert rate.observed_batch is not None
    rate.scraped_batch = 2 * rate.observed_batch  # the server ran more than we sent
    assert "other traffic" in fit_from_sweep(base, pts).warnings[-1]


def test_the_quadratic_prefill_term_is_fitted_when_asked() -> None:
    quad = TRUE.model_copy(update={"prefill_quad_s": 2e-8})  # +28 % at 2,048 tokens
    base = default_profile("Llama-3.1-8B", "H100-SXM-80GB")
    pts = sweep_points(0.005, 0.0, quad)
    fit = fit_from_sweep(base, pts, quadratic=True)
    for k in (*PARAMS, "prefill_quad_s"):
        assert getattr(fit.profile, k) == pytest.approx(getattr(quad, k), rel=0.02), k
    assert fit.client_overhead_s == pytest.approx(0.005, abs=5e-4)
    line = fit_from_sweep(base, pts).profile  # a line through the same points
    assert line.prefill_quad_s == 0.0
    assert abs(line.prefill_time(2048) / quad.prefill_time(2048) - 1) < 0.1


def test_the_emulator_tests_fit_check_accepts_truth_and_fails_wrong_profiles() -> None:
    """tests/bench/test_emulator.py judges the sweep's fitted profile with `fit_violations`:
    the true profile passes, and plausibly wrong fits — each a mistake a broken fit makes —
    fail it, so that test can fail."""
    assert fit_violations(TRUE) == []
    wrong = {
        "prefill slope 15 % high": {"prefill_per_token_s": TRUE.prefill_per_token_s * 1.15},
        "client overhead (30 ms) folded into prefill": {
            "prefill_base_s": TRUE.prefill_base_s + 0.03
        },
        "decode step 10 % low at every batch": {
            "decode_base_s": TRUE.decode_base_s * 0.9,
            "decode_per_seq_s": TRUE.decode_per_seq_s * 0.9,
            "decode_per_ctx_token_s": TRUE.decode_per_ctx_token_s * 0.9,
        },
        "per-sequence term lost (step at batch 12 −17 %)": {"decode_per_seq_s": 0.0},
    }
    for name, update in wrong.items():
        assert fit_violations(TRUE.model_copy(update=update)), name
