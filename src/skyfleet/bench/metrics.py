"""Per-request measurements and their summary, with vLLM `bench serve` definitions.

- TTFT: send → first streamed token (streaming only).
- TPOT: (E2E − TTFT) / (output tokens − 1), per request, for output > 1 token.
- ITL: every gap between consecutive content chunks, pooled over requests (token-weighted).
- E2E: send → last byte of the response.
- Throughputs: completed requests, input tokens and output tokens per second of the
  measurement window (first measured send → last measured completion).
- Goodput: completed requests meeting every SLO given, per second of the same window.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from skyfleet.errors import SkyfleetError

PERCENTILES = (50, 90, 95, 99)


@dataclass(slots=True)
class RequestResult:
    """What happened to one request (times in seconds from the run's start)."""

    index: int
    label: str
    planned: float
    sent: float
    input_tokens: int = 0
    output_tokens: int = 0
    ttft: float | None = None
    e2e: float | None = None
    itl: list[float] = field(default_factory=list)
    error: str | None = None
    detail: str = ""
    status: int = 0
    warmup: bool = False
    cooldown: bool = False
    usage_reported: bool = False
    request_id: str | None = None  # a skyfleet gateway's x-request-id
    served_by: str | None = None  # its x-skyfleet-endpoint
    attempts: int = 0  # its x-skyfleet-attempts

    def note_headers(self, headers: Mapping[str, str]) -> None:
        """Keep what a skyfleet gateway says about the request (absent elsewhere)."""
        self.request_id = headers.get("x-request-id")
        self.served_by = headers.get("x-skyfleet-endpoint")
        attempts = headers.get("x-skyfleet-attempts", "")
        self.attempts = int(attempts) if attempts.isdigit() else 0

    @property
    def measured(self) -> bool:
        """Counted in the results: neither warm-up nor cool-down."""
        return not (self.warmup or self.cooldown)

    @property
    def ok(self) -> bool:
        return self.error is None and self.e2e is not None

    @property
    def done(self) -> float:
        """Completion offset (sent + E2E), or the send time for failures."""
        return self.sent + (self.e2e or 0.0)

    @property
    def tpot(self) -> float | None:
        """(E2E − TTFT)/(out − 1), or None when not measurable."""
        if self.ttft is None or self.e2e is None or self.output_tokens <= 1:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)

    @property
    def lag(self) -> float:
        """How late the generator sent this request against its schedule (s)."""
        return self.sent - self.planned if math.isfinite(self.planned) else 0.0


@dataclass(frozen=True)
class Slo:
    """Latency objectives in seconds (None = not set)."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None

    @classmethod
    def parse(cls, spec: str | None) -> Slo:
        """`ttft=500ms,tpot=50ms[,e2e=10s]` (units ms or s; bare numbers are ms)."""
        if not spec:
            return cls()
        vals: dict[str, float] = {}
        for part in spec.split(","):
            m = re.fullmatch(r"\s*(ttft|tpot|itl|e2e|e2el)\s*[=:]\s*([\d.]+)\s*(ms|s)?\s*", part)
            if not m:
                raise SkyfleetError(
                    f"--slo {spec!r}: {part!r} is not ttft=…ms, tpot=…ms or e2e=…ms "
                    "(e.g. ttft=500ms,tpot=50ms)"
                )
            key = {"itl": "tpot", "e2el": "e2e"}.get(m[1], m[1])
            vals[key + "_s"] = float(m[2]) / (1.0 if m[3] == "s" else 1000.0)
        return cls(**vals)

    @property
    def is_set(self) -> bool:
        return any(v is not None for v in (self.ttft_s, self.tpot_s, self.e2e_s))

    def good(self, r: RequestResult) -> bool:
        """vLLM's goodput rule; without streaming TTFT is bounded by E2E."""
        if not r.ok:
            return False
        if self.ttft_s is not None and (r.ttft if r.ttft is not None else r.e2e or 0) > self.ttft_s:
            return False
        if self.tpot_s is not None and (r.tpot or 0.0) > self.tpot_s:
            return False
        return not (self.e2e_s is not None and (r.e2e or 0.0) > self.e2e_s)

    def scaled(self, k: float) -> Slo:
        """Objectives multiplied by `k`."""
        return Slo(*(None if v is None else v * k for v in (self.ttft_s, self.tpot_s, self.e2e_s)))

    def as_dict(self) -> dict[str, float | None]:
        return {
            "ttft_ms": _ms(self.ttft_s),
            "tpot_ms": _ms(self.tpot_s),
            "e2e_ms": _ms(self.e2e_s),
        }

    def __str__(self) -> str:
        parts = [
            f"{k}={v * 1000:g}ms"
            for k, v in (("ttft", self.ttft_s), ("tpot", self.tpot_s), ("e2e", self.e2e_s))
            if v is not None
        ]
        return ",".join(parts) or "none"


