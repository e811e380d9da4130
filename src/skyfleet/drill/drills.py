"""The drills: real process faults and rude clients against a real `skyfleet serve`, each on
its own, bounded in time, with every process it started stopped at the end.

Each drill starts emulators (or rude upstreams) and the gateway on 127.0.0.1, drives the
project's load generator (non-streaming and streaming requests side by side), injects one
fault for `fault_s` seconds after `before_s` seconds of load, keeps the load on for
`after_s` more, stops everything, reads the ledger and returns a `DrillReport` with its
targets checked:

- `kill-upstream`: `kill -9` of an emulator under load (sockets reset mid-request and
  mid-stream), restarted on the same port after the fault;
- `rude-<mode>`: an upstream that turns rude (`drill.rude`: stops reading, accepts and
  never answers, truncated or malformed HTTP, 200 with an error or invalid JSON, streams
  forever), polite again after the fault;
- `worker-sigterm`, `worker-sigkill`: one of the two workers of `serve --workers 2`;
- `slow-clients`: slowloris heads and bodies and hundreds of idle connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from skyfleet.config import hash_key
from skyfleet.drill.attacks import Attack, run_attack
from skyfleet.drill.procs import UPSTREAM_MODEL, Processes, worker_pids
from skyfleet.drill.report import DrillReport, ledger_ids, ledger_rows
from skyfleet.drill.rude import MODES
from skyfleet.drill.traffic import DrillLoad, Sample, Traffic, drive

TENANT_KEY = "sk-drill-tenant-4f1c9a7e2b"
ADMIN_KEY = "sk-drill-admin-8d2e5b0c6a"
PROVIDER_SECRET = "sk-drill-provider-secret-3a9f7c1e"  # the endpoints' api_key (via env)
SECRETS = (TENANT_KEY, ADMIN_KEY, PROVIDER_SECRET)
FLUSH_S = 0.2  # ledger.flush_interval_s of the drills
KILL_SLACK_S = 1.5  # one flush plus event-loop stalls on a busy machine (see docs/gateway.md)


@dataclass(frozen=True)
class Timing:
    """How long each phase lasts and how much load runs through them."""

    before_s: float = 1.5
    fault_s: float = 3.0
    after_s: float = 2.5
    rate: float = 15.0  # req/s of each kind
    output_tokens: int = 96  # per request: long enough to have streams in flight at a fault
    time_scale: float = 5.0  # the emulators'

    @property
    def total_s(self) -> float:
        return self.before_s + self.fault_s + self.after_s

    def load(self, seed: int = 0) -> DrillLoad:
        return DrillLoad(
            rate=self.rate, duration_s=self.total_s, output_tokens=self.output_tokens, seed=seed
        )


SHORT = Timing()
LONG = Timing(before_s=10.0, fault_s=20.0, after_s=15.0, rate=40.0)


# ---- the fleet ------------------------------------------------------------------------------
VICTIM, SPARE = "a0", "b0"
VICTIM_TIMEOUTS = {"connect_s": 0.5, "ttfb_s": 1.0, "total_s": 2.0}


def write_config(work: Path, endpoints: list[dict[str, Any]], **sections: Any) -> Path:
    """A fleet file: one public model `chat` on `endpoints`, the drill's tenant and admin key,
    fast health checks; `sections` override."""
    doc: dict[str, Any] = {
        "server": {
            "host": "127.0.0.1",
            "port": 0,
            "admin_api_keys": [hash_key(ADMIN_KEY)],
            "watch_config": False,
            "drain_timeout_s": 10,
        },
        "ledger": {"path": str(work / "usage.sqlite"), "flush_interval_s": FLUSH_S},
        "routing": {"scrape_interval_s": 0},
        "health": {
            "consecutive_failures": 3,
            "base_ejection_s": 1.0,
            "max_ejection_s": 4.0,
            "probe_interval_s": 0.5,
            "probe_timeout_s": 0.5,
        },
        "providers": [{"name": f"p-{e['name']}"} for e in endpoints],
        "endpoints": [
            {
                "provider": f"p-{e['name']}",
                "model": UPSTREAM_MODEL,
                "api_key": "${DRILL_PROVIDER_KEY}",
                "capacity": 64,
                **e,
            }
            for e in endpoints
        ],
        "models": [{"name": "chat", "endpoints": [e["name"] for e in endpoints]}],
        "tenants": [{"name": "drill", "api_keys": [hash_key(TENANT_KEY)]}],
    }
    for k, v in sections.items():
        doc[k] = {**doc.get(k, {}), **v}
    path = work / "fleet.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


GATEWAY_ENV = {"DRILL_PROVIDER_KEY": PROVIDER_SECRET, "SKYFLEET_LOG_LEVEL": "DEBUG"}


class HealthWatch:
    """Polls /admin/endpoints: when each endpoint stopped and started taking traffic."""

    def __init__(self, url: str, t0: float) -> None:
        self.url, self.t0 = url, t0
        self.seen: list[tuple[float, dict[str, bool]]] = []
        self._task: asyncio.Task[None] | None = None

    async def _poll(self) -> None:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=timeout) as s:
            while True:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with s.get(self.url + "/admin/endpoints", headers=headers) as r:
                        rows = (await r.json())["endpoints"]
                        now = time.perf_counter() - self.t0
                        self.seen.append((now, {e["name"]: e["healthy"] for e in rows}))
                await asyncio.sleep(0.05)

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def first(self, name: str, healthy: bool, after: float) -> float | None:
        """When `name` was first seen with `healthy` at or after `after`."""
        for t, state in self.seen:
            if t >= after and state.get(name) is healthy:
                return t
        return None


# ---- secrets -----------------------------------------------------------------------------
async def served_outputs(url: str) -> list[str]:
    """What the gateway shows: /metrics, /admin/endpoints, the dashboard's state, and its
    errors for a wrong key, a near miss of the tenant key and a missing one."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    near = TENANT_KEY[:-1] + ("0" if TENANT_KEY[-1] != "0" else "1")
    out = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        for path, headers in (
            ("/metrics", {}),
            ("/admin/endpoints", admin),
            ("/dashboard/api/state", admin),
            ("/admin/endpoints", {"Authorization": f"Bearer {TENANT_KEY}"}),
        ):
            async with s.get(url + path, headers=headers) as r:
                out.append(await r.text())
        for key in ("sk-wrong", near, None):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            async with s.post(url + "/v1/chat/completions", json=body, headers=headers) as r:
                out.append(await r.text())
    return out


