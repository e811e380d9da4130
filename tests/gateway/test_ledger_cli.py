"""The ledger writer and `skyfleet usage`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from skyfleet.gateway.cli import parse_time
from skyfleet.gateway.ledger import Ledger, UsageRecord, summarize

CLI = [sys.executable, "-c", "from skyfleet.cli import main; main()"]


async def test_ledger_batches_and_flushes_on_close(tmp_path: Path) -> None:
    db = tmp_path / "u.sqlite"
    led = Ledger(db, flush_interval_s=60)  # only close() flushes in this test
    await led.start()
    now = time.time()
    for i in range(250):
        led.add(
            UsageRecord(
                request_id=f"r{i}",
                ts=now - (7200 if i < 50 else 0),
                tenant="acme" if i % 2 else "batch",
                model="chat",
                endpoint="a0" if i % 5 else "g0",
                provider="azure" if i % 5 else "gcp",
                status=200 if i % 10 else 502,
                prompt_tokens=10,
                completion_tokens=i,
                cost_usd=0.001,
                latency_s=0.1,
                attempts=1,
            )
        )
    await led.close()
    assert led.written == 250
    rows = {r["key"]: r for r in summarize(db, since=None, until=None, by="provider")}
    assert rows["azure"]["requests"] == 200 and rows["gcp"]["requests"] == 50
    assert sum(r["completion_tokens"] for r in rows.values()) == sum(range(250))
    recent = summarize(db, since=now - 3600, until=None, by="tenant")
    assert sum(r["requests"] for r in recent) == 200
    assert sum(r["errors"] for r in recent) == 20

    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from skyfleet.cli import main; main()",
            "usage",
            "--db",
            str(db),
            "--by",
            "provider",
            "--since",
            "1h",
        ],
        capture_output=True,
        text=True,
        env={"COLUMNS": "160", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    assert "azure" in out.stdout and "gcp" in out.stdout and "200" in out.stdout
    bad = subprocess.run(
        [
            sys.executable,
            "-c",
            "from skyfleet.cli import main; main()",
            "usage",
            "--db",
            str(tmp_path / "missing.sqlite"),
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "no such usage ledger" in " ".join(bad.stderr.split())


def test_parse_time() -> None:
    assert parse_time("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_time("now", now=5.0) == 5.0
    assert parse_time(None) is None
    assert parse_time("2026-11-25T10:00") is not None
