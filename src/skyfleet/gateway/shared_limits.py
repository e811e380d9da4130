"""Tenant limits shared by every gateway process through Redis (opt-in: ``server.redis_url``).

Without it each process keeps its own limiters, so ``serve --workers N`` (or N replicas) lets
a tenant through at up to N× its limits. With it, the decision of `TenantLimiter.try_acquire`
is taken by one atomic Lua script in Redis, with Redis's clock (replicas' clocks may differ):

- requests/min and tokens/min: GCRA, one TAT per key (``{tenant}:req``, ``{tenant}:tok``),
  the same arithmetic as `policy.ratelimit.Gcra`; a key expires 60 s after its bucket is full;
- concurrency: a sorted set of slot ids scored by their expiry (``now + SLOT_TTL_S``); the
  process that holds a slot refreshes it every third of that, so a crashed worker's slots
  vanish within `SLOT_TTL_S`;
- daily budget: a float counter per UTC day (``{tenant}:spend:<day>``), kept two days.

Tokens are charged up front on the estimate and corrected by ``actual − estimate`` when usage
is known, exactly as the in-process limiter does. The pure policy is unchanged:
`SharedLimits.acquire` returns a `SharedCharge`, a `TenantLimiter` whose decision was already
taken in Redis, and `policy.admission.decide` uses it like any other limiter.

Batching (group commit): each tenant has at most one script call in flight. Admissions and
corrections that arrive meanwhile (or in the same event-loop turn) wait and go together in
the next call: the corrections first (summed: the GCRA adjustment is additive), then each
admission in arrival order, exactly as if sent one by one. Under load a call carries several
requests; alone, a request waits for nothing but its own round trip. So the per-request cost
is at most one call (acquire), and the correction rides with a later one.

Failure: unreachable at start-up → `SkyfleetError` naming the URL (the gateway does not
start). At run time a failed call fails **open** to the process's own limiter (each worker
then enforces the full limit by itself, as without Redis): the `RedisLink` both this store and
the fleet state use goes down (one warning, ``skyfleet_shared_state_up`` 0,
``skyfleet_shared_state_errors_total{op}``), no request calls Redis until its background ping
answers again. Availability over strictness: a rate-limit store must not take the gateway
down with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from skyfleet.gateway.redis_link import RedisLink
from skyfleet.policy.ratelimit import (
    CONCURRENCY_RETRY_S,
    DAY_S,
    MIN_RETRY_S,
    Charge,
    Gcra,
    LimitState,
    RateDecision,
    TenantLimiter,
    TenantLimits,
)

KEY_PREFIX = "skyfleet:limits:"
SLOT_TTL_S = 30.0  # a slot not refreshed for this long is freed (crashed worker)

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function fmt(x) return string.format('%.6f', x) end
local function set_tat(key, tat)  -- kept 60 s past a full bucket
  redis.call('SET', key, fmt(tat), 'PX', math.ceil((tat - now) * 1000) + 60000)
end
"""

# KEYS: requests TAT, tokens TAT, concurrency slots (zset), today's spend
# ARGV: req interval (0 = no limit), req tau, tok interval (0 = no limit), tok tau,
#       max concurrency (0 = none), budget usd (< 0 = none), slot ttl s,
#       corrections: req delta (units), tok delta (units), cost usd, n slots to free, slot ids…,
#       then per admission: est tokens, est cost usd, slot id ('-' = none)
# Returns {now, req TAT, tok TAT, {ok, req wait, tok wait, conc block, budget block}…}
_BATCH = (
    _NOW
    + """
local ri, rtau = tonumber(ARGV[1]), tonumber(ARGV[2])
local ti, ttau = tonumber(ARGV[3]), tonumber(ARGV[4])
local maxc, budget, ttl = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local rdelta, tdelta, cost = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local nfree = tonumber(ARGV[11])
local rtat, ttat, rdirty, tdirty, cdirty = now, now, false, false, false
if ri > 0 then
  local v = redis.call('GET', KEYS[1])
  if v then rtat = math.max(tonumber(v) + rdelta * ri, now); rdirty = rdelta ~= 0 end
end
if ti > 0 then
  local v = redis.call('GET', KEYS[2])
  if v then ttat = math.max(tonumber(v) + tdelta * ti, now); tdirty = tdelta ~= 0 end
end
for i = 1, nfree do redis.call('ZREM', KEYS[3], ARGV[11 + i]) end
if cost > 0 then
  redis.call('INCRBYFLOAT', KEYS[4], ARGV[10])
  redis.call('EXPIRE', KEYS[4], 172800)
end
local first = 12 + nfree
local count, spent = 0, 0
if #ARGV >= first then
  if maxc > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
    count = redis.call('ZCARD', KEYS[3])
  end
  if budget >= 0 then spent = tonumber(redis.call('GET', KEYS[4]) or '0') end
end
local function wait(tat, interval, tau, c)
  return math.max(0, tat + c * interval - math.max(tau, c * interval) - now)
end
local out = {}
for i = first, #ARGV - 2, 3 do
  local est, ecost = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local rwait, twait, cblock, bblock = 0, 0, 0, 0
  if ri > 0 then rwait = wait(rtat, ri, rtau, 1) end
  if ti > 0 then twait = wait(ttat, ti, ttau, est) end
  if maxc > 0 and count >= maxc then cblock = 1 end
  if budget >= 0 and (spent >= budget or spent + ecost > budget) then bblock = 1 end
  local ok = 0
  if rwait <= 0 and twait <= 0 and cblock == 0 and bblock == 0 then
    ok = 1
    if ri > 0 then rtat = rtat + ri; rdirty = true end
    if ti > 0 then ttat = ttat + est * ti; tdirty = true end
    if maxc > 0 then
      redis.call('ZADD', KEYS[3], now + ttl, ARGV[i + 2])
      count = count + 1
      cdirty = true
    end
  end
  table.insert(out, {ok, fmt(rwait), fmt(twait), cblock, bblock})
end
if rdirty then set_tat(KEYS[1], rtat) end
if tdirty then set_tat(KEYS[2], ttat) end
if cdirty then redis.call('PEXPIRE', KEYS[3], math.ceil(ttl * 1000) + 1000) end
return {fmt(now), fmt(rtat), fmt(ttat), out}
"""
)

