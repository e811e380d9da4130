"""The shipped catalog: required rows present, sourced, and consistent with research notes."""

from __future__ import annotations

import pytest

from skyfleet.catalog import GIB, accelerators, get_accelerator, get_model, models
from skyfleet.errors import UnknownNameError

REQUIRED_MODELS = [
    "SmolLM2-135M",
    "Llama-3.1-8B",
    "Llama-3.1-70B",
    "Llama-3.1-405B-FP8",
    "Mixtral-8x7B",
    "Qwen2.5-32B",
]
REQUIRED_ACCELERATORS = [
    "H100-SXM-80GB",
    "H200",
    "B200",
    "A100-80GB",
    "A100-40GB",
    "L40S",
    "L4",
    "A10G",
    "MI300X",
    "TPU-v5e",
    "TPU-v6e",
]


def test_every_required_row_is_present_with_a_source() -> None:
    assert set(REQUIRED_MODELS) <= set(models())
    assert set(REQUIRED_ACCELERATORS) <= set(accelerators())
    for row in [*models().values(), *accelerators().values()]:
        assert len(row.source) > 20, row.name


def test_llama_weight_and_kv_bytes_match_the_research_notes() -> None:
    # research/bench-resilience.md §1.8: 16.1 GB / 141.1 GB BF16; 128 KiB / 320 KiB per token.
    m8, m70 = get_model("Llama-3.1-8B"), get_model("Llama-3.1-70B")
    assert m8.weight_bytes / 1e9 == pytest.approx(16.1, abs=0.05)
    assert m70.weight_bytes / 1e9 == pytest.approx(141.1, abs=0.05)
    assert m8.kv_bytes_per_token == 131_072
    assert m70.kv_bytes_per_token == 327_680


def test_quantised_checkpoints_keep_their_bf16_parts() -> None:
    # vLLM PR #12569: the W8A8 70B checkpoint loads as 67.72 GiB (embeddings/LM head BF16).
    assert get_model("Llama-3.1-70B-W8A8").weight_bytes / GIB == pytest.approx(67.72, rel=0.01)
    # vLLM issue #6746: 405B-FP8 on 8 GPUs took 57.75 GiB each (attention stays BF16).
    per_gpu = get_model("Llama-3.1-405B-FP8").weight_bytes / 8 / GIB
    assert per_gpu == pytest.approx(57.75, rel=0.03)
    fp8_kv = get_model("Llama-3.1-8B-FP8")
    assert fp8_kv.kv_bytes_per_token == get_model("Llama-3.1-8B").kv_bytes_per_token / 2


def test_moe_active_parameters_are_fewer_than_total() -> None:
    moe = [m for m in models().values() if m.active_params_b is not None]
    assert moe, "the catalog needs at least one MoE model"
    for m in moe:
        assert m.active_params < m.params_b * 1e9
    mixtral = get_model("Mixtral-8x7B")
    assert mixtral.active_params / 1e9 == pytest.approx(12.9)
    assert mixtral.params_b == pytest.approx(46.7)


def test_architecture_numbers_are_self_consistent() -> None:
    for m in models().values():
        assert m.heads % m.kv_heads == 0, m.name  # grouped-query attention groups
        # Dense-transformer parameter count is dominated by 12·L·d² (+ embeddings); the
        # listed total must be in a plausible band of it (catches a wrong layer/hidden).
        approx = m.layers * m.hidden**2 * 12 + m.embedding_params
        ratio = m.active_params / approx  # per-token parameters for MoE
        assert 0.5 < ratio < 4.5, (m.name, ratio)


def test_accelerator_figures_are_dense_and_ordered() -> None:
    for a in accelerators().values():
        assert a.memory_bytes <= a.memory_gb * 1e9 * 1.08  # runtime GiB ≤ marketed (+GiB/GB)
        assert a.memory_bytes >= a.memory_gb * 1e9 * 0.9
        if a.fp8_supported:
            assert a.fp8_tflops == pytest.approx(2 * a.bf16_tflops, rel=0.02), a.name
        else:
            assert a.flops("fp8") == a.bf16_tflops * 1e12  # weight-only FP8
    h100, h200, b200 = (get_accelerator(n) for n in ("H100", "H200", "B200"))
    assert h100.mem_bw_gbps < h200.mem_bw_gbps < b200.mem_bw_gbps
    assert get_accelerator("A100-80GB").flops("fp8") == 312e12


def test_lookup_is_case_insensitive_and_unknown_names_list_known_ones() -> None:
    assert get_model("llama-3.1-8b").name == "Llama-3.1-8B"
    assert get_accelerator("h100").name == "H100-SXM-80GB"
    with pytest.raises(UnknownNameError, match="MI300X"):
        get_accelerator("Z100")