def secrets_in(texts: list[str]) -> int:
    """How many times any drill key or provider secret occurs in `texts`."""
    return sum(t.count(k) for t in texts for k in SECRETS)


def ledger_text(path: Path) -> str:
    """Every field of every ledger record, as text."""
    return "\n".join(repr(sorted(r.items())) for r in ledger_rows(path))


def check_secrets(report: DrillReport, texts: list[str]) -> None:
    report.extra["secrets_in_outputs"] = secrets_in(texts)
    report.targets["no key or secret in logs, errors, /metrics, dashboard, ledger"] = (
        report.extra["secrets_in_outputs"] == 0
    )


# ---- figures ----------------------------------------------------------------------------------
def fill(report: DrillReport, traffic: Traffic, ids: list[str], fault: float, end: float) -> None:
    """The figures every drill reports (load, failures, ledger, latency before/during)."""
    samples = traffic.samples
    report.sent = len(samples) + traffic.incomplete
    report.succeeded = sum(s.ok for s in samples)
    report.failed = dict(traffic.failures())
    report.json_failed = sum(not s.ok for s in traffic.of("json"))
    report.streams = len(traffic.of("stream"))
    report.streams_cut = sum(s.cut for s in samples)
    accepted = {s.request_id for s in samples if s.request_id}
    in_ledger = set(ids)
    report.accepted = len(accepted)
    report.ledger_records = len(ids)
    report.ledger_missing = len(accepted - in_ledger)
    report.ledger_extra = len(in_ledger - accepted)
    report.p99_before_ms = traffic.p99_ms("json", 0.0, fault)
    report.p99_during_ms = traffic.p99_ms("json", fault, end)
    report.ttft_p99_before_ms = traffic.p99_ms("stream", 0.0, fault)
    report.ttft_p99_during_ms = traffic.p99_ms("stream", fault, end)
    report.targets["ledger records = accepted requests"] = (
        report.ledger_missing == report.ledger_missing_allowed
        and report.ledger_extra == 0
        and len(ids) == len(set(ids))
    )


def first_served(samples: list[Sample], name: str, after: float) -> float | None:
    """When the first request sent at or after `after` that `name` served was sent."""
    return next((s.sent for s in samples if s.sent >= after and s.served_by == name), None)


def _elapsed(t: float | None, since: float) -> float | None:
    return None if t is None else round(t - since, 3)


