"""`skyfleet bench`: load generator, vLLM-style metrics, SLO sweeps and profile fitting.

Library API (the demo drives demand curves with it)::

    from skyfleet.bench import Target, Load, SyntheticRequests, run_load, preflight
    target, _ = await preflight(Target("http://127.0.0.1:8000"))
    result = await run_load(target, SyntheticRequests(256, 64), Load(rate=lambda t: 5 + t,
                            duration_s=30), live=LiveStats(), on_result=print)
    print(result.summary(Slo.parse("ttft=500ms,tpot=50ms")))
"""

from typing import TYPE_CHECKING

from skyfleet._lazy import lazy_exports

if TYPE_CHECKING:
    from skyfleet.bench.arrivals import arrival_times, arrivals_for, gap_stats
    from skyfleet.bench.checks import preflight
    from skyfleet.bench.loadgen import LiveStats, Load, RunResult, Target, run_load
    from skyfleet.bench.metrics import RequestResult, Slo, Stats, Summary, summarize
    from skyfleet.bench.workload import (
        DatasetRequests,
        HeaderVariant,
        LengthDist,
        RequestSpec,
        SyntheticRequests,
        sample_dataset_path,
    )

__all__ = [
    "DatasetRequests",
    "HeaderVariant",
    "LengthDist",
    "LiveStats",
    "Load",
    "RequestResult",
    "RequestSpec",
    "RunResult",
    "Slo",
    "Stats",
    "Summary",
    "SyntheticRequests",
    "Target",
    "arrival_times",
    "arrivals_for",
    "gap_stats",
    "preflight",
    "run_load",
    "sample_dataset_path",
    "summarize",
]

__getattr__ = lazy_exports(
    __name__, __all__, ("arrivals", "checks", "loadgen", "metrics", "workload")
)
