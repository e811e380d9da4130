"""Re-check a written plan from its own numbers: quotas per catalog row and tier (in whole
billing units), SLO capacity with headroom in every period, and N-1 coverage after the loss of
each provider (or region) with spot counted as `meta.spot_in_survivors` says.

`skyfleet plan` runs this on the plan it is about to write and refuses to write one that
fails (`PlanInvalidError`).
"""

from __future__ import annotations

import math

from skyfleet.catalog.offerings import Offering
from skyfleet.errors import SkyfleetError
from skyfleet.planner.capacity import ReplicaType, mix_capacity
from skyfleet.planner.plan import Plan, PlanEntry
from skyfleet.planner.routing import route

TOL = 1e-6  # relative: HiGHS's feasibility tolerance on integer solutions


class PlanInvalidError(SkyfleetError):
    """A plan breaks a quota or its N-1 promise; the message lists what and where."""


def _mix(e: PlanEntry, fractions: dict[str, float]) -> float:
    if not fractions or set(fractions) - set(e.capacity_by_bucket):
        return e.capacity_rps_per_replica
    caps = tuple(e.capacity_by_bucket[b] for b in fractions)
    return mix_capacity(caps, list(fractions.values()))


def _domain(e: PlanEntry, resilience: str) -> str:
    return e.provider if resilience != "region" else f"{e.provider}/{e.region}"


def check_quotas(plan: Plan, offerings: list[Offering]) -> list[str]:
    """Accelerators used per offering (replicas × TP plus idle), in whole billing units."""
    by_id = {o.id: o for o in offerings}
    used: dict[str, list[int]] = {}
    problems: list[str] = []
    for e in plan.entries:
        oid = e.offering or f"{e.provider}/{e.region}/{e.accelerator}/{e.tier}"
        o = by_id.get(oid)
        if o is None:
            problems.append(f"{e.key}: offering {oid} is not in the catalog")
            continue
        if o.per_instance % e.accelerators_per_replica:
            problems.append(f"{e.key}: TP {e.accelerators_per_replica} does not fit {o.instance}")
        u = used.setdefault(oid, [0] * plan.meta.periods)
        for t, n in enumerate(e.replicas):
            u[t] += n * e.accelerators_per_replica
    for i in plan.idle:
        u = used.setdefault(i.offering, [0] * plan.meta.periods)
        for t, n in enumerate(i.accelerators):
            u[t] += n
    for oid, per_t in used.items():
        o = by_id.get(oid)
        if o is None:
            continue
        for t, n in enumerate(per_t):
            billed = math.ceil(n / o.unit) * o.unit
            if billed > o.quota:
                problems.append(
                    f"{oid}: period {t} uses {n} accelerators ({billed} in units of {o.unit}), "
                    f"quota {o.quota}"
                )
                break
    return problems


def check_capacity(plan: Plan) -> list[str]:
    """SLO capacity with headroom in every period, and N-1 coverage after every single loss."""
    meta = plan.meta
    u = meta.target_utilization
    problems: list[str] = []
    for md in plan.models:
        es = [e for e in plan.entries if e.model == md.name]
        kept = 1.0 - sum(md.priority.get(c, 0.0) for c in set(meta.shed_on_loss))
        mix = [_mix(e, md.bucket_fractions) for e in es]
        surv = [
            0.0
            if e.tier == "spot" and meta.spot_in_survivors == "none"
            else (e.availability if e.tier == "spot" else 1.0)
            for e in es
        ]
        domains = sorted({_domain(e, meta.resilience) for e in es})
        labels = list(md.bucket_fractions)
        rts = [
            ReplicaType(
                e.accelerator,
                e.accelerators_per_replica,
                tuple(e.capacity_by_bucket.get(b, 0.0) for b in labels),
                0.0,
                1,
                "",
            )
            for e in es
        ]
        for t, d in enumerate(md.demand_rps):
            need = d * (1.0 + meta.headroom)
            if need <= 0:
                continue
            units = [e.replicas[t] * e.availability * u for e in es]
            mixed = sum(n * c for n, c in zip(units, mix, strict=True))  # sufficient, cheap
            lam = [need * f for f in md.bucket_fractions.values()]
            if mixed < need * (1 - TOL) and labels and route(rts, units, lam) is None:
                problems.append(
                    f"{md.name}: period {t}: capacity at the SLO does not carry {need:,.1f} req/s"
                )
                break
            if meta.resilience == "none":
                continue
            caps = [e.replicas[t] * m * s * u for e, m, s in zip(es, mix, surv, strict=True)]
            total = sum(caps)
            for g in domains:
                left = total - sum(
                    c for e, c in zip(es, caps, strict=True) if _domain(e, meta.resilience) == g
                )
                if left < need * kept * (1 - TOL) - TOL:
                    problems.append(
                        f"{md.name}: period {t}: after losing {g} the rest carries "
                        f"{left:,.2f} req/s, {left / (need * kept):.1%} of the "
                        f"{need * kept:,.2f} req/s promised"
                    )
                    break
            else:
                continue
            break
    return problems


def validate_plan(plan: Plan, offerings: list[Offering]) -> list[str]:
    """Every problem found (empty = the plan keeps its promises)."""
    return check_quotas(plan, offerings) + check_capacity(plan)
