"""The `skyfleet usage` totals query, shared by the SQLite and PostgreSQL backends."""

from __future__ import annotations

from typing import Any

GROUPS = ("tenant", "provider", "model", "endpoint")
KEYS = ["key", "requests", "errors", "prompt_tokens", "completion_tokens", "cost_usd"]
KEYS += ["mean_ttft_s", "mean_latency_s"]


def summary_query(
    by: str, since: float | None, until: float | None, placeholder: str
) -> tuple[str, list[float]]:
    """SQL + args for totals grouped by `by` over [since, until); `placeholder` is '?' or '$'."""
    if by not in GROUPS:
        raise ValueError(f"by must be tenant, provider, model or endpoint, got {by!r}")
    where: list[str] = []
    args: list[float] = []
    for op, value in ((">=", since), ("<", until)):
        if value is not None:
            args.append(value)
            mark = "?" if placeholder == "?" else f"${len(args)}"
            where.append(f"ts {op} {mark}")
    sql = (
        f"SELECT COALESCE({by}, '-') AS k, COUNT(*), "
        "SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), SUM(prompt_tokens), "
        "SUM(completion_tokens), SUM(cost_usd), AVG(ttft_s), AVG(latency_s) FROM usage"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " GROUP BY k ORDER BY k"
    )
    return sql, args


def as_dicts(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Query rows → dicts keyed by `KEYS` (numbers as plain int/float)."""
    out = []
    for r in rows:
        d = dict(zip(KEYS, r, strict=True))
        for k in ("requests", "errors", "prompt_tokens", "completion_tokens"):
            d[k] = int(d[k] or 0)
        for k in ("cost_usd", "mean_ttft_s", "mean_latency_s"):
            d[k] = None if d[k] is None else float(d[k])
        out.append(d)
    return out