# ---- upstream drills ----------------------------------------------------------------------
async def _upstream_drill(
    name: str,
    fault: str,
    timing: Timing,
    work: Path,
    start_victim: Callable[[Processes], Any],
    inject: Callable[[Any], None],
    heal: Callable[[Processes, Any], None],
    cuts_allowed: tuple[str, Callable[[Sample, float], bool]],
) -> DrillReport:
    """Two endpoints of one tier (`a0` the victim, `b0` an emulator with room for all the
    load); the fault hits `a0` at `before_s` and is healed `fault_s` later. `cuts_allowed`:
    the target for cut streams, and which cut stream it allows (given the fault's start)."""
    report = DrillReport(name, fault, timing.load().describe())
    with Processes() as procs:
        spare = procs.emulator(time_scale=timing.time_scale, seed=1)
        victim = start_victim(procs)
        cfg = write_config(
            work,
            [
                {"name": VICTIM, "url": victim.base_url, "timeouts": VICTIM_TIMEOUTS},
                {"name": SPARE, "url": spare.base_url},
            ],
        )
        gw = procs.gateway(cfg, env=GATEWAY_ENV)
        t0 = time.perf_counter()
        watch = HealthWatch(gw.url, t0)
        watch.start()
        on, off = timing.before_s, timing.before_s + timing.fault_s
        try:
            traffic = await drive(
                gw.base_url,
                TENANT_KEY,
                timing.load(),
                [(on, "fault", lambda: inject(victim)), (off, "heal", lambda: heal(procs, victim))],
            )
        finally:
            await watch.stop()
        on = traffic.fired.get("fault", on)
        healed = traffic.marks.get("heal", off)
        outputs = await served_outputs(gw.url)
        gw.stop(20)
        outputs += [gw.log(), ledger_text(work / "usage.sqlite")]
    report.leaked = procs.leaked
    fill(report, traffic, ledger_ids(work / "usage.sqlite"), on, off)
    cuts = [s for s in traffic.samples if s.cut]
    if name == "kill-upstream":
        victims = [s for s in traffic.of("stream") if s.served_by == VICTIM and s.sent < on]
        report.streams_in_flight_on_victim = sum(1 for s in victims if s.cut or s.done > on)
    report.recovery = {  # the fault's start → ejected; healed → serving again
        "ejected": _elapsed(watch.first(VICTIM, False, on), on),
        "back": _elapsed(first_served(traffic.samples, VICTIM, healed), healed),
    }
    report.extra["retried_requests"] = sum(1 for s in traffic.samples if s.attempts > 1)
    report.targets["0 non-streaming failures"] = report.json_failed == 0
    target, allowed = cuts_allowed
    report.targets[target] = all(allowed(s, on) for s in cuts)
    check_secrets(report, outputs)
    report.targets["no process leaked"] = not report.leaked
    return report


def _in_flight_on_victim(s: Sample, at: float) -> bool:
    return s.served_by == VICTIM and s.sent < at + 0.05


IN_FLIGHT = ("streams cut only those in flight on the killed upstream", _in_flight_on_victim)
NO_CUTS = ("0 streams cut", lambda s, at: False)
SERVED_BY_VICTIM = (
    "streams cut only those the faulty upstream served",
    lambda s, at: s.served_by == VICTIM,
)


async def kill_upstream(timing: Timing, work: Path) -> DrillReport:
    """`kill -9` of the emulator behind `a0` under load; restarted on its port after the fault."""

    def start(procs: Processes) -> Any:
        return procs.emulator(time_scale=timing.time_scale)

    def inject(victim: Any) -> None:
        os.kill(victim.proc.pid, signal.SIGKILL)

    def heal(procs: Processes, victim: Any) -> None:
        victim.proc.wait()
        procs.emulator(time_scale=timing.time_scale, port=victim.port)

    return await _upstream_drill(
        "kill-upstream",
        f"kill -9 of the emulator behind {VICTIM} at {timing.before_s:g} s, restarted on its "
        f"port {timing.fault_s:g} s later",
        timing,
        work,
        start,
        inject,
        heal,
        IN_FLIGHT,
    )


