"""Replica types: per-replica capacity at the SLO for each (model, accelerator, TP) and bucket.

Capacity comes from the perf model (`max_rate_at_slo` of `default_profile`) or from a
measured profile file named in the workload. For each accelerator every power-of-two TP up to
the largest instance that sells it is tried; a TP is dropped when a smaller one is at least as
good per accelerator on every bucket (its replicas fit in the same accelerators, so the larger
one can never be cheaper). Capacities are rounded down to 1e-4 req/s, the precision the plan
file keeps, so the optimiser and the written plan agree exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from skyfleet.catalog import get_model
from skyfleet.errors import DoesNotFitError
from skyfleet.perf import Profile, RequestSizes, default_profile, max_rate_at_slo, steady_state
from skyfleet.workload import ModelWorkload

TP_CHOICES = (1, 2, 4, 8, 16)
CAP_DECIMALS = 4


def floor_cap(x: float) -> float:
    """Round a capacity down to the plan file's precision (never overstate it)."""
    q = 10.0**CAP_DECIMALS
    return math.floor(x * q + 1e-9) / q


@dataclass(frozen=True)
class ReplicaType:
    """How one model runs on `tp` accelerators: capacity per size bucket at the SLO."""

    accelerator: str
    tp: int
    cap: tuple[float, ...]  # req/s per bucket at the SLO (0 = SLO impossible for that bucket)
    cap_mix: float  # req/s at the SLO for the workload's bucket mix (0 if any bucket is 0)
    concurrency: int  # in-flight requests at cap_mix (or at the best bucket's capacity)
    source: str  # "roofline" or the measured profile's source


@dataclass(frozen=True)
class Unservable:
    """Why a model cannot run on an accelerator (for the infeasibility report)."""

    accelerator: str
    reason: str  # "does not fit" / "misses the SLO"
    detail: str


def mix_capacity(cap: tuple[float, ...], fractions: list[float]) -> float:
    """Req/s of the bucket mix one replica sustains: 1 / Σ_b f_b / cap_b (0 if any cap_b is 0)."""
    load = 0.0
    for c, f in zip(cap, fractions, strict=True):
        if f <= 0:
            continue
        if c <= 0:
            return 0.0
        load += f / c
    return 1.0 / load if load > 0 else 0.0


def _profile(
    mw: ModelWorkload, accel: str, tp: int, measured: dict[tuple[str, int], Profile]
) -> Profile:
    if (accel, tp) in measured:
        return measured[(accel, tp)]
    return default_profile(mw.model, accel, tp)


def replica_types(
    mw: ModelWorkload,
    accelerators: list[str],
    max_tp: dict[str, int] | None = None,
    measured: list[Profile] | None = None,
) -> tuple[list[ReplicaType], list[Unservable]]:
    """Replica types for a model on each accelerator, and the accelerators it cannot use."""
    spec = get_model(mw.model)
    prof = {(p.accelerator, p.tp): p for p in measured or [] if p.model == spec.name}
    fractions = mw.bucket_fractions()
    slo = mw.slo
    out: list[ReplicaType] = []
    bad: list[Unservable] = []
    for accel in accelerators:
        limit = (max_tp or {}).get(accel, 8)
        found: list[ReplicaType] = []
        fit_msg = ""
        slo_msg = ""
        for tp in (t for t in TP_CHOICES if t <= limit):
            try:
                p = _profile(mw, accel, tp, prof)
            except DoesNotFitError as e:
                fit_msg = str(e)
                continue
            caps = tuple(
                floor_cap(
                    max_rate_at_slo(
                        p,
                        RequestSizes(b.input_tokens, b.output_tokens),
                        slo.ttft_ms / 1e3,
                        slo.tpot_ms / 1e3,
                        slo.percentile,
                    )
                )
                for b in mw.sizes
            )
            if max(caps) <= 0:
                one = steady_state(p, 1e-9, RequestSizes(mw.sizes[0].input_tokens, 1))
                slo_msg = (
                    f"{tp}× {accel} misses the SLO even with one request in flight "
                    f"(TPOT {one.tpot_mean * 1e3:.0f} ms vs {slo.tpot_ms:g} ms, TTFT "
                    f"{one.ttft_p * 1e3:.0f} ms vs {slo.ttft_ms:g} ms for "
                    f"{mw.sizes[0].label} tokens)"
                )
                continue
            mix = floor_cap(mix_capacity(caps, fractions))
            best = max(range(len(caps)), key=lambda i: caps[i])
            rate = mix if mix > 0 else caps[best]
            sizes = mw.sizes[best] if mix <= 0 else None
            avg = RequestSizes(
                sizes.input_tokens
                if sizes
                else sum(f * b.input_tokens for f, b in zip(fractions, mw.sizes, strict=True)),
                sizes.output_tokens
                if sizes
                else sum(f * b.output_tokens for f, b in zip(fractions, mw.sizes, strict=True)),
            )
            st = steady_state(p, rate * 0.999, avg, slo.percentile)
            conc = max(1, math.ceil(st.batch)) if st.stable else p.engine.max_num_seqs
            rt = ReplicaType(accel, tp, caps, mix, conc, p.source)
            if not any(_dominates(small, rt) for small in found):
                found.append(rt)
        if found:
            out.extend(found)
        elif slo_msg:
            bad.append(Unservable(accel, "misses the SLO", slo_msg))
        else:
            bad.append(Unservable(accel, "does not fit", fit_msg or f"no TP ≤ {limit} fits"))
    return out, bad


def _dominates(small: ReplicaType, big: ReplicaType) -> bool:
    """`big` is no better per accelerator than `small` on any bucket (so never cheaper)."""
    ratio = big.tp / small.tp
    return all(bc <= sc * ratio + 1e-12 for sc, bc in zip(small.cap, big.cap, strict=True))
