"""An independent checker of written plan files (not the planner's code path).

From the plan YAML (read as plain data), the catalog rows and the workload it recomputes:
- every quota: accelerators per (provider, region, accelerator, tier), billed in whole units
  of the row's billing unit, against the row's quota for that tier;
- each replica's capacity per size bucket, straight from the perf model
  (`default_profile` + `max_rate_at_slo`), ignoring the capacities the plan file states;
- the share of demand the fleet serves at the SLO in normal operation (spot × availability)
  and after the loss of each single provider and each single region with every spot replica
  removed, by its own routing LP (max α: α × each bucket's demand routed within the
  surviving replicas' capacity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.optimize import linprog

from skyfleet.catalog.offerings import OfferingRow, load_offerings
from skyfleet.perf import RequestSizes, default_profile, max_rate_at_slo
from skyfleet.workload import Workload

TIER_QUOTA = {
    "spot": "spot_quota",
    "reserved_1y": "reserved_quota",
    "reserved_3y": "reserved_quota",
}


@dataclass
class Check:
    """What the checker found: problems, and the worst served share per kind of loss."""

    problems: list[str] = field(default_factory=list)
    normal: float = math.inf  # min over periods and models of served ÷ demand
    after_provider_loss: float = math.inf  # spot removed
    after_region_loss: float = math.inf  # spot removed
    worst: str = ""


def _quota(row: OfferingRow, tier: str) -> int:
    q = getattr(row, TIER_QUOTA[tier]) if tier in TIER_QUOTA else None
    q = row.quota if q is None else q
    unit = getattr(row, "billing_unit", None) or row.per_instance
    return int(q) // unit * unit


def served_share(n: np.ndarray, caps: np.ndarray, demand: np.ndarray) -> float:
    """Largest α with α·demand[b] routed over replicas n[e] of capacity caps[e, b] (req/s)."""
    if demand.sum() <= 0:
        return math.inf
    keep = n > 0
    n, caps = n[keep], caps[keep]
    pairs = [(e, b) for e in range(len(n)) for b in range(len(demand)) if caps[e, b] > 0]
    if not pairs:
        return 0.0
    nv = len(pairs) + 1  # z per pair, then α
    a_eq = np.zeros((len(demand), nv))
    a_ub = np.zeros((len(n), nv))
    for i, (e, b) in enumerate(pairs):
        a_eq[b, i] = 1.0
        a_ub[e, i] = 1.0 / caps[e, b]
    a_eq[:, -1] = -demand
    c = np.zeros(nv)
    c[-1] = -1.0
    res = linprog(
        c,
        A_ub=a_ub,
        b_ub=n,
        A_eq=a_eq,
        b_eq=np.zeros(len(demand)),
        bounds=(0, None),
        method="highs",
    )
    assert res.status == 0, res.message
    return float(res.x[-1])


class _Caps:
    def __init__(self, workload: Workload) -> None:
        self.w = workload
        self.cache: dict[tuple[str, str, str, int], np.ndarray] = {}

    def __call__(self, model: str, spec: str, accel: str, tp: int) -> np.ndarray:
        key = (model, spec, accel, tp)
        if key not in self.cache:
            mw = self.w.get(model)
            p = default_profile(spec, accel, tp)
            s = mw.slo
            self.cache[key] = np.array(
                [
                    max_rate_at_slo(
                        p,
                        RequestSizes(b.input_tokens, b.output_tokens),
                        s.ttft_ms / 1e3,
                        s.tpot_ms / 1e3,
                        s.percentile,
                    )
                    for b in mw.sizes
                ]
            )
        return self.cache[key]


def check_plan(
    plan_path: str | Path,
    workload: Workload,
    offering_files: list[str | Path] | None = None,
    required: float | None = None,
) -> Check:
    """Check a plan file; `required` = the share of demand it must serve after a loss
    (default: what the workload promises, 1 − shed classes, times 1 + headroom)."""
    data: dict[str, Any] = yaml.safe_load(Path(plan_path).read_text())
    meta, entries = data["meta"], data["entries"]
    rows = {(r.provider, r.region, r.accelerator): r for r in load_offerings(offering_files or [])}
    out = Check()
    periods = int(meta["periods"])
    # -- quotas
    used: dict[tuple[str, str, str, str], np.ndarray] = {}
    for e in entries:
        k = (e["provider"], e["region"], e["accelerator"], e["tier"])
        used.setdefault(k, np.zeros(periods))
        used[k] += np.array(e["replicas"]) * e["accelerators_per_replica"]
        row = rows.get(k[:3])
        if row is None:
            out.problems.append(f"{k}: not in the catalog")
        elif row.per_instance % e["accelerators_per_replica"]:
            out.problems.append(f"{k}: TP {e['accelerators_per_replica']} spans instances")
    for i in data.get("idle", []):
        k = (i["provider"], i["region"], i["accelerator"], i["tier"])
        used.setdefault(k, np.zeros(periods))
        used[k] += np.array(i["accelerators"])
    for k, u in used.items():
        row = rows.get(k[:3])
        if row is None:
            continue
        unit = getattr(row, "billing_unit", None) or row.per_instance
        billed = np.ceil(u / unit - 1e-9) * unit
        if billed.max() > _quota(row, k[3]):
            out.problems.append(
                f"quota {k}: {int(u.max())} accelerators ({int(billed.max())} billed), "
                f"quota {_quota(row, k[3])}"
            )
    # -- capacity
    caps_of = _Caps(workload)
    pl = workload.planning
    headroom = float(meta.get("headroom", 0.0))
    for mw in workload.models:
        es = [e for e in entries if e["model"] == mw.name]
        if not es:
            out.problems.append(f"{mw.name}: no entries")
            continue
        caps = np.array(
            [
                caps_of(mw.name, e["model_spec"], e["accelerator"], e["accelerators_per_replica"])
                for e in es
            ]
        )
        fr = np.array(mw.bucket_fractions())
        spot = np.array([e["tier"] == "spot" for e in es])
        avail = np.array(
            [  # from the catalog and workload, not the plan file
                (
                    rows[(e["provider"], e["region"], e["accelerator"])].spot_availability
                    or pl.spot_availability
                )
                if e["tier"] == "spot"
                else 1.0
                for e in es
            ]
        )
        n_all = np.array([e["replicas"] for e in es], dtype=float)  # [E, T]
        prov = np.array([e["provider"] for e in es])
        reg = np.array([f"{e['provider']}/{e['region']}" for e in es])
        # getattr: the checker also reads plans made with older code (no such fields then).
        shed = set(getattr(pl, "shed_on_loss", []))
        kept = 1.0 - sum(getattr(mw.priority, c) for c in shed)
        need_loss = (1 + headroom) * kept if required is None else required
        mix = np.array(
            [
                1.0 / sum(f / c for f, c in zip(fr, cap, strict=True) if f > 0)
                if all(c > 0 for f, c in zip(fr, cap, strict=True) if f > 0)
                else 0.0
                for cap in caps
            ]
        )
        for t, d in enumerate(workload.demand(mw.name)):
            if d <= 0:
                continue
            lam = d * fr
            normal = served_share(n_all[:, t] * avail, caps, lam)
            out.normal = min(out.normal, normal)
            if normal < 1 + headroom - 1e-6:
                out.problems.append(f"{mw.name} period {t}: serves {normal:.1%} of demand")
            for kind, names in (("provider", prov), ("region", reg)):
                for lost in sorted(set(names)):
                    n = n_all[:, t] * ((names != lost) & ~spot)
                    # Bucket-mix capacity is a lower bound on what routing achieves.
                    share = float(n @ mix) / d
                    if share < need_loss - 1e-6:
                        share = served_share(n, caps, lam)
                    if kind == "provider" and share < out.after_provider_loss:
                        out.after_provider_loss, out.worst = share, f"{mw.name}/{lost}@{t}"
                    if kind == "region":
                        out.after_region_loss = min(out.after_region_loss, share)
                    must = meta["resilience"] == kind or (
                        meta["resilience"] == "provider" and kind == "region"
                    )
                    if must and share < need_loss - 1e-6:
                        out.problems.append(
                            f"{mw.name} period {t}: losing {kind} {lost} (spot gone) leaves "
                            f"{share:.1%} of demand, {need_loss:.1%} promised"
                        )
    return out
