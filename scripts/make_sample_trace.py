"""Generate the small sample trace shipped in src/skyfleet/sim/data/sample_trace.csv.

A synthetic day of chat traffic (seeded, so the file is reproducible): a diurnal curve
(trough at 04:00, peak at 16:00, 3.5:1 peak-to-trough), gamma inter-arrivals with
coefficient of variation 2 (vLLM `--burstiness 0.25`), a few short bursts, and log-normal
prompt/output lengths (medians 600 and 180 tokens). Usage:

    .venv/bin/python scripts/make_sample_trace.py [OUT.csv] [--requests N]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

DAY = 86400.0


def rate_shape(t: np.ndarray) -> np.ndarray:
    """Relative demand over a day (mean ≈ 1)."""
    base = 1.0 + 0.55 * np.cos(2 * math.pi * (t / DAY - 16 / 24))
    for start, dur, mult in ((10.5 * 3600, 900, 2.5), (19.75 * 3600, 600, 3.0)):
        base = np.where((t >= start) & (t < start + dur), base * mult, base)
    return base


def generate(n: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Unit-rate gamma arrivals (CV 2), time-warped by the cumulative rate shape.
    shape = 0.25
    gaps = rng.gamma(shape, 1 / shape, size=n)
    u = np.cumsum(gaps)
    u *= 1.0 / u[-1]
    grid = np.linspace(0, DAY, 86401)
    cum = np.cumsum(rate_shape(grid))
    cum = cum / cum[-1]
    t = np.interp(u, cum, grid)
    inp = np.clip(np.round(rng.lognormal(math.log(600), 0.8, n)), 8, 16000)
    out = np.clip(np.round(rng.lognormal(math.log(180), 0.7, n)), 1, 4000)
    return np.column_stack([t, inp, out])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    default = Path(__file__).resolve().parents[1] / "src/skyfleet/sim/data/sample_trace.csv"
    ap.add_argument("out", nargs="?", default=str(default))
    ap.add_argument("--requests", type=int, default=20000)
    args = ap.parse_args()
    rows = generate(args.requests)
    with open(args.out, "w") as fh:
        fh.write("timestamp,input_tokens,output_tokens\n")
        for t, i, o in rows:
            fh.write(f"{t:.3f},{int(i)},{int(o)}\n")
    print(f"wrote {len(rows)} requests to {args.out}")


if __name__ == "__main__":
    main()
