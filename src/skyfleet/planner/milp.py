"""The MILP: integer replicas per column per period, solved by HiGHS (scipy.optimize.milp).

Variables
  Y[j,t] ∈ ℤ≥0   replicas of column j in period t (one Y[j] for reserved/owned: constant)
  z[m,b,k,t] ≥ 0 req/s of model m's size bucket b routed to replica type k (Mélange split)
  C[m,t], P[g,m,t], Q[p,m,t] ≥ 0   capacity in total, per failure domain, per provider
  w[p,m,t] ∈ {0,1} provider p counts towards min_providers for model m in period t
Constraints (every model m, period t)
  Σ_k z[m,b,k,t] = λ[m,b,t]                               demand of every bucket is routed
  Σ_b z[m,b,k,t]/cap[k,b] ≤ Σ_{j∈k} a_j·u·Y[j,t]            routed load fits at the SLO
  Σ_{j on pool} tp_j·Y[j,t] ≤ quota(pool)                  quotas (accelerators)
  C − P[g] ≥ D[m,t]   for every domain g                   N-1: lose any one domain, still serve
  Q[p] ≤ F·C                                               max share per provider
  Q[p] ≥ δ·D·w[p],  Σ_p w[p] ≥ N                            min providers (every period)
where N-1, share and capacity sums count each replica at its bucket-mix capacity (cap_mix ×
availability × target utilisation): a sufficient condition that keeps the model small.
Objective: min Σ price·tp·hours·Y.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix

from skyfleet.planner.problem import Problem


@dataclass
class Variant:
    """What to build: a subset of columns and periods, which constraints, relax or not."""

    columns: list[int] | None = None  # None = all
    periods: list[int] | None = None  # None = all
    resilience: bool = True
    share: bool = True
    min_providers: bool = True
    relax: bool = False
    scale_demand: bool = False  # maximise α with demand × α (diagnosis)
    time_limit_s: float | None = None
    fixed: dict[int, float] = field(default_factory=dict)  # column → replicas (all periods)
    lower: dict[int, float] = field(default_factory=dict)  # column → at least this many
    gap: float | None = None  # relative MIP gap target (default: options.mip_rel_gap)
    warm: np.ndarray | None = None  # [J, T] a feasible plan to start from


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

    @property
    def feasible(self) -> bool:
        return self.status in ("optimal", "time_limit", "greedy")


class _Builder:
    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.lb: list[float] = []
        self.ub: list[float] = []
        self.n = 0

    def row(self, cols: list[int], vals: list[float], lb: float, ub: float) -> None:
        r = len(self.lb)
        self.rows.append(np.full(len(cols), r, dtype=np.int64))
        self.cols.append(np.asarray(cols, dtype=np.int64))
        self.vals.append(np.asarray(vals, dtype=float))
        self.lb.append(lb)
        self.ub.append(ub)

    def matrix(self, nvars: int) -> coo_matrix:
        if not self.lb:
            return coo_matrix((0, nvars))
        return coo_matrix(
            (np.concatenate(self.vals), (np.concatenate(self.rows), np.concatenate(self.cols))),
            shape=(len(self.lb), nvars),
        )


def solve(prob: Problem, v: Variant | None = None) -> Solution:
    """Build and solve one variant of the problem."""
    v = v or Variant()
    t0 = time.perf_counter()
    opts = prob.options
    J = len(prob.columns)
    cols = list(range(J)) if v.columns is None else list(v.columns)
    periods = list(range(prob.T)) if v.periods is None else list(v.periods)
    nt = len(periods)
    hours = prob.period_hours
    c: list[float] = []
    integ: list[int] = []
    lo: list[float] = []
    hi: list[float] = []

    def new_var(cost: float, integer: bool, upper: float = np.inf) -> int:
        c.append(cost)
        integ.append(1 if integer and not v.relax else 0)
        lo.append(0.0)
        hi.append(upper)
        return len(c) - 1

    yidx: dict[int, list[int]] = {}
    for j in cols:
        col = prob.columns[j]
        pool = prob.pools[col.pool]
        ub = float(pool.quota // col.rtype.tp)
        price = prob.replica_price(j) * hours
        if j in v.fixed:
            price = 0.0  # a constant: keep it out of the objective (and the relative gap)
        if prob.committed(j):
            one = new_var(price * prob.T, True, ub)
            yidx[j] = [one] * nt
        else:
            yidx[j] = [new_var(price, True, ub) for _ in range(nt)]
        if j in v.fixed:
            for i in set(yidx[j]):
                lo[i] = hi[i] = v.fixed[j]
        elif j in v.lower:
            for i in set(yidx[j]):
                lo[i] = min(v.lower[j], hi[i])
    alpha = new_var(-1.0, False, 1e6) if v.scale_demand else -1
    if v.scale_demand:
        c[:alpha] = [0.0] * alpha
    b = _Builder()
    # Quotas per pool.
    by_pool: dict[int, list[int]] = {}
    for j in cols:
        by_pool.setdefault(prob.columns[j].pool, []).append(j)
    for pi, js in by_pool.items():
        quota = float(prob.pools[pi].quota)
        if sum(prob.columns[j].rtype.tp * (quota // prob.columns[j].rtype.tp) for j in js) <= quota:
            continue  # bounds already enforce it
        for ti in range(nt):
            if ti > 0 and all(prob.committed(j) for j in js):
                break
            b.row(
                [yidx[j][ti] for j in js],
                [float(prob.columns[j].rtype.tp) for j in js],
                -np.inf,
                quota,
            )
    for m in range(prob.M):
        mcols = [j for j in cols if prob.columns[j].m == m]
        rts = prob.rtypes[m]
        fr = prob.fractions[m]
        by_k: dict[int, list[int]] = {}
        for j in mcols:
            by_k.setdefault(rts.index(prob.columns[j].rtype), []).append(j)
        groups = sorted({prob.group_of(j) for j in mcols})
        providers = sorted({prob.provider_of(j) for j in mcols})
        use_n1 = v.resilience and opts.resilience != "none"
        use_share = v.share and opts.max_share is not None and opts.max_share < 1
        use_minp = v.min_providers and opts.min_providers > 1
        w: dict[str, int] = {}
        for ti, t in enumerate(periods):
            d = float(prob.demand[m, t])
            # Bucket routing.
            zs: dict[tuple[int, int], int] = {}
            for bi, f in enumerate(fr):
                zc: list[int] = []
                for k, js in by_k.items():
                    if rts[k].cap[bi] > 0 and js:
                        zs[(bi, k)] = new_var(0.0, False)
                        zc.append(zs[(bi, k)])
                lam = d * f
                if v.scale_demand:
                    b.row([*zc, alpha], [1.0] * len(zc) + [-lam], 0.0, 0.0)
                else:
                    b.row(zc, [1.0] * len(zc), lam, lam)
            for k, js in by_k.items():
                zc = [zs[(bi, k)] for bi in range(len(fr)) if (bi, k) in zs]
                zv = [1.0 / rts[k].cap[bi] for bi in range(len(fr)) if (bi, k) in zs]
                yv = [-prob.offering(j).availability * opts.utilization for j in js]
                b.row(zc + [yidx[j][ti] for j in js], zv + yv, -np.inf, 0.0)
            if use_minp:  # which providers count in this period (≥ N of them)
                w = {p: new_var(0.0, True, 1.0) for p in providers}
                b.row(list(w.values()), [1.0] * len(w), float(opts.min_providers), np.inf)
            if not (use_n1 or use_share or use_minp):
                continue
            cap = {j: prob.eff_cap(j) for j in mcols}
            total = new_var(0.0, False)
            b.row([total] + [yidx[j][ti] for j in mcols], [1.0] + [-cap[j] for j in mcols], 0, 0)
            if use_n1:
                for g in groups:
                    gj = [j for j in mcols if prob.group_of(j) == g]
                    # C − P[g] ≥ D  ⇔  Σ_{j∉g} cap·Y ≥ D
                    rest = [j for j in mcols if prob.group_of(j) != g]
                    if v.scale_demand:
                        b.row(
                            [yidx[j][ti] for j in rest] + [alpha],
                            [cap[j] for j in rest] + [-d],
                            0.0,
                            np.inf,
                        )
                    elif len(rest) < len(gj):
                        b.row([yidx[j][ti] for j in rest], [cap[j] for j in rest], d, np.inf)
                    else:
                        b.row(
                            [total] + [yidx[j][ti] for j in gj],
                            [1.0] + [-cap[j] for j in gj],
                            d,
                            np.inf,
                        )
            for p in providers if (use_share or use_minp) else []:
                pj = [j for j in mcols if prob.provider_of(j) == p]
                if use_share:
                    assert opts.max_share is not None
                    b.row(
                        [yidx[j][ti] for j in pj] + [total],
                        [cap[j] for j in pj] + [-opts.max_share],
                        -np.inf,
                        0.0,
                    )
                if use_minp:
                    need = opts.min_provider_share * d
                    b.row(
                        [yidx[j][ti] for j in pj] + [w[p]],
                        [cap[j] for j in pj] + [-need],
                        0.0,
                        np.inf,
                    )
    n = len(c)
    a = b.matrix(n)
    limit = v.time_limit_s if v.time_limit_s is not None else opts.time_limit_s
    if v.relax:
        return _solve_lp(prob, v, a, b, np.array(c), lo, hi, yidx, periods, alpha, t0, limit)
    warm = None
    if v.warm is not None:
        idx = [i for j, ids in yidx.items() for i in set(ids)]
        val = [
            float(v.warm[j, periods[0] if prob.committed(j) else periods[ids.index(i)]])
            for j, ids in yidx.items()
            for i in sorted(set(ids), key=ids.index)
        ]
        warm = (np.array(idx, dtype=np.int32), np.array(val))
    res = _run_highs(
        np.array(c),
        a.tocsr(),
        np.array(b.lb),
        np.array(b.ub),
        np.array(lo),
        np.array(hi),
        np.array(integ),
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
            message=str(res.message),
        )
    x = np.asarray(res.x)
    for j, idx in yidx.items():
        vals = x[idx]
        y[j, periods] = vals if v.relax else np.round(vals)
    cost = float(sum(prob.replica_price(j) * hours * y[j, periods].sum() for j in yidx))
    status = res.status
    gap = res.gap
    bound = res.bound
    return Solution(
        y,
        cost,
        status,
        gap=None if v.relax or gap is None else float(gap),
        bound=None if bound is None else float(bound),
        seconds=secs,
        alpha=float(x[alpha]) if v.scale_demand else None,
        message=str(res.message),
        notes=(
            [f"time limit ({limit:g} s) reached: best plan HiGHS found, gap {gap or 0:.2%}"]
            if status == "time_limit"
            else []
        ),
    )


def _solve_lp(
    prob: Problem,
    v: Variant,
    a: coo_matrix,
    b: _Builder,
    c: np.ndarray,
    lo: list[float],
    hi: list[float],
    yidx: dict[int, list[int]],
    periods: list[int],
    alpha: int,
    t0: float,
    limit: float,
) -> Solution:
    """The LP relaxation by HiGHS dual simplex (its interior point was 5× slower here)."""
    from scipy.optimize import linprog
    from scipy.sparse import vstack

    csr = a.tocsr()
    lb, ub = np.array(b.lb), np.array(b.ub)
    eq = lb == ub
    up = ~eq & np.isfinite(ub)
    down = ~eq & np.isfinite(lb)
    res = linprog(
        c,
        A_ub=vstack([csr[up], -csr[down]]).tocsr() if (up.any() or down.any()) else None,
        b_ub=np.concatenate([ub[up], -lb[down]]) if (up.any() or down.any()) else None,
        A_eq=csr[eq] if eq.any() else None,
        b_eq=lb[eq] if eq.any() else None,
        bounds=np.column_stack([lo, hi]),
        method="highs-ds",
        options={"time_limit": max(limit, 0.1)},
    )
    y = np.zeros((len(prob.columns), prob.T))
    secs = time.perf_counter() - t0
    if res.status != 0 or res.x is None:
        status = "infeasible" if res.status == 2 else "no_solution"
        return Solution(y, np.inf, status, seconds=secs, message=str(res.message))
    x = np.asarray(res.x)
    for j, idx in yidx.items():
        y[j, periods] = x[idx]
    hours = prob.period_hours
    cost = float(sum(prob.replica_price(j) * hours * y[j, periods].sum() for j in yidx))
    return Solution(
        y,
        cost,
        "optimal",
        seconds=secs,
        alpha=float(x[alpha]) if v.scale_demand else None,
        message=str(res.message),
    )


@dataclass
class _Result:
    status: str  # optimal | time_limit | infeasible | no_solution | error
    x: np.ndarray | None
    gap: float | None
    bound: float | None
    message: str


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
    """Solve with highspy (it takes a starting solution, which scipy's milp does not)."""
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
    if integ.any():
        lp.integrality_ = [
            highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous for i in integ
        ]
    h.passModel(lp)
    if warm is not None and integ.any():
        h.setSolution(len(warm[0]), warm[0], warm[1])
    h.run()
    ms = h.getModelStatus()
    info = h.getInfo()
    msg = h.modelStatusToString(ms)
    has_x = info.primal_solution_status == 2  # feasible
    x = np.array(h.getSolution().col_value) if has_x else None
    mgap = float(info.mip_gap) if integ.any() and has_x else None
    bound = float(info.mip_dual_bound) if integ.any() else None
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
    return _Result(status, x, mgap, bound, msg)