def _ms(v: float | None) -> float | None:
    return None if v is None else v * 1000.0


@dataclass(frozen=True)
class Stats:
    """Mean, percentiles, min, max and count of a sample (seconds unless said otherwise)."""

    count: int
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Stats:
        a = np.fromiter(values, dtype=float)
        if a.size == 0:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan, nan, nan, nan)
        p = np.percentile(a, PERCENTILES)
        p50, p90, p95, p99 = (float(x) for x in p)
        return cls(int(a.size), float(a.mean()), p50, p90, p95, p99, float(a.min()), float(a.max()))

    def scaled(self, k: float) -> Stats:
        """Every value multiplied by `k` (count kept)."""
        return Stats(
            self.count,
            *(getattr(self, f) * k for f in ("mean", "p50", "p90", "p95", "p99", "min", "max")),
        )

    def pct(self, q: float) -> float:
        """Percentile `q` ∈ {50, 90, 95, 99}."""
        return float(getattr(self, f"p{int(q)}"))

    def as_ms(self) -> dict[str, float | int | None]:
        d: dict[str, float | int | None] = {"count": self.count}
        for k in ("mean", "p50", "p90", "p95", "p99", "min", "max"):
            v = getattr(self, k)
            d[k] = None if math.isnan(v) else v * 1000.0
        return d


@dataclass(frozen=True)
class Summary:
    """Every figure of one run (durations in seconds, rates per second)."""

    requests: int
    completed: int
    failed: int
    errors: dict[str, int]
    error_examples: dict[str, str]
    duration_s: float
    request_throughput: float
    input_token_throughput: float
    output_token_throughput: float
    total_token_throughput: float
    goodput: float | None
    slo_attainment: float | None
    send_rate: float
    departure_rate: float
    mean_input_tokens: float
    mean_output_tokens: float
    max_concurrency: int
    ttft: Stats
    tpot: Stats
    itl: Stats
    e2e: Stats
    lag: Stats
    slo: Slo

    def meets(self, slo: Slo, percentile: float = 99.0, max_error_rate: float = 0.01) -> bool:
        """The perf model's SLO test: TTFT pXX ≤ SLO, mean TPOT ≤ SLO, E2E pXX ≤ SLO, few errors.

        A run that did not keep up (departures < 85% of sends) fails too.
        """
        if self.requests == 0 or self.completed == 0:
            return False
        if self.failed > max_error_rate * self.requests:
            return False
        if self.departure_rate < 0.85 * self.send_rate:
            return False
        if slo.ttft_s is not None:
            t = self.ttft if self.ttft.count else self.e2e
            if t.pct(percentile) > slo.ttft_s:
                return False
        if slo.tpot_s is not None and self.tpot.count and self.tpot.mean > slo.tpot_s:
            return False
        return not (slo.e2e_s is not None and self.e2e.pct(percentile) > slo.e2e_s)

    def scaled(self, time_scale: float) -> Summary:
        """This summary in the endpoint's own time when it runs `time_scale`× faster than
        real time (an emulator with --time-scale): durations ×k, rates ÷k; lag stays wall."""
        k = float(time_scale)
        if k == 1.0:
            return self
        return replace(
            self,
            duration_s=self.duration_s * k,
            request_throughput=self.request_throughput / k,
            input_token_throughput=self.input_token_throughput / k,
            output_token_throughput=self.output_token_throughput / k,
            total_token_throughput=self.total_token_throughput / k,
            goodput=None if self.goodput is None else self.goodput / k,
            send_rate=self.send_rate / k,
            departure_rate=self.departure_rate / k,
            ttft=self.ttft.scaled(k),
            tpot=self.tpot.scaled(k),
            itl=self.itl.scaled(k),
            e2e=self.e2e.scaled(k),
        )

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("ttft", "tpot", "itl", "e2e", "lag"):
            d[k + "_ms"] = getattr(self, k).as_ms()
            del d[k]
        d["slo"] = self.slo.as_dict()
        return d


