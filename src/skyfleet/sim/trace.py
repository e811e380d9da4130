"""Request traces (`timestamp,input_tokens,output_tokens` CSV) rescaled to a daily volume.

Rescaling keeps the trace's shape and burstiness: every trace request stands for `k`
simulated requests (`k` = target volume ÷ trace volume over the same span), so bursts in
the trace stay bursts at the new scale. The fluid engine uses per-bin counts × `k`; the
request-level engine replays each trace request ⌊k⌋ or ⌈k⌉ times (randomly), spread over
the gap to the next trace request (or once, at its own time, when k ≤ 1).
Column aliases for public traces: Azure LLM inference (`TIMESTAMP`, `ContextTokens`,
`GeneratedTokens`) and BurstGPT (`Timestamp`, `Request tokens`, `Response tokens`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path

import numpy as np

from skyfleet.errors import ConfigError

DAY = 86400.0
_ALIASES = {
    "timestamp": ("timestamp", "time", "arrival_timestamp"),
    "input_tokens": ("input_tokens", "contexttokens", "request tokens", "prompt_tokens"),
    "output_tokens": ("output_tokens", "generatedtokens", "response tokens", "completion_tokens"),
}


@dataclass(frozen=True)
class Trace:
    """Arrival offsets (s from the first request) and token counts, sorted by time."""

    times: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    source: str = ""
    priorities: np.ndarray | None = None  # per request 0/1/2 (critical/standard/sheddable)
    period_s: float | None = None  # repeats after this (default: its span)

    def __len__(self) -> int:
        return len(self.times)

    @property
    def span(self) -> float:
        """Seconds after which the trace repeats: `period_s`, else the time of its last
        request (at least 1)."""
        if self.period_s is not None:
            return max(float(self.period_s), 1e-9)
        return max(float(self.times[-1]) if len(self.times) else 0.0, 1.0)

    def scale_for(self, daily_volume: float) -> float:
        """How many simulated requests each trace request stands for."""
        return daily_volume * self.span / DAY / max(len(self), 1)

    def rate_series(self, step: float, horizon: float, daily_volume: float | None) -> np.ndarray:
        """Requests/s in each `step` bin over `horizon` (the trace repeats if shorter)."""
        k = 1.0 if daily_volume is None else self.scale_for(daily_volume)
        nbins = int(np.ceil(horizon / step))
        period = self.span
        reps = int(np.ceil(horizon / period))
        t = (self.times[None, :] + period * np.arange(reps)[:, None]).ravel()
        t = t[t < horizon]
        counts = np.bincount((t // step).astype(np.int64), minlength=nbins)[:nbins]
        return counts.astype(float) * k / step

    def mean_sizes(self) -> tuple[float, float]:
        return float(self.input_tokens.mean()), float(self.output_tokens.mean())


def _parse_time(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        return datetime.fromisoformat(s.strip()[:26]).timestamp()


def load_trace(path: str | Path) -> Trace:
    """Read a trace CSV; errors name the file, the line and the column."""
    p = Path(path)
    try:
        fh = p.open(newline="")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read trace: {e.strerror}") from e
    with fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            raise ConfigError(
                f"{p}:1: empty trace; expected a header 'timestamp,input_tokens,output_tokens'"
            )
        low = [h.strip().lower() for h in header]
        cols: dict[str, int] = {}
        for want, names in _ALIASES.items():
            for n in names:
                if n in low:
                    cols[want] = low.index(n)
                    break
        missing = [w for w in _ALIASES if w not in cols]
        if missing:
            raise ConfigError(
                f"{p}:1: trace is missing column(s) {', '.join(missing)}; the header has "
                f"{', '.join(h.strip() for h in header)} "
                "(expected timestamp,input_tokens,output_tokens)"
            )
        ts: list[float] = []
        ins: list[float] = []
        outs: list[float] = []
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            try:
                t = _parse_time(row[cols["timestamp"]])
            except (ValueError, IndexError):
                raise ConfigError(
                    f"{p}:{lineno}: column 'timestamp': not a number of seconds or an ISO time"
                ) from None
            vals = []
            for c in ("input_tokens", "output_tokens"):
                try:
                    v = float(row[cols[c]])
                except (ValueError, IndexError):
                    raise ConfigError(f"{p}:{lineno}: column '{c}': not a number") from None
                if v < 0 or (c == "output_tokens" and v < 1):
                    raise ConfigError(
                        f"{p}:{lineno}: column '{c}': must be ≥ {int(c == 'output_tokens')}"
                    )
                vals.append(v)
            ts.append(t)
            ins.append(vals[0])
            outs.append(vals[1])
    if not ts:
        raise ConfigError(f"{p}: the trace has a header but no requests")
    order = np.argsort(np.asarray(ts), kind="stable")
    tt = np.asarray(ts)[order]
    return Trace(tt - tt[0], np.asarray(ins)[order], np.asarray(outs)[order], str(p))


def sample_trace_path() -> Path:
    """The small trace shipped with the package (generated by scripts/make_sample_trace.py)."""
    return Path(str(resources.files("skyfleet.sim").joinpath("data/sample_trace.csv")))


def replay_arrivals(
    trace: Trace, daily_volume: float | None, horizon: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Request-level arrivals (times, input, output) from a trace rescaled to a daily volume."""
    times, idx = replay_index(trace, daily_volume, horizon, rng)
    return times, trace.input_tokens[idx], trace.output_tokens[idx]


def replay_index(
    trace: Trace, daily_volume: float | None, horizon: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Request-level arrival times from a trace rescaled to a daily volume, and for each the
    index of the trace request it replays (sorted by time). Without a daily volume every
    trace request is replayed once, at its own time (a scripted load)."""
    k = 1.0 if daily_volume is None else trace.scale_for(daily_volume)
    reps = int(np.ceil(horizon / trace.span))
    t = (trace.times[None, :] + trace.span * np.arange(reps)[:, None]).ravel()
    src = np.tile(np.arange(len(trace)), reps)
    keep = t < horizon
    t, src = t[keep], src[keep]
    copies = np.floor(k).astype(np.int64) + (rng.random(len(t)) < (k - np.floor(k)))
    idx = np.repeat(np.arange(len(t)), copies)
    # the copies of a trace request spread over the gap to the next one: the local rate is
    # k / gap, so the trace's bursts (short gaps) stay bursts without instant clumps
    gaps = np.diff(t, append=t[-1] + (trace.span / max(len(trace), 1))) if len(t) else t
    times = t[idx] + rng.random(len(idx)) * (gaps[idx] if k > 1 else 0.0)
    order = np.argsort(times, kind="stable")
    return times[order], src[idx][order]
