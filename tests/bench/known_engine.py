"""The engine the bench tests measure: a decode-dominated profile where every timing
parameter matters (benchmarks/bench_sweep_fit.py's first case uses the same values)."""

from __future__ import annotations

from skyfleet.perf import Profile, RequestSizes, default_profile, max_rate_at_slo

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


# What a plan and a simulation take from a fitted profile, and how close it must be. The
# sweep prefills the probe prompts (128–2048 tokens) and the load's 512-token prompts;
# decode runs at batches up to the sweep's max concurrency (12).
PROMPT, OUTPUT, CHAT_OVERHEAD = 512, 32, 7
PREFILL_LENGTHS = (128, 512 + CHAT_OVERHEAD, 1024, 2048)
DECODE_BATCHES = (1, 4, 12)
SLO_TTFT_S, SLO_TPOT_S = 10.0, 0.08
TOLERANCE = {"prefill": 0.10, "decode": 0.06, "max_rate": 0.08}


def fit_violations(fit: Profile, true: Profile = TRUE) -> list[str]:
    """Where `fit` predicts the engine worse than TOLERANCE allows (empty: a usable fit).

    Individual parameters are not judged: `prefill_base_s` is the fragile one because the
    sweep identifies it only as a difference — prefill at the loaded prompt length (from
    the engine's iterations) minus slope × length (the probes' slope, whose intercept is
    confounded with the client overhead) — so a 3 % slope error moves it by ~8 %. What a
    user relies on is the predicted time at the lengths and batches the sweep measured.
    """
    out: list[str] = []

    def check(what: str, kind: str, got: float, want: float) -> None:
        err = got / want - 1
        if abs(err) > TOLERANCE[kind]:
            out.append(f"{what}: {err:+.1%} (allowed ±{TOLERANCE[kind]:.0%})")

    for n in PREFILL_LENGTHS:
        check(f"prefill({n})", "prefill", fit.prefill_time(n), true.prefill_time(n))
    for b in DECODE_BATCHES:
        c = b * (PROMPT + CHAT_OVERHEAD + OUTPUT / 2)
        check(
            f"decode step(B={b})", "decode", fit.decode_step_time(b, c), true.decode_step_time(b, c)
        )
    sizes = RequestSizes(PROMPT + CHAT_OVERHEAD, OUTPUT)
    check(
        "max rate at the SLO",
        "max_rate",
        max_rate_at_slo(fit, sizes, SLO_TTFT_S, SLO_TPOT_S),
        max_rate_at_slo(true, sizes, SLO_TTFT_S, SLO_TPOT_S),
    )
    return out
