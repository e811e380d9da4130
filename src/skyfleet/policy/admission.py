"""Admission control: one decision per request — admit now, queue until a deadline, or reject.

Composes the tenant's limits (`ratelimit`), the fleet's concurrency limits (`concurrency`,
summed over usable endpoints) and the wait queue (`priority`). Pure: the caller passes the
clock, the state objects and the fleet's load; the function mutates only those objects
(charges the limiter, pushes into the queue) so the gateway and the simulator share it.

Order of checks for a request of class *p*:

1. Tenant limits (requests/min, tokens/min on input estimate + ``max_tokens``, concurrency,
   daily budget) → **429** with ``Retry-After`` and ``x-ratelimit-*`` headers.
2. Room in the fleet for class *p* (in flight + 1 ≤ ``share[p]`` × the sum of endpoint limits)
   and nobody of class ≤ *p* already waiting → **admit**.
3. Otherwise wait in the bounded queue until ``now + deadline[p]``; when the expected wait
   (requests ahead ÷ recent completion rate) already exceeds the deadline, or the queue is
   full of equal or more important work → **503** with ``Retry-After`` at once, never a
   timeout. A full queue makes room by displacing the newest ``sheddable``, then
   ``standard`` entry (the caller answers it 503).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from skyfleet.policy.priority import Priority, QueueEntry, WaitQueue, token_cost
from skyfleet.policy.ratelimit import Charge, TenantLimiter
from skyfleet.policy.types import EndpointState

PayloadT = TypeVar("PayloadT")  # the caller's handle carried by a queue entry
Action = Literal["admit", "queue", "reject"]


@dataclass(frozen=True, kw_only=True)
class AdmissionSettings:
    """Queue size, per-class deadlines and capacity shares, shed status and Retry-After bounds.

    ``share_*`` is the fraction of the fleet's concurrency a class may fill; below 1.0 it keeps
    headroom for more important classes (Stripe's fleet-usage shedder reserves 20 %; the
    config's defaults keep 10 % for critical and another 15 % for standard). Built from the
    ``overload:`` section by `policy.settings.admission_settings`, which holds the defaults.
    """

    queue_size: int
    critical_deadline_s: float
    standard_deadline_s: float
    sheddable_deadline_s: float
    standard_share: float
    sheddable_share: float
    shed_status: int
    critical_share: float = 1.0
    min_retry_after_s: float = 1.0
    max_retry_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.queue_size < 0 or self.shed_status not in (429, 503):
            raise ValueError("need queue_size >= 0 and shed_status 429 or 503")
        if not 0 < self.sheddable_share <= self.standard_share <= self.critical_share:
            raise ValueError("need 0 < sheddable_share <= standard_share <= critical_share")
        if min(self.critical_deadline_s, self.standard_deadline_s, self.sheddable_deadline_s) < 0:
            raise ValueError("queue deadlines must be >= 0")

    def deadline_s(self, priority: Priority) -> float:
        """How long a request of class `priority` may wait in the queue."""
        deadlines = (self.critical_deadline_s, self.standard_deadline_s, self.sheddable_deadline_s)
        return deadlines[priority]

    def share(self, priority: Priority) -> float:
        """Fraction of fleet concurrency class `priority` may fill."""
        return (self.critical_share, self.standard_share, self.sheddable_share)[priority]

    def retry_after(self, seconds: float) -> float:
        """A Retry-After value clamped to the configured bounds."""
        return min(self.max_retry_after_s, max(self.min_retry_after_s, seconds))


@dataclass(frozen=True)
class FleetLoad:
    """The fleet as admission sees it: requests in flight, their limit, recent drain rate."""

    in_flight: int
    limit: int
    drain_rate_per_s: float = 0.0


class ServiceTime:
    """Exponential moving average of admitted-to-finished seconds (the fleet's drain rate)."""

    __slots__ = ("mean_s", "weight")

    def __init__(self, weight: float = 0.05) -> None:
        self.weight = weight
        self.mean_s: float | None = None

    def observe(self, seconds: float) -> None:
        """One admitted request ended after `seconds`."""
        old = self.mean_s
        self.mean_s = seconds if old is None else old + self.weight * (seconds - old)


def fleet_load(
    endpoints: Iterable[EndpointState],
    limits: Mapping[str, int] | None = None,
    drain_rate_per_s: float = 0.0,
    *,
    in_flight: int | None = None,
    service: ServiceTime | None = None,
) -> FleetLoad:
    """The fleet as admission sees it: in flight (the endpoints' own count unless given)
    against the sum of min(capacity, adaptive limit) over the healthy endpoints; with a
    `service` estimate the drain rate is limit ÷ mean service time (Little's law at full
    concurrency)."""
    adaptive_limits = limits or {}
    counted = 0
    limit = 0
    for endpoint in endpoints:
        counted += endpoint.in_flight
        if endpoint.healthy:
            limit += min(endpoint.capacity, adaptive_limits.get(endpoint.name, endpoint.capacity))
    if service is not None:
        drain_rate_per_s = limit / service.mean_s if service.mean_s else 0.0
    return FleetLoad(counted if in_flight is None else in_flight, limit, drain_rate_per_s)


@dataclass(frozen=True)
class AdmissionRequest:
    """What admission needs to know about one request."""

    tenant: str
    priority: Priority
    input_tokens: int
    max_tokens: int
    est_cost_usd: float = 0.0
    weight: float = 1.0

    @property
    def est_tokens(self) -> int:
        """Tokens charged up front: input estimate + max_tokens."""
        return self.input_tokens + self.max_tokens


def retry_after_headers(seconds: float) -> dict[str, str]:
    """``Retry-After`` (whole seconds, rounded up) and ``retry-after-ms`` (read by OpenAI SDKs)."""
    return {
        "retry-after": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(max(1, math.ceil(seconds * 1000))),
    }


@dataclass(frozen=True)
class Verdict(Generic[PayloadT]):
    """Admission's decision for one request plus what the caller needs to carry it out."""

    action: Action
    priority: Priority
    status: int = 200
    retry_after_s: float | None = None
    reason: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    deadline: float | None = None
    charge: Charge | None = None
    entry: QueueEntry[PayloadT] | None = None
    displaced: QueueEntry[PayloadT] | None = None


def has_room(
    priority: Priority,
    fleet: FleetLoad,
    queue: WaitQueue[PayloadT],
    settings: AdmissionSettings,
) -> bool:
    """Class `priority` may start now: within its share of fleet concurrency, nobody ahead
    waiting."""
    return fits_share(priority, fleet, settings) and queue.count_at_or_above(priority) == 0


def fits_share(priority: Priority, fleet: FleetLoad, settings: AdmissionSettings) -> bool:
    """One more request of class `priority` keeps in-flight within ``share[p] × limit``.

    Every class may use at least one slot, so a tiny fleet never starves a class outright.
    """
    if fleet.limit <= 0:
        return False
    return fleet.in_flight + 1 <= max(1.0, settings.share(priority) * fleet.limit) + 1e-9


def decide(
    req: AdmissionRequest,
    limiter: TenantLimiter | None,
    queue: WaitQueue[PayloadT],
    fleet: FleetLoad,
    settings: AdmissionSettings,
    now: float,
    payload: PayloadT,
) -> Verdict[PayloadT]:
    """Admit, queue or reject `req` (charging the limiter and pushing into `queue` as needed)."""
    priority = req.priority
    charge: Charge | None = None
    headers: dict[str, str] = {}
    if limiter is not None:
        rate = limiter.try_acquire(now, req.est_tokens, req.est_cost_usd)
        if not rate.allowed:
            headers = rate.state.headers() if rate.state is not None else {}
            wait = max(rate.retry_after_s, 0.001)
            return Verdict(
                "reject",
                priority,
                status=429,
                retry_after_s=wait,
                reason=f"rate_limit_{rate.reason}",
                headers=headers | retry_after_headers(wait),
            )
        charge = rate.charge

    if has_room(priority, fleet, queue, settings):
        return Verdict("admit", priority, headers=headers, charge=charge)

    def shed(reason: str, wait: float) -> Verdict[PayloadT]:
        if limiter is not None and charge is not None:
            limiter.refund(now, charge)
            headers.update(limiter.state(now).headers())
        retry_after_s = settings.retry_after(wait)
        return Verdict(
            "reject",
            priority,
            status=settings.shed_status,
            retry_after_s=retry_after_s,
            reason=reason,
            headers=headers | retry_after_headers(retry_after_s),
        )

    if fleet.limit <= 0:
        return shed("no_capacity", settings.min_retry_after_s)
    deadline_s = settings.deadline_s(priority)
    ahead = queue.count_at_or_above(priority)
    if fleet.drain_rate_per_s > 0:
        expected = (ahead + 1) / fleet.drain_rate_per_s
        if expected > deadline_s:
            return shed("expected_wait_over_deadline", expected)
    else:
        expected = deadline_s
    pushed = queue.push(
        tenant=req.tenant,
        priority=priority,
        now=now,
        deadline=now + deadline_s,
        cost=token_cost(req.input_tokens, req.max_tokens),
        payload=payload,
        weight=req.weight,
    )
    if not pushed.accepted:
        return shed("queue_full", expected)
    return Verdict(
        "queue",
        priority,
        headers=headers,
        deadline=now + deadline_s,
        charge=charge,
        entry=pushed.entry,
        displaced=pushed.displaced,
    )


def next_to_dispatch(
    queue: WaitQueue[PayloadT], fleet: FleetLoad, settings: AdmissionSettings
) -> QueueEntry[PayloadT] | None:
    """Pop the next queued entry that may start given the fleet's load (or None)."""
    allowed: Priority | None = None
    for priority in Priority:
        if fits_share(priority, fleet, settings):
            allowed = priority
    if allowed is None:
        return None
    return queue.pop(allowed)


def shed_response(
    entry_priority: Priority, reason: str, wait_s: float, settings: AdmissionSettings
) -> Verdict[None]:
    """The reject decision for a queued entry that was displaced or ran past its deadline."""
    retry_after_s = settings.retry_after(wait_s)
    return Verdict(
        "reject",
        entry_priority,
        status=settings.shed_status,
        retry_after_s=retry_after_s,
        reason=reason,
        headers=retry_after_headers(retry_after_s),
    )
