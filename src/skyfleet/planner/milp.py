"""The MILP: integer replicas per column per period, solved by HiGHS (highspy).

Variables
  Y[j,t] ∈ ℤ≥0   replicas of column j in period t (one Y[j] for reserved/owned: constant)
  U[p,t] ∈ ℤ≥0   billing units rented on pool p (only where a replica is smaller than a unit)
  z[m,b,k,t] ≥ 0 req/s of model m's size bucket b routed to replica type k (Mélange split)
  C[m,t] ≥ 0     capacity in total;  w[p,m,t] ∈ {0,1} provider p counts towards min_providers
Constraints (every model m, period t; D = demand, h = headroom, κ = share kept on a loss)
  Σ_k z[m,b,k,t] = (1+h)·D·f_b                             every bucket is routed
  Σ_b z[m,b,k,t]/cap[k,b] ≤ Σ_{j∈k} a_j·u·Y[j,t]            routed load fits at the SLO
  Σ_{j on p} tp_j·Y[j,t] ≤ quota(p)   or  ≤ unit·U[p,t], U ≤ quota/unit
  Σ_{j∉g} s_j·cap_j·u·Y[j,t] ≥ (1+h)·κ·D   every domain g    N-1: lose any one, still serve
  Σ_{j∈p} cap_j·a_j·u·Y ≤ F·C                               max share per provider
  Σ_{j∈p} cap_j·a_j·u·Y ≥ δ·D·w[p],  Σ_p w ≥ N              min providers (every period)
with s_j = 1, or for spot 0 (`spot_in_survivors: none`) or a_j (`discounted`). N-1, share
and min-provider rows count a replica at its bucket-mix capacity (cap_mix): a sufficient
condition that keeps the model small. Objective: min Σ price·hours·(tp·Y or unit·U).
Every row has a label, so an LP relaxation's duals are shadow prices (`Solution.duals`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from skyfleet.planner.problem import Problem

Label = tuple[Any, ...]  # (kind, model or pool, ..., period) of one row


@dataclass
class Variant:
    """What to build: a subset of columns and periods, which constraints, relax or not."""

    columns: list[int] | None = None  # None = all
    periods: list[int] | None = None  # None = all
    resilience: bool = True
    share: bool = True
    min_providers: bool = True
    headroom: bool = True
    relax: bool = False
    scale_demand: bool = False  # maximise α with demand × α (diagnosis)
    time_limit_s: float | None = None
    fixed: dict[int, float] = field(default_factory=dict)  # column → replicas (all periods)
    lower: dict[int, float] = field(default_factory=dict)  # column → at least this many
    gap: float | None = None  # relative MIP gap target (default: options.mip_rel_gap)
    warm: np.ndarray | None = None  # [J, T] a feasible plan to start from
    quota_scale: float = 1.0  # × every quota (inf = no quota), for the cost decomposition


@dataclass
class Solution:
    """Replicas per column per period (all columns, all periods of the problem)."""

    y: np.ndarray  # [J, T] float (integers unless relaxed)
    cost: float
    status: str  # optimal | time_limit | greedy | infeasible | error
    gap: float | None = None
    bound: float | None = None
    seconds: float = 0.0
    alpha: float | None = None
    message: str = ""
    notes: list[str] = field(default_factory=list)
    duals: dict[Label, float] = field(default_factory=dict)  # LP only
    lp: Solution | None = None  # the LP relaxation a decomposed solve started from

    @property
    def feasible(self) -> bool:
        return self.status in ("optimal", "time_limit", "greedy")


class _Model:
    """Variables and labelled rows, built in blocks of one row per period."""

    def __init__(self, relax: bool) -> None:
        self.relax = relax
        self.c: list[np.ndarray] = []
        self.lo: list[np.ndarray] = []
        self.hi: list[np.ndarray] = []
        self.integer: list[np.ndarray] = []
        self.n = 0
        self.r_idx: list[np.ndarray] = []
        self.c_idx: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.lb: list[np.ndarray] = []
        self.ub: list[np.ndarray] = []
        self.labels: list[Label] = []
        self.nrows = 0

    def vars(
        self, cost: np.ndarray, integer: bool, upper: np.ndarray | float = np.inf
    ) -> np.ndarray:
        k = len(cost)
        idx = np.arange(self.n, self.n + k)
        self.n += k
        self.c.append(np.asarray(cost, dtype=float))
        self.lo.append(np.zeros(k))
        self.hi.append(np.broadcast_to(np.asarray(upper, dtype=float), (k,)).copy())
        self.integer.append(np.full(k, integer and not self.relax))
        return idx

    def rows(
        self,
        cols: np.ndarray,
        vals: np.ndarray | Sequence[float],
        lb: np.ndarray | float,
        ub: np.ndarray | float,
        labels: Sequence[Label],
    ) -> None:
        """One row per period: `cols` [n, nt] variable indices, `vals` [n] or [n, nt]."""
        nt = len(labels)
        cols = np.asarray(cols, dtype=np.int64).reshape(-1, nt)
        v = np.broadcast_to(np.asarray(vals, dtype=float).reshape(len(cols), -1), cols.shape)
        r = np.broadcast_to(np.arange(self.nrows, self.nrows + nt), cols.shape)
        self.r_idx.append(r.ravel())
        self.c_idx.append(cols.ravel())
        self.vals.append(v.ravel())
        self.lb.append(np.broadcast_to(np.asarray(lb, dtype=float), (nt,)).copy())
        self.ub.append(np.broadcast_to(np.asarray(ub, dtype=float), (nt,)).copy())
        self.labels.extend(labels)
        self.nrows += nt

    def arrays(self) -> tuple[np.ndarray, ...]:
        cat = np.concatenate
        return (
            cat(self.c),
            cat(self.lo),
            cat(self.hi),
            cat(self.integer),
            cat(self.lb) if self.lb else np.zeros(0),
            cat(self.ub) if self.ub else np.zeros(0),
        )

    def matrix(self) -> csr_matrix:
        if not self.vals:
            return csr_matrix((0, self.n))
        return csr_matrix(
            (np.concatenate(self.vals), (np.concatenate(self.r_idx), np.concatenate(self.c_idx))),
            shape=(self.nrows, self.n),
        )


def solve(prob: Problem, v: Variant | None = None) -> Solution:
    """Build and solve one variant of the problem."""
    v = v or Variant()
    t0 = time.perf_counter()
    opts = prob.options
    J = len(prob.columns)
    cols = np.arange(J) if v.columns is None else np.asarray(sorted(v.columns), dtype=int)
    periods = list(range(prob.T)) if v.periods is None else list(v.periods)
    nt = len(periods)
    hours = prob.period_hours
    mdl = _Model(v.relax)
    # -- replicas
    yidx = np.zeros((J, nt), dtype=np.int64)
    fixed_cols = {j for j in v.fixed if j in set(cols.tolist())}
    units = prob.pool_units
    for j in cols:
        pool = prob.pools[int(prob.col_pool[j])]
        tp = int(prob.col_tp[j])
        finite = np.isfinite(v.quota_scale)
        ymax = float(pool.quota * v.quota_scale // tp) if finite else np.inf
        price = 0.0 if (j in fixed_cols or units[prob.col_pool[j]]) else prob.col_price[j] * hours
        if prob.col_committed[j]:
            yidx[j] = mdl.vars(np.array([price * nt]), True, ymax)[0]
        else:
            yidx[j] = mdl.vars(np.full(nt, price), True, ymax)
    bounds: dict[int, tuple[float, float | None]] = {
        j: (v.fixed[j], v.fixed[j]) for j in fixed_cols
    }
    in_cols = set(cols.tolist())
    for j, low in v.lower.items():
        if j not in fixed_cols and j in in_cols:
            bounds[j] = (low, None)
    fixed_units: list[tuple[np.ndarray, float]] = []
    alpha = -1
    if v.scale_demand:
        alpha = int(mdl.vars(np.array([-1.0]), False, 1e6)[0])
    # -- pools: quotas and billing units
    by_pool: dict[int, list[int]] = {}
    for j in cols:
        by_pool.setdefault(int(prob.col_pool[j]), []).append(int(j))
    labels_t = periods
    bounded: list[tuple[int, np.ndarray, float]] = []  # (pool, var per period, accelerators)
    for pi, js in by_pool.items():
        pool = prob.pools[pi]
        quota = pool.quota * v.quota_scale
        tps = prob.col_tp[js]
        committed = bool(prob.col_committed[js[0]])
        block = yidx[js]
        if units[pi]:
            all_fixed = all(j in fixed_cols for j in js)
            cost = 0.0 if all_fixed else prob.unit_price(pi) * hours
            upper = quota // pool.unit if np.isfinite(quota) else np.inf
            if committed:
                uv = mdl.vars(np.array([cost * nt]), True, upper)
                uidx = np.full(nt, uv[0])
            else:
                uidx = mdl.vars(np.full(nt, cost), True, upper)
            bounded.append((pi, uidx, float(pool.unit)))
            mdl.rows(
                np.vstack([block, uidx[None, :]]),
                np.concatenate([tps, [-pool.unit]]).astype(float),
                -np.inf,
                0.0,
                [("units", pi, t) for t in labels_t],
            )
            if all_fixed:
                gpus = sum(v.fixed[j] * float(prob.col_tp[j]) for j in js)
                fixed_units.append((uidx, float(np.ceil(gpus / pool.unit - 1e-9))))
            if v.relax and np.isfinite(quota):  # explicit, so the LP gives its shadow price
                ts = [periods[0]] if committed else labels_t
                mdl.rows(
                    uidx[: len(ts)][None, :],
                    [float(pool.unit)],
                    -np.inf,
                    quota,
                    [("quota", pi, t) for t in ts],
                )
            continue
        if not np.isfinite(quota):
            continue
        if not v.relax and float(np.sum(tps * (quota // tps))) <= quota:
            continue  # bounds already enforce it
        if committed:
            mdl.rows(block[:, :1], tps.astype(float), -np.inf, quota, [("quota", pi, periods[0])])
        else:
            mdl.rows(block, tps.astype(float), -np.inf, quota, [("quota", pi, t) for t in labels_t])
    # -- per model
    for m in range(prob.M):
        mcols = cols[prob.col_m[cols] == m]
        if len(mcols) == 0:
            if prob.demand[m, periods].max() > 0:
                return Solution(np.zeros((J, prob.T)), np.inf, "infeasible", seconds=0.0)
            continue
        rts = prob.rtypes[m]
        fr = prob.fractions[m]
        need = (prob.need if v.headroom else prob.demand)[m, periods]
        kept = prob.need_n1[m, periods] / np.maximum(prob.need[m, periods], 1e-300)
        need_n1 = need * np.where(prob.need[m, periods] > 0, kept, 1.0)
        ks = sorted({int(k) for k in prob.col_k[mcols]})
        pairs = [(b, k) for b in range(len(fr)) for k in ks if rts[k].cap[b] > 0]
        zbase = mdl.vars(np.zeros(len(pairs) * nt), False)
        zidx = zbase.reshape(nt, len(pairs)).T  # [pairs, nt]
        for b, f in enumerate(fr):
            sel = [i for i, (bb, _) in enumerate(pairs) if bb == b]
            lam = need * f
            if v.scale_demand:
                a_col = np.full((1, nt), alpha)
                mdl.rows(
                    np.vstack([zidx[sel], a_col]),
                    np.vstack([np.ones((len(sel), nt)), -lam[None, :]]),
                    0.0,
                    0.0,
                    [("demand", m, b, t) for t in labels_t],
                )
            elif sel:
                mdl.rows(
                    zidx[sel], np.ones(len(sel)), lam, lam, [("demand", m, b, t) for t in labels_t]
                )
            elif np.any(lam > 0):
                return Solution(np.zeros((J, prob.T)), np.inf, "infeasible", seconds=0.0)
        for k in ks:
            sel = [i for i, (_, kk) in enumerate(pairs) if kk == k]
            jk = mcols[prob.col_k[mcols] == k]
            zv = [1.0 / rts[k].cap[pairs[i][0]] for i in sel]
            yv = -prob.col_avail[jk] * opts.utilization
            mdl.rows(
                np.vstack([zidx[sel], yidx[jk]]),
                np.concatenate([zv, yv]),
                -np.inf,
                0.0,
                [("cap", m, k, t) for t in labels_t],
            )
        use_n1 = v.resilience and opts.resilience != "none"
        use_share = v.share and opts.max_share is not None and opts.max_share < 1
        use_minp = v.min_providers and opts.min_providers > 1
        groups = sorted({int(g) for g in prob.col_group[mcols]})
        if use_n1:
            for g in groups:
                rest = mcols[prob.col_group[mcols] != g]
                label = [("n1", m, prob.groups[g], t) for t in labels_t]
                if v.scale_demand:
                    mdl.rows(
                        np.vstack([yidx[rest], np.full((1, nt), alpha)]),
                        np.vstack([np.repeat(prob.col_surv[rest][:, None], nt, 1), -need_n1[None]]),
                        0.0,
                        np.inf,
                        label,
                    )
                elif len(rest):
                    mdl.rows(yidx[rest], prob.col_surv[rest], need_n1, np.inf, label)
                elif np.any(need_n1 > 0):
                    mdl.rows(np.full((1, nt), yidx[mcols[0], 0]), [0.0], need_n1, np.inf, label)
        provs = sorted({int(p) for p in prob.col_provider[mcols]})
        if use_share:
            assert opts.max_share is not None
            total = mdl.vars(np.zeros(nt), False)
            mdl.rows(
                np.vstack([total[None, :], yidx[mcols]]),
                np.concatenate([[1.0], -prob.col_cap[mcols]]),
                0.0,
                0.0,
                [("total", m, t) for t in labels_t],
            )
            for p in provs:
                pj = mcols[prob.col_provider[mcols] == p]
                mdl.rows(
                    np.vstack([yidx[pj], total[None, :]]),
                    np.concatenate([prob.col_cap[pj], [-opts.max_share]]),
                    -np.inf,
                    0.0,
                    [("share", m, prob.providers[p], t) for t in labels_t],
                )
        if use_minp:
            w = {p: mdl.vars(np.zeros(nt), True, 1.0) for p in provs}
            mdl.rows(
                np.vstack(list(w.values())),
                np.ones(len(w)),
                float(opts.min_providers),
                np.inf,
                [("minp", m, t) for t in labels_t],
            )
            dem = prob.demand[m, periods] * opts.min_provider_share
            for p in provs:
                pj = mcols[prob.col_provider[mcols] == p]
                mdl.rows(
                    np.vstack([yidx[pj], w[p][None, :]]),
                    np.vstack([np.repeat(prob.col_cap[pj][:, None], nt, 1), -dem[None, :]]),
                    0.0,
                    np.inf,
                    [("minp_p", m, prob.providers[p], t) for t in labels_t],
                )
    c, lo_a, hi_a, integ, lb, ub = mdl.arrays()
    if v.scale_demand:  # maximise α alone
        c[:] = 0.0
        c[alpha] = -1.0
    for j, (lo_v, hi_v) in bounds.items():
        ids = np.unique(yidx[j])
        if hi_v is None:
            lo_a[ids] = np.minimum(lo_v, hi_a[ids])
        else:
            lo_a[ids] = hi_a[ids] = lo_v
    for uidx, need_u in fixed_units:
        ids = np.unique(uidx)
        lo_a[ids] = hi_a[ids] = need_u
    limit = v.time_limit_s if v.time_limit_s is not None else opts.time_limit_s
    warm = None
    if v.warm is not None and not v.relax:
        warm = _warm_start(v.warm, cols, periods, yidx)
    res = _run_highs(
        c,
        mdl.matrix(),
        lb,
        ub,
        lo_a,
        hi_a,
        integ,
        max(limit, 0.1),
        opts.mip_rel_gap if v.gap is None else v.gap,
        warm,
    )
    secs = time.perf_counter() - t0
    y = np.zeros((J, prob.T))
    if res.x is None:
        status = res.status
        return Solution(
            y,
            np.inf,
            "infeasible" if status == "infeasible" else "no_solution",
            seconds=secs,
            message=res.message,
        )
    x = res.x
    vals = x[yidx[cols]]
    y[np.ix_(cols, np.asarray(periods, dtype=int))] = vals if v.relax else np.round(vals)
    cost = prob.cost(y, cols.tolist(), periods, relaxed=v.relax)
    duals: dict[Label, float] = {}
    if v.relax and res.row_dual is not None and res.col_dual is not None:
        duals = {lab: float(d) for lab, d in zip(mdl.labels, res.row_dual, strict=True) if d != 0}
        # A quota also binds through the bounds it implies (Y ≤ ⌊quota/tp⌋, U ≤ quota/unit):
        # raising the quota by one accelerator raises those by 1/tp (1/unit).
        for j in cols:
            pi = int(prob.col_pool[j])
            if not units[pi]:
                bounded.append((pi, yidx[j], float(prob.col_tp[j])))
        for pi, ids, per in bounded:
            seen: set[int] = set()
            for ti, i in enumerate(ids.tolist()):
                d = float(res.col_dual[i])
                if i in seen or d >= 0 or x[i] < hi_a[i] - 1e-7:
                    continue
                seen.add(i)
                key = ("quota", pi, periods[ti])
                duals[key] = duals.get(key, 0.0) + d / per
    return Solution(
        y,
        cost,
        res.status,
        gap=None if v.relax or res.gap is None else float(res.gap),
        bound=None if res.bound is None else float(res.bound),
        seconds=secs,
        alpha=float(x[alpha]) if v.scale_demand else None,
        message=res.message,
        notes=(
            [f"time limit ({limit:g} s) reached: best plan HiGHS found, gap {res.gap or 0:.2%}"]
            if res.status == "time_limit"
            else []
        ),
        duals=duals,
    )


def _warm_start(
    warm: np.ndarray, cols: np.ndarray, periods: list[int], yidx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Replica counts as a (partial) HiGHS starting point; HiGHS completes the rest."""
    idx: dict[int, float] = {}
    for j in cols:
        for ti, t in enumerate(periods):
            idx.setdefault(int(yidx[j, ti]), float(warm[j, t]))
    return np.array(list(idx), dtype=np.int32), np.array(list(idx.values()))


