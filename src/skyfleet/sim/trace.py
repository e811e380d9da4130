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
        scale = 1.0 if daily_volume is None else self.scale_for(daily_volume)
        nbins = int(np.ceil(horizon / step))
        period = self.span
        reps = int(np.ceil(horizon / period))
        times = (self.times[None, :] + period * np.arange(reps)[:, None]).ravel()
        times = times[times < horizon]
        counts = np.bincount((times // step).astype(np.int64), minlength=nbins)[:nbins]
        return counts.astype(float) * scale / step

    def mean_sizes(self) -> tuple[float, float]:
        return float(self.input_tokens.mean()), float(self.output_tokens.mean())


def _parse_time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text.strip()[:26]).timestamp()


def load_trace(path: str | Path) -> Trace:
    """Read a trace CSV; errors name the file, the line and the column."""
    file = Path(path)
    try:
        handle = file.open(newline="")
    except OSError as e:
        raise ConfigError(f"{file}: cannot read trace: {e.strerror}") from e
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise ConfigError(
                f"{file}:1: empty trace; expected a header 'timestamp,input_tokens,output_tokens'"
            )
        lowered = [name.strip().lower() for name in header]
        columns: dict[str, int] = {}
        for want, aliases in _ALIASES.items():
            for alias in aliases:
                if alias in lowered:
                    columns[want] = lowered.index(alias)
                    break
        missing = [want for want in _ALIASES if want not in columns]
        if missing:
            raise ConfigError(
                f"{file}:1: trace is missing column(s) {', '.join(missing)}; the header has "
                f"{', '.join(name.strip() for name in header)} "
                "(expected timestamp,input_tokens,output_tokens)"
            )
        stamps: list[float] = []
        inputs: list[float] = []
        outputs: list[float] = []
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            try:
                stamp = _parse_time(row[columns["timestamp"]])
            except (ValueError, IndexError):
                raise ConfigError(
                    f"{file}:{lineno}: column 'timestamp': not a number of seconds or an ISO time"
                ) from None
            tokens = []
            for column in ("input_tokens", "output_tokens"):
                try:
                    value = float(row[columns[column]])
                except (ValueError, IndexError):
                    raise ConfigError(f"{file}:{lineno}: column '{column}': not a number") from None
                minimum = int(column == "output_tokens")
                if value < 0 or (column == "output_tokens" and value < 1):
                    raise ConfigError(f"{file}:{lineno}: column '{column}': must be ≥ {minimum}")
                tokens.append(value)
            stamps.append(stamp)
            inputs.append(tokens[0])
            outputs.append(tokens[1])
    if not stamps:
        raise ConfigError(f"{file}: the trace has a header but no requests")
    order = np.argsort(np.asarray(stamps), kind="stable")
    times = np.asarray(stamps)[order]
    return Trace(times - times[0], np.asarray(inputs)[order], np.asarray(outputs)[order], str(file))


def sample_trace_path() -> Path:
    """The small trace shipped with the package (generated by scripts/make_sample_trace.py)."""
    return Path(str(resources.files("skyfleet.sim").joinpath("data/sample_trace.csv")))


def replay_arrivals(
    trace: Trace, daily_volume: float | None, horizon: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Request-level arrivals (times, input, output) from a trace rescaled to a daily volume."""
    times, source = replay_index(trace, daily_volume, horizon, rng)
    return times, trace.input_tokens[source], trace.output_tokens[source]


def replay_index(
    trace: Trace, daily_volume: float | None, horizon: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Request-level arrival times from a trace rescaled to a daily volume, and for each the
    index of the trace request it replays (sorted by time). Without a daily volume every
    trace request is replayed once, at its own time (a scripted load)."""
    scale = 1.0 if daily_volume is None else trace.scale_for(daily_volume)
    reps = int(np.ceil(horizon / trace.span))
    starts = (trace.times[None, :] + trace.span * np.arange(reps)[:, None]).ravel()
    source = np.tile(np.arange(len(trace)), reps)
    keep = starts < horizon
    starts, source = starts[keep], source[keep]
    copies = np.floor(scale).astype(np.int64) + (
        rng.random(len(starts)) < (scale - np.floor(scale))
    )
    copy_of = np.repeat(np.arange(len(starts)), copies)
    # the copies of a trace request spread over the gap to the next one: the local rate is
    # k / gap, so the trace's bursts (short gaps) stay bursts without instant clumps
    last_gap = trace.span / max(len(trace), 1)
    gaps = np.diff(starts, append=starts[-1] + last_gap) if len(starts) else starts
    times = starts[copy_of] + rng.random(len(copy_of)) * (gaps[copy_of] if scale > 1 else 0.0)
    order = np.argsort(times, kind="stable")
    return times[order], source[copy_of][order]
