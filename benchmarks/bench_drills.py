"""The hostile-world drills' long form: every `skyfleet drill` (kill -9 of an upstream, rude
upstreams, SIGTERM/SIGKILL of a gateway worker, slow clients) with 10 s of load before the
fault, 20 s of fault and 15 s after, at 40 req/s each of non-streaming and streaming
requests. Prints each drill's figures and a table; writes benchmarks/results/bench_drills.json
(docs/reliability.md). `--quick` runs the short form the tests run.
Usage: .venv/bin/python benchmarks/bench_drills.py [--quick] [--rate 40] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from skyfleet.drill.drills import DRILLS, LONG, SHORT, run_drill
from skyfleet.drill.report import summary_table

OUT = Path(__file__).parent / "results" / "bench_drills.json"


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "loadavg_at_start": os.getloadavg(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the short form (as in the tests)")
    ap.add_argument("--rate", type=float, help="req/s of each kind")
    ap.add_argument("--only", nargs="*", default=None, help="drill names")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    timing = SHORT if a.quick else LONG
    if a.rate:
        timing = dataclasses.replace(timing, rate=a.rate)
    console = Console(width=160)
    info = machine()
    reports = []
    started = time.time()
    for name in a.only or list(DRILLS):
        report = run_drill(name, timing)
        console.print(report.render(), markup=False)
        reports.append(report)
    console.print(summary_table(reports))
    info["loadavg_at_end"] = os.getloadavg()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(
        json.dumps(
            {
                "machine": info,
                "timing": dataclasses.asdict(timing),
                "wall_s": round(time.time() - started, 1),
                "drills": [r.to_json() for r in reports],
            },
            indent=2,
        )
    )
    console.print(f"wrote {a.out}")
    if not all(r.passed for r in reports):
        sys.exit(1)


if __name__ == "__main__":
    main()
