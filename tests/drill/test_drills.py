"""The drills' short form: each one starts its emulators (or rude upstreams) and a real
gateway on 127.0.0.1, injects its fault under load for 3 s and asserts the targets of
docs/reliability.md. Every process is stopped inside `run_drill` (a `Processes` context),
before any assertion runs, and checked for leaks."""

from __future__ import annotations

import pytest

from skyfleet.drill.drills import DRILLS, SHORT, run_drill

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]  # ≈ 10–15 s each


@pytest.mark.parametrize("name", list(DRILLS))
def test_drill_meets_its_targets(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_drill(name, SHORT)
    with capsys.disabled():
        print("\n" + report.render())
    assert report.sent > 100, "enough load to mean something"
    assert report.targets, "a drill without targets asserts nothing"
    missed = [t for t, ok in report.targets.items() if not ok]
    assert not missed, f"missed {missed}:\n{report.render()}"
    assert not report.leaked
    if name.startswith(("kill-", "rude-")):
        assert report.json_failed == 0
        assert report.recovery["ejected"] is not None, "the faulty endpoint was ejected"
