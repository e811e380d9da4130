"""Arrival schedules for open-loop load (pure and seeded: no I/O, no clock).

Gaps between arrivals follow vLLM's `bench serve` definition:
``gap ~ Gamma(shape=burstiness, scale=1/(rate·burstiness))`` — mean 1/rate and coefficient
of variation 1/√burstiness. ``burstiness=1`` is a Poisson process, ``< 1`` is burstier,
``> 1`` smoother; the ``constant`` process has equal gaps (CV 0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import numpy as np

Process = Literal["constant", "poisson", "gamma"]
PROCESSES: tuple[Process, ...] = ("constant", "poisson", "gamma")


def _check(rate: float, burstiness: float) -> None:
    if not rate > 0 or not np.isfinite(rate):
        raise ValueError(f"arrival rate must be a positive finite number, got {rate}")
    if not burstiness > 0:
        raise ValueError(f"burstiness must be > 0, got {burstiness}")


def unit_gaps(
    process: Process, n: int, rng: np.random.Generator, burstiness: float = 1.0
) -> np.ndarray:
    """`n` inter-arrival gaps of a rate-1 process (mean 1)."""
    _check(1.0, burstiness)
    if process == "constant":
        return np.ones(n)
    shape = 1.0 if process == "poisson" else burstiness
    return rng.gamma(shape=shape, scale=1.0 / shape, size=n)


def arrival_times(
    n: int,
    rate: float,
    process: Process = "poisson",
    *,
    burstiness: float = 1.0,
    seed: int | np.random.Generator = 0,
) -> np.ndarray:
    """Send offsets (seconds from the start) of `n` requests at a mean of `rate` per second.

    The first request goes at its first gap (not at 0), as in vLLM; times are increasing.
    """
    _check(rate, burstiness)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return np.cumsum(unit_gaps(process, n, rng, burstiness) / rate)


def arrivals_for(
    rate_fn: Callable[[float], float],
    process: Process = "poisson",
    *,
    burstiness: float = 1.0,
    seed: int | np.random.Generator = 0,
    until: float = float("inf"),
    chunk: int = 4096,
) -> Iterator[float]:
    """Send offsets for a time-varying rate `rate_fn(t)` (req/s at offset t), lazily.

    Each gap is a unit gap divided by the rate at the previous arrival; while the rate is
    ≤ 0 the schedule idles in 50 ms steps. Stops at `until`.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    t = 0.0
    while True:
        for g in unit_gaps(process, chunk, rng, burstiness):
            r = rate_fn(t)
            while not r > 0:
                t += 0.05
                if t >= until:
                    return
                r = rate_fn(t)
            t += float(g) / r
            if t >= until:
                return
            yield t


def gap_stats(times: np.ndarray) -> tuple[float, float]:
    """(empirical rate, coefficient of variation of the gaps) of increasing send times."""
    gaps = np.diff(np.concatenate([[0.0], np.asarray(times, dtype=float)]))
    mean = float(gaps.mean())
    return 1.0 / mean, float(gaps.std(ddof=1) / mean) if len(gaps) > 1 else 0.0
