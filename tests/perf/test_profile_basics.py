"""Basic behaviour of the perf model: sizes, errors, YAML round trip."""

from pathlib import Path

import pytest

from skyfleet.catalog import get_model
from skyfleet.errors import DoesNotFitError, UnknownNameError
from skyfleet.perf import (
    Profile,
    RequestSizes,
    default_profile,
    max_rate_at_slo,
    parse_profile_spec,
)


def test_kv_bytes_per_token_matches_published() -> None:
    assert get_model("Llama-3.1-8B").kv_bytes_per_token == 128 * 1024
    assert get_model("Llama-3.1-70B").kv_bytes_per_token == 320 * 1024


def test_model_too_large_says_how_much_memory_it_needs() -> None:
    with pytest.raises(DoesNotFitError, match=r"needs about \d+\.\d GB per device"):
        default_profile("Llama-3.1-405B-FP8", "H100-SXM-80GB", tp=1)


def test_unknown_names_list_known_ones() -> None:
    with pytest.raises(UnknownNameError, match=r"Llama-3\.1-8B"):
        parse_profile_spec("NoSuchModel@H100")
    with pytest.raises(UnknownNameError, match="H200"):
        parse_profile_spec("Llama-3.1-8B@NoSuchGPU")


def test_profile_yaml_round_trip(tmp_path: Path) -> None:
    p = default_profile("Llama-3.1-8B", "H100-SXM-80GB")
    p.save(tmp_path / "p.yaml")
    assert Profile.load(tmp_path / "p.yaml") == p


def test_more_devices_more_capacity() -> None:
    sizes = RequestSizes(1000, 256)
    tp4 = max_rate_at_slo(parse_profile_spec("Llama-3.1-70B@H100x4"), sizes, 1.0, 0.05)
    tp8 = max_rate_at_slo(parse_profile_spec("Llama-3.1-70B@H100x8"), sizes, 1.0, 0.05)
    assert 0 < tp4 < tp8


def test_every_catalog_pair_builds_or_says_it_does_not_fit() -> None:
    """Every model × accelerator × TP gives a usable profile or a DoesNotFitError."""
    import math

    from skyfleet.catalog import accelerators, models
    from skyfleet.perf import steady_state

    built = 0
    for m in models():
        for a in accelerators():
            for tp in (1, 2, 4, 8):
                try:
                    p = default_profile(m, a, tp)
                except DoesNotFitError:
                    continue
                built += 1
                assert p.kv_capacity_tokens > 0
                s = steady_state(p, 0.01, RequestSizes(200, 50))
                assert s.stable and math.isfinite(s.ttft_p) and s.ttft_p >= s.ttft_mean * 0.5
    assert built > 100