def _rate(n: int, span: float) -> float:
    return n / span if span > 0 else 0.0


def max_in_flight(results: Sequence[RequestResult]) -> int:
    """Most requests outstanding at once (sweep over send/done events)."""
    ev: list[tuple[float, int]] = []
    for r in results:
        ev.append((r.sent, 1))
        ev.append((r.done, -1))
    ev.sort()
    cur = best = 0
    for _, d in ev:
        cur += d
        best = max(best, cur)
    return best


def summarize(
    results: Sequence[RequestResult],
    slo: Slo = Slo(),
    label: str | None = None,
    time_scale: float = 1.0,
) -> Summary:
    """Summarise the measured (non-warm-up) requests, optionally of one traffic label.

    `slo` is in the endpoint's time; with `time_scale` k the figures come back in that time
    too (see `Summary.scaled`)."""
    asked = slo
    slo = slo.scaled(1.0 / time_scale) if time_scale != 1.0 else slo
    rs = [r for r in results if r.measured and (label is None or r.label == label)]
    ok = [r for r in rs if r.ok]
    failed = [r for r in rs if not r.ok]
    errors = Counter(r.error or "unknown" for r in failed)
    examples: dict[str, str] = {}
    for r in failed:
        examples.setdefault(r.error or "unknown", r.detail[:300])
    if rs:
        start = min(r.sent for r in rs)
        end = max([r.done for r in ok] + [r.sent for r in rs])
        duration = end - start
        sends = sorted(r.sent for r in rs)
        send_rate = _rate(len(sends) - 1, sends[-1] - sends[0])
        dones = sorted(r.done for r in ok)
        dep_rate = _rate(len(dones) - 1, dones[-1] - dones[0]) if len(dones) > 1 else 0.0
    else:
        duration = send_rate = dep_rate = 0.0
    in_tok = sum(r.input_tokens for r in ok)
    out_tok = sum(r.output_tokens for r in ok)
    good = sum(1 for r in ok if slo.good(r)) if slo.is_set else None
    return Summary(
        requests=len(rs),
        completed=len(ok),
        failed=len(failed),
        errors=dict(errors),
        error_examples=examples,
        duration_s=duration,
        request_throughput=_rate(len(ok), duration),
        input_token_throughput=_rate(in_tok, duration),
        output_token_throughput=_rate(out_tok, duration),
        total_token_throughput=_rate(in_tok + out_tok, duration),
        goodput=None if good is None else _rate(good, duration),
        slo_attainment=None if good is None or not rs else good / len(rs),
        send_rate=send_rate,
        departure_rate=dep_rate,
        mean_input_tokens=in_tok / len(ok) if ok else 0.0,
        mean_output_tokens=out_tok / len(ok) if ok else 0.0,
        max_concurrency=max_in_flight(rs),
        ttft=Stats.of(r.ttft for r in ok if r.ttft is not None),
        tpot=Stats.of(t for r in ok if (t := r.tpot) is not None),
        itl=Stats.of(g for r in ok for g in r.itl),
        e2e=Stats.of(r.e2e for r in ok if r.e2e is not None),
        lag=Stats.of(r.lag for r in rs),
        slo=asked,
    ).scaled(time_scale)
