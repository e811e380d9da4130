"""Fleet state shared by every gateway process through Redis (opt-in: ``server.redis_url``).

Endpoint health, outstanding requests per endpoint and the retry budget live in each
process (`policy.health`, `EndpointState.in_flight`, `policy.retry.RetryBudget`); this store
exchanges them with the other processes on a period (``server.shared_state_interval_s``,
at most half of ``health.probe_interval_s``), one Lua script per period and process, never
per request. Each exchange, atomically with Redis's clock:

- publishes this process's in-flight count per endpoint and its retry-budget window totals
  (its last numbers in ``…:load``, their sum over the live replicas in ``…:totals``, moved by
  each replica's change; liveness is a score in ``…:replicas``, so a crashed replica's numbers
  leave the sum after its TTL, a stopped one's at the next exchange);
- publishes the ejections this process made since the last exchange, as seconds left (Redis
  turns them into its own time; a later expiry wins);
- returns the totals (one number per endpoint, whatever the number of replicas) and every
  live ejection with its seconds left.

The caller subtracts its own numbers from the totals and sets the rest as
`EndpointState.peer_in_flight` (routing and admission read in-flight + peer) and
`RetryBudget.peers`, and adopts each ejection into its own
`EndpointHealth` (`adopt_ejection`): the endpoint is out until the same moment everywhere,
then on probation, and each process's own probe brings it back. The pure policies stay pure.

Staleness: an ejection reaches every process within two periods (+ one round trip) of being
made; another replica's in-flight count and budget totals are at most two periods old (its
last publication, read at our last exchange). Redis failing: the shared `RedisLink` goes
down; peer counts and budget totals drop to zero at once (this process's own state), adopted
ejections keep their expiry (they are local state by then); when the link comes back every
active ejection is published again, since a restarted Redis lost them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from skyfleet.gateway.fleet import Fleet
from skyfleet.gateway.redis_link import OP_TIMEOUT_S, RedisLink
from skyfleet.policy.retry import RetryBudget

log = logging.getLogger("skyfleet.gateway.shared_fleet")

KEY_PREFIX = "skyfleet:fleet:{fleet}:"  # one hash tag: the four keys share a cluster slot
REPLICAS, LOAD, TOTALS, EJECTIONS = (
    KEY_PREFIX + suffix for suffix in ("replicas", "load", "totals", "ejections")
)
MIN_TTL_S = 2.0  # a replica's numbers live at least this long without a new exchange
BUDGET = ("~requests", "~retries")  # budget fields next to the endpoints ("~" starts no name)

# KEYS: replicas (zset id → expiry), load (hash id → its last JSON), totals (hash field → sum
#       over live replicas), ejections (hash endpoint → "until,n")
# ARGV: replica id, ttl s, own JSON {field: count}, then (endpoint, seconds left, in a row)…
# The totals move by each replica's change since its last exchange, and lose a replica's last
# numbers once it stops exchanging: the work and the reply grow with the endpoints, not with
# the replicas.
_EXCHANGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local id, ttl = ARGV[1], tonumber(ARGV[2])
local function move(from, to)
  for k, v in pairs(to) do
    local d = v - (from[k] or 0)
    if d ~= 0 then redis.call('HINCRBY', KEYS[3], k, d) end
  end
  for k, v in pairs(from) do
    if to[k] == nil and v ~= 0 then redis.call('HINCRBY', KEYS[3], k, -v) end
  end
end
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, d in ipairs(dead) do
  local last = redis.call('HGET', KEYS[2], d)
  if last then move(cjson.decode(last), {}) end
  redis.call('HDEL', KEYS[2], d)
end
if #dead > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) end
local last = redis.call('HGET', KEYS[2], id)
local before = {}
if last then before = cjson.decode(last) end
move(before, cjson.decode(ARGV[3]))
redis.call('HSET', KEYS[2], id, ARGV[3])
redis.call('ZADD', KEYS[1], now + ttl, id)
local keep = math.ceil(ttl * 1000) + 1000
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], keep) end
for i = 4, #ARGV, 3 do
  local upto = now + tonumber(ARGV[i + 1])
  local cur = redis.call('HGET', KEYS[4], ARGV[i])
  if not cur or tonumber(string.match(cur, '^[^,]+')) < upto then
    redis.call('HSET', KEYS[4], ARGV[i], string.format('%.6f', upto) .. ',' .. ARGV[i + 2])
  end
end
local ejections = {}
local all = redis.call('HGETALL', KEYS[4])
for i = 1, #all, 2 do
  local upto, n = string.match(all[i + 1], '^([^,]+),(.*)$')
  local left = tonumber(upto) - now
  if left <= 0 then
    redis.call('HDEL', KEYS[4], all[i])
  else
    table.insert(ejections, all[i])
    table.insert(ejections, string.format('%.6f', left))
    table.insert(ejections, n)
  end
end
return {ejections, redis.call('HGETALL', KEYS[3]), redis.call('ZCARD', KEYS[1]) - 1}
"""


