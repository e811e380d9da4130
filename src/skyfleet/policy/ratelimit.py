"""Per-tenant limits: GCRA for requests/min and tokens/min, concurrency, daily budget.

Pure: every call takes the clock value `now` (seconds; the gateway passes wall-clock time so
the daily budget resets at UTC midnight). Nothing here reads a clock or does I/O.

GCRA keeps one number per limit, the *theoretical arrival time* (TAT). With emission interval
``T = 60 / limit`` and delay tolerance ``tau = T * burst``, a request of cost ``c`` at ``now``
is allowed iff ``max(TAT, now) + c*T - tau <= now``; it then moves TAT by ``c*T``. A denied
request changes nothing and learns exactly when it would pass (``retry_after``). It is a token
bucket of depth ``burst`` refilled at ``limit`` per minute, stored as one float.

Tokens are charged up front on the estimate (prompt estimate + ``max_tokens``) and corrected
by ``actual - estimate`` when the upstream reports usage, so the long-run charge is exactly
the real usage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MINUTE_S = 60.0
DAY_S = 86_400.0
MIN_RETRY_S = 0.05
CONCURRENCY_RETRY_S = 1.0


def format_reset(seconds: float) -> str:
    """A duration as OpenAI writes it in ``x-ratelimit-reset-*``: ``20ms``, ``1.5s``, ``6m0s``."""
    seconds = max(0.0, seconds)
    if seconds < 1.0:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60.0:
        return f"{round(seconds, 3):g}s"
    total = math.ceil(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes}m{secs}s" if hours else f"{minutes}m{secs}s"


@dataclass
class Gcra:
    """One GCRA limit: ``limit`` units per ``period_s`` with a bucket of ``burst`` units."""

    limit: float
    burst: float
    period_s: float = MINUTE_S
    tat: float = -math.inf
    interval: float = field(init=False)  # emission interval T: seconds of refill per unit
    tau: float = field(init=False)  # delay tolerance: the bucket depth in seconds

    def __post_init__(self) -> None:
        if self.limit <= 0 or self.burst <= 0 or self.period_s <= 0:
            raise ValueError("GCRA limit, burst and period must be positive")
        self.interval = self.period_s / self.limit
        self.tau = self.burst * self.interval

    def retry_after(self, now: float, cost: float = 1.0) -> float:
        """Seconds until a request of `cost` would pass (0.0 = passes now). Does not charge.

        A request larger than the whole bucket passes when the bucket is full (then the
        tenant owes the excess), so an oversized request is delayed, never refused forever.
        """
        tat = max(self.tat, now)
        allow_at = tat + cost * self.interval - max(self.tau, cost * self.interval)
        return max(0.0, allow_at - now)

    def charge(self, now: float, cost: float) -> None:
        """Charge `cost` units (unconditionally; call `retry_after` first to enforce)."""
        self.tat = max(self.tat, now) + cost * self.interval

    def adjust(self, now: float, delta: float) -> None:
        """Correct an earlier charge by `delta` units (negative = refund).

        The result equals having charged the corrected amount in the first place, unless
        the refund would overfill the bucket (a bucket never holds more than `burst`).
        """
        self.tat = max(self.tat + delta * self.interval, now)

    def remaining(self, now: float) -> int:
        """Whole units that would pass right now."""
        debt = max(0.0, self.tat - now)
        return max(0, math.floor((self.tau - debt) / self.interval + 1e-9))

    def reset_s(self, now: float) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, self.tat - now)


@dataclass(frozen=True)
class TenantLimits:
    """A tenant's limits; ``None`` = unlimited. ``burst_s`` = bucket depth in seconds of limit.

    With the default ``burst_s = 3`` the most a tenant can get through in any 60 s window is
    ``limit * (1 + 3/60)``, i.e. within 5 % of the limit even from a full bucket.
    """

    rpm: float | None = None
    tpm: float | None = None
    max_concurrency: int | None = None
    daily_budget_usd: float | None = None
    burst_s: float = 3.0

    def bucket(self, per_minute: float) -> float:
        """Bucket depth in units for a per-minute limit (at least one unit)."""
        return max(1.0, per_minute * self.burst_s / MINUTE_S)


@dataclass(frozen=True)
class LimitState:
    """What a client is told in OpenAI's ``x-ratelimit-*`` headers."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None

    def headers(self) -> dict[str, str]:
        """The headers to send (only those of configured limits)."""
        out: dict[str, str] = {}
        if self.limit_requests is not None:
            out["x-ratelimit-limit-requests"] = str(self.limit_requests)
            out["x-ratelimit-remaining-requests"] = str(self.remaining_requests or 0)
            out["x-ratelimit-reset-requests"] = format_reset(self.reset_requests_s or 0.0)
        if self.limit_tokens is not None:
            out["x-ratelimit-limit-tokens"] = str(self.limit_tokens)
            out["x-ratelimit-remaining-tokens"] = str(self.remaining_tokens or 0)
            out["x-ratelimit-reset-tokens"] = format_reset(self.reset_tokens_s or 0.0)
        return out


