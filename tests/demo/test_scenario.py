"""The demo's story: a demand curve with a surge, an outage inside it, all scaled to the load."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skyfleet.demo.scenario import Scenario


def test_surge_reaches_its_factor_and_returns_to_base() -> None:
    sc = Scenario(load_s=100.0, base_rps=10.0, surge_factor=2.5, outage_provider="azure")
    assert sc.rate(0.0) == pytest.approx(5.0)  # ramp starts at half
    assert sc.rate(20.0) == pytest.approx(10.0)
    assert max(sc.rate(t / 10) for t in range(1000)) == pytest.approx(25.0)
    assert sc.rate(80.0) == pytest.approx(10.0)
    assert sc.rate(100.0) == 0.0 and sc.rate(-1.0) == 0.0


def test_outage_starts_during_the_surge_and_ends_before_the_load() -> None:
    sc = Scenario(load_s=30.0, base_rps=4.0, outage_provider="gcp")
    assert sc.surge_start * 30 < sc.outage_at < sc.surge_end * 30
    assert sc.outage_at < sc.recover_at < 30.0
    assert "gcp down" in sc.phase_at(sc.outage_at + 0.1)
    assert sc.phase_at(sc.recover_at + 0.1) == "recovery"
    assert sc.phase_at(31.0) == "draining"


def test_expected_requests_is_the_integral_of_the_rate() -> None:
    sc = Scenario(load_s=60.0, base_rps=10.0, surge_factor=1.0)
    # flat at 10 req/s after a linear ramp from 5 over the first 12%
    assert sc.expected_requests(0.01) == pytest.approx(600 - 0.12 * 60 * 2.5, rel=0.01)


@given(
    load=st.floats(8.0, 600.0),
    base=st.floats(0.1, 100.0),
    factor=st.floats(1.0, 5.0),
    t=st.floats(0.0, 1.0),
)
def test_rate_is_bounded_by_base_and_peak(
    load: float, base: float, factor: float, t: float
) -> None:
    sc = Scenario(load_s=load, base_rps=base, surge_factor=factor)
    r = sc.rate(t * load * 0.999)
    assert base * 0.5 - 1e-9 <= r <= base * factor + 1e-9
