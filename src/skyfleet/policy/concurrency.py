"""Adaptive concurrency limit per endpoint, Gradient2-style (Netflix concurrency-limits).

Pure: samples and the clock are passed in. Once per window (at least ``window_s`` seconds
and ``min_samples`` samples; by default every sample, as Netflix's Gradient2 updates)
the limit moves by the gradient between the long-term latency and this window's mean:

    long  = EMA(short, over ``long_window`` windows; plain mean for the first 10)
    if long / short > 2:  long *= 0.95                   (forget an overload faster)
    if max in-flight < limit / 2: keep                   (app-limited: no evidence)
    gradient = clamp(tolerance · long / short, 0.5, max_gradient)
    limit    = clamp((1 − s)·limit + s·(gradient·limit + queue_size), min_limit, max_limit)

The latency sample is the time to first token of a stream, or a whole answer's time divided
by its tokens + 1 (so long answers do not read as a slow endpoint): what a slow or queueing
engine inflates.
A provider that slows down 5× gets ``gradient = 0.5`` and its limit falls by
``s·(limit/2 − queue_size)`` per window towards ``2·queue_size`` = 8, so new work goes
elsewhere instead of piling up in its queue; when it is fast again the gradient is ≥ 1 and the
limit climbs back by ``s·queue_size`` per window.
An overload answer from the endpoint (429/503/timeout) in a window multiplies the limit by
``drop_backoff`` instead (AIMD-style backoff).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class GradientSettings:
    """Knobs of the Gradient2 limit (Netflix defaults for the rest). The bounds are the
    endpoint's; window and tolerance come from the ``overload:`` section
    (`policy.settings.gradient_settings`)."""

    initial_limit: float
    min_limit: float
    max_limit: float
    window_s: float
    tolerance: float
    smoothing: float = 0.2
    queue_size: float = 4.0
    long_window: int = 600
    max_gradient: float = 1.0
    min_samples: int = 1
    drop_backoff: float = 0.9

    def __post_init__(self) -> None:
        if not 0 < self.min_limit <= self.initial_limit <= self.max_limit:
            raise ValueError("need 0 < min_limit <= initial_limit <= max_limit")
        if not 0 < self.smoothing <= 1 or not 0 < self.drop_backoff < 1:
            raise ValueError("smoothing must be in (0, 1] and drop_backoff in (0, 1)")
        if self.max_gradient < 0.5 or self.window_s < 0 or self.min_samples < 1:
            raise ValueError("need max_gradient >= 0.5, window_s >= 0, min_samples >= 1")


class AdaptiveLimit:
    """The concurrency limit of one endpoint, fed with latency samples."""

    def __init__(self, settings: GradientSettings, initial: float | None = None):
        self.settings = settings
        start = settings.initial_limit if initial is None else initial
        self._limit = min(settings.max_limit, max(settings.min_limit, start))
        self.long_rtt: float | None = None
        self.updates = 0
        self._window_start: float | None = None
        self._sum = 0.0
        self._samples = 0
        self._max_inflight = 0
        self._dropped = False

    @property
    def limit(self) -> int:
        """The current limit as a whole number of concurrent requests (at least 1)."""
        return max(1, int(self._limit))

    @property
    def raw_limit(self) -> float:
        """The unrounded limit."""
        return self._limit

    def on_sample(self, now: float, rtt_s: float, inflight: int) -> bool:
        """Record one latency sample; returns True if a window closed and the limit changed."""
        if rtt_s <= 0:
            return False
        self._open(now)
        self._sum += rtt_s
        self._samples += 1
        self._max_inflight = max(self._max_inflight, inflight)
        return self._maybe_update(now)

    def on_drop(self, now: float, inflight: int) -> bool:
        """Record an overload answer (429/503/timeout) from the endpoint."""
        self._open(now)
        self._dropped = True
        self._max_inflight = max(self._max_inflight, inflight)
        return self._maybe_update(now)

    def _open(self, now: float) -> None:
        if self._window_start is None:
            self._window_start = now

    def _maybe_update(self, now: float) -> bool:
        settings = self.settings
        start = self._window_start
        if start is None or now - start < settings.window_s:
            return False
        if self._samples < settings.min_samples and not self._dropped:
            return False
        before = self._limit
        if self._dropped:
            self._limit = max(settings.min_limit, self._limit * settings.drop_backoff)
        else:
            self._update(self._sum / self._samples, self._max_inflight)
        self._window_start, self._sum, self._samples = now, 0.0, 0
        self._max_inflight, self._dropped = 0, False
        return self._limit != before

    def _update(self, short: float, inflight: int) -> None:
        settings = self.settings
        self.updates += 1
        if self.long_rtt is None:
            self.long_rtt = short
        elif self.updates <= 10:
            self.long_rtt += (short - self.long_rtt) / self.updates
        else:
            alpha = 2.0 / (settings.long_window + 1)
            self.long_rtt = (1 - alpha) * self.long_rtt + alpha * short
        if self.long_rtt / short > 2.0:
            self.long_rtt *= 0.95
        if inflight < self._limit / 2:
            return
        gradient = min(settings.max_gradient, max(0.5, settings.tolerance * self.long_rtt / short))
        target = self._limit * gradient + settings.queue_size
        smoothed = (1 - settings.smoothing) * self._limit + settings.smoothing * target
        self._limit = min(settings.max_limit, max(settings.min_limit, smoothed))
