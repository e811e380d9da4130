"""The shipped price catalog: every price sourced and dated, estimates marked and few,
instances and billing units consistent."""

from __future__ import annotations

import re
from urllib.parse import urlparse

import pytest

from skyfleet.catalog.offerings import OfferingRow, expand, load_offerings

# The provider's own price page for every provider that publishes one.
PRICE_PAGES = {
    "aws": "aws.amazon.com",
    "gcp": "cloud.google.com",
    "azure": "azure.microsoft.com",
    "oracle": "www.oracle.com",
    "coreweave": "www.coreweave.com",
    "lambda": "lambda.ai",
    "nebius": "nebius.com",
}


def test_every_price_row_names_its_provider_page_and_a_date() -> None:
    for r in load_offerings():
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", r.date), r.key
        if r.owned is not None:
            assert r.source.startswith("calc:"), r.key  # owned capacity: a stated calculation
            continue
        assert urlparse(r.source_url).hostname == PRICE_PAGES[r.provider], r.key
        assert len(r.source) > 40, r.key


def test_estimates_are_marked_and_few() -> None:
    rows = load_offerings()
    list_estimates = [r.key for r in rows if "on_demand" in r.estimated]
    assert len(list_estimates) <= 10, list_estimates
    for r in rows:
        for tier in r.estimated:
            assert r.price(tier) is not None, (r.key, tier)
        if r.estimated:
            assert "estimate" in r.source, r.key
        if "estimate" in r.source.split(";")[0] and r.on_demand is not None:
            assert "on_demand" in r.estimated, r.key


def test_coreweave_prices_are_its_own_list_not_a_blog() -> None:
    """CoreWeave's page lists $49.24/h per 8×H100 and $50.44/h per 8×H200 instance."""
    rows = {r.key: r for r in load_offerings()}
    h100 = rows[("coreweave", "US-EAST-04", "H100-SXM-80GB")]
    h200 = rows[("coreweave", "US-EAST-04", "H200")]
    assert h100.on_demand == pytest.approx(49.24 / 8)
    assert h200.on_demand == pytest.approx(50.44 / 8)
    assert h100.per_instance == h100.unit == 8


def test_blackwell_is_offered_where_it_is_sold() -> None:
    rows = load_offerings()
    b200 = {r.provider for r in rows if r.accelerator == "B200"}
    assert {"aws", "coreweave", "lambda", "nebius", "oracle"} <= b200
    assert any(r.accelerator == "GB200" for r in rows)


def test_quota_counts_whole_billing_units() -> None:
    row = OfferingRow.model_validate(
        {
            "provider": "x",
            "region": "r",
            "accelerator": "H100",
            "per_instance": 8,
            "on_demand": 3.0,
            "quota": 20,
            "date": "2026-11-20",
            "source": "test",
        }
    )
    assert row.unit == 8 and row.quota_for("on_demand") == 16
    (o,) = expand([row])
    assert o.unit == 8 and o.quota == 16
    per_gpu = row.model_copy(update={"billing_unit": 1})
    assert per_gpu.quota_for("on_demand") == 20


def test_billing_unit_must_divide_the_instance() -> None:
    with pytest.raises(ValueError, match="billing_unit 3 must divide per_instance 8"):
        OfferingRow.model_validate(
            {
                "provider": "x",
                "region": "r",
                "accelerator": "H100",
                "per_instance": 8,
                "billing_unit": 3,
                "on_demand": 3.0,
                "date": "2026-11-20",
                "source": "test",
            }
        )
