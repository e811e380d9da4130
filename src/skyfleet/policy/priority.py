"""Priority classes and the bounded wait queue (priority → tenant fairness → arrival).

Pure: no clock reads, no I/O. Dispatch order inside the queue:

1. **Priority band**, strictly: ``critical`` before ``standard`` before ``sheddable``.
2. **Fairness between tenants** inside a band, VTC-style (Sheng et al., OSDI'24): each tenant
   has a virtual counter of the weighted tokens it was served (input weight 1, output weight
   2, divided by the tenant's weight); the backlogged tenant with the smallest counter goes
   next. A tenant whose queue goes from empty to non-empty is lifted to the smallest counter
   of the other backlogged tenants, so idle time cannot be banked as credit.
3. **Arrival order** (FIFO) inside a tenant.

Every entry carries a deadline. When the queue is full, an arrival displaces the newest entry
of the lowest band below its own (``sheddable`` first, then ``standard``); if there is none it
is refused. ``critical`` entries are never displaced.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from skyfleet.vocab import Priority as Priority
from skyfleet.vocab import parse_priority as parse_priority

PayloadT = TypeVar("PayloadT")  # the caller's handle for a queued request

W_INPUT = 1.0
W_OUTPUT = 2.0

PRIORITY_HEADER = "x-skyfleet-priority"


def resolve_priority(tenant_default: str | Priority, header: str | None, allow: bool) -> Priority:
    """The request's class: the header's if the tenant may set it, else the tenant's default.

    Raises ValueError for a bad header value from a tenant that may set it (the caller
    answers 400); a header from a tenant that may not is ignored.
    """
    base = parse_priority(tenant_default)
    if header is None or not allow:
        return base
    return parse_priority(header)


def token_cost(input_tokens: float, output_tokens: float) -> float:
    """VTC service cost of a request: ``1·input + 2·output`` weighted tokens."""
    return W_INPUT * input_tokens + W_OUTPUT * output_tokens


@dataclass(eq=False)
class QueueEntry(Generic[PayloadT]):
    """One waiting request. ``cost`` is its VTC cost; ``payload`` is the caller's handle."""

    tenant: str
    priority: Priority
    arrival: float
    deadline: float
    cost: float
    payload: PayloadT
    weight: float = 1.0
    seq: int = 0
    queued: bool = True


@dataclass(frozen=True)
class PushResult(Generic[PayloadT]):
    """Outcome of `WaitQueue.push`: accepted or not, and any entry displaced to make room."""

    accepted: bool
    entry: QueueEntry[PayloadT] | None = None
    displaced: QueueEntry[PayloadT] | None = None


@dataclass
class _Band(Generic[PayloadT]):
    tenants: dict[str, deque[QueueEntry[PayloadT]]] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)
    size: int = 0


class WaitQueue(Generic[PayloadT]):
    """Bounded multi-tenant priority queue with deadlines."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("queue capacity must be >= 0")
        self.capacity = capacity
        self._bands: list[_Band[PayloadT]] = [_Band() for _ in Priority]
        self._deadlines: list[tuple[float, int, QueueEntry[PayloadT]]] = []
        self._seq = itertools.count()

    # -- sizes -------------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(band.size for band in self._bands)

    def count(self, priority: Priority) -> int:
        """Entries waiting in one band."""
        return self._bands[priority].size

    def count_at_or_above(self, priority: Priority) -> int:
        """Entries that would be dispatched before a new arrival of `priority`."""
        return sum(self._bands[rank].size for rank in range(priority + 1))

    def counter(self, priority: Priority, tenant: str) -> float:
        """A tenant's VTC counter in a band (for tests and metrics)."""
        return self._bands[priority].counters.get(tenant, 0.0)

    # -- adding and removing -----------------------------------------------------------
    def push(
        self,
        *,
        tenant: str,
        priority: Priority,
        now: float,
        deadline: float,
        cost: float,
        payload: PayloadT,
        weight: float = 1.0,
    ) -> PushResult[PayloadT]:
        """Queue a request; when full, displace a lower-priority entry or refuse."""
        displaced: QueueEntry[PayloadT] | None = None
        if len(self) >= self.capacity:
            displaced = self._newest_below(priority)
            if displaced is None:
                return PushResult(False)
            self.remove(displaced)
        entry = QueueEntry(
            tenant=tenant,
            priority=priority,
            arrival=now,
            deadline=deadline,
            cost=cost,
            payload=payload,
            weight=max(weight, 1e-9),
            seq=next(self._seq),
        )
        band = self._bands[priority]
        waiting = band.tenants.setdefault(tenant, deque())
        if not waiting:  # counter lift on (re)activation
            others = [
                band.counters.get(name, 0.0) for name, entries in band.tenants.items() if entries
            ]
            lifted = max(band.counters.get(tenant, 0.0), min(others, default=0.0))
            band.counters[tenant] = lifted
        waiting.append(entry)
        band.size += 1
        heapq.heappush(self._deadlines, (deadline, entry.seq, entry))
        return PushResult(True, entry, displaced)

    def remove(self, entry: QueueEntry[PayloadT]) -> bool:
        """Take an entry out (client gone, deadline passed, displaced). False if not queued."""
        if not entry.queued:
            return False
        band = self._bands[entry.priority]
        band.tenants[entry.tenant].remove(entry)
        band.size -= 1
        entry.queued = False
        return True

    def _newest_below(self, priority: Priority) -> QueueEntry[PayloadT] | None:
        for rank in reversed(range(priority + 1, len(Priority))):
            tails = [entries[-1] for entries in self._bands[rank].tenants.values() if entries]
            if tails:
                return max(tails, key=lambda entry: (entry.arrival, entry.seq))
        return None

    # -- taking out --------------------------------------------------------------------
    def pop(self, max_priority: Priority = Priority.SHEDDABLE) -> QueueEntry[PayloadT] | None:
        """Dispatch the next entry whose priority is `max_priority` or more important."""
        for rank in range(max_priority + 1):
            band = self._bands[rank]
            if band.size == 0:
                continue
            tenant = min(
                (name for name, entries in band.tenants.items() if entries),
                key=lambda name: (band.counters[name], band.tenants[name][0].seq),
            )
            entry = band.tenants[tenant].popleft()
            band.size -= 1
            entry.queued = False
            band.counters[tenant] += entry.cost / entry.weight
            return entry
        return None

    def charge(
        self, priority: Priority, tenant: str, delta_cost: float, weight: float = 1.0
    ) -> None:
        """Correct a tenant's counter once real usage is known (VTC output-token accounting)."""
        band = self._bands[priority]
        band.counters[tenant] = band.counters.get(tenant, 0.0) + delta_cost / max(weight, 1e-9)

    def expire(self, now: float) -> list[QueueEntry[PayloadT]]:
        """Remove and return every entry whose deadline is at or before `now`."""
        out: list[QueueEntry[PayloadT]] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, entry = heapq.heappop(self._deadlines)
            if self.remove(entry):
                out.append(entry)
        if len(self._deadlines) > 4 * max(len(self), 16):  # drop stale heap items
            self._deadlines = [item for item in self._deadlines if item[2].queued]
            heapq.heapify(self._deadlines)
        return out

    def next_deadline(self) -> float | None:
        """The earliest deadline of a queued entry, if any."""
        while self._deadlines and not self._deadlines[0][2].queued:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None
