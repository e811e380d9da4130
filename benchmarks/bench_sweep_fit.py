"""Does `bench sweep` recover a known engine? Emulators with known profiles, one sweep each.

For every case an emulator serves a profile whose parameters we know; `sweep` runs
against it and fits a profile. The same runs are fitted twice, side by side:

- **iterations** (the default): decode steps and prefills read from the engine iterations
  visible in the token timestamps (`skyfleet.bench.iterations`);
- **TPOT** (the fallback, and the method before it): Little's-law batch and mean TPOT
  stretched by the prefill share, prefill from idle TTFT.

Cases: the test's decode-heavy profile (emulator 5× real time), and the roofline
defaults of Llama-3.1-8B on L4 (8×) and H100 (real time), quadratic prefill term dropped.
Reported: fitted/true for every timing parameter, the worst error of the decode step over
the batches the sweep saw, and the sweep's max rate vs `max_rate_at_slo` of the true
profile. Prints a rich table, writes benchmarks/results/bench_sweep_fit.json.
Usage: .venv/bin/python benchmarks/bench_sweep_fit.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from skyfleet.bench import Slo, SyntheticRequests, Target, preflight
from skyfleet.bench.fit import TIMING_PARAMS as PARAMS
from skyfleet.bench.fit import fit_from_sweep
from skyfleet.bench.sweep import SweepConfig, SweepResult, sweep
from skyfleet.bench.workload import LengthDist
from skyfleet.emulator.process import start_emulator
from skyfleet.perf import Profile, RequestSizes, default_profile, max_rate_at_slo

OUT = Path(__file__).parent / "results" / "bench_sweep_fit.json"
CHAT_OVERHEAD = 7  # the emulator's chat framing tokens

H100 = default_profile("Llama-3.1-8B", "H100-SXM-80GB")
CASES: list[dict[str, Any]] = [
    {  # the test's profile: every decode term matters
        "name": "test profile, ×5",
        "profile": H100.model_copy(
            update={
                "prefill_base_s": 0.03,
                "prefill_per_token_s": 0.00015,
                "prefill_quad_s": 0.0,
                "decode_base_s": 0.04,
                "decode_per_seq_s": 0.001,
                "decode_per_ctx_token_s": 3e-6,
            }
        ),
        "time_scale": 5.0,
        "prompt": 512,
        "output": 32,
        "max_concurrency": 12,
    },
    {  # roofline defaults (quadratic prefill term dropped: the sweep fits a line)
        "name": "8B@L4, ×8",
        "profile": default_profile("Llama-3.1-8B", "L4").model_copy(update={"prefill_quad_s": 0.0}),
        "time_scale": 8.0,
        "prompt": 256,
        "output": 64,
        "max_concurrency": 40,
    },
    {
        "name": "8B@H100, ×1",
        "profile": H100.model_copy(update={"prefill_quad_s": 0.0}),
        "time_scale": 1.0,
        "prompt": 256,
        "output": 64,
        "max_concurrency": 48,
    },
]


def _strip_iterations(res: SweepResult) -> SweepResult:
    for p in res.points:
        p.iterations = []
    return res


async def one(case: dict[str, Any], quick: bool) -> dict[str, Any]:
    true: Profile = case["profile"]
    ts, prompt, output = case["time_scale"], case["prompt"], case["output"]
    sizes = RequestSizes(prompt + CHAT_OVERHEAD, output)
    step1 = true.decode_step_time(1, sizes.avg_context)
    slo = Slo(ttft_s=20 * true.prefill_time(prompt), tpot_s=1.8 * step1)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "true.yaml"
        true.save(path)
        emu = start_emulator(str(path), time_scale=ts, seed=1)
        try:
            t, _ = await preflight(Target(emu.url))
            cfg = SweepConfig(
                slo=slo, steps=2 if quick else 3, refine=2, sync_requests=6,
                requests_per_rate=40 if quick else 100, max_concurrency=case["max_concurrency"],
                probe_requests=2, time_scale=ts,
            )  # fmt: skip
            w0 = time.perf_counter()
            res = await sweep(
                t, lambda seed: SyntheticRequests(prompt, output, seed=seed),
                LengthDist.parse(prompt), LengthDist.parse(output), cfg, base=H100,
            )  # fmt: skip
            wall = time.perf_counter() - w0
        finally:
            emu.stop()
    assert res.profile is not None
    tpot_fit = fit_from_sweep(H100, _strip_iterations(res).points)
    batches = [1, case["max_concurrency"] // 3, case["max_concurrency"]]
    fits = {"iterations": res.profile, "TPOT": tpot_fit.profile}
    out: dict[str, Any] = {
        "case": case["name"],
        "time_scale": ts,
        "wall_s": wall,
        "slo": slo.as_dict(),
        "max_rate_sweep": res.max_rate,
        "max_rate_model": max_rate_at_slo(true, sizes, slo.ttft_s or 0, slo.tpot_s or 0),
        "client_overhead_s": res.client_overhead_s,
        "true": {k: getattr(true, k) for k in PARAMS},
        "methods": {},
    }
    for name, f in fits.items():
        step_err = max(
            abs(
                f.decode_step_time(b, b * sizes.avg_context)
                / true.decode_step_time(b, b * sizes.avg_context)
                - 1
            )
            for b in batches
        )
        out["methods"][name] = {
            "ratios": {k: getattr(f, k) / getattr(true, k) for k in PARAMS},
            "worst_step_error": step_err,
            "step_batches": batches,
            "prefill_error_at_prompt": f.prefill_time(sizes.input_tokens)
            / true.prefill_time(sizes.input_tokens)
            - 1,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rates, 40 requests per rate")
    args = ap.parse_args()
    console = Console(width=150)
    rows = []
    for case in CASES:
        console.print(f"[dim]sweeping {case['name']} …[/]")
        rows.append(asyncio.run(one(case, args.quick)))
    t = Table(title="bench sweep: fitted / true (1.000 = exact)")
    short = ("prefill base", "per token", "decode base", "per seq", "per ctx tok")
    for h in ("case", "method", *short, "step err", "prefill err"):
        t.add_column(h, justify="left" if h in ("case", "method") else "right")
    for r in rows:
        for name, m in r["methods"].items():
            t.add_row(
                r["case"], name, *(f"{m['ratios'][k]:.3f}" for k in PARAMS),
                f"{m['worst_step_error']:+.1%}", f"{m['prefill_error_at_prompt']:+.1%}",
            )  # fmt: skip
    console.print(t)
    t2 = Table(title="max rate at SLO and overhead")
    for h in ("case", "sweep", "model", "ratio", "client overhead", "wall"):
        t2.add_column(h, justify="left" if h == "case" else "right")
    for r in rows:
        oh = r["client_overhead_s"]
        t2.add_row(
            r["case"], f"{r['max_rate_sweep']:.3g}/s", f"{r['max_rate_model']:.3g}/s",
            f"{r['max_rate_sweep'] / r['max_rate_model']:.3f}",
            "–" if oh is None else f"{oh * 1e3:.2f} ms", f"{r['wall_s']:.0f} s",
        )  # fmt: skip
    console.print(t2)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                    "load_average": os.getloadavg(),
                },
                "quick": args.quick,
                "cases": rows,
            },
            indent=2,
        )
    )
    console.print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
