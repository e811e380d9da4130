"""The engine the bench tests measure: a decode-dominated profile where every timing
parameter matters (benchmarks/bench_sweep_fit.py's first case uses the same values)."""

from __future__ import annotations

from skyfleet.perf import default_profile

TRUE = default_profile("Llama-3.1-8B", "H100-SXM-80GB").model_copy(
    update={
        "prefill_base_s": 0.03,
        "prefill_per_token_s": 0.00015,
        "prefill_quad_s": 0.0,
        "decode_base_s": 0.04,
        "decode_per_seq_s": 0.001,
        "decode_per_ctx_token_s": 3e-6,
        "source": "test",
    }
)