@dataclass
class _Result:
    status: str  # optimal | time_limit | infeasible | no_solution | error
    x: np.ndarray | None
    gap: float | None
    bound: float | None
    message: str
    row_dual: np.ndarray | None = None
    col_dual: np.ndarray | None = None


def _run_highs(
    c: np.ndarray,
    a: csr_matrix,
    lb: np.ndarray,
    ub: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    integ: np.ndarray,
    time_limit: float,
    gap: float,
    warm: tuple[np.ndarray, np.ndarray] | None,
) -> _Result:
    """Solve with highspy (it takes a starting solution and gives LP duals)."""
    import highspy

    # The core class: same API, without the wrapper's banner on stdout and callback threads.
    h = highspy._core._Highs()
    h.setOptionValue("output_flag", bool(os.environ.get("SKYFLEET_HIGHS_LOG")))
    h.setOptionValue("time_limit", float(time_limit))
    h.setOptionValue("mip_rel_gap", float(gap))
    h.setOptionValue("threads", 1)
    inf = highspy.kHighsInf
    lp = highspy.HighsLp()
    lp.num_col_ = len(c)
    lp.num_row_ = a.shape[0]
    lp.col_cost_ = c
    lp.col_lower_ = lo
    lp.col_upper_ = np.where(np.isfinite(hi), hi, inf)
    lp.row_lower_ = np.where(np.isfinite(lb), lb, -inf)
    lp.row_upper_ = np.where(np.isfinite(ub), ub, inf)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.start_ = a.indptr.astype(np.int32)
    lp.a_matrix_.index_ = a.indices.astype(np.int32)
    lp.a_matrix_.value_ = a.data.astype(float)
    lp.a_matrix_.num_col_ = len(c)
    lp.a_matrix_.num_row_ = a.shape[0]
    mip = bool(integ.any())
    if mip:
        lp.integrality_ = [
            highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous for i in integ
        ]
    h.passModel(lp)
    if warm is not None and mip:
        h.setSolution(len(warm[0]), warm[0], warm[1])
    h.run()
    ms = h.getModelStatus()
    info = h.getInfo()
    msg = h.modelStatusToString(ms)
    has_x = info.primal_solution_status == 2  # feasible
    sol = h.getSolution()
    x = np.array(sol.col_value) if has_x else None
    mgap = float(info.mip_gap) if mip and has_x else None
    bound = (
        float(info.mip_dual_bound)
        if mip
        else (float(info.objective_function_value) if has_x else None)
    )
    valid = not mip and has_x and sol.dual_valid
    duals = np.array(sol.row_dual) if valid else None
    col_duals = np.array(sol.col_dual) if valid else None
    if ms == highspy.HighsModelStatus.kOptimal:
        status = "optimal"
    elif ms == highspy.HighsModelStatus.kInfeasible:
        status = "infeasible"
    elif x is not None:
        status = "time_limit"
    elif ms in (highspy.HighsModelStatus.kTimeLimit, highspy.HighsModelStatus.kInterrupt):
        status = "no_solution"
    else:
        status = "error"
    return _Result(status, x, mgap, bound, msg, duals, col_duals)
