"""Profiles: the perf model's parameters for (model, accelerator × N, engine settings).

An engine iteration is modelled as

    decode_step(B, C)  = decode_base_s + decode_per_seq_s · B + decode_per_ctx_token_s · C
    prefill(n)         = prefill_base_s + prefill_per_token_s · n + prefill_quad_s · n²

with B the decoding sequences and C the total context (tokens) they hold; one scheduler
iteration is `Profile.iteration_time` = Σ prefill(prompt admitted) + decode_step(B, C).
Defaults come from a roofline (weights and KV read at an achieved fraction of HBM
bandwidth, matmuls at an achieved fraction of peak FLOP/s, plus fixed overheads) with the
efficiency factors of a named engine preset (`EFFICIENCY_PRESETS`: vllm-2025 by default,
vllm-rocm-2024 by default on AMD accelerators, trtllm-2025, splitwise-2023); `fit_profile`
calibrates them from measured points and the result round-trips through YAML. docs/perf.md
has the formulas and their validation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from skyfleet.catalog import Accelerator, ModelSpec, get_accelerator, get_model
from skyfleet.errors import ConfigError, DoesNotFitError, SkyfleetError

GIB = 1024**3


class EngineSettings(BaseModel):
    """The serving engine's knobs that change capacity (vLLM names)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    max_num_seqs: int = Field(default=256, gt=0)
    block_size: int = Field(default=16, gt=0)
    max_num_batched_tokens: int = Field(default=8192, gt=0, description="prefill chunk budget")
    activation_reserve_gib: float = Field(
        default=3.0, ge=0, description="per device: activations, CUDA graphs, NCCL"
    )


