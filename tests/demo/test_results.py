"""ClientLog: what the demo's clients saw, by priority."""

from __future__ import annotations

import pytest

from skyfleet.bench.metrics import RequestResult
from skyfleet.demo.results import ClientLog


def _r(i: int, label: str, sent: float, ok: bool = True, err: str | None = None) -> RequestResult:
    r = RequestResult(i, label, sent, sent)
    if ok:
        r.ttft, r.e2e = 0.01 * (i + 1), 0.5
    else:
        r.error = err
    return r


def test_outcomes_by_priority_shed_and_failed_apart() -> None:
    log = ClientLog()
    log.extend(
        [
            _r(0, "critical", 0.1),
            _r(1, "critical", 1.2),
            _r(2, "sheddable", 1.5, ok=False, err="http_429"),
            _r(3, "standard", 2.5, ok=False, err="http_503"),
            _r(4, "standard", 2.6, ok=False, err="timeout"),
            _r(5, "standard", 2.7),
        ]
    )
    c = log.classes
    assert (c["critical"].sent, c["critical"].ok) == (2, 2)
    assert c["critical"].success_rate == 1.0
    assert (c["sheddable"].shed, c["sheddable"].failed) == (1, 0)
    assert (c["standard"].shed, c["standard"].failed, c["standard"].ok) == (1, 1, 1)
    assert log.errors() == {"http_429": 1, "http_503": 1, "timeout": 1}
    assert log.ttft_ms(50) == pytest.approx(20.0)


def test_window_and_per_second_series_use_send_time() -> None:
    log = ClientLog()
    log.extend([_r(i, "standard", 0.25 * i) for i in range(12)])  # 4 per second for 3 s
    w = log.window(1.0, 2.0)
    assert w["standard"].sent == 4
    per = log.per_second(3.0)
    assert per["ok:standard"] == [4.0, 4.0, 4.0]
    assert per["bad:critical"] == [0.0, 0.0, 0.0]
    assert len(per["ttft_p99"]) == 3
