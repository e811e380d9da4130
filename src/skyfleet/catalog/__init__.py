"""Model specs and accelerators, loaded from the YAML files shipped with the package."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from skyfleet.errors import UnknownNameError

DTYPE_BYTES: dict[str, float] = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0}
GIB = 1024**3


class ModelSpec(BaseModel):
    """Architecture of one model: enough to size weights and the KV cache."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    params_b: float = Field(gt=0, description="total parameters, billions")
    active_params_b: float | None = Field(default=None, gt=0, description="per token (MoE)")
    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    vocab: int = Field(gt=0)
    max_context: int = Field(gt=0)
    tied_embeddings: bool = Field(default=False, description="LM head shares the embedding")
    weight_dtype: Literal["bf16", "fp16", "fp8", "int8"] = "bf16"
    bf16_params_b: float | None = Field(
        default=None, ge=0, description="parameters a quantised checkpoint keeps in BF16"
    )
    kv_dtype: Literal["bf16", "fp16", "fp8"] = "bf16"
    source: str

    @property
    def active_params(self) -> float:
        """Parameters touched per token (all of them for a dense model)."""
        return (self.active_params_b or self.params_b) * 1e9

    @property
    def embedding_params(self) -> float:
        """Parameters of the token embedding plus the LM head (once when tied)."""
        return self.vocab * self.hidden * (1.0 if self.tied_embeddings else 2.0)

    @property
    def unquantized_params(self) -> float:
        """Parameters stored at 16 bits: all of them, or what a quantised checkpoint keeps."""
        if DTYPE_BYTES[self.weight_dtype] >= 2.0:
            return self.params_b * 1e9
        if self.bf16_params_b is not None:
            return self.bf16_params_b * 1e9
        return min(self.embedding_params, self.params_b * 1e9)

    @property
    def weight_bytes(self) -> float:
        """Bytes of all weights (16-bit parts of a quantised checkpoint counted at 2 bytes)."""
        total = self.params_b * 1e9
        hi = self.unquantized_params
        return hi * DTYPE_BYTES["bf16"] + (total - hi) * DTYPE_BYTES[self.weight_dtype]

    @property
    def kv_bytes_per_token(self) -> float:
        """KV-cache bytes per token over all layers: 2 (K,V) × layers × kv_heads × head_dim × b."""
        return 2.0 * self.layers * self.kv_heads * self.head_dim * DTYPE_BYTES[self.kv_dtype]


class Accelerator(BaseModel):
    """One accelerator device."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    vendor: str
    memory_gb: float = Field(gt=0, description="marketed memory, GB")
    memory_gib: float | None = Field(
        default=None, gt=0, description="total memory as the runtime reports it, GiB"
    )
    mem_bw_gbps: float = Field(gt=0)
    bf16_tflops: float = Field(gt=0)
    fp8_tflops: float | None = None
    fp8_supported: bool = False
    int8_tops: float | None = None
    interconnect_gbps: float = Field(gt=0)
    source: str

    @property
    def memory_bytes(self) -> float:
        """Device memory the engine sizes itself against (runtime-reported where known)."""
        if self.memory_gib is not None:
            return self.memory_gib * GIB
        return self.memory_gb * 1e9

    def flops(self, dtype: str) -> float:
        """Dense FLOP/s for a weight dtype.

        FP8 uses FP8 tensor cores where the device has them and INT8 the INT8 rate where
        listed; otherwise 8-bit weights are dequantised and multiplied at the BF16 rate
        (weight-only, e.g. FP8 through Marlin kernels on A100).
        """
        if dtype == "fp8" and self.fp8_supported and self.fp8_tflops:
            return self.fp8_tflops * 1e12
        if dtype == "int8" and self.int8_tops:
            return self.int8_tops * 1e12
        return self.bf16_tflops * 1e12


def _load(filename: str, key: str) -> list[dict[str, object]]:
    text = resources.files("skyfleet.catalog").joinpath(filename).read_text()
    rows = yaml.safe_load(text)[key]
    assert isinstance(rows, list)
    return rows


@cache
def models() -> dict[str, ModelSpec]:
    """All shipped model specs by name."""
    return {
        m.name: m for m in (ModelSpec.model_validate(r) for r in _load("models.yaml", "models"))
    }


@cache
def accelerators() -> dict[str, Accelerator]:
    """All shipped accelerators by name."""
    rows = _load("accelerators.yaml", "accelerators")
    return {a.name: a for a in (Accelerator.model_validate(r) for r in rows)}


def _lookup(kind: str, table: dict[str, ModelSpec] | dict[str, Accelerator], name: str) -> str:
    if name in table:
        return name
    folded = {k.lower(): k for k in table}
    if name.lower() in folded:
        return folded[name.lower()]
    raise UnknownNameError(kind, name, list(table))


def get_model(name: str) -> ModelSpec:
    """A model spec by name (case-insensitive), or UnknownNameError listing the known ones."""
    table = models()
    return table[_lookup("model", table, name)]


def get_accelerator(name: str) -> Accelerator:
    """An accelerator by name (case-insensitive); `H100` is short for `H100-SXM-80GB`."""
    table = accelerators()
    aliases = {
        "h100": "H100-SXM-80GB",
        "h100-80gb": "H100-SXM-80GB",
        "a100": "A100-80GB",
        "h200-141gb": "H200",
        "b200-180gb": "B200",
    }
    return table[_lookup("accelerator", table, aliases.get(name.lower(), name))]