def rude_drill(mode: str) -> Callable[[Timing, Path], Awaitable[DrillReport]]:
    """The drill of one rude mode (see `skyfleet.drill.rude`)."""

    async def run(timing: Timing, work: Path) -> DrillReport:
        return await _upstream_drill(
            f"rude-{mode}",
            f"the upstream behind {VICTIM} turns {mode} at {timing.before_s:g} s for "
            f"{timing.fault_s:g} s (timeouts {VICTIM_TIMEOUTS})",
            timing,
            work,
            lambda procs: procs.rude(mode),
            lambda victim: victim.rude(True),
            lambda procs, victim: victim.rude(False),
            SERVED_BY_VICTIM if mode == "forever" else NO_CUTS,
        )

    return run


# ---- gateway worker drills ------------------------------------------------------------------
def _prefix(request_id: str) -> str:
    return request_id[4:16]  # req-<12 hex of the process><counter>


def worker_drill(sig: signal.Signals) -> Callable[[Timing, Path], Awaitable[DrillReport]]:
    """SIGTERM or SIGKILL of one of the two workers of `serve --workers 2` under load."""

    async def run(timing: Timing, work: Path) -> DrillReport:
        name = f"worker-{sig.name.lower()}"
        report = DrillReport(
            name,
            f"{sig.name} of one of 2 gateway workers at {timing.before_s:g} s",
            timing.load().describe(),
        )
        with Processes() as procs:
            emu = procs.emulator(time_scale=timing.time_scale)
            cfg = write_config(work, [{"name": SPARE, "url": emu.base_url, "capacity": 256}])
            gw = procs.gateway(cfg, workers=2, env=GATEWAY_ENV)
            victim, *_ = worker_pids(gw, 2)
            traffic = await drive(
                gw.base_url,
                TENANT_KEY,
                timing.load(),
                [(timing.before_s, "kill", lambda: os.kill(victim, sig))],
            )
            for pid in worker_pids(gw, 3, timeout=0.0):
                procs.note(pid)
            outputs = await served_outputs(gw.url)
            gw.stop(20)
            outputs += [gw.log(), ledger_text(work / "usage.sqlite")]
        report.leaked = procs.leaked
        kill = traffic.fired.get("kill", timing.before_s)
        samples = traffic.samples
        before = {_prefix(s.request_id) for s in samples if s.request_id and s.sent < kill}
        later = {_prefix(s.request_id) for s in samples if s.request_id and s.sent > kill + 1.0}
        gone = before - later
        ids = ledger_ids(work / "usage.sqlite")
        if sig is signal.SIGKILL:  # the documented bound: the last flush interval, in flight
            in_ledger = set(ids)
            bound = kill - FLUSH_S - KILL_SLACK_S
            report.ledger_missing_allowed = sum(
                1
                for s in samples
                if s.request_id
                and s.request_id not in in_ledger
                and _prefix(s.request_id) in gone
                and s.done >= bound
            )
        fill(report, traffic, ids, kill, kill + timing.fault_s)
        replaced = next(
            (
                s.sent
                for s in samples
                if s.request_id and s.sent > kill and _prefix(s.request_id) not in before
            ),
            None,
        )
        report.recovery = {"replaced": _elapsed(replaced, kill)}  # a new worker serving
        failed = [s for s in samples if not s.ok]
        report.extra["failed_sent_before_the_kill"] = sum(s.sent < kill for s in failed)
        report.extra["failed_sent_after_the_kill"] = sum(s.sent >= kill for s in failed)
        survivors = [s for s in samples if s.sent > kill + 1.0]
        report.extra["served_after_the_kill"] = sum(s.ok for s in survivors)
        report.targets["the other worker keeps serving"] = bool(survivors) and all(
            s.ok for s in survivors
        )
        report.targets["a new worker replaces it"] = replaced is not None
        check_secrets(report, outputs)
        report.targets["no process leaked"] = not report.leaked
        return report

    return run


# ---- slow clients ------------------------------------------------------------------------
SLOW_LIMITS = {
    "header_timeout_s": 2.0,
    "body_timeout_s": 2.0,
    "keepalive_timeout_s": 5.0,
    "max_connections": 300,
}