def replica_id() -> str:
    """A name for this process, unique across hosts and restarts."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class _PeerLoadCollector(Collector):
    """`skyfleet_endpoint_peer_in_flight`: the other replicas' open requests per endpoint."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "skyfleet_endpoint_peer_in_flight",
            "Requests other gateway replicas have open on the endpoint (last exchange)",
            labels=["endpoint", "provider", "tier"],
        )
        for endpoint in self.fleet.endpoints.values():
            state = endpoint.state
            gauge.add_metric([state.name, state.provider, state.tier], state.peer_in_flight)
        yield gauge


class SharedFleet:
    """Exchanges endpoint health, load and retry-budget totals with the other replicas."""

    def __init__(
        self,
        fleet: Fleet,
        link: RedisLink,
        budget: Callable[[], RetryBudget],
        registry: CollectorRegistry,
        name: str | None = None,
    ) -> None:
        self.fleet = fleet
        self.link = link
        self.budget = budget
        self.name = name or replica_id()
        self._exchange = link.redis.register_script(_EXCHANGE)
        self._known: dict[str, float] = {}  # endpoint → ejection expiry published or adopted
        self._generation = link.generation
        self._sharing = False  # peer numbers are applied (else they are all zero)
        self._task: asyncio.Task[None] | None = None
        self.exchanges = Counter(
            "skyfleet_shared_state_exchanges",
            "Fleet-state exchanges with Redis (one round trip each)",
            registry=registry,
        )
        self.ejections = Counter(
            "skyfleet_shared_state_ejections",
            "Endpoint ejections published to the other replicas, or adopted from them",
            ["source"],
            registry=registry,
        )
        self.peers = Gauge(
            "skyfleet_shared_state_peers",
            "Other gateway replicas seen in the last exchange",
            registry=registry,
        )
        registry.register(_PeerLoadCollector(fleet))

    # ---- lifecycle ----------------------------------------------------------------------
    def period_s(self) -> float:
        """Seconds between exchanges: the configured interval, at most half a probe interval
        (so an ejection reaches every replica within one)."""
        cfg = self.fleet.cfg
        return min(cfg.server.shared_state_interval_s, cfg.health.probe_interval_s / 2)

    async def start(self) -> None:
        """One exchange now (a new replica starts with the fleet's ejections), then the loop."""
        await self.exchange()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        """Stop, and take this replica's numbers out of Redis at once (best effort)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self.link.available:
            return
        with contextlib.suppress(Exception):  # expired now: the next exchange takes it out
            await asyncio.wait_for(self.link.redis.zadd(REPLICAS, {self.name: 0}), OP_TIMEOUT_S)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.period_s())
            try:
                await self.exchange()
            except Exception:  # a reply this version cannot read: own numbers, keep going
                log.exception("fleet-state exchange: unexpected reply; using this process's own")
                self._go_local()

    # ---- one exchange -------------------------------------------------------------------
    async def exchange(self) -> None:
        """Publish this process's numbers and new ejections; apply the others'."""
        link = self.link
        if not link.available:
            self._go_local()
            return
        if link.generation != self._generation:  # Redis came back, maybe empty
            self._generation = link.generation
            self._known.clear()
        endpoints = self.fleet.endpoints
        budget = self.budget()
        sent = time.monotonic()
        own = {name: endpoint.state.in_flight for name, endpoint in endpoints.items()}
        own.update(zip(BUDGET, budget.own_totals(sent), strict=True))
        args: list[str | float] = [self.name, max(MIN_TTL_S, 4 * self.period_s())]
        args.append(orjson.dumps(own).decode())
        published: list[tuple[str, float]] = []
        for name, endpoint in endpoints.items():
            until = endpoint.health.ejected_until
            if until is not None and until > sent and self._known.get(name) != until:
                args += [name, f"{until - sent:.6f}", endpoint.health.ejections_in_a_row]
                published.append((name, until))
        try:
            keys = [REPLICAS, LOAD, TOTALS, EJECTIONS]
            ejections, totals, peers = await self._exchange(keys=keys, args=args)
        except Exception as e:
            link.failed("exchange", e)
            self._go_local()
            return
        self.exchanges.inc()
        for name, until in published:
            self._known[name] = until
            self.ejections.labels("published").inc()
        self._apply_load(totals, own, budget, int(peers))
        self._adopt(ejections, sent)

    def _apply_load(
        self, totals: list[str], own: dict[str, int], budget: RetryBudget, peers: int
    ) -> None:
        """The others' numbers: the fleet's totals less what this replica just published."""
        others = {
            field: max(0, int(total) - own.get(field, 0))
            for field, total in zip(totals[::2], totals[1::2], strict=True)
        }
        for name, endpoint in self.fleet.endpoints.items():
            endpoint.state.peer_in_flight = others.get(name, 0)
        budget.peers = (others.get(BUDGET[0], 0), others.get(BUDGET[1], 0))
        self.peers.set(peers)
        self._sharing = True

    def _adopt(self, ejections: list[str], sent: float) -> None:
        """Adopt live ejections. `sent + left` never exceeds Redis's expiry (Redis read its
        clock after `sent`), which is the publisher's plus its one-way delay: an ejection
        ends within a round trip of the same moment everywhere. One already known (published
        or adopted here) is not adopted again: its expiry read back can be a round trip
        later than ours, and a replica whose probe brought the endpoint back in between
        would eject it once more."""
        now = time.monotonic()
        same = min(OP_TIMEOUT_S, self.fleet.cfg.health.base_ejection_s / 2)
        for i in range(0, len(ejections) - 2, 3):
            endpoint = self.fleet.endpoints.get(ejections[i])
            if endpoint is None:
                continue
            until = sent + float(ejections[i + 1])
            known = self._known.get(endpoint.cfg.name)
            if known is not None and until <= known + same:
                # one this process made or adopted, read back through Redis's later clock:
                # once its probe has brought the endpoint back, it must not eject it again
                continue
            health = endpoint.health
            was_out = health.ejected_until is not None and health.ejected_until > now
            if not health.adopt_ejection(until, int(ejections[i + 2]), now):
                continue
            self._known[endpoint.cfg.name] = until
            if not was_out:
                endpoint.state.healthy = health.routable(now)
                self.ejections.labels("adopted").inc()
                log.warning(
                    "endpoint %s ejected for %.1fs by another gateway replica",
                    endpoint.cfg.name,
                    until - now,
                )

    def _go_local(self) -> None:
        """Redis is down: this process's own numbers only."""
        if not self._sharing:
            return
        self._sharing = False
        for endpoint in self.fleet.endpoints.values():
            endpoint.state.peer_in_flight = 0
        self.budget().peers = (0, 0)
        self.peers.set(0)
