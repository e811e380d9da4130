"""The PostgreSQL ledger (`ledger.url`) against a real server: batching, idempotent retries,
migrations, a newer schema refused, clear errors for bad URLs, and `skyfleet usage`."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from skyfleet.config import parse_config
from skyfleet.errors import ConfigError
from skyfleet.gateway.ledger import Ledger, LedgerError, UsageRecord, mask_url, summarize
from skyfleet.gateway.ledger.schema import SCHEMA_VERSION

CLI = [sys.executable, "-c", "from skyfleet.cli import main; main()"]


def rec(i: int, ts: float, **kw: Any) -> UsageRecord:
    base: dict[str, Any] = {
        "request_id": f"r{i}",
        "ts": ts,
        "tenant": "acme" if i % 2 else "batch",
        "model": "chat",
        "endpoint": "a0" if i % 5 else "g0",
        "provider": "azure" if i % 5 else "gcp",
        "status": 200 if i % 10 else 502,
        "prompt_tokens": 10,
        "completion_tokens": i,
        "cost_usd": 0.001,
        "ttft_s": None if i % 3 == 0 else 0.05,
        "latency_s": 0.1,
        "attempts": 1,
        "stream": bool(i % 2),
    }
    return UsageRecord(**(base | kw))


async def count(url: str, sql: str = "SELECT COUNT(*) FROM usage") -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_batches_flush_on_close_and_usage_cli_reads_postgres(pg_url: str) -> None:
    led = Ledger(pg_url, flush_interval_s=60, max_batch=64)  # only close() flushes here
    await led.start()
    now = time.time()
    for i in range(250):
        led.add(rec(i, now - (7200 if i < 50 else 0)))
    assert await count(pg_url) == 0, "nothing is written before a flush"
    await led.close()
    assert led.written == 250 and await count(pg_url) == 250
    conn = await asyncpg.connect(pg_url)
    row = await conn.fetchrow("SELECT * FROM usage WHERE request_id = 'r7'")
    await conn.close()
    assert row is not None
    assert (row["tenant"], row["stream"], row["completion_tokens"], row["ttft_s"]) == (
        "acme",
        True,
        7,
        0.05,
    )
    by_provider = await asyncio.to_thread(summarize, pg_url, since=None, until=None, by="provider")
    rows = {r["key"]: r for r in by_provider}
    assert rows["azure"]["requests"] == 200 and rows["gcp"]["requests"] == 50
    assert sum(r["completion_tokens"] for r in rows.values()) == sum(range(250))
    recent = await asyncio.to_thread(summarize, pg_url, since=now - 3600, until=None, by="tenant")
    assert sum(r["requests"] for r in recent) == 200 and sum(r["errors"] for r in recent) == 20

    out = subprocess.run(
        [*CLI, "usage", "--db", pg_url, "--by", "provider", "--since", "1h"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "160", "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "azure" in out.stdout and "gcp" in out.stdout and "160" in out.stdout


async def test_a_retried_flush_never_writes_a_record_twice(pg_url: str) -> None:
    """The first write commits but reports failure (as when the connection drops after the
    COMMIT): the batch stays buffered, is written again, and the rows are still exact."""
    led = Ledger(pg_url, flush_interval_s=60)
    await led.start()
    real_write = led.store.write
    calls = 0

    async def commit_then_fail(rows: list[tuple[Any, ...]]) -> None:
        nonlocal calls
        calls += 1
        await real_write(rows)
        if calls == 1:
            raise ConnectionResetError("connection lost after COMMIT")

    led.store.write = commit_then_fail  # type: ignore[method-assign]
    now = time.time()
    for i in range(100):
        led.add(rec(i, now))
    with pytest.raises(ConnectionResetError):
        await led.flush()
    assert led.pending == 100 and await count(pg_url) == 100
    led.add(rec(5, now, tenant="someone-else"))  # the same request id again
    await led.close()
    assert calls == 2 and led.pending == 0
    assert await count(pg_url) == 100
    assert await count(pg_url, "SELECT COUNT(*) FROM usage WHERE tenant = 'someone-else'") == 0


async def test_migration_runs_once_and_a_newer_schema_is_refused(pg_url: str) -> None:
    for _ in range(2):  # a second start (another replica, a restart) finds it migrated
        led = Ledger(pg_url)
        await led.start()
        await led.close()
    versions = await count(pg_url, "SELECT COUNT(*) FROM skyfleet_ledger_schema")
    assert versions == SCHEMA_VERSION  # one row per migration, each applied once
    assert await count(pg_url, "SELECT MAX(version) FROM skyfleet_ledger_schema") == SCHEMA_VERSION

    conn = await asyncpg.connect(pg_url)
    await conn.execute("INSERT INTO skyfleet_ledger_schema (version) VALUES (7)")
    await conn.close()
    with pytest.raises(LedgerError, match=r"schema version 7 is newer than this skyfleet") as e:
        await Ledger(pg_url).start()
    assert "skyfleet-test-pw" not in str(e.value) and "***" in str(e.value)


async def test_sqlite_newer_schema_is_refused_too(tmp_path: Path) -> None:
    db = tmp_path / "u.sqlite"
    led = Ledger(db)
    await led.start()
    await led.close()
    import sqlite3

    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO skyfleet_ledger_schema (version) VALUES (4)")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerError, match=rf"ledger {db}: schema version 4 is newer"):
        await Ledger(db).start()


async def test_a_version_1_sqlite_ledger_gains_cached_tokens_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    """A ledger written before cached tokens were recorded (schema 1) migrates in place."""
    import sqlite3

    from skyfleet.gateway.ledger.sqlite import MIGRATIONS

    db = tmp_path / "v1.sqlite"
    conn = sqlite3.connect(db)
    for stmt in MIGRATIONS[1]:
        conn.execute(stmt)
    conn.execute("CREATE TABLE skyfleet_ledger_schema (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO skyfleet_ledger_schema (version) VALUES (1)")
    conn.execute(
        "INSERT INTO usage (request_id, ts, tenant, model, status, stream, prompt_tokens, "
        "completion_tokens, usage_estimated, cost_usd, latency_s, attempts) "
        "VALUES ('old', 1.0, 'acme', 'chat', 200, 0, 10, 5, 0, 0.5, 0.1, 1)"
    )
    conn.commit()
    conn.close()
    led = Ledger(db)
    await led.start()
    led.add(rec(1, 2.0, cached_tokens=7))
    await led.close()
    conn = sqlite3.connect(db)
    rows = dict(conn.execute("SELECT request_id, cached_tokens FROM usage").fetchall())
    conn.close()
    assert rows == {"old": 0, "r1": 7}


@pytest.mark.parametrize(
    ("make_url", "why"),
    [
        (lambda pg: pg.url().replace(str(pg.port), str(closed_port())), "cannot connect"),
        (lambda pg: pg.url(password="wrong-pw"), "password authentication failed"),
        (lambda pg: pg.url("no_such_db"), 'database "no_such_db" does not exist'),
    ],
    ids=["refused", "bad-password", "no-database"],
)
async def test_bad_urls_are_clear_errors_at_start(postgres: Any, make_url: Any, why: str) -> None:
    url = make_url(postgres)
    with pytest.raises(LedgerError) as e:
        await Ledger(url).start()
    msg = str(e.value)
    assert why in msg and mask_url(url) in msg
    assert "wrong-pw" not in msg and "skyfleet-test-pw" not in msg


def test_serve_with_an_unreachable_ledger_exits_naming_the_url(tmp_path: Path) -> None:
    port = closed_port()
    url = f"postgresql://skyfleet:hunter2@127.0.0.1:{port}/usage"
    cfg = tmp_path / "fleet.yaml"
    doc = {
        "server": {"host": "127.0.0.1", "port": 0, "watch_config": False},
        "ledger": {"url": url},
        "providers": [{"name": "p"}],
        "endpoints": [{"name": "e", "provider": "p", "url": "http://127.0.0.1:9/v1", "model": "m"}],
        "models": [{"name": "chat", "endpoints": ["e"]}],
    }
    cfg.write_text(yaml.safe_dump(doc))
    out = subprocess.run(
        [sys.executable, "-m", "skyfleet.gateway.server", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert f"postgresql://skyfleet:***@127.0.0.1:{port}/usage" in out.stderr
    assert "cannot connect to PostgreSQL" in out.stderr and "hunter2" not in out.stderr


def test_usage_cli_names_an_unreachable_postgres() -> None:
    url = f"postgresql://u:pw-secret@127.0.0.1:{closed_port()}/db"
    out = subprocess.run([*CLI, "usage", "--db", url], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    err = " ".join(out.stderr.split())
    assert mask_url(url) in err and "cannot connect" in err and "pw-secret" not in err


def config_with_ledger(ledger: dict[str, Any]) -> dict[str, Any]:
    return {
        "ledger": ledger,
        "providers": [{"name": "p"}],
        "endpoints": [{"name": "e", "provider": "p", "url": "http://x/v1", "model": "m"}],
        "models": [{"name": "chat", "endpoints": ["e"]}],
    }


def test_ledger_url_config() -> None:
    cfg = parse_config(config_with_ledger({"url": "postgresql://u:p@db:5432/usage"}))
    assert cfg.ledger.target == "postgresql://u:p@db:5432/usage" and cfg.ledger.sqlite_path is None
    cfg = parse_config(config_with_ledger({"url": "sqlite:///var/lib/u.sqlite"}))
    assert cfg.ledger.sqlite_path == "var/lib/u.sqlite"
    assert parse_config(config_with_ledger({})).ledger.target == "skyfleet-usage.sqlite"
    with pytest.raises(ConfigError, match=r"ledger.url: .*expected postgresql://") as e:
        parse_config(config_with_ledger({"url": "mysql://u:topsecret@db/usage"}), "f.yaml")
    assert "topsecret" not in str(e.value)
    with pytest.raises(ConfigError, match=r"either ledger\.path or ledger\.url, not both"):
        parse_config(config_with_ledger({"url": "postgresql://db/u", "path": "x.sqlite"}))


def test_mask_url() -> None:
    assert mask_url("postgresql://u:s3@h:5432/d?sslmode=require") == (
        "postgresql://u:***@h:5432/d?sslmode=require"
    )
    assert mask_url("postgresql://u@h/d") == "postgresql://u@h/d"
    assert mask_url("postgres://u:p@[::1]:5/d") == "postgres://u:***@[::1]:5/d"
