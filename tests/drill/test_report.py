"""The drills' figures and targets from known traffic (no processes): each target fails
when what it guards is broken."""

from __future__ import annotations

from skyfleet.drill.drills import VICTIM, fill
from skyfleet.drill.report import DrillReport
from skyfleet.drill.traffic import Sample, Traffic


def sample(
    kind: str, sent: float, ok: bool = True, status: int = 200, served_by: str = "b0", rid: str = ""
) -> Sample:
    return Sample(
        kind, sent, sent + 0.1, ok, None if ok else "stream_error", status, 0.05, served_by, 1, rid
    )


def report_of(samples: list[Sample], ids: list[str]) -> DrillReport:
    report = DrillReport("t", "fault", "load")
    fill(report, Traffic(samples), ids, fault=1.0, end=2.0)
    return report


def test_ledger_target_needs_every_accepted_request_recorded_once() -> None:
    samples = [sample("json", 0.1 * i, rid=f"req-{i}") for i in range(20)]
    ids = [f"req-{i}" for i in range(20)]
    assert report_of(samples, ids).targets["ledger records = accepted requests"]
    lost = report_of(samples, ids[1:])
    assert lost.ledger_missing == 1 and not lost.targets["ledger records = accepted requests"]
    twice = report_of(samples, [*ids, ids[0]])
    assert not twice.targets["ledger records = accepted requests"]


def test_figures_count_failures_cuts_and_latency_windows() -> None:
    samples = [sample("json", 0.05 * i, rid=f"req-{i}") for i in range(40)]
    samples.append(sample("stream", 1.2, ok=False, served_by=VICTIM, rid="req-cut"))
    samples.append(sample("json", 1.3, ok=False, status=502))
    r = report_of(samples, [s.request_id for s in samples if s.request_id])
    assert (r.sent, r.succeeded, r.json_failed, r.streams_cut) == (42, 40, 1, 1)
    assert r.failed == {"stream:stream_error": 1, "json:stream_error": 1}
    assert r.p99_before_ms is not None and r.p99_during_ms is not None
    assert "streams cut 1 of 1" in r.render()