@dataclass(frozen=True)
class Charge:
    """What an admitted request was charged, to correct or refund later."""

    tokens: float
    counted_concurrency: bool


@dataclass(frozen=True)
class RateDecision:
    """Result of `TenantLimiter.try_acquire`.

    ``reason`` is one of ``requests``, ``tokens``, ``concurrency``, ``budget`` when denied.
    """

    allowed: bool
    retry_after_s: float
    reason: str | None
    state: LimitState | None  # header values, computed when denied (call `state()` otherwise)
    charge: Charge | None = None


@dataclass
class TenantLimiter:
    """The limiter state of one tenant (one per API-key owner)."""

    limits: TenantLimits
    requests: Gcra | None = None
    tokens: Gcra | None = None
    in_flight: int = 0
    spent_usd: float = 0.0
    budget_day: int = -1

    def __post_init__(self) -> None:
        limits = self.limits
        if self.requests is None and limits.rpm is not None:
            self.requests = Gcra(limit=limits.rpm, burst=limits.bucket(limits.rpm))
        if self.tokens is None and limits.tpm is not None:
            self.tokens = Gcra(limit=limits.tpm, burst=limits.bucket(limits.tpm))

    # -- reading -----------------------------------------------------------------------
    def state(self, now: float) -> LimitState:
        """The current header values."""
        requests, tokens = self.requests, self.tokens
        return LimitState(
            limit_requests=None if requests is None else round(requests.limit),
            remaining_requests=None if requests is None else requests.remaining(now),
            reset_requests_s=None if requests is None else requests.reset_s(now),
            limit_tokens=None if tokens is None else round(tokens.limit),
            remaining_tokens=None if tokens is None else tokens.remaining(now),
            reset_tokens_s=None if tokens is None else tokens.reset_s(now),
        )

    def _roll_budget(self, now: float) -> None:
        day = math.floor(now / DAY_S)
        if day != self.budget_day:
            self.budget_day, self.spent_usd = day, 0.0

    # -- deciding ----------------------------------------------------------------------
    def try_acquire(self, now: float, est_tokens: float, est_cost_usd: float = 0.0) -> RateDecision:
        """Check every limit; charge them all only if all pass."""
        self._roll_budget(now)
        limits = self.limits
        waits: list[tuple[float, str]] = []
        if self.requests is not None:
            waits.append((self.requests.retry_after(now, 1.0), "requests"))
        if self.tokens is not None:
            waits.append((self.tokens.retry_after(now, est_tokens), "tokens"))
        if limits.max_concurrency is not None and self.in_flight >= limits.max_concurrency:
            waits.append((CONCURRENCY_RETRY_S, "concurrency"))
        budget = limits.daily_budget_usd
        if budget is not None and (
            self.spent_usd >= budget or self.spent_usd + est_cost_usd > budget
        ):  # spend that *reaches* the budget closes it (the gateway's estimate is 0)
            waits.append(((self.budget_day + 1) * DAY_S - now, "budget"))
        blocking = [(wait, reason) for wait, reason in waits if wait > 0.0]
        if blocking:
            wait, reason = max(blocking)
            return RateDecision(False, max(wait, MIN_RETRY_S), reason, self.state(now))
        if self.requests is not None:
            self.requests.charge(now, 1.0)
        if self.tokens is not None:
            self.tokens.charge(now, est_tokens)
        self.in_flight += 1
        charge = Charge(tokens=est_tokens, counted_concurrency=True)
        return RateDecision(True, 0.0, None, None, charge)

    def complete(
        self, now: float, charge: Charge, actual_tokens: float | None, cost_usd: float = 0.0
    ) -> None:
        """A request finished: correct the token charge to `actual_tokens` and free its slot.

        ``actual_tokens=None`` (usage unknown) keeps the up-front estimate.
        """
        if self.tokens is not None and actual_tokens is not None:
            self.tokens.adjust(now, actual_tokens - charge.tokens)
        if charge.counted_concurrency:
            self.in_flight = max(0, self.in_flight - 1)
        self._roll_budget(now)
        self.spent_usd += cost_usd

    def refund(self, now: float, charge: Charge) -> None:
        """A request admitted but never served (shed from the queue): undo its charges."""
        if self.requests is not None:
            self.requests.adjust(now, -1.0)
        if self.tokens is not None:
            self.tokens.adjust(now, -charge.tokens)
        if charge.counted_concurrency:
            self.in_flight = max(0, self.in_flight - 1)


@dataclass
class RateLimiter:
    """All tenants' limiters, created on first use from their `TenantLimits`."""

    tenants: dict[str, TenantLimiter] = field(default_factory=dict)

    def get(self, tenant: str, limits: TenantLimits) -> TenantLimiter:
        """The tenant's limiter, rebuilt on a limits change (keeps in-flight and spend)."""
        limiter = self.tenants.get(tenant)
        if limiter is None or limiter.limits != limits:
            previous = limiter
            limiter = TenantLimiter(limits)
            if previous is not None:
                limiter.in_flight, limiter.spent_usd, limiter.budget_day = (
                    previous.in_flight,
                    previous.spent_usd,
                    previous.budget_day,
                )
            self.tenants[tenant] = limiter
        return limiter