async def slow_clients(timing: Timing, work: Path, attack: Attack | None = None) -> DrillReport:
    """Slowloris heads and bodies and idle connections while the load runs."""
    attack = attack or Attack(api_key=TENANT_KEY)
    report = DrillReport(
        "slow-clients",
        f"{attack.describe()} from {timing.before_s:g} s for {timing.fault_s:g} s; limits "
        f"{SLOW_LIMITS}",
        timing.load().describe(),
    )
    with Processes() as procs:
        emu = procs.emulator(time_scale=timing.time_scale)
        cfg = write_config(
            work, [{"name": SPARE, "url": emu.base_url, "capacity": 256}], server=SLOW_LIMITS
        )
        gw = procs.gateway(cfg, env=GATEWAY_ENV)
        stop = asyncio.Event()
        peak = 0.0

        async def attacking() -> dict[str, Any]:
            nonlocal peak
            await asyncio.sleep(timing.before_s)
            task = asyncio.create_task(run_attack(gw.host, gw.port, attack, stop))
            async with aiohttp.ClientSession() as s:
                end = time.monotonic() + timing.fault_s
                while time.monotonic() < end:
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        async with s.get(gw.url + "/metrics") as r:
                            peak = max(peak, _gauge(await r.text(), "skyfleet_client_connections"))
                    await asyncio.sleep(0.1)
                async with s.get(gw.url + "/metrics") as r:
                    counters = _counters(await r.text(), "skyfleet_client_connections_closed")
            stop.set()
            return {"outcomes": await task, "closed": counters}

        traffic, hit = await asyncio.gather(
            drive(gw.base_url, TENANT_KEY, timing.load()), attacking()
        )
        outputs = await served_outputs(gw.url)
        gw.stop(20)
        outputs += [gw.log(), ledger_text(work / "usage.sqlite")]
    report.leaked = procs.leaked
    on = timing.before_s
    fill(report, traffic, ledger_ids(work / "usage.sqlite"), on, on + timing.fault_s)
    outcomes = hit["outcomes"]
    for kind, o in outcomes.items():
        report.extra[kind] = o.summary()
    report.extra["gateway_closed_connections"] = hit["closed"]
    report.extra["peak_open_connections"] = peak
    check_secrets(report, outputs)
    heads, bodies = outcomes["slow_heads"], outcomes["slow_bodies"]
    report.targets["0 failures of other clients"] = not report.failed
    report.targets["slow heads closed (408) within header_timeout_s"] = (
        set(heads.statuses) <= {"408"}
        and heads.closed > 0
        and heads.longest_s() <= SLOW_LIMITS["header_timeout_s"] + 1.0
    )
    report.targets["slow bodies closed (408) within body_timeout_s"] = (
        set(bodies.statuses) <= {"408"}
        and bodies.closed > 0
        and bodies.longest_s() <= SLOW_LIMITS["body_timeout_s"] + 1.0
    )
    report.targets["open connections ≤ max_connections"] = peak <= SLOW_LIMITS["max_connections"]
    report.targets["no process leaked"] = not report.leaked
    return report


def _gauge(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def _counters(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "_total{"):
            label = line.split('"')[1]
            out[label] = float(line.rsplit(" ", 1)[1])
    return out


# ---- the list ------------------------------------------------------------------------------
DrillFn = Callable[[Timing, Path], Awaitable[DrillReport]]


@dataclass(frozen=True)
class Drill:
    """One drill: its name, what it does, how it runs."""

    name: str
    what: str
    run: DrillFn


_RUDE = {
    "no-read": "an upstream that stops reading its sockets (full TCP buffers)",
    "silent": "an upstream that accepts and never answers",
    "truncated": "an upstream whose answers stop short (status line, headers, body, event)",
    "malformed": "an upstream that answers with malformed HTTP",
    "error-200": "an upstream that answers 200 with an error body or error event",
    "bad-json": "an upstream that answers 200 with invalid JSON",
    "forever": "an upstream whose streams (and chunked bodies) never end",
}
DRILLS: dict[str, Drill] = {
    d.name: d
    for d in (
        Drill("kill-upstream", "kill -9 of an emulator under load, restarted later", kill_upstream),
        *(Drill(f"rude-{m}", _RUDE[m], rude_drill(m)) for m in MODES),
        *(
            Drill(f"worker-{sig.name.lower()}", f"{sig.name} of one of two gateway workers", run)
            for sig in (signal.SIGTERM, signal.SIGKILL)
            for run in [worker_drill(sig)]
        ),
        Drill("slow-clients", "slowloris heads and bodies, many idle connections", slow_clients),
    )
}


def run_drill(name: str, timing: Timing = SHORT) -> DrillReport:
    """Run one drill in a fresh temporary directory (its own event loop)."""
    drill = DRILLS[name]
    with tempfile.TemporaryDirectory(prefix=f"skyfleet-drill-{name}-") as work:
        return _run(drill.run(timing, Path(work)))


def _run(coro: Awaitable[DrillReport]) -> DrillReport:
    async def main() -> DrillReport:
        return await coro

    return asyncio.run(main())
