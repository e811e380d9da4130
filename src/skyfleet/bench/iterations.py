"""Engine iterations seen from the client, recovered from streamed token arrival times.

A continuous-batching engine (vLLM, SGLang, TGI, the emulator) ends every iteration with
one token for each sequence it decoded, so the token arrivals of all streams come in
clusters a decode step apart. From the client's timestamps alone:

- a cluster of B tokens is one iteration's decode step: B = the decode batch, and its
  context C = Σ (prompt + tokens generated so far) over those sequences;
- the time from one cluster to the next is that iteration's duration, *in the engine's
  time*: the client/network overhead is the same for both ends, so it cancels;
- a first token arriving between two clusters means that iteration also ran a prefill,
  so its duration is prefill(prompt) + decode_step(B, C).

This is how `bench sweep` fits the decode step and the prefill without the client's
overhead (see `skyfleet.bench.sweep`). It needs one token per SSE chunk (usage tokens =
chunks) and an endpoint serving only the bench; requests breaking either are left out,
and iterations whose sequences do not continue from the previous cluster (the engine went
idle, or jitter split a cluster) are dropped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from skyfleet.bench.metrics import RequestResult


@dataclass(frozen=True, slots=True)
class Iteration:
    """One engine iteration as the client saw it (seconds, client clock)."""

    end: float  # arrival of its earliest decode token
    duration: float  # since the previous iteration's earliest decode token
    batch: int  # decode tokens it emitted
    context: int  # tokens those sequences held during the step
    prefills: tuple[int, ...]  # prompt sizes whose first token arrived during it


def _streams(results: Sequence[RequestResult]) -> list[tuple[int, np.ndarray]]:
    """(prompt tokens, token arrival times) of every request streamed one token per chunk."""
    out = []
    for r in results:
        if r.ttft is None or r.input_tokens <= 0 or not r.itl:
            continue
        if r.usage_reported and r.output_tokens != len(r.itl) + 1:
            continue  # several tokens per chunk: arrivals do not mark iterations
        first = r.sent + r.ttft
        out.append((r.input_tokens, first + np.concatenate(([0.0], np.cumsum(r.itl)))))
    return out


def observe_iterations(
    results: Sequence[RequestResult], time_scale: float = 1.0, tolerance: float = 0.3
) -> list[Iteration]:
    """Engine iterations of one run (warm-up requests included: they were in the batch),
    times × `time_scale` (the endpoint's time).

    Tokens closer together than `tolerance` × the 10th-percentile inter-token gap belong
    to the same iteration.
    """
    streams = _streams(results)
    if not streams:
        return []
    gaps = np.concatenate([np.diff(t) for _, t in streams])
    gaps = gaps[gaps > 0]  # chunks read together share a timestamp
    if not len(gaps):
        return []
    split = tolerance * float(np.percentile(gaps, 10))
    # decode tokens: (time, stream, index); index k ≥ 1 was decoded over prompt + k tokens
    times, seq, idx = [], [], []
    for i, (_, t) in enumerate(streams):
        times.append(t[1:])
        seq.append(np.full(len(t) - 1, i))
        idx.append(np.arange(1, len(t)))
    tt, ss, kk = np.concatenate(times), np.concatenate(seq), np.concatenate(idx)
    order = np.argsort(tt, kind="stable")
    tt, ss, kk = tt[order], ss[order], kk[order]
    cluster = np.concatenate(([0], np.cumsum(np.diff(tt) > split)))
    where: dict[tuple[int, int], int] = {}  # (stream, token index) → cluster
    for c, s, k in zip(cluster.tolist(), ss.tolist(), kk.tolist(), strict=True):
        where[(s, k)] = c
    members: defaultdict[int, list[tuple[int, int]]] = defaultdict(list)
    for (s, k), c in where.items():
        members[c].append((s, k))
    starts = np.searchsorted(cluster, np.arange(cluster[-1] + 1))
    ends = tt[starts]
    firsts = np.array([t[0] for _, t in streams])
    prompts = np.array([p for p, _ in streams])
    out: list[Iteration] = []
    for c in range(1, int(cluster[-1]) + 1):
        toks = members[c]
        if len({s for s, _ in toks}) != len(toks):
            continue  # two tokens of one stream merged: jitter, not an iteration
        prev = [where.get((s, k - 1)) for s, k in toks if k >= 2]
        if not prev or any(p != c - 1 for p in prev):
            continue  # not continuing from the previous cluster: idle engine, or a split
        lo, hi = ends[c - 1], ends[c]
        new = (firsts > lo) & (firsts < hi)
        out.append(
            Iteration(
                end=float(hi) * time_scale,
                duration=float(hi - lo) * time_scale,
                batch=len(toks),
                context=sum(int(prompts[s]) + k for s, k in toks),
                prefills=tuple(int(p) for p in prompts[new]),
            )
        )
    return out