# KEYS: concurrency slots. ARGV: slot ttl s, slot ids…
_HEARTBEAT = (
    _NOW
    + """
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 1000) + 1000)
return #ARGV - 1
"""
)


def _keys(tenant: str, day: int) -> list[str]:
    base = f"{KEY_PREFIX}{{{tenant}}}"  # hash tag: one cluster slot per tenant
    return [f"{base}:req", f"{base}:tok", f"{base}:conc", f"{base}:spend:{day}"]


def _gcra_args(gcra: Gcra | None) -> list[float]:
    return [0.0, 0.0] if gcra is None else [gcra.interval, gcra.tau]


Verdict = list[Any] | None
"""One admission's answer from the script, ``[ok, req wait, tok wait, conc block, budget
block]``, or None: decide locally (Redis failed)."""


@dataclass(slots=True)
class _Ask:
    est: float
    cost: float
    slot: str
    answer: asyncio.Future[Verdict]


@dataclass(slots=True)
class _Batch:
    """What one tenant sends in its next script call."""

    asks: list[_Ask] = field(default_factory=list)
    req_delta: float = 0.0
    tok_delta: float = 0.0
    cost: float = 0.0
    free: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.asks or self.free or self.req_delta or self.tok_delta or self.cost)


@dataclass(slots=True)
class _Lane:
    """One tenant's queue: the batch being filled, and whether a call is in flight."""

    limits: TenantLimits
    pending: _Batch = field(default_factory=_Batch)
    busy: bool = False
    scheduled: bool = False


class SharedCharge(TenantLimiter):
    """One request's limiter: `try_acquire` returns the decision Redis already took;
    `complete` and `refund` send the correction to Redis (in the background).

    Header values (`state`) come from the tenant's mirror: the latest TATs Redis returned.
    """

    def __init__(
        self,
        store: SharedLimits,
        tenant: str,
        mirror: TenantLimiter,
        decision: RateDecision,
        est_tokens: float,
        slot: str,
    ) -> None:
        super().__init__(mirror.limits, requests=mirror.requests, tokens=mirror.tokens)
        self._store, self._tenant, self._mirror = store, tenant, mirror
        self._decision, self._est, self._slot = decision, est_tokens, slot
        self._settled = not decision.allowed

    def try_acquire(self, now: float, est_tokens: float, est_cost_usd: float = 0.0) -> RateDecision:
        """The decision taken in Redis (charged there when allowed)."""
        return self._decision

    def state(self, now: float) -> LimitState:
        """Header values from the latest shared state this process saw."""
        return self._mirror.state(now)

    def complete(
        self, now: float, charge: Charge, actual_tokens: float | None, cost_usd: float = 0.0
    ) -> None:
        """Correct the token charge to `actual_tokens`, free the slot, add the spend."""
        if self._settled:
            return
        self._settled = True
        delta = 0.0 if actual_tokens is None else actual_tokens - charge.tokens
        if self._mirror.tokens is not None and delta:
            self._mirror.tokens.adjust(now, delta)
        self._store.settle(self._tenant, self._mirror.limits, 0.0, delta, self._slot, cost_usd)

    def refund(self, now: float, charge: Charge) -> None:
        """Undo the request's charges (admitted, then shed or abandoned in the queue)."""
        if self._settled:
            return
        self._settled = True
        mirror = self._mirror
        if mirror.requests is not None:
            mirror.requests.adjust(now, -1.0)
        if mirror.tokens is not None:
            mirror.tokens.adjust(now, -charge.tokens)
        self._store.settle(self._tenant, mirror.limits, -1.0, -charge.tokens, self._slot, 0.0)


