"""Where plan names meet deployment tools: provider → SkyPilot cloud, accelerator → SkyPilot
name / Kubernetes resource and node label, catalog model → Hugging Face repo for vLLM."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from skyfleet.errors import ConfigError

# skyfleet provider → SkyPilot cloud (sky.utils.schemas' cloud enum). A provider not here
# (CoreWeave: a Kubernetes cloud; on-prem) and every `owned` entry get Kubernetes manifests.
SKYPILOT_CLOUDS: dict[str, str] = {
    "aws": "aws",
    "gcp": "gcp",
    "azure": "azure",
    "lambda": "lambda",
    "nebius": "nebius",
    "oracle": "oci",
    "oci": "oci",
    "runpod": "runpod",
    "fluidstack": "fluidstack",
    "paperspace": "paperspace",
    "cudo": "cudo",
    "vast": "vast",
    "do": "do",
    "ibm": "ibm",
    "hyperbolic": "hyperbolic",
}

Vendor = Literal["nvidia", "amd", "tpu"]


@dataclass(frozen=True, slots=True)
class Accelerator:
    """How one accelerator type is named by SkyPilot and scheduled by Kubernetes."""

    skypilot: str  # SkyPilot accelerator name; TPUs: a slice name with {n} chips
    vendor: Vendor
    k8s_resource: str
    node_label: tuple[str, str]  # a label its nodes carry (GPU Feature Discovery, GKE, AMD)

    def skypilot_accelerators(self, n: int) -> dict[str, int]:
        """`resources.accelerators` for n per replica (a TPU slice of n chips counts as 1)."""
        if self.vendor == "tpu":
            return {self.skypilot.format(n=n): 1}
        return {self.skypilot: n}


_NV = "nvidia.com/gpu"
_NVL = "nvidia.com/gpu.product"
ACCELERATORS: dict[str, Accelerator] = {
    "H100": Accelerator("H100", "nvidia", _NV, (_NVL, "NVIDIA-H100-80GB-HBM3")),
    "H100-SXM-80GB": Accelerator("H100", "nvidia", _NV, (_NVL, "NVIDIA-H100-80GB-HBM3")),
    "H200": Accelerator("H200", "nvidia", _NV, (_NVL, "NVIDIA-H200")),
    "B200": Accelerator("B200", "nvidia", _NV, (_NVL, "NVIDIA-B200")),
    "A100-80GB": Accelerator("A100-80GB", "nvidia", _NV, (_NVL, "NVIDIA-A100-SXM4-80GB")),
    "A100-40GB": Accelerator("A100", "nvidia", _NV, (_NVL, "NVIDIA-A100-SXM4-40GB")),
    "L40S": Accelerator("L40S", "nvidia", _NV, (_NVL, "NVIDIA-L40S")),
    "L4": Accelerator("L4", "nvidia", _NV, (_NVL, "NVIDIA-L4")),
    "A10G": Accelerator("A10G", "nvidia", _NV, (_NVL, "NVIDIA-A10G")),
    "MI300X": Accelerator(
        "MI300X", "amd", "amd.com/gpu", ("amd.com/gpu.product-name", "AMD_Instinct_MI300X_OAM")
    ),
    "TPU-v5e": Accelerator(
        "tpu-v5litepod-{n}",
        "tpu",
        "google.com/tpu",
        ("cloud.google.com/gke-tpu-accelerator", "tpu-v5-lite-podslice"),
    ),
    "TPU-v6e": Accelerator(
        "tpu-v6e-{n}",
        "tpu",
        "google.com/tpu",
        ("cloud.google.com/gke-tpu-accelerator", "tpu-v6e-slice"),
    ),
}

# catalog model → the Hugging Face repo vLLM serves (instruct/chat variants of the catalog's
# architecture source). Override or extend with --hf-model SPEC=ORG/NAME.
HF_REPOS: dict[str, str] = {
    "SmolLM2-135M": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "Llama-3.2-1B": "meta-llama/Llama-3.2-1B-Instruct",
    "Llama-2-7B": "meta-llama/Llama-2-7b-chat-hf",
    "Llama-2-70B": "meta-llama/Llama-2-70b-chat-hf",
    "Llama-3.1-8B": "meta-llama/Llama-3.1-8B-Instruct",
    "Llama-3.1-8B-FP8": "nvidia/Llama-3.1-8B-Instruct-FP8",
    "Llama-3.1-70B": "meta-llama/Llama-3.1-70B-Instruct",
    "Llama-3.1-70B-W8A8": "neuralmagic/Meta-Llama-3.1-70B-Instruct-quantized.w8a8",
    "Llama-3.3-70B-FP8": "nvidia/Llama-3.3-70B-Instruct-FP8",
    "Llama-3.1-405B-FP8": "meta-llama/Llama-3.1-405B-Instruct-FP8",
    "Mixtral-8x7B": "mistralai/Mixtral-8x7B-Instruct-v0.1",
    "Qwen2.5-32B": "Qwen/Qwen2.5-32B-Instruct",
    "Qwen3-8B": "Qwen/Qwen3-8B",
}


def accelerator(name: str, where: str) -> Accelerator:
    """The deployment names of a plan accelerator, or a ConfigError naming the entry."""
    try:
        return ACCELERATORS[name]
    except KeyError:
        raise ConfigError(
            f"{where}: accelerator {name!r} has no SkyPilot/Kubernetes mapping; known: "
            f"{', '.join(sorted(ACCELERATORS))}"
        ) from None


def hf_repo(spec: str, overrides: dict[str, str], where: str) -> str:
    """The Hugging Face repo for a catalog model."""
    repo = overrides.get(spec) or HF_REPOS.get(spec)
    if repo is None:
        raise ConfigError(
            f"{where}: no Hugging Face repo known for model {spec!r}: pass "
            f"--hf-model {spec}=ORG/NAME"
        )
    return repo