class Efficiency(BaseModel):
    """Achieved fractions of the roofline and fixed overheads used for default profiles.

    The defaults are the `vllm-2025` preset; `Efficiency.preset(name)` gives the others
    (see `EFFICIENCY_PRESETS` and docs/perf.md for what each was checked against).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bandwidth: float = Field(default=0.85, gt=0, le=1, description="achieved HBM fraction")
    mfu_prefill: float = Field(default=0.6, gt=0, le=1)
    mfu_decode: float = Field(default=0.75, gt=0, le=1)
    step_overhead_s: float = Field(default=0.0015, ge=0, description="scheduler + launch")
    per_seq_overhead_s: float = Field(default=0.000003, ge=0, description="sampling etc.")
    allreduce_latency_s: float = Field(default=0.00004, ge=0, description="per layer, TP>1")
    mfu_attention: float | None = Field(
        default=None, gt=0, le=1, description="prefill attention (n²) MFU; None = mfu_prefill"
    )
    allreduce_per_peer_s: float = Field(
        default=0.0, ge=0, description="extra latency per all-reduce per TP peer (ring)"
    )
    interconnect: float = Field(
        default=0.7, gt=0, le=1, description="achieved fraction of interconnect bandwidth"
    )
    prefill_weight_read: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="share of a full weight read charged to each prefill (1 = prefill runs "
        "in its own forward pass, as in vLLM V0; 0 = it shares the decode step's)",
    )

    @classmethod
    def preset(cls, name: str) -> Efficiency:
        """A named engine-stack preset, or SkyfleetError listing the known ones."""
        key = name.strip().lower()
        if key not in EFFICIENCY_PRESETS:
            raise SkyfleetError(
                f"unknown efficiency preset {name!r}; known presets: "
                + ", ".join(sorted(EFFICIENCY_PRESETS))
            )
        return EFFICIENCY_PRESETS[key]


DEFAULT_PRESET = "vllm-2025"
#: The default preset per accelerator vendor (the engine stack that vendor's devices run).
VENDOR_PRESETS: dict[str, str] = {"amd": "vllm-rocm-2024"}


def default_preset(accelerator: Accelerator | str) -> str:
    """The preset a default profile uses on this accelerator (by vendor; vllm-2025 else)."""
    a = get_accelerator(accelerator) if isinstance(accelerator, str) else accelerator
    return VENDOR_PRESETS.get(a.vendor, DEFAULT_PRESET)


#: Engine-stack presets. Each was checked against published measurements of that stack
#: (tests/perf/published.yaml): see docs/perf.md for the comparison and tolerances.
EFFICIENCY_PRESETS: dict[str, Efficiency] = {
    # vLLM V1 with CUDA graphs and FlashAttention (2025): the default.
    "vllm-2025": Efficiency(),
    # TensorRT-LLM / NIM (2025): close to the roofline.
    "trtllm-2025": Efficiency(
        bandwidth=0.88,
        mfu_prefill=0.55,
        mfu_decode=0.8,
        step_overhead_s=0.001,
        per_seq_overhead_s=0.000003,
        allreduce_latency_s=0.00004,
        interconnect=0.5,
    ),
    # vLLM on ROCm (2024: vLLM 0.4–0.6, ROCm 6.1–6.2) on AMD Instinct: fitted to AMD's MLPerf
    # Inference v4.1 Llama-2-70B offline results and OCI's vLLM Llama-3.1-405B TP8
    # measurements on MI300X; the default for AMD accelerators. Far below the roofline:
    # ~38% of HBM bandwidth and 43% decode MFU at FP8, 30% of Infinity Fabric bandwidth.
    "vllm-rocm-2024": Efficiency(
        bandwidth=0.38,
        mfu_prefill=0.6,
        mfu_decode=0.43,
        step_overhead_s=0.0024,
        per_seq_overhead_s=0.000035,
        allreduce_latency_s=0.0,
        interconnect=0.3,
    ),
    # The 2023 stack behind Splitwise's perf_model.csv (ISCA'24): 2-4x slower than the
    # roofline, dominated by per-step overheads, with slow (non-flash) prefill attention.
    "splitwise-2023": Efficiency(
        bandwidth=0.55,
        mfu_prefill=0.7,
        mfu_decode=0.3,
        step_overhead_s=0.0005,
        per_seq_overhead_s=0.00015,
        allreduce_latency_s=0.0,
        allreduce_per_peer_s=0.000023,
        mfu_attention=0.045,
        prefill_weight_read=1.0,
    ),
}


class Profile(BaseModel):
    """Calibrated timing and capacity parameters of one engine deployment."""

    model_config = ConfigDict(extra="forbid")

    model: str
    accelerator: str
    tp: int = Field(default=1, gt=0)
    engine: EngineSettings = EngineSettings()
    prefill_base_s: float = Field(ge=0)
    prefill_per_token_s: float = Field(ge=0)
    prefill_quad_s: float = Field(default=0.0, ge=0)
    decode_base_s: float = Field(gt=0)
    decode_per_seq_s: float = Field(ge=0)
    decode_per_ctx_token_s: float = Field(ge=0)
    kv_capacity_tokens: int = Field(gt=0)
    max_context: int = Field(gt=0)
    source: str = "roofline"

    # -- timing -------------------------------------------------------------------------
    def prefill_time(self, n_tokens: float) -> float:
        """Seconds to prefill `n_tokens` prompt tokens in one iteration."""
        if n_tokens <= 0:
            return 0.0
        n = float(n_tokens)
        return self.prefill_base_s + self.prefill_per_token_s * n + self.prefill_quad_s * n * n

    def prefill_batch_time(self, prompt_tokens: Sequence[float]) -> float:
        """Seconds to prefill several prompts in one iteration, one after another."""
        return sum(self.prefill_time(n) for n in prompt_tokens)

    def iteration_time(
        self, batch: float, total_context: float, prompt_tokens: Sequence[float] = ()
    ) -> float:
        """One continuous-batching iteration: prefill the prompts admitted this iteration
        (each its own `prefill_time`), then one decode step for the `batch` sequences that
        were already decoding, holding `total_context` tokens (none when `batch` is 0).

        This is the iteration the emulator runs (skyfleet.emulator.engine) and the one
        `steady_state` models; a prompt's first token comes when its own prefill ends.
        """
        decode = self.decode_step_time(batch, total_context) if batch > 0 else 0.0
        return self.prefill_batch_time(prompt_tokens) + decode

    def decode_step_time(self, batch: float, total_context: float) -> float:
        """Seconds for one decode iteration of `batch` sequences holding `total_context` tokens."""
        b = max(float(batch), 0.0)
        c = max(float(total_context), 0.0)
        return self.decode_base_s + self.decode_per_seq_s * b + self.decode_per_ctx_token_s * c

    # -- capacity -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        """`MODEL@ACCEL` or `MODEL@ACCELxN`."""
        return f"{self.model}@{self.accelerator}" + (f"x{self.tp}" if self.tp > 1 else "")

    def max_concurrency(self, avg_context_tokens: float) -> int:
        """Most sequences that fit at once, by KV cache and by `max_num_seqs`."""
        blocks = math.ceil(max(avg_context_tokens, 1.0) / self.engine.block_size)
        by_kv = self.kv_capacity_tokens // (blocks * self.engine.block_size)
        return int(max(0, min(self.engine.max_num_seqs, by_kv)))

    def max_output_tokens_per_s(self, avg_context_tokens: float) -> float:
        """Decode throughput with the batch as full as memory allows."""
        b = self.max_concurrency(avg_context_tokens)
        if b == 0:
            return 0.0
        return b / self.decode_step_time(b, b * avg_context_tokens)

    # -- persistence --------------------------------------------------------------------
    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        """Load a profile from YAML; errors name the file and the key."""
        from pydantic import ValidationError

        from skyfleet.yamlio import read_yaml

        p = Path(path)
        data = read_yaml(p, "profile")

        try:
            return cls.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            key = ".".join(str(x) for x in err["loc"])
            raise ConfigError(f"{p}: key '{key}': {err['msg']}") from e


def weight_bytes_per_device(model: ModelSpec, tp: int) -> float:
    return model.weight_bytes / tp


def kv_bytes_per_token_per_device(model: ModelSpec, tp: int) -> float:
    """KV bytes one token costs on each device (KV heads split across TP ranks, or replicated)."""
    return model.kv_bytes_per_token * max(1.0, model.kv_heads / tp) / model.kv_heads


def kv_capacity_tokens(
    model: ModelSpec, accel: Accelerator, tp: int, engine: EngineSettings
) -> int:
    """Tokens of KV cache left after weights and activations, or DoesNotFitError."""
    usable = engine.gpu_memory_utilization * accel.memory_bytes
    weights = weight_bytes_per_device(model, tp)
    reserve = engine.activation_reserve_gib * GIB
    free = usable - weights - reserve
    per_token = kv_bytes_per_token_per_device(model, tp)
    min_tokens = engine.block_size * 16
    if free < per_token * min_tokens:
        need_total = (weights + reserve + per_token * min_tokens) / engine.gpu_memory_utilization
        raise DoesNotFitError(
            f"{model.name} does not fit on {tp}× {accel.name}: it needs about "
            f"{need_total / 1e9:.1f} GB per device (weights {weights / 1e9:.1f} GB + activations "
            f"{reserve / 1e9:.1f} GB + a minimal KV cache) at gpu_memory_utilization="
            f"{engine.gpu_memory_utilization}, but each device has {accel.memory_gb:g} GB; "
            f"try more devices (tensor parallel) or a larger accelerator"
        )
    return int(free // per_token)


def default_profile(
    model: ModelSpec | str,
    accelerator: Accelerator | str,
    tp: int = 1,
    engine: EngineSettings | None = None,
    efficiency: Efficiency | str | None = None,
) -> Profile:
    """A profile from the roofline with efficiency factors (no measurement needed).

    `efficiency` is an `Efficiency` or the name of a preset (by default `vllm-rocm-2024` on
    AMD accelerators and `vllm-2025` on the others; `trtllm-2025`, `splitwise-2023`).
    """
    m = get_model(model) if isinstance(model, str) else model
    a = get_accelerator(accelerator) if isinstance(accelerator, str) else accelerator
    eng = engine or EngineSettings()
    if isinstance(efficiency, str):
        eff, label = Efficiency.preset(efficiency), efficiency.strip().lower()
    elif efficiency is None:
        label = default_preset(a)
        eff = Efficiency.preset(label)
    else:
        label = next((k for k, v in EFFICIENCY_PRESETS.items() if v == efficiency), "custom")
        eff = efficiency
    bw = eff.bandwidth * a.mem_bw_gbps * 1e9
    flops = a.flops(m.weight_dtype)
    # Two all-reduces per layer under TP: a latency term per step, plus the activation bytes
    # of every token in the step over the interconnect (ring: 2(N-1)/N of the data each way
    # at half the bidirectional figure) — each prompt token in prefill, each decoding
    # sequence in decode.
    comm = 0.0
    comm_per_token = 0.0
    if tp > 1:
        comm = 2 * m.layers * (eff.allreduce_latency_s + eff.allreduce_per_peer_s * (tp - 1))
        link = eff.interconnect * a.interconnect_gbps * 1e9 / 2.0
        comm_per_token = 2 * m.layers * m.hidden * 2.0 * 2.0 * (tp - 1) / tp / link
    weights_s = weight_bytes_per_device(m, tp) / bw
    flops_per_token = 2.0 * m.active_params / tp
    # Attention score/value matmuls: 4·layers·heads·head_dim FLOPs per (query, key) pair,
    # over n²/2 causal pairs.
    attn_flops_per_pair = 2.0 * m.layers * m.heads * m.head_dim / tp
    mfu_attn = eff.mfu_attention or eff.mfu_prefill
    return Profile(
        model=m.name,
        accelerator=a.name,
        tp=tp,
        engine=eng,
        prefill_base_s=eff.step_overhead_s + comm + eff.prefill_weight_read * weights_s,
        prefill_per_token_s=flops_per_token / (eff.mfu_prefill * flops) + comm_per_token,
        prefill_quad_s=attn_flops_per_pair / (mfu_attn * flops),
        decode_base_s=eff.step_overhead_s + comm + weights_s,
        decode_per_seq_s=eff.per_seq_overhead_s
        + flops_per_token / (eff.mfu_decode * flops)
        + comm_per_token,
        decode_per_ctx_token_s=kv_bytes_per_token_per_device(m, tp) / bw,
        kv_capacity_tokens=kv_capacity_tokens(m, a, tp, eng),
        max_context=m.max_context,
        source=f"roofline:{label}",
    )


_SPEC = re.compile(
    r"^(?P<model>[^@]+)@(?P<accel>.+?)(?:x(?P<tp>\d+))?(?::(?P<preset>[A-Za-z0-9._-]+))?$"
)


def parse_profile_spec(
    spec: str, engine: EngineSettings | None = None, preset: str | None = None
) -> Profile:
    """`MODEL@ACCEL[xN][:PRESET]` → default profile, or a path to a profile YAML file.

    `PRESET` (or the `preset` argument; the suffix wins) names the efficiency preset.
    """
    if spec.endswith((".yaml", ".yml")) or Path(spec).is_file():
        return Profile.load(spec)
    m = _SPEC.match(spec.strip())
    if not m:
        raise SkyfleetError(
            f"profile {spec!r} is not MODEL@ACCELERATOR[xN][:PRESET] (e.g. "
            "Llama-3.1-8B@H100-SXM-80GB or Llama-3.1-70B@H100-SXM-80GBx4:trtllm-2025)"
            " nor a profile YAML file"
        )
    chosen = m["preset"] or preset
    return default_profile(m["model"], m["accel"], int(m["tp"] or 1), engine, chosen)


# -- fitting ------------------------------------------------------------------------------
class DecodePoint(BaseModel):
    """One measured decode step: batch, total context, seconds (weight: its reliability,
    e.g. √n for a median of n observations)."""

    batch: float
    context: float
    seconds: float
    weight: float = Field(default=1.0, gt=0)


class PrefillPoint(BaseModel):
    """One measured prefill: prompt tokens, seconds, weight (as for `DecodePoint`)."""

    tokens: float
    seconds: float
    weight: float = Field(default=1.0, gt=0)


def _nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.optimize import nnls

    x, _ = nnls(a, b)
    return np.asarray(x, dtype=float)


def fit_profile(
    base: Profile,
    decode: Sequence[DecodePoint] = (),
    prefill: Sequence[PrefillPoint] = (),
    source: str = "fitted",
) -> Profile:
    """Calibrate a profile's timing to measured points (non-negative least squares on
    relative errors).

    Decode needs ≥ 3 points with varying batch and context; prefill ≥ 2 (≥ 3 to fit the
    quadratic term). Parameters without enough points keep the base values.
    """
    upd: dict[str, float] = {}
    if len(decode) >= 3:
        a = np.array([[1.0, p.batch, p.context] for p in decode])
        y = np.array([p.seconds for p in decode])
        x = relative_nnls(a, y, np.array([p.weight for p in decode]))
        if x[0] > 0:
            upd |= dict(zip(("decode_base_s", "decode_per_seq_s", "decode_per_ctx_token_s"),
                            map(float, x), strict=True))  # fmt: skip
    if len(prefill) >= 2:
        quad = len(prefill) >= 3
        a = np.array([[1.0, p.tokens] + ([p.tokens**2] if quad else []) for p in prefill])
        y = np.array([p.seconds for p in prefill])
        x = relative_nnls(a, y, np.array([p.weight for p in prefill]))
        upd |= {"prefill_base_s": float(x[0]), "prefill_per_token_s": float(x[1])}
        if quad:
            upd["prefill_quad_s"] = float(x[2])
    return base.model_copy(update={**upd, "source": source})


def relative_nnls(a: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Non-negative least squares on relative errors (rows weighted by 1/y, times
    `weights`), so a 50 ms point and a 2 s point count alike; columns are scaled so NNLS
    treats them evenly."""
    w = 1.0 / np.maximum(np.abs(y), 1e-12)
    if weights is not None:
        w = w * weights
    aw = a * w[:, None]
    scale = np.maximum(np.abs(aw).max(axis=0), 1e-300)
    out: np.ndarray = _nnls(aw / scale, y * w) / scale
    return out
