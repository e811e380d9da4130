"""What a simulation run produced, per time step and priority, and the figures derived from it.

Arrays are indexed [step, priority] with priorities (critical, standard, sheddable). Every
arriving request ends in exactly one of: served (within the SLO or not), shed (refused or
timed out by admission control), failed (lost in flight or no healthy endpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skyfleet.sim.fleet import PRIORITIES
from skyfleet.sim.timeline import OutageSpan

TTFT_EDGES = np.concatenate([[0.0], np.geomspace(1e-3, 3600.0, 600)])
"""Histogram bin edges for TTFT (s): 0, then log-spaced 1 ms … 1 h."""


@dataclass
class SimResult:
    """Per-step counts (by arrival step) and run-wide distributions of one run."""

    engine: str
    step_s: float
    slo_target: float
    arrivals: np.ndarray
    served: np.ndarray
    served_ok: np.ndarray
    shed: np.ndarray
    failed: np.ndarray
    queue: np.ndarray  # gateway queue at the end of each step, by priority
    capacity_rps: np.ndarray  # [steps] routable capacity
    cost: np.ndarray  # [steps] $ spent in the step
    served_by_provider: dict[str, np.ndarray]
    ttft_hist: np.ndarray  # counts per TTFT_EDGES bin, served requests
    outages: list[OutageSpan] = field(default_factory=list)
    ttft_samples: np.ndarray | None = None  # exact TTFTs (request-level engine)
    tpot_samples: np.ndarray | None = None
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    # -- totals ---------------------------------------------------------------------------
    @property
    def times(self) -> np.ndarray:
        return np.arange(len(self.arrivals)) * self.step_s

    def total(self, what: str) -> float:
        return float(np.asarray(getattr(self, what)).sum())

    @property
    def slo_attainment(self) -> float:
        """Share of all arriving requests served within the SLO."""
        arrivals = self.total("arrivals")
        return self.total("served_ok") / arrivals if arrivals > 0 else 1.0

    def attainment_series(self) -> np.ndarray:
        """[steps] share of each step's arrivals served within the SLO (1 where none)."""
        arrivals = self.arrivals.sum(axis=1)
        within = self.served_ok.sum(axis=1)
        return np.clip(np.where(arrivals > 0, within / np.maximum(arrivals, 1e-12), 1.0), 0.0, 1.0)

    def ttft_percentile(self, quantile: float = 0.99) -> float:
        """TTFT percentile (s) over served requests."""
        if self.ttft_samples is not None and len(self.ttft_samples):
            return float(np.quantile(self.ttft_samples, quantile))
        cumulative = np.cumsum(self.ttft_hist)
        if cumulative[-1] <= 0:
            return float("nan")
        target = quantile * cumulative[-1]
        bin_index = min(int(np.searchsorted(cumulative, target)), len(self.ttft_hist) - 1)
        lower, upper = TTFT_EDGES[bin_index], TTFT_EDGES[bin_index + 1]
        below = cumulative[bin_index - 1] if bin_index > 0 else 0.0
        frac = (target - below) / max(self.ttft_hist[bin_index], 1e-12)
        return float(lower + (upper - lower) * min(max(frac, 0.0), 1.0))

    @property
    def goodput_rps(self) -> float:
        """Requests per second served within the SLO, over the run."""
        return self.total("served_ok") / (len(self.arrivals) * self.step_s)

    def minutes_out_of_slo(self) -> float:
        """Minutes of steps whose SLO attainment is below the target."""
        return float((self.attainment_series() < self.slo_target).sum() * self.step_s / 60.0)

    def recovery_times(self, hold_s: float = 300.0) -> list[float | None]:
        """Per outage: seconds from its start until attainment is back ≥ target (and stays
        there for `hold_s`); 0 if it never fell below target, None if not by the end."""
        attainment = self.attainment_series()
        bad = attainment < self.slo_target
        hold = max(1, round(hold_s / self.step_s))
        out: list[float | None] = []
        for outage in self.outages:
            first = int(outage.start // self.step_s)
            if first >= len(attainment):
                out.append(None)
                continue
            # window in which this outage can cause damage: until the next outage starts
            later = [other.start for other in self.outages if other.start > outage.start]
            stop = int(min(later) // self.step_s) if later else len(attainment)
            if not bad[first:stop].any():
                out.append(0.0)
                continue
            recovery = None
            for step in range(first + int(np.argmax(bad[first:stop])), len(attainment)):
                if not bad[step : step + hold].any():
                    recovery = step * self.step_s - outage.start
                    break
            out.append(recovery)
        return out

    def by_priority(self) -> list[dict[str, Any]]:
        rows = []
        for column, priority in enumerate(PRIORITIES):
            rows.append(
                {
                    "priority": priority,
                    "arrived": float(self.arrivals[:, column].sum()),
                    "served": float(self.served[:, column].sum()),
                    "within_slo": float(self.served_ok[:, column].sum()),
                    "shed": float(self.shed[:, column].sum()),
                    "failed": float(self.failed[:, column].sum()),
                    "peak_queued": float(self.queue[:, column].max()) if len(self.queue) else 0.0,
                }
            )
        return rows

    def summary(self) -> dict[str, Any]:
        """Run-wide figures as plain data (for --json and the reports)."""
        return {
            "engine": self.engine,
            "step_s": self.step_s,
            "horizon_h": len(self.arrivals) * self.step_s / 3600.0,
            "requests": self.total("arrivals"),
            "served": self.total("served"),
            "served_within_slo": self.total("served_ok"),
            "degraded": self.total("served") - self.total("served_ok"),
            "shed": self.total("shed"),
            "failed": self.total("failed"),
            "slo_attainment": self.slo_attainment,
            "slo_target": self.slo_target,
            "ttft_p50_s": self.ttft_percentile(0.5),
            "ttft_p99_s": self.ttft_percentile(0.99),
            "goodput_rps": self.goodput_rps,
            "cost_usd": float(self.cost.sum()),
            "minutes_out_of_slo": self.minutes_out_of_slo(),
            "by_priority": self.by_priority(),
            "outages": [
                {
                    "label": outage.label,
                    "provider": outage.provider,
                    "start_h": outage.start / 3600.0,
                    "duration_h": (outage.end - outage.start) / 3600.0,
                    "fraction": outage.fraction,
                    "recovery_min": None if recovery is None else recovery / 60.0,
                }
                for outage, recovery in zip(self.outages, self.recovery_times(), strict=True)
            ],
            "wall_s": self.wall_s,
            "notes": self.notes,
        }
