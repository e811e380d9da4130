"""Hedging: delay at a TTFT percentile, extra load capped by a budget, off by default."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyfleet.config import HedgingConfig, OverloadConfig
from skyfleet.policy.hedging import HedgePolicy, HedgeSettings, percentile
from skyfleet.policy.settings import hedge_settings


def settings_of(window_s: float = 60.0, **hedging: object) -> HedgeSettings:
    """Hedging settings as the config gives them (its defaults), with `window_s`."""
    base = hedge_settings(OverloadConfig(hedging=HedgingConfig(**hedging)))  # type: ignore[arg-type]
    return replace(base, window_s=window_s)


def test_off_by_default() -> None:
    h = HedgePolicy(hedge_settings())
    for i in range(100):
        h.record_ttft(0.1)
        h.record_request(float(i))
    assert h.delay_s() is None
    assert not h.try_hedge(100.0)


def test_delay_is_the_configured_percentile_once_enough_samples() -> None:
    h = HedgePolicy(settings_of(enabled=True, percentile=90, min_samples=10))
    for v in range(1, 10):
        h.record_ttft(v / 10)
    assert h.delay_s() is None
    for v in range(10, 101):
        h.record_ttft(v / 10)
    assert h.delay_s() == pytest.approx(9.0)
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0


def test_budget_caps_hedges_and_old_requests_leave_the_window() -> None:
    h = HedgePolicy(settings_of(10, enabled=True, budget_percent=5.0))
    for i in range(200):
        h.record_request(i * 0.01)
    sent = sum(h.try_hedge(2.0) for _ in range(50))
    assert sent == 10
    assert h.extra_load(2.0) == pytest.approx(0.05)
    assert not h.try_hedge(2.5)
    assert not h.try_hedge(20.0)  # window emptied: no requests, no budget
    h.record_request(20.0)
    assert h.extra_load(20.0) == 0.0


@settings(max_examples=200, deadline=None)
@given(
    fraction=st.floats(0.0, 0.5),
    events=st.lists(st.tuples(st.floats(0, 0.5), st.booleans()), max_size=400),
)
def test_hedges_stay_within_the_budget(fraction: float, events: list[tuple[float, bool]]) -> None:
    """Each hedge is sent only while hedges <= fraction x requests in the sliding window, and
    when the whole run fits one window, hedges over the run stay under the cap."""
    windowed = HedgePolicy(settings_of(5, enabled=True, budget_percent=fraction * 100))
    whole = HedgePolicy(settings_of(1e9, enabled=True, budget_percent=fraction * 100))
    now, requests, hedges = 0.0, 0, 0
    for gap, want_hedge in events:
        now += gap
        if want_hedge:
            if windowed.try_hedge(now):
                assert windowed.extra_load(now) <= fraction + 1e-9
            hedges += whole.try_hedge(now)
        else:
            windowed.record_request(now)
            whole.record_request(now)
            requests += 1
        assert hedges <= fraction * requests + 1e-9
