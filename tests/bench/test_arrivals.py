"""Arrival schedules: empirical rate and coefficient of variation match what was asked."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from skyfleet.bench.arrivals import arrival_times, arrivals_for, gap_stats


def _z_rate_ok(times: np.ndarray, rate: float) -> bool:
    """Mean gap within 4 standard errors of 1/rate (gap std = CV/rate)."""
    gaps = np.diff(np.concatenate([[0.0], times]))
    se = gaps.std(ddof=1) / math.sqrt(len(gaps))
    return abs(gaps.mean() - 1.0 / rate) < 4 * se + 1e-12


@pytest.mark.parametrize(
    ("process", "burstiness", "cv"),
    [("poisson", 1.0, 1.0), ("gamma", 0.25, 2.0), ("gamma", 4.0, 0.5), ("gamma", 1.0, 1.0)],
)
def test_rate_and_cv_match(process: str, burstiness: float, cv: float) -> None:
    rate = 40.0
    t = arrival_times(40_000, rate, process, burstiness=burstiness, seed=3)  # type: ignore[arg-type]
    assert np.all(np.diff(t) >= 0)
    emp_rate, emp_cv = gap_stats(t)
    assert _z_rate_ok(t, rate), emp_rate
    assert emp_cv == pytest.approx(cv, rel=0.05)


def test_poisson_gaps_are_exponential_and_gamma_gaps_are_gamma() -> None:
    rate = 10.0
    gaps = np.diff(np.concatenate([[0.0], arrival_times(5000, rate, "poisson", seed=1)]))
    assert stats.kstest(gaps, "expon", args=(0, 1 / rate)).pvalue > 0.01
    b = 0.5
    gaps = np.diff(
        np.concatenate([[0.0], arrival_times(5000, rate, "gamma", burstiness=b, seed=1)])
    )
    assert stats.kstest(gaps, "gamma", args=(b, 0, 1 / (rate * b))).pvalue > 0.01
    # and an exponential is rejected for these bursty gaps
    assert stats.kstest(gaps, "expon", args=(0, 1 / rate)).pvalue < 1e-6


def test_constant_is_evenly_spaced() -> None:
    t = arrival_times(100, 20.0, "constant")
    assert np.allclose(np.diff(t), 0.05)
    assert gap_stats(t) == pytest.approx((20.0, 0.0), abs=1e-9)


def test_same_seed_same_schedule_other_seed_differs() -> None:
    a = arrival_times(50, 5.0, "poisson", seed=7)
    assert np.array_equal(a, arrival_times(50, 5.0, "poisson", seed=7))
    assert not np.array_equal(a, arrival_times(50, 5.0, "poisson", seed=8))


def test_time_varying_rate_follows_the_function() -> None:
    """Rate 20/s for 100 s then 80/s for 100 s: counts per half are Poisson around 2000/8000."""
    t = np.fromiter(
        arrivals_for(lambda x: 20.0 if x < 100 else 80.0, "poisson", seed=5, until=200.0), float
    )
    first, second = int((t < 100).sum()), int((t >= 100).sum())
    assert abs(first - 2000) < 4 * math.sqrt(2000)
    assert abs(second - 8000) < 4 * math.sqrt(8000)
    assert t.max() < 200.0


def test_zero_rate_idles_and_bad_rate_raises() -> None:
    t = list(arrivals_for(lambda x: 0.0 if x < 1 else 10.0, "constant", until=2.0))
    assert t and min(t) >= 1.0 and len(t) == pytest.approx(10, abs=1)
    with pytest.raises(ValueError):
        arrival_times(10, 0.0)
    with pytest.raises(ValueError):
        arrival_times(10, 1.0, "gamma", burstiness=0)
