"""`steady_state` against a discrete-event run of the iteration-level scheduler it models
(tests/perf/iteration_sim.py, the emulator's schedule), and its basic invariants."""

from __future__ import annotations

import itertools
import math

import pytest

from skyfleet.perf import (
    RequestSizes,
    max_rate_at_slo,
    max_throughput,
    parse_profile_spec,
    rate_at_concurrency,
    steady_state,
)

from .iteration_sim import simulate

CASES = [
    ("Llama-3.1-8B@H100", RequestSizes(1000, 256, 0.0)),
    ("Llama-3.1-70B@H100x4", RequestSizes(500, 128, 0.0)),
    ("Llama-2-70B@H100x8:splitwise-2023", RequestSizes(512, 128, 0.0)),
]


@pytest.mark.parametrize(("spec", "sizes"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("load", [0.3, 0.6, 0.8])
def test_means_match_the_scheduler(spec: str, sizes: RequestSizes, load: float) -> None:
    p = parse_profile_spec(spec)
    rate = load * max_throughput(p, sizes)
    model = steady_state(p, rate, sizes)
    sim = simulate(p, rate, sizes, n_requests=5000, seed=7)
    assert model.stable
    # The model is within ~2% of long runs; 5000 requests leave a few % of noise.
    assert model.ttft_mean == pytest.approx(sim.ttft_mean, rel=0.06)
    assert model.tpot_mean == pytest.approx(sim.tpot_mean, rel=0.06)
    assert model.batch == pytest.approx(sim.batch_mean, rel=0.06)
    assert model.ttft_p == pytest.approx(sim.ttft_p99, rel=0.15)


def test_kv_bound_queueing_is_modelled() -> None:
    """A small-memory device queues for KV slots (24 here): the Erlang-C wait is in the
    right range (a coarse approximation: within 50% of the scheduler's)."""
    p = parse_profile_spec("Llama-3.1-8B@L4")
    sizes = RequestSizes(500, 200, 0.0)
    rate = 0.75 * max_throughput(p, sizes)
    model = steady_state(p, rate, sizes)
    sim = simulate(p, rate, sizes, n_requests=4000, seed=3)
    assert model.ttft_mean > 1.5 * p.prefill_time(500)
    assert model.ttft_mean == pytest.approx(sim.ttft_mean, rel=0.5)


def test_zero_load_is_one_request_alone() -> None:
    p = parse_profile_spec("Llama-3.1-8B@H100")
    sizes = RequestSizes(1000, 100)
    s = steady_state(p, 1e-9, sizes)
    assert s.ttft_mean == pytest.approx(p.prefill_time(1000), rel=1e-3)
    assert s.tpot_mean == pytest.approx(p.decode_step_time(1, sizes.avg_context), rel=1e-3)


def test_overload_is_unstable_and_saturation_is_the_boundary() -> None:
    p = parse_profile_spec("Llama-3.1-70B@H100x4")
    sizes = RequestSizes(1000, 256)
    top = max_throughput(p, sizes)
    assert steady_state(p, top * 0.99, sizes).stable
    over = steady_state(p, top * 1.05, sizes)
    assert not over.stable and math.isinf(over.ttft_mean)


def test_latency_grows_with_load_and_littles_law_holds() -> None:
    p = parse_profile_spec("Llama-3.1-8B@H100")
    sizes = RequestSizes(1000, 256)
    top = max_throughput(p, sizes)
    states = [steady_state(p, f * top, sizes) for f in (0.2, 0.5, 0.8)]
    for a, b in itertools.pairwise(states):
        assert b.ttft_mean >= a.ttft_mean and b.tpot_mean >= a.tpot_mean and b.batch > a.batch
    for s in states:
        in_system = s.rate * s.e2e_mean
        assert s.batch <= in_system + 1e-9  # running ⊆ in system


def test_slo_capacity_meets_the_slo() -> None:
    p = parse_profile_spec("Llama-3.1-8B@H100")
    sizes = RequestSizes(2000, 200)
    rate = max_rate_at_slo(p, sizes, ttft_slo_s=0.3, tpot_slo_s=0.03)
    s = steady_state(p, rate, sizes)
    assert 0 < rate < max_throughput(p, sizes)
    assert s.ttft_p <= 0.3 and s.tpot_mean <= 0.03


def test_closed_loop_users_match_littles_law() -> None:
    p = parse_profile_spec("Llama-3.1-8B@H100")
    sizes = RequestSizes(1000, 256)
    s = rate_at_concurrency(p, sizes, 64)
    assert s.rate * s.e2e_mean == pytest.approx(64, rel=1e-3)
