"""A drill's figures, its targets, and how they print (one block per drill; JSON)."""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table


@dataclass
class DrillReport:
    """What one drill measured. Times in seconds from the drill's start; latencies in ms."""

    name: str
    fault: str
    load: str
    sent: int = 0
    succeeded: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # "kind:cause" → requests
    json_failed: int = 0
    streams: int = 0
    streams_cut: int = 0
    streams_in_flight_on_victim: int | None = None  # at the fault (the cuts allowed)
    accepted: int = 0  # responses carrying the gateway's x-request-id
    ledger_records: int = 0
    ledger_missing: int = 0  # accepted requests without a record
    ledger_extra: int = 0  # records of requests whose response no client saw
    ledger_missing_allowed: int = 0  # of the missing: within the documented SIGKILL bound
    p99_before_ms: float | None = None  # non-streaming, end to end
    p99_during_ms: float | None = None
    ttft_p99_before_ms: float | None = None  # streams, time to first token
    ttft_p99_during_ms: float | None = None
    recovery: dict[str, float | None] = field(default_factory=dict)  # "ejected" → s after…
    leaked: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    targets: dict[str, bool] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(self.targets.values())

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"passed": self.passed}

    def render(self) -> str:
        """The drill's figures as a few lines of text."""
        ms = _ms
        failed = ", ".join(f"{k} {v}" for k, v in sorted(self.failed.items())) or "none"
        lines = [
            f"drill {self.name}: {self.fault}",
            f"  load: {self.load}",
            f"  requests sent {self.sent} · succeeded {self.succeeded} · failed: {failed}",
            f"  non-streaming failures {self.json_failed} · streams cut {self.streams_cut} of "
            f"{self.streams}"
            + (
                ""
                if self.streams_in_flight_on_victim is None
                else f" (in flight on the faulty upstream: {self.streams_in_flight_on_victim})"
            ),
            f"  ledger: {self.ledger_records} records vs {self.accepted} accepted requests "
            f"(missing {self.ledger_missing}, of them within the SIGKILL bound "
            f"{self.ledger_missing_allowed}; extra {self.ledger_extra})",
            f"  p99 latency before → during the fault: non-streaming {ms(self.p99_before_ms)} → "
            f"{ms(self.p99_during_ms)}; TTFT {ms(self.ttft_p99_before_ms)} → "
            f"{ms(self.ttft_p99_during_ms)}",
        ]
        if self.recovery:
            rec = ", ".join(f"{k} after {_s(v)}" for k, v in self.recovery.items())
            lines.append(f"  recovery: {rec}")
        for k, v in self.extra.items():
            lines.append(f"  {k.replace('_', ' ')}: {v}")
        lines.append(f"  leaked processes: {self.leaked or 'none'}")
        marks = " · ".join(
            f"{'✓' if ok else '✗'} {k}" for k, v in self.targets.items() for ok in [v]
        )
        lines.append(f"  targets: {marks}  →  {'PASS' if self.passed else 'FAIL'}")
        return "\n".join(lines)


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.0f} ms"


def _s(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f} s"


def ledger_ids(path: Path) -> list[str]:
    """Every request id in a SQLite usage ledger."""
    return [r["request_id"] for r in ledger_rows(path)]


def ledger_rows(path: Path) -> list[dict[str, Any]]:
    """Every record of a SQLite usage ledger."""
    if not path.exists():
        return []
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM usage")]
    except sqlite3.OperationalError:  # no table: nothing was written
        return []
    finally:
        conn.close()


def summary_table(reports: list[DrillReport]) -> Table:
    """One row per drill: the figures of docs/reliability.md."""
    from rich.table import Table

    t = Table(title="drills")
    for col in (
        "drill",
        "requests",
        "non-streaming failed",
        "streams cut",
        "ledger = accepted",
        "p99 before → during",
        "recovery",
        "leaked",
        "result",
    ):
        t.add_column(col)
    for r in reports:
        missing = r.ledger_missing - r.ledger_missing_allowed
        ledger = f"{r.ledger_records} / {r.accepted}" + (
            f" ({r.ledger_missing_allowed} in SIGKILL bound)" if r.ledger_missing_allowed else ""
        )
        rec = ", ".join(f"{k} {_s(v)}" for k, v in r.recovery.items()) or "—"
        t.add_row(
            r.name,
            str(r.sent),
            str(r.json_failed),
            f"{r.streams_cut} / {r.streams}",
            ledger + (" ✗" if missing else ""),
            f"{_ms(r.p99_before_ms)} → {_ms(r.p99_during_ms)}",
            rec,
            str(len(r.leaked)),
            "PASS" if r.passed else "FAIL",
        )
    return t
