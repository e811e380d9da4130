"""Against a real emulator process with a known profile: the bench measures what the perf
model predicts, the sweep finds the model's max rate, and the fit recovers the profile."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from skyfleet.bench import Load, Slo, SyntheticRequests, Target, preflight, run_load
from skyfleet.bench.sweep import SweepConfig, SweepResult, sweep
from skyfleet.bench.workload import LengthDist
from skyfleet.emulator.process import EmulatorProcess, start_emulator
from skyfleet.perf import Profile, RequestSizes, default_profile, max_rate_at_slo, steady_state

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

# A decode-dominated profile (model seconds) where every parameter matters.
TRUE = default_profile("Llama-3.1-8B", "H100-SXM-80GB").model_copy(
    update={
        "prefill_base_s": 0.03,
        "prefill_per_token_s": 0.00015,
        "prefill_quad_s": 0.0,
        "decode_base_s": 0.04,
        "decode_per_seq_s": 0.001,
        "decode_per_ctx_token_s": 3e-6,
        "source": "test",
    }
)
PROMPT, OUTPUT = 512, 32
CHAT_OVERHEAD = 7  # the emulator's chat framing tokens (docs/emulator.md)


def _emulator(tmp: Path, ts: float) -> EmulatorProcess:
    path = tmp / "true.yaml"
    TRUE.save(path)
    return start_emulator(str(path), time_scale=ts, seed=1)


async def calibrate(t: Target, ts: float) -> float:
    """Least client + server overhead per request (wall s): idle requests, tiny prompt.

    Skips the test when even idle single requests miss the emulator's exact decode step by
    more than 4 % (median inter-token gap): the machine is then too busy (CPU-starved
    processes) to judge 10 %.
    """
    idle = await run_load(t, SyntheticRequests(4, 16), Load(concurrency=1, num_requests=16))
    s = idle.summary()
    exact = TRUE.decode_step_time(1, 4 + CHAT_OVERHEAD + 8) / ts
    if abs(s.itl.p50 / exact - 1) > 0.04:
        pytest.skip(f"machine too busy to time the emulator: idle ITL {s.itl.p50 / exact:.2f}×")
    return s.ttft.min - TRUE.prefill_time(4 + CHAT_OVERHEAD) / ts  # the floor, not the noise


@pytest.fixture(scope="module")
def slow_emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmulatorProcess, float]]:
    ts = 5.0
    emu = _emulator(tmp_path_factory.mktemp("emu4"), ts)
    try:
        yield emu, ts
    finally:
        emu.stop()


@pytest.fixture(scope="module")
def swept(slow_emu: tuple[EmulatorProcess, float]) -> tuple[SweepResult, float]:
    """The sweep's result and the measured per-request overhead (endpoint seconds)."""
    import asyncio

    emu, ts = slow_emu

    async def go() -> tuple[SweepResult, float]:
        t, _ = await preflight(Target(emu.url))
        overhead = await calibrate(t, ts) * ts
        cfg = SweepConfig(
            slo=Slo(ttft_s=10.0, tpot_s=0.08),
            steps=2,
            refine=2,
            sync_requests=6,
            requests_per_rate=40,
            max_concurrency=12,
            probe_requests=2,
            time_scale=ts,
        )
        base = default_profile("Llama-3.1-8B", "H100-SXM-80GB")
        res = await sweep(
            t,
            lambda seed: SyntheticRequests(PROMPT, OUTPUT, seed=seed),
            LengthDist.parse(PROMPT),
            LengthDist.parse(OUTPUT),
            cfg,
            base=base,
        )
        return res, overhead

    return asyncio.run(go())


def test_ttft_and_tpot_match_the_perf_model(swept: tuple[SweepResult, float]) -> None:
    """Open-loop runs up to 80 % of the max rate: mean TPOT within 10 % of `steady_state` at
    the measured throughput, mean TTFT (less the least client overhead) within 20 %.

    TTFT gets 20 %: the emulator's engine itself runs 5-30 % above the model's TTFT in this
    regime (a prefill waits for the running decode step and shares its iteration, where
    the model adds half a step), measured with the pure engine, no client involved."""
    res, overhead = swept
    runs = [p for p in res.points if p.kind == "rate" and (p.rate or 0) <= 0.8 * res.max_rate]
    assert runs
    for p in runs:
        s = p.summary
        assert s.failed == 0
        pred = steady_state(TRUE, s.send_rate, RequestSizes(s.mean_input_tokens, OUTPUT))
        ttft = s.ttft.mean - overhead
        assert ttft == pytest.approx(pred.ttft_mean, rel=0.20), (p.rate, overhead, s.ttft.mean)
        assert s.tpot.mean == pytest.approx(pred.tpot_mean, rel=0.10), p.rate


def test_sweep_finds_the_models_max_rate(swept: tuple[SweepResult, float]) -> None:
    res = swept[0]
    sizes = RequestSizes(PROMPT + CHAT_OVERHEAD, OUTPUT)
    expected = max_rate_at_slo(TRUE, sizes, 10.0, 0.08)
    assert res.max_rate == pytest.approx(expected, rel=0.15)
    kinds = [p.kind for p in res.points]
    assert kinds.count("probe") == 4 and "synchronous" in kinds and "throughput" in kinds
    assert any(p.kind == "rate" and not p.meets_slo for p in res.points)


def test_fitted_profile_reproduces_the_emulator(
    swept: tuple[SweepResult, float], tmp_path: Path
) -> None:
    res, overhead = swept
    fit = res.profile
    assert fit is not None and fit.source == "bench"
    assert fit.decode_base_s == pytest.approx(TRUE.decode_base_s, rel=0.10)
    assert fit.prefill_per_token_s == pytest.approx(TRUE.prefill_per_token_s, rel=0.10)
    # decode step and prefill predicted over the measured range
    for b, tol in ((1, 0.10), (4, 0.10), (12, 0.20)):
        c = b * (PROMPT + CHAT_OVERHEAD + OUTPUT / 2)
        assert fit.decode_step_time(b, c) == pytest.approx(TRUE.decode_step_time(b, c), rel=tol)
    # prefill as the client sees it includes the per-request client/server overhead
    for n in (512, 2048):
        assert fit.prefill_time(n) - overhead == pytest.approx(TRUE.prefill_time(n), rel=0.20)
    sizes = RequestSizes(PROMPT + CHAT_OVERHEAD, OUTPUT)
    assert max_rate_at_slo(fit, sizes, 10.0, 0.08) == pytest.approx(
        max_rate_at_slo(TRUE, sizes, 10.0, 0.08), rel=0.15
    )
    # it round-trips as a profile the planner and simulator load
    fit.save(tmp_path / "fit.yaml")
    again = Profile.load(tmp_path / "fit.yaml")
    assert math.isclose(again.decode_base_s, fit.decode_base_s)
