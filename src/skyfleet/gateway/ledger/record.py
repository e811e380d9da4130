"""One usage record per accepted request, and its column order in every ledger backend."""

from __future__ import annotations

from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any


@dataclass(slots=True)
class UsageRecord:
    """What one accepted request cost and how it went."""

    request_id: str
    ts: float  # wall-clock epoch seconds when the request arrived
    tenant: str
    model: str  # public model name
    endpoint: str | None = None  # the endpoint of the last attempt
    provider: str | None = None
    tier: str | None = None
    status: int = 0
    error: str | None = None  # cause when it failed
    stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_estimated: bool = False  # tokens counted by the gateway (no upstream usage)
    cost_usd: float = 0.0
    ttft_s: float | None = None
    latency_s: float = 0.0
    attempts: int = 0
    cached_tokens: int = 0  # prompt tokens the provider read from its cache (schema v2)


COLUMNS: list[str] = [f.name for f in fields(UsageRecord)]
_ROW = attrgetter(*COLUMNS)


def as_row(rec: UsageRecord) -> tuple[Any, ...]:
    """The record's values in `COLUMNS` order."""
    row: tuple[Any, ...] = _ROW(rec)
    return row
