"""Pure retry budget: retries stay under `ratio` of requests in a sliding window.

Like Envoy's retry budget and Linkerd's `retryRatio`, with a small floor (`min_retries` per
window) so a quiet gateway can still retry, and a per-request cap of `max_attempts`. With
fleet state shared, `peers` holds the other replicas' (requests, retries) in their windows as
they last published them, so the ratio and the floor hold for the fleet, not per process.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True, kw_only=True)
class RetryBudget:
    """Counts requests and retries in 1-second buckets over `window_s` (from ``routing:``,
    `policy.settings.retry_budget`)."""

    ratio: float
    min_retries: int
    window_s: float
    max_attempts: int
    peers: tuple[int, int] = (0, 0)  # other replicas' (requests, retries) in their windows
    _buckets: dict[int, list[int]] = field(default_factory=dict)  # second → [requests, retries]

    def _bucket(self, now: float) -> list[int]:
        second = int(now)
        bucket = self._buckets.get(second)
        if bucket is None:
            bucket = self._buckets[second] = [0, 0]
            horizon = second - int(self.window_s)
            for old in [start for start in self._buckets if start <= horizon]:
                del self._buckets[old]
        return bucket

    def record_request(self, now: float) -> None:
        """Count one new (first-attempt) request."""
        self._bucket(now)[0] += 1

    def own_totals(self, now: float) -> tuple[int, int]:
        """This process's (requests, retries) inside the window ending at `now`."""
        self._bucket(now)
        requests = sum(bucket[0] for bucket in self._buckets.values())
        retries = sum(bucket[1] for bucket in self._buckets.values())
        return requests, retries

    def totals(self, now: float) -> tuple[int, int]:
        """(requests, retries) inside the window ending at `now`, the peers' included."""
        reqs, rets = self.own_totals(now)
        return reqs + self.peers[0], rets + self.peers[1]

    def try_retry(self, attempts_made: int, now: float) -> bool:
        """Whether attempt number `attempts_made + 1` may go out; counts it if so."""
        if attempts_made >= self.max_attempts:
            return False
        requests, retries = self.totals(now)
        if retries >= max(float(self.min_retries), self.ratio * requests):
            return False
        self._bucket(now)[1] += 1
        return True