class SharedLimits:
    """The Redis-backed store of every tenant's limiter state, for one gateway process."""

    def __init__(self, link: RedisLink, slot_ttl_s: float = SLOT_TTL_S) -> None:
        self.link = link
        self.slot_ttl_s = slot_ttl_s  # heartbeat every third of it
        self._batch = link.redis.register_script(_BATCH)
        self._heartbeat = link.redis.register_script(_HEARTBEAT)
        self._mirrors: dict[str, TenantLimiter] = {}
        self._lanes: dict[str, _Lane] = {}
        self._slots: dict[str, set[str]] = {}  # tenant → slot ids this process holds
        self._ids = itertools.count()
        self._prefix = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._tasks: set[asyncio.Task[None]] = set()
        self._beat: asyncio.Task[None] | None = None

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Check that Redis answers (raises `SkyfleetError` naming the URL) and start the
        slot heartbeat."""
        await self.link.start()
        self._beat = asyncio.get_running_loop().create_task(self._beat_loop())

    async def close(self) -> None:
        """Send the pending corrections and stop the heartbeat (the link is closed by its
        owner)."""
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            for tenant, lane in self._lanes.items():  # what waits for the end of this turn
                self._send(tenant, lane)
            if not self._tasks:
                break
            await asyncio.wait(set(self._tasks), timeout=deadline - time.monotonic())
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat

    # ---- deciding -----------------------------------------------------------------------
    def mirror(self, tenant: str, limits: TenantLimits) -> TenantLimiter:
        """The tenant's local copy of the shared state (for headers), rebuilt on a change."""
        mirror = self._mirrors.get(tenant)
        if mirror is None or mirror.limits != limits:
            mirror = self._mirrors[tenant] = TenantLimiter(limits)
        return mirror

    def headers(self, tenant: str, local: TenantLimiter) -> dict[str, str]:
        """`x-ratelimit-*` values: the shared state, or the local limiter's while Redis is down."""
        now = time.time()
        if not self.link.available:
            return local.state(now).headers()
        return self.mirror(tenant, local.limits).state(now).headers()

    async def acquire(
        self, tenant: str, local: TenantLimiter, est_tokens: float, est_cost_usd: float = 0.0
    ) -> TenantLimiter:
        """Check and charge every limit of `tenant` in Redis, atomically (in the tenant's
        next batch).

        Returns a `SharedCharge` carrying the decision, or `local` (the process's own
        limiter, which then decides) when Redis is failing.
        """
        if not self.link.available:
            return local
        limits = local.limits
        slot = f"{self._prefix}-{next(self._ids)}" if limits.max_concurrency is not None else ""
        answer: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        lane = self._lane(tenant, limits)
        lane.pending.asks.append(_Ask(est_tokens, est_cost_usd, slot, answer))
        self._kick(tenant, lane)
        try:
            verdict = await asyncio.shield(answer)
        except asyncio.CancelledError:  # the client left: undo the charge once it lands
            answer.add_done_callback(
                lambda future: self._undo(future, tenant, limits, est_tokens, slot)
            )
            raise
        if verdict is None:
            return local
        return self._ticket(tenant, limits, verdict, est_tokens, slot)

    def _ticket(
        self, tenant: str, limits: TenantLimits, verdict: Verdict, est: float, slot: str
    ) -> SharedCharge:
        assert verdict is not None
        allowed, rwait, twait, cblock, bblock = verdict
        mirror = self.mirror(tenant, limits)
        now = time.time()
        if int(allowed):
            if slot:
                self._slots.setdefault(tenant, set()).add(slot)
            decision = RateDecision(True, 0.0, None, None, Charge(est, counted_concurrency=True))
        else:
            waits = [(float(rwait), "requests"), (float(twait), "tokens")]
            if int(cblock):
                waits.append((CONCURRENCY_RETRY_S, "concurrency"))
            if int(bblock):
                waits.append(((math.floor(now / DAY_S) + 1) * DAY_S - now, "budget"))
            blocking = [(seconds, limit) for seconds, limit in waits if seconds > 0.0] or [
                (MIN_RETRY_S, "tokens" if mirror.requests is None else "requests")
            ]
            wait, reason = max(blocking)  # (a wait below 1 µs prints as 0: still a refusal)
            decision = RateDecision(False, max(wait, MIN_RETRY_S), reason, mirror.state(now))
        return SharedCharge(self, tenant, mirror, decision, est, slot)

    @staticmethod
    def _sync(mirror: TenantLimiter, shift: float, rtat: str, ttat: str) -> None:
        """Copy Redis's TATs into the mirror, shifted from Redis's clock to ours."""
        if mirror.requests is not None:
            mirror.requests.tat = float(rtat) + shift
        if mirror.tokens is not None:
            mirror.tokens.tat = float(ttat) + shift

    # ---- corrections --------------------------------------------------------------------
    def settle(
        self,
        tenant: str,
        limits: TenantLimits,
        req_delta: float,
        tok_delta: float,
        slot: str,
        cost_usd: float,
    ) -> None:
        """Queue a correction (token delta, request refund, slot release, spend) for the
        tenant's next batch. While Redis is down it is dropped (a slot then expires)."""
        if slot:
            self._slots.get(tenant, set()).discard(slot)
        if not self.link.available:
            return
        lane = self._lane(tenant, limits)
        batch = lane.pending
        batch.req_delta += req_delta
        batch.tok_delta += tok_delta
        batch.cost += cost_usd
        if slot:
            batch.free.append(slot)
        self._kick(tenant, lane)

    def _undo(
        self,
        future: asyncio.Future[Verdict],
        tenant: str,
        limits: TenantLimits,
        est: float,
        slot: str,
    ) -> None:
        verdict = None if future.cancelled() else future.result()
        if verdict is None or not int(verdict[0]):
            return
        self.settle(tenant, limits, -1.0, -est, slot, 0.0)

    # ---- batches ------------------------------------------------------------------------
    def _lane(self, tenant: str, limits: TenantLimits) -> _Lane:
        lane = self._lanes.get(tenant)
        if lane is None:
            lane = self._lanes[tenant] = _Lane(limits)
        elif lane.limits != limits:  # reloaded: the next batch carries the new limits
            lane.limits = limits
        return lane

    def _kick(self, tenant: str, lane: _Lane) -> None:
        """Send the lane's batch at the end of this event-loop turn, unless a call is in
        flight (then it goes when that one returns)."""
        if not lane.busy and not lane.scheduled:
            lane.scheduled = True
            asyncio.get_running_loop().call_soon(self._send, tenant, lane)

    def _send(self, tenant: str, lane: _Lane) -> None:
        lane.scheduled = False
        if lane.busy or not lane.pending:
            return
        batch, lane.pending = lane.pending, _Batch()
        if not self.link.available:  # went down while this batch waited: decide locally
            for ask in batch.asks:
                ask.answer.set_result(None)
            return
        lane.busy = True
        task = asyncio.get_running_loop().create_task(self._run(tenant, lane, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, tenant: str, lane: _Lane, batch: _Batch) -> None:
        limits = lane.limits
        mirror = self.mirror(tenant, limits)
        day = math.floor(time.time() / DAY_S)
        args: list[str | float] = [*_gcra_args(mirror.requests), *_gcra_args(mirror.tokens)]
        args += [limits.max_concurrency or 0]
        args += [-1.0 if limits.daily_budget_usd is None else limits.daily_budget_usd]
        args += [self.slot_ttl_s, batch.req_delta, batch.tok_delta, batch.cost, len(batch.free)]
        args += batch.free
        for ask in batch.asks:
            args += [ask.est, ask.cost, ask.slot or "-"]
        try:
            try:
                rnow, rtat, ttat, results = await self._batch(keys=_keys(tenant, day), args=args)
            except Exception as e:
                self.link.failed("acquire" if batch.asks else "settle", e)
                return
            self._sync(mirror, time.time() - float(rnow), rtat, ttat)
            for ask, result in zip(batch.asks, results, strict=True):
                ask.answer.set_result(result)
        finally:
            for ask in batch.asks:  # not answered (failed, cancelled): decide locally
                if not ask.answer.done():
                    ask.answer.set_result(None)
            lane.busy = False
            if lane.pending:
                self._kick(tenant, lane)

    async def _beat_loop(self) -> None:
        """Refresh the expiry of every slot this process holds (crash safety net)."""
        while True:
            await asyncio.sleep(self.slot_ttl_s / 3)
            for tenant, slots in list(self._slots.items()):
                if not slots or not self.link.available:
                    continue
                try:
                    await self._heartbeat(
                        keys=[_keys(tenant, 0)[2]], args=[str(self.slot_ttl_s), *sorted(slots)]
                    )
                except Exception as e:
                    self.link.failed("heartbeat", e)
