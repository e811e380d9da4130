"""Per-tenant limits: GCRA accuracy, exact TPM correction, concurrency, budget, headers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyfleet.policy.ratelimit import (
    DAY_S,
    Gcra,
    RateLimiter,
    TenantLimiter,
    TenantLimits,
    format_reset,
)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0ms"),
        (0.02, "20ms"),
        (1.0, "1s"),
        (1.5, "1.5s"),
        (17.4361, "17.436s"),
        (360.0, "6m0s"),
        (3723.0, "1h2m3s"),
    ],
)
def test_reset_is_formatted_like_openai(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


def greedy_count(g: Gcra, start: float, end: float) -> int:
    """A client that sends again the instant it is allowed: how many pass in [start, end)."""
    now, n = start, 0
    while now < end:
        wait = g.retry_after(now)
        if wait > 0:
            now += wait
            continue
        g.charge(now, 1.0)
        n += 1
    return n


@pytest.mark.parametrize("rpm", [7, 60, 600, 10_000])
def test_greedy_client_gets_its_limit_within_5_percent_per_minute(rpm: int) -> None:
    lim = TenantLimits(rpm=rpm)
    g = Gcra(limit=rpm, burst=lim.bucket(rpm))
    first = greedy_count(g, 0.0, 60.0)  # starts with a full bucket
    assert rpm <= first <= math.ceil(rpm * 1.05) + 1
    steady = greedy_count(g, 60.0, 120.0)
    assert abs(steady - rpm) <= 1


@settings(max_examples=200, deadline=None)
@given(
    rpm=st.integers(1, 5000),
    gaps=st.lists(st.floats(0.0, 2.0, allow_nan=False), min_size=1, max_size=300),
    window=st.floats(0.5, 120.0),
)
def test_no_window_ever_exceeds_rate_plus_burst(rpm: int, gaps: list[float], window: float) -> None:
    g = Gcra(limit=rpm, burst=TenantLimits(rpm=rpm).bucket(rpm))
    now, allowed = 0.0, []
    for gap in gaps:
        now += gap
        if g.retry_after(now) == 0.0:
            g.charge(now, 1.0)
            allowed.append(now)
    bound = window / g.interval + g.burst + 1e-6
    for i, t in enumerate(allowed):
        inside = sum(1 for u in allowed[i:] if u <= t + window)
        assert inside <= bound


def test_denied_request_is_not_charged_and_passes_after_retry_after() -> None:
    t = TenantLimiter(TenantLimits(rpm=60))  # burst 3
    for _ in range(3):
        assert t.try_acquire(0.0, 0).allowed
    d = t.try_acquire(0.0, 0)
    assert not d.allowed and d.reason == "requests"
    assert d.retry_after_s == pytest.approx(1.0)
    assert t.try_acquire(0.5, 0).allowed is False  # still early; nothing charged
    assert t.try_acquire(1.0, 0).allowed


@settings(max_examples=200, deadline=None)
@given(
    tpm=st.integers(100, 200_000),
    reqs=st.lists(
        st.tuples(st.integers(1, 4000), st.integers(0, 4000), st.floats(0.0, 5.0)),
        min_size=1,
        max_size=40,
    ),
)
def test_tpm_correction_is_exact(tpm: int, reqs: list[tuple[int, int, float]]) -> None:
    """Charging the estimate then correcting equals charging the real usage up front."""
    est = TenantLimiter(TenantLimits(tpm=tpm))
    real = TenantLimiter(TenantLimits(tpm=tpm))
    now = 0.0
    for estimate, actual, gap in reqs:
        now += gap
        assert est.tokens is not None and real.tokens is not None
        est.tokens.charge(now, estimate)
        est.tokens.adjust(now, actual - estimate)
        real.tokens.charge(now, actual)
        probe = now + gap / 2
        assert est.tokens.tat == pytest.approx(real.tokens.tat, abs=1e-6)
        assert est.tokens.remaining(probe) == real.tokens.remaining(probe)


def test_tokens_charged_up_front_then_corrected_on_completion() -> None:
    t = TenantLimiter(TenantLimits(tpm=60_000))  # 1000 tok/s, bucket 3000
    d = t.try_acquire(0.0, est_tokens=2500)
    assert d.allowed and d.charge is not None
    assert t.state(0.0).remaining_tokens == 500
    blocked = t.try_acquire(0.0, est_tokens=1000)
    assert not blocked.allowed and blocked.reason == "tokens"
    assert blocked.retry_after_s == pytest.approx(0.5)
    t.complete(0.0, d.charge, actual_tokens=300)
    assert t.state(0.0).remaining_tokens == 2700
    assert t.try_acquire(0.0, est_tokens=1000).allowed


def test_request_larger_than_bucket_waits_for_a_full_bucket_then_owes() -> None:
    t = TenantLimiter(TenantLimits(tpm=600))  # 10 tok/s, bucket 30
    assert t.try_acquire(0.0, est_tokens=100).allowed  # full bucket: allowed, now owes
    d = t.try_acquire(0.0, est_tokens=10)
    assert not d.allowed and d.retry_after_s == pytest.approx(8.0)  # 100 - 30 + 10 tokens


def test_concurrency_limit_and_release() -> None:
    t = TenantLimiter(TenantLimits(max_concurrency=2))
    a, b = t.try_acquire(0, 10), t.try_acquire(0, 10)
    assert a.allowed and b.allowed
    c = t.try_acquire(0, 10)
    assert not c.allowed and c.reason == "concurrency" and c.retry_after_s > 0
    assert a.charge is not None
    t.complete(1.0, a.charge, actual_tokens=5)
    assert t.try_acquire(1.0, 10).allowed


def test_daily_budget_blocks_until_utc_midnight() -> None:
    t = TenantLimiter(TenantLimits(daily_budget_usd=1.0))
    noon = 20_000 * DAY_S + 12 * 3600
    d = t.try_acquire(noon, 10, est_cost_usd=0.4)
    assert d.allowed and d.charge is not None
    t.complete(noon, d.charge, 10, cost_usd=0.9)
    denied = t.try_acquire(noon + 1, 10, est_cost_usd=0.2)
    assert not denied.allowed and denied.reason == "budget"
    assert denied.retry_after_s == pytest.approx(12 * 3600 - 1)
    assert t.try_acquire(20_001 * DAY_S, 10, est_cost_usd=0.2).allowed


def test_daily_budget_closes_when_spend_reaches_it_even_without_a_cost_estimate() -> None:
    """The gateway passes no cost estimate (0): spend equal to the budget must still refuse."""
    t = TenantLimiter(TenantLimits(daily_budget_usd=1.0))
    d = t.try_acquire(0.0, 10)
    assert d.allowed and d.charge is not None
    t.complete(0.0, d.charge, 10, cost_usd=1.0)
    assert t.try_acquire(1.0, 10).reason == "budget"
    assert not TenantLimiter(TenantLimits(daily_budget_usd=0.0)).try_acquire(0.0, 10).allowed


def test_headers_as_openai_sends_them() -> None:
    t = TenantLimiter(TenantLimits(rpm=600, tpm=60_000))
    assert t.try_acquire(0.0, est_tokens=1200).allowed
    h = t.state(0.0).headers()
    assert h["x-ratelimit-limit-requests"] == "600"
    assert h["x-ratelimit-remaining-requests"] == "29"  # bucket of 30 (3 s of 600/min)
    assert h["x-ratelimit-reset-requests"] == "100ms"
    assert h["x-ratelimit-limit-tokens"] == "60000"
    assert h["x-ratelimit-remaining-tokens"] == "1800"
    assert h["x-ratelimit-reset-tokens"] == "1.2s"
    assert TenantLimiter(TenantLimits()).state(0.0).headers() == {}


def test_refund_undoes_a_charge() -> None:
    t = TenantLimiter(TenantLimits(rpm=60, tpm=6000, max_concurrency=1))
    before = t.state(5.0)
    d = t.try_acquire(5.0, 200)
    assert d.charge is not None
    t.refund(5.0, d.charge)
    assert t.state(5.0) == before
    assert t.in_flight == 0


def test_registry_keeps_state_and_rebuilds_on_new_limits() -> None:
    reg = RateLimiter()
    a = reg.get("acme", TenantLimits(rpm=60))
    assert a.try_acquire(0, 0).allowed
    assert reg.get("acme", TenantLimits(rpm=60)) is a
    b = reg.get("acme", TenantLimits(rpm=120))
    assert b is not a and b.in_flight == 1
