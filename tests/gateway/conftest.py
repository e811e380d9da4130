"""Fixtures: real emulator and gateway processes on 127.0.0.1, stopped in teardown."""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from skyfleet.config import hash_key
from skyfleet.emulator.process import EmulatorProcess, start_emulator
from skyfleet.gateway.process import GatewayProcess, start_gateway

PROFILE = "Llama-3.1-8B@H100-SXM-80GB"
UPSTREAM_MODEL = "Llama-3.1-8B"
KEY = "sk-test-acme"
HTTP = httpx.Client(timeout=30)  # shared: a new httpx client costs ~0.1 s (TLS context)
ADMIN_KEY = "sk-test-admin"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
NEEDS_REDIS = pytest.mark.skipif(
    not Path(REDIS_SERVER).exists(),
    reason="redis-server is not installed (`make test` installs it: apt-get install redis-server)",
)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A throw-away redis-server on a free port (no persistence); `kill` and `start` again
    on the same port simulate an outage."""

    def __init__(self, password: str | None = None) -> None:
        self.port = free_port()
        self.password = password
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis(port=self.port, password=password, decode_responses=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start (again) on this port and wait until it answers."""
        cmd = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        cmd += ["--save", "", "--appendonly", "no"]
        if self.password is not None:
            cmd += ["--requirepass", self.password]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise
                time.sleep(0.02)

    def now(self) -> float:
        s, us = self.client.time()
        return float(s) + us / 1e6

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-conversation."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.client.connection_pool.disconnect()

    def stop(self) -> None:
        self.client.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the test module."""
    r = RedisServer()
    yield r
    r.stop()


def fleet_config(
    path: Path,
    endpoints: list[dict[str, Any]],
    *,
    model: str = "chat",
    tenants: bool = True,
    **sections: Any,
) -> Path:
    """Write a fleet YAML with one public model served by `endpoints`."""
    providers = sorted({e["provider"] for e in endpoints})
    doc: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0, "admin_api_keys": [hash_key(ADMIN_KEY)]},
        "ledger": {"path": str(path.parent / "usage.sqlite"), "flush_interval_s": 0.1},
        "routing": {"scrape_interval_s": 0.5},
        "health": {
            "consecutive_failures": 3,
            "base_ejection_s": 1.0,
            "max_ejection_s": 4.0,
            "probe_interval_s": 0.5,
            "probe_timeout_s": 0.5,
        },
        "providers": [{"name": p} for p in providers],
        "endpoints": [{"model": UPSTREAM_MODEL, "capacity": 16, **e} for e in endpoints],
        "models": [{"name": model, "endpoints": [e["name"] for e in endpoints]}],
    }
    if tenants:
        doc["tenants"] = [{"name": "acme", "api_keys": [hash_key(KEY)]}]
    for k, v in sections.items():
        doc[k] = {**doc.get(k, {}), **v}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def ledger_rows(gw_dir: Path, wait_for: int | None = None) -> list[dict[str, Any]]:
    """All usage records (waits up to 5 s for `wait_for` rows to be flushed)."""
    db = gw_dir / "usage.sqlite"
    deadline = time.monotonic() + 5
    while True:
        rows: list[dict[str, Any]] = []
        if db.exists():
            conn = sqlite3.connect(db)
            conn.row_factory = sqlite3.Row
            try:
                rows = [dict(r) for r in conn.execute("SELECT * FROM usage")]
            except sqlite3.OperationalError:
                rows = []
            finally:
                conn.close()
        if wait_for is None or len(rows) >= wait_for or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


@pytest.fixture
def emulators() -> Iterator[Callable[..., EmulatorProcess]]:
    """Factory: start an emulator (fast time scale); all are stopped at teardown."""
    started: list[EmulatorProcess] = []

    def start(time_scale: float = 20.0, seed: int = 0, **kw: Any) -> EmulatorProcess:
        e = start_emulator(
            PROFILE, time_scale=time_scale, seed=seed, served_model_name=UPSTREAM_MODEL, **kw
        )
        started.append(e)
        return e

    yield start
    for e in started:
        e.stop()


@pytest.fixture
def gateway() -> Iterator[Callable[..., GatewayProcess]]:
    """Factory: start a gateway subprocess for a config file; stopped at teardown."""
    started: list[GatewayProcess] = []

    def start(config: Path, **kw: Any) -> GatewayProcess:
        g = start_gateway(config, **kw)
        started.append(g)
        return g

    yield start
    for g in started:
        g.stop(10)


@dataclass
class Result:
    """One request of a load run."""

    stream: bool
    status: int
    ok: bool
    endpoint: str | None
    attempts: int
    t: float  # seconds since the load started, when the request finished
    error: str = ""


def one_request(
    client: httpx.Client, gw: GatewayProcess, stream: bool, max_tokens: int = 8
) -> Result:
    """Send one chat request; a stream is ok only if it ends with [DONE] and no error event."""
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    body |= {"max_tokens": max_tokens, "stream": stream}
    h = {"Authorization": f"Bearer {KEY}"}
    try:
        if not stream:
            r = client.post(gw.base_url + "/chat/completions", json=body, headers=h)
            ok = r.status_code == 200 and bool(r.json()["choices"][0]["message"]["content"])
            return Result(
                False,
                r.status_code,
                ok,
                r.headers.get("x-skyfleet-endpoint"),
                int(r.headers.get("x-skyfleet-attempts", 0)),
                0.0,
                "" if ok else r.text,
            )
        with client.stream("POST", gw.base_url + "/chat/completions", json=body, headers=h) as r:
            lines = [ln for ln in r.iter_lines() if ln]
            done = bool(lines) and lines[-1] == "data: [DONE]"
            err = next((ln for ln in lines if '"error"' in ln), "")
            ok = r.status_code == 200 and done and not err
            return Result(
                True,
                r.status_code,
                ok,
                r.headers.get("x-skyfleet-endpoint"),
                int(r.headers.get("x-skyfleet-attempts", 0)),
                0.0,
                err or ("" if ok else "\n".join(lines[-3:])),
            )
    except httpx.HTTPError as e:
        return Result(stream, 0, False, None, 0, 0.0, repr(e))


def run_load(
    gw: GatewayProcess,
    duration_s: float,
    workers: int = 4,
    events: list[tuple[float, Callable[[], object]]] = (),  # type: ignore[assignment]
    max_tokens: int = 8,
) -> list[Result]:
    """Closed-loop load (every other request a stream) while `events` fire at their times."""
    results: list[Result] = []
    lock = threading.Lock()
    t0 = time.monotonic()
    stop = t0 + duration_s

    def worker(i: int) -> None:
        n = 0
        with httpx.Client(timeout=30) as c:
            while time.monotonic() < stop:
                r = one_request(c, gw, stream=(n + i) % 2 == 1, max_tokens=max_tokens)
                r.t = time.monotonic() - t0
                with lock:
                    results.append(r)
                n += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for th in threads:
        th.start()
    for at, fn in sorted(events, key=lambda x: x[0]):
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        fn()
    for th in threads:
        th.join()
    return results


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """One real PostgreSQL server for the session (temp dir, free port), stopped at the end."""
    from skyfleet.gateway.ledger.pg_server import missing_reason, start_postgres

    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    srv = start_postgres()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def pg_url(postgres: Any, request: pytest.FixtureRequest) -> str:
    """A fresh database on the session's PostgreSQL server; its URL."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    postgres.psql(f'DROP DATABASE IF EXISTS "{name}"')
    url: str = postgres.create_database(name)
    return url
