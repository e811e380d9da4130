"""Small planning instances built from explicit offerings (shared by the planner tests)."""

from __future__ import annotations

from typing import Any

from skyfleet.catalog.offerings import Offering, OfferingRow, expand
from skyfleet.workload import Workload


def row(provider: str, region: str, accel: str, **prices_and_quota: Any) -> OfferingRow:
    """A catalog row rented per accelerator unless `billing_unit` says otherwise."""
    return OfferingRow.model_validate(
        {
            "provider": provider,
            "region": region,
            "accelerator": accel,
            "billing_unit": 1,
            "date": "2026-11-20",
            "source": "test",
            **prices_and_quota,
        }
    )


def offerings(rows: list[OfferingRow]) -> list[Offering]:
    return expand(rows, spot_availability=0.8)


def workload(
    demand: list[float],
    sizes: list[tuple[int, int, float]] | None = None,
    model: str = "SmolLM2-135M",
    **planning: Any,
) -> Workload:
    return Workload.model_validate(
        {
            "name": "t",
            "period_hours": 1,
            "models": [
                {
                    "name": "chat",
                    "model": model,
                    "demand": demand,
                    "sizes": [
                        {"input_tokens": i, "output_tokens": o, "weight": w}
                        for i, o, w in (sizes or [(200, 100, 1.0)])
                    ],
                    "slo": {"ttft_ms": 500, "tpot_ms": 30},
                }
            ],
            "planning": planning,
        }
    )
