"""Prometheus text exposition with vLLM's metric names (tiny, allocation-light)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
TPOT_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
E2E_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
    120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip


class Histogram:
    """Cumulative-bucket histogram; `observe(v, n)` records n equal observations."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, n: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += n
        self.sum += value * n
        self.count += n

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else 0.0

    def render(self, name: str, labels: str) -> list[str]:
        out, acc = [], 0
        for b, c in zip(self.bounds, self.counts, strict=False):
            acc += c
            out.append(f'{name}_bucket{{{labels},le="{b}"}} {acc}')
        out.append(f'{name}_bucket{{{labels},le="+Inf"}} {self.count}')
        out.append(f"{name}_sum{{{labels}}} {self.sum!r}")
        out.append(f"{name}_count{{{labels}}} {self.count}")
        return out


class EngineMetrics:
    """Counters and histograms the server updates; gauges are read at scrape time."""

    def __init__(self, model_name: str) -> None:
        self.labels = f'model_name="{model_name}",engine="0"'
        self.ttft = Histogram(TTFT_BUCKETS)
        self.tpot = Histogram(TPOT_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.success: dict[str, int] = {"stop": 0, "length": 0, "abort": 0}
        self.preemptions = 0
        self.loop_lag = Histogram((0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 1.0))
        self.loop_lag_max = 0.0

    def render(self, running: int, waiting: int, kv_usage: float) -> str:
        lb = self.labels
        lines = [
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{lb}}} {running}",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{{{lb}}} {waiting}",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f"vllm:kv_cache_usage_perc{{{lb}}} {kv_usage!r}",
            "# TYPE vllm:prompt_tokens_total counter",
            f"vllm:prompt_tokens_total{{{lb}}} {self.prompt_tokens}",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{{{lb}}} {self.generation_tokens}",
            "# TYPE vllm:num_preemptions_total counter",
            f"vllm:num_preemptions_total{{{lb}}} {self.preemptions}",
            "# TYPE vllm:request_success_total counter",
        ]
        for reason, n in self.success.items():
            lines.append(f'vllm:request_success_total{{{lb},finished_reason="{reason}"}} {n}')
        for name, h in (
            ("vllm:time_to_first_token_seconds", self.ttft),
            ("vllm:time_per_output_token_seconds", self.tpot),
            ("vllm:e2e_request_latency_seconds", self.e2e),
            ("skyfleet_emulator_loop_lag_seconds", self.loop_lag),
        ):
            lines.append(f"# TYPE {name} histogram")
            lines.extend(h.render(name, lb))
        lines.append("# TYPE skyfleet_emulator_loop_lag_max_seconds gauge")
        lines.append(f"skyfleet_emulator_loop_lag_max_seconds{{{lb}}} {self.loop_lag_max!r}")
        return "\n".join(lines) + "\n"


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → {'name{labels}': value} (for tests and the benchmark)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, val = line.rpartition(" ")
        out[key] = float(val)
    return out


def metric(values: dict[str, float], name: str) -> float:
    """Sum of every series of `name` (any labels) in parsed metrics."""
    return sum(v for k, v in values.items() if k == name or k.startswith(name + "{"))
