"""The pure scheduler core: admission, KV blocks, iteration timing, agreement with the model."""

from __future__ import annotations

import pytest

from skyfleet.emulator.engine import Engine
from skyfleet.emulator.virtual import run_poisson
from skyfleet.perf import EngineSettings, RequestSizes, max_throughput, parse_profile_spec

H100 = "Llama-3.1-8B@H100-SXM-80GB"


def small_kv(tokens: int, **engine: int) -> Engine:
    """An engine whose KV cache holds `tokens` tokens."""
    p = parse_profile_spec(H100)
    eng = p.engine.model_copy(update=engine)
    return Engine(p.model_copy(update={"kv_capacity_tokens": tokens, "engine": eng}))


def test_admission_is_bounded_by_kv_blocks() -> None:
    eng = small_kv(16 * 100)  # 100 blocks, watermark 1
    seqs = [eng.add(16 * 30, 10) for _ in range(5)]  # 30 blocks per prompt
    eng.step()
    assert len(eng.running) == 3 and len(eng.waiting) == 2
    assert eng.free_blocks == 10 and eng.kv_usage == pytest.approx(0.9)
    while not all(s.finished for s in seqs):
        eng.step()
    assert eng.idle and eng.free_blocks == eng.total_blocks


def test_admission_is_bounded_by_max_num_seqs() -> None:
    eng = small_kv(100_000, max_num_seqs=4)
    for _ in range(10):
        eng.add(100, 5)
    eng.step()
    assert len(eng.running) == 4 and len(eng.waiting) == 6


def test_a_request_never_joins_an_iteration_that_began_before_it_arrived() -> None:
    """A driver running late steps with the iteration's start time: later arrivals wait."""
    p = parse_profile_spec(H100)
    eng = Engine(p)
    a = eng.add(300, 3, arrival=0.0)
    b = eng.add(200, 3, arrival=0.02)
    r1 = eng.step(now=0.01)  # b arrived after this iteration began
    assert r1.events == [(pytest.approx(p.prefill_time(300)), [a])]
    assert list(eng.waiting) == [b]
    assert [s for _, seqs in eng.step(now=0.019).events for s in seqs] == [a]  # still early
    r2 = eng.step(now=0.03)
    assert [seqs for _, seqs in r2.events] == [[b], [a]]  # b prefilled, then a decodes


def test_iteration_time_is_the_profiles() -> None:
    p = parse_profile_spec(H100)
    eng = Engine(p)
    a, b = eng.add(300, 3), eng.add(200, 3)
    r1 = eng.step()  # both prefilled, first tokens at the end of each prefill
    assert r1.duration == pytest.approx(p.prefill_time(300) + p.prefill_time(200))
    assert r1.events == [(pytest.approx(p.prefill_time(300)), [a]), (r1.duration, [b])]
    c = eng.add(100, 2)
    r2 = eng.step()  # c prefilled, then a decode step for a and b
    ctx = (300 + 1) + (200 + 1)
    assert r2.duration == pytest.approx(p.prefill_time(100) + p.decode_step_time(2, ctx))
    if hasattr(p, "iteration_time"):
        assert r2.duration == pytest.approx(p.iteration_time(2, ctx, [100]))
    assert [s.generated for s in (a, b, c)] == [2, 2, 1]


def test_chunked_prefill_costs_one_prompt_prefill() -> None:
    p = parse_profile_spec(H100, EngineSettings(max_num_batched_tokens=512))
    eng = Engine(p)
    s = eng.add(2000, 2)
    total, steps = 0.0, 0
    while s.generated == 0:
        total += eng.step().duration
        steps += 1
    assert steps == 4  # 512 + 512 + 512 + 464 tokens
    assert total == pytest.approx(p.prefill_time(2000))


def test_preemption_frees_blocks_and_resumes() -> None:
    eng = small_kv(16 * 20)  # 20 blocks
    a, b = eng.add(16 * 8, 60), eng.add(16 * 8, 60)  # 8 blocks each; growth needs more
    preempted = 0
    for _ in range(500):
        preempted += len(eng.step().preempted)
        if eng.idle:
            break
    assert eng.idle and preempted > 0
    assert a.generated == 60 and b.generated == 60
    assert eng.free_blocks == eng.total_blocks


@pytest.mark.parametrize(
    ("prompt", "output", "load"),
    [
        (500, 32, 0.3),
        (500, 32, 0.5),
        (500, 32, 0.7),
        (500, 32, 0.85),  # prefill-heavy near saturation: batch far from Poisson
        (2000, 64, 0.7),
        (100, 256, 0.8),  # decode-heavy
    ],
)
def test_engine_agrees_with_steady_state(prompt: int, output: int, load: float) -> None:
    """The scheduler in virtual time reproduces skyfleet.perf.steady_state's means (long
    runs: the sampling noise of 4000 requests is a few %)."""
    from skyfleet.perf import steady_state

    p = parse_profile_spec(H100)
    sizes = RequestSizes(prompt, output)
    rate = load * max_throughput(p, sizes)
    model = steady_state(p, rate, sizes)
    assert model.stable
    run = run_poisson(p, rate, prompt, output, requests=4000, seed=1)
    assert run.ttft_mean == pytest.approx(model.ttft_mean, rel=0.10)
    assert run.tpot_mean == pytest.approx(model.tpot_mean, rel=0.10)
    assert run.running_mean == pytest.approx(model.batch, rel=0.10)
