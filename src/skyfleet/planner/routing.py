"""Post-solve routing: how each model's size buckets spread over replica types in a period.

Given replicas, a small LP routes every bucket to replica types with least total load (the
Mélange split); it yields utilisation and each entry's share of each bucket.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog

from skyfleet.planner.capacity import ReplicaType


def route(
    rtypes: list[ReplicaType], units: list[float], demand: list[float]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Bucket demand (req/s) over replica types holding `units` replicas (×availability).

    Returns (z[b,k] req/s, load[k] in replicas) or None if the demand does not fit.
    """
    nb, nk = len(demand), len(rtypes)
    idx = [(b, k) for b in range(nb) for k in range(nk) if rtypes[k].cap[b] > 0 and units[k] > 0]
    if sum(demand) <= 0:
        return np.zeros((nb, nk)), np.zeros(nk)
    if not idx:
        return None
    cost = np.array([1.0 / rtypes[k].cap[b] for b, k in idx])
    a_eq = np.zeros((nb, len(idx)))
    a_ub = np.zeros((nk, len(idx)))
    for i, (b, k) in enumerate(idx):
        a_eq[b, i] = 1.0
        a_ub[k, i] = 1.0 / rtypes[k].cap[b]
    res = linprog(
        cost,
        A_ub=a_ub,
        b_ub=np.array(units) * (1 + 1e-9),
        A_eq=a_eq,
        b_eq=np.array(demand),
        bounds=(0, None),
        method="highs",
    )
    if res.status != 0 or res.x is None:
        return None
    z = np.zeros((nb, nk))
    for i, (b, k) in enumerate(idx):
        z[b, k] = res.x[i]
    load = np.array(
        [sum(z[b, k] / rtypes[k].cap[b] for b in range(nb) if z[b, k] > 0) for k in range(nk)]
    )
    return z, load
