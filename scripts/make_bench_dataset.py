#!/usr/bin/env python3
"""Write the small JSONL sample dataset shipped with `skyfleet bench` (seeded, offline).

Usage: python scripts/make_bench_dataset.py [--rows 100] [--seed 7] [--out PATH]

Each line is a chat-style request: {"prompt": TEXT, "output_tokens": N}. Prompt lengths
follow a log-normal (median ≈ 300 tokens, clipped to 16..2000) and output lengths a
log-normal (median ≈ 150 tokens, clipped to 8..1000), loosely shaped like chat traffic
(ShareGPT-style: long-tailed prompts, shorter answers). Text is built from a fixed topic
list and filler words at about 4 characters per token (the emulator's approximation).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

TOPICS = [
    "Summarise the following meeting notes and list the action items",
    "Explain how continuous batching works in an LLM inference server",
    "Translate this paragraph into French and keep the technical terms",
    "Write a Python function that parses a CSV file of invoices",
    "Review this SQL query for performance problems",
    "Draft a polite reply to a customer asking for a refund",
    "Compare spot and reserved GPU instances for a small startup",
    "Give me three ideas for a weekend trip near the mountains",
    "What are the trade-offs between tensor and pipeline parallelism",
    "Rewrite this product description so it is shorter and clearer",
]
_FILLER_TEXT = (
    "context detail example note section item value result request service region latency "
    "budget capacity replica provider customer report table chart summary question answer"
)
FILLER = _FILLER_TEXT.split()

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src/skyfleet/bench/data/sample.jsonl"


def make_rows(rows: int, seed: int) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    ins = np.clip(rng.lognormal(np.log(300), 0.8, rows), 16, 2000).astype(int)
    outs = np.clip(rng.lognormal(np.log(150), 0.7, rows), 8, 1000).astype(int)
    out = []
    for n_in, n_out in zip(ins, outs, strict=True):
        head = str(rng.choice(TOPICS)) + ": "
        words: list[str] = []
        length = len(head)
        while length < 4 * int(n_in):
            w = str(rng.choice(FILLER))
            words.append(w)
            length += len(w) + 1
        out.append(
            {"prompt": (head + " ".join(words))[: 4 * int(n_in)], "output_tokens": int(n_out)}
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = ap.parse_args()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with a.out.open("w") as f:
        for row in make_rows(a.rows, a.seed):
            f.write(json.dumps(row) + "\n")
    print(f"wrote {a.rows} rows to {a.out}")


if __name__ == "__main__":
    main()
