"""Gradient2-style adaptive concurrency: falls when an endpoint slows, climbs back after."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyfleet.policy.concurrency import AdaptiveLimit, GradientSettings

FAST = GradientSettings(
    initial_limit=32, min_limit=2, max_limit=64, window_s=1.0, tolerance=1.5, min_samples=5
)


def run(lim: AdaptiveLimit, start: float, seconds: int, rtt: float, busy: bool = True) -> float:
    """Feed 10 samples per second for `seconds`; in flight = limit (busy) or 1 (idle)."""
    now = start
    for _ in range(seconds * 10):
        now += 0.1
        lim.on_sample(now, rtt, lim.limit if busy else 1)
    return now


def test_steady_latency_under_full_load_grows_the_limit_to_its_max() -> None:
    lim = AdaptiveLimit(FAST)
    run(lim, 0.0, 120, 0.2)
    assert lim.limit == 64


def test_app_limited_endpoint_keeps_its_limit() -> None:
    lim = AdaptiveLimit(FAST)
    run(lim, 0.0, 30, 0.2, busy=False)
    assert lim.limit == 32


def test_five_times_slower_provider_gets_a_lower_limit_then_recovers() -> None:
    lim = AdaptiveLimit(FAST)
    now = run(lim, 0.0, 15, 0.2)
    before = lim.limit
    history = []
    for _ in range(20):
        now = run(lim, now, 1, 1.0)  # slowed 5x
        history.append(lim.raw_limit)
    assert all(b <= a for a, b in itertools.pairwise(history))
    assert lim.limit <= before / 3
    low = lim.limit
    run(lim, now, 30, 0.2)
    assert lim.limit >= low + 15


def test_overload_answers_back_off_multiplicatively() -> None:
    lim = AdaptiveLimit(FAST)
    lim.on_drop(0.0, 32)
    assert lim.on_drop(1.0, 32)
    assert lim.raw_limit == pytest.approx(32 * 0.9)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        GradientSettings(initial_limit=1, min_limit=2, max_limit=64, window_s=0.0, tolerance=1.5)
    with pytest.raises(ValueError):
        replace(FAST, drop_backoff=1.0)


@settings(max_examples=200, deadline=None)
@given(
    samples=st.lists(
        st.tuples(st.floats(0.0, 2.0), st.floats(0.001, 30.0), st.integers(0, 500), st.booleans()),
        max_size=300,
    )
)
def test_limit_always_within_bounds(samples: list[tuple[float, float, int, bool]]) -> None:
    s = GradientSettings(initial_limit=20, min_limit=3, max_limit=100, window_s=0.5, tolerance=1.5)
    lim = AdaptiveLimit(s)
    now = 0.0
    for gap, rtt, inflight, drop in samples:
        now += gap
        if drop:
            lim.on_drop(now, inflight)
        else:
            lim.on_sample(now, rtt, inflight)
        assert 3 <= lim.raw_limit <= 100
