"""Explain an infeasible planning problem in plain words: which constraint binds, by how much."""

from __future__ import annotations

import numpy as np

from skyfleet.planner.milp import Variant, solve
from skyfleet.planner.problem import Problem


def _peak_periods(prob: Problem) -> list[int]:
    peaks = {int(np.argmax(prob.demand[m])) for m in range(prob.M)}
    norm = prob.demand / np.maximum(prob.demand.max(axis=1, keepdims=True), 1e-12)
    peaks.add(int(np.argmax(norm.sum(axis=0))))
    return sorted(peaks)


def _alpha(
    prob: Problem, resilience: bool = True, share: bool = True, min_providers: bool = True
) -> float:
    """Largest demand multiplier the LP relaxation carries at the peak periods."""
    v = Variant(
        periods=_peak_periods(prob),
        relax=True,
        scale_demand=True,
        resilience=resilience,
        share=share,
        min_providers=min_providers,
    )
    s = solve(prob, v)
    return max(0.0, float(s.alpha)) if s.alpha is not None and s.feasible else 0.0


def diagnose(prob: Problem) -> str:
    """One or more sentences naming the binding constraint (never a solver log)."""
    w = prob.workload
    msgs: list[str] = []
    for m, mw in enumerate(w.models):
        bad = prob.unservable[m]
        if not prob.rtypes[m]:
            too_big = [u for u in bad if u.reason == "does not fit"]
            if too_big and len(too_big) == len(bad):
                msgs.append(
                    f"model too large: {mw.name} ({mw.model}) fits on none of the offered "
                    f"accelerators; e.g. {too_big[-1].detail}"
                )
            else:
                slo = [u for u in bad if u.reason == "misses the SLO"]
                detail = slo[0].detail if slo else ""
                msgs.append(
                    f"SLO impossible on every accelerator: {mw.name} cannot meet TTFT p"
                    f"{mw.slo.percentile * 100:g} ≤ {mw.slo.ttft_ms:g} ms and TPOT ≤ "
                    f"{mw.slo.tpot_ms:g} ms anywhere; e.g. {detail}"
                )
            continue
        for b, size in enumerate(mw.sizes):
            if all(rt.cap[b] <= 0 for rt in prob.rtypes[m]):
                msgs.append(
                    f"SLO impossible for {mw.name}'s {size.label}-token requests on every "
                    f"accelerator (TTFT ≤ {mw.slo.ttft_ms:g} ms, TPOT ≤ {mw.slo.tpot_ms:g} ms)"
                )
        if not any(c.m == m for c in prob.columns):
            names = {rt.accelerator for rt in prob.rtypes[m]}
            accs = ", ".join(sorted(names))
            small = [p.first for p in prob.pools if p.first.accelerator in names]
            if small:
                smallest = min(rt.tp for rt in prob.rtypes[m])
                msgs.append(
                    f"quota too small: every offering of {accs} has less quota than one "
                    f"{smallest}-accelerator replica in whole billing units (e.g. "
                    f"{small[0].id}: {small[0].quota} usable, rented {small[0].unit} at a time)"
                )
                continue
            msgs.append(
                f"no offering sells what {mw.name} can run on ({accs}) — check the "
                "providers/accelerators/tiers filters"
            )
    if prob.options.resilience != "none":
        for m, mw in enumerate(w.models):
            doms = {prob.group_of(j) for j in range(len(prob.columns)) if prob.col_m[j] == m}
            if len(doms) == 1:
                (only,) = doms
                msgs.append(
                    f"N-1 resilience ({prob.options.resilience}) binds: {mw.name} "
                    f"({mw.model}) can run only on {only} among the offerings, so losing it "
                    "loses the model; offer it elsewhere or plan with a narrower --resilience"
                )
    if msgs:
        return "; ".join(msgs)
    peak = {mw.name: float(prob.demand[m].max()) for m, mw in enumerate(w.models)}
    a0 = _alpha(prob, resilience=False, share=False, min_providers=False)
    if a0 < 1 - 1e-6:
        return (
            f"quota too small: at the peak the offered quotas carry at most {a0:.0%} of the "
            f"demand at the SLO ({', '.join(f'{k} {v:,.0f} req/s' for k, v in peak.items())}); "
            f"about {1 / max(a0, 1e-9) - 1:.0%} more quota is needed"
        )
    o = prob.options
    if o.resilience != "none":
        a1 = _alpha(prob, share=False, min_providers=False)
        if a1 < 1 - 1e-6:
            return (
                f"N-1 resilience ({o.resilience}) binds: with any one {o.resilience} removed, "
                f"the rest can carry at most {a1:.0%} of the peak demand within quota "
                f"({len(prob.groups)} {o.resilience}(s) offered: {', '.join(prob.groups)}); "
                f"add quota outside the largest {o.resilience} or use --resilience none"
            )
    if o.max_share is not None:
        a2 = _alpha(prob, min_providers=False)
        if a2 < 1 - 1e-6:
            provs = sorted({prob.provider_of(j) for j in range(len(prob.columns))})
            return (
                f"max share {o.max_share:.0%} per provider binds: with {len(provs)} providers "
                f"the plan can carry at most {a2:.0%} of the peak demand; raise --max-share "
                f"(≥ {1 / len(provs):.0%} is needed just to split evenly) or add quota"
            )
    if o.min_providers > 1:
        provs = sorted({prob.provider_of(j) for j in range(len(prob.columns))})
        if len(provs) < o.min_providers:
            return (
                f"min providers {o.min_providers} binds: only {len(provs)} providers "
                f"({', '.join(provs)}) offer capacity for these models"
            )
        return (
            f"min providers {o.min_providers} binds: fewer than {o.min_providers} providers can "
            f"each carry {o.min_provider_share:.0%} of the demand within quota"
        )
    return (
        "no plan meets every constraint together (each holds on its own); relax one of "
        "quota, --max-share, --min-providers or --resilience"
    )
