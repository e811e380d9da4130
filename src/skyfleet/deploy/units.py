"""Plan entries → deployable units: a SkyPilot service per cloud offering, a vLLM Deployment
per accelerator type in each self-hosted (Kubernetes) pool. Pure logic, no I/O."""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass, field
from typing import Literal

from skyfleet.deploy.plan_file import PlanFile, PlannedEntry
from skyfleet.deploy.targets import SKYPILOT_CLOUDS, Accelerator, accelerator, hf_repo

VLLM_PORT = 8000
GATEWAY_TIER = {  # docs/plan.md: committed capacity first, rented capacity as spillover
    "owned": "primary",
    "reserved_1y": "primary",
    "reserved_3y": "primary",
    "on_demand": "spillover",
    "spot": "spillover",
}


@dataclass(frozen=True)
class ExportOptions:
    """What the exporters need beyond the plan."""

    namespace: str = "skyfleet"
    vllm_version: str = "0.11.0"
    hf_models: dict[str, str] = field(default_factory=dict)  # catalog model → HF repo
    node_selectors: dict[str, tuple[str, str]] = field(default_factory=dict)  # accel → label
    kubernetes_providers: frozenset[str] = frozenset()  # also self-hosted, besides `owned`
    images: dict[str, str] = field(default_factory=dict)  # vendor → vLLM image (Kubernetes)

    def image(self, vendor: str) -> str:
        """The vLLM container image for an accelerator vendor."""
        default = {
            "nvidia": f"vllm/vllm-openai:v{self.vllm_version}",
            "amd": "rocm/vllm:latest",
            "tpu": "vllm/vllm-tpu:latest",
        }
        return self.images.get(vendor, default[vendor])


@dataclass(frozen=True)
class Unit:
    """One thing to bring up: a SkyPilot service or a Kubernetes Deployment (+ Service)."""

    kind: Literal["skypilot", "kubernetes"]
    name: str
    entry: PlannedEntry
    accel: Accelerator
    spec: str  # catalog model = the name vLLM serves it under (the gateway's endpoint model)
    repo: str  # Hugging Face repo
    pool: str = ""  # Kubernetes: provider-region (one cluster)
    cloud: str = ""  # SkyPilot cloud

    @property
    def tp(self) -> int:
        """Tensor-parallel size = accelerators per replica."""
        return self.entry.accelerators_per_replica

    def vllm_args(self) -> list[str]:
        """`vllm serve` arguments for this unit's model and TP."""
        return [
            self.repo,
            "--served-model-name",
            self.spec,
            "--tensor-parallel-size",
            str(self.tp),
            "--host",
            "0.0.0.0",
            "--port",
            str(VLLM_PORT),
        ]

    def vllm_command(self) -> str:
        """The shell command line that starts vLLM."""
        return shlex.join(["vllm", "serve", *self.vllm_args()])

    @property
    def url_env(self) -> str:
        """Env var with this unit's address (http://host:port) for the gateway config."""
        prefix = "SKYSERVE_" if self.kind == "skypilot" else "POOL_"
        name = self.name if self.kind == "skypilot" else f"{self.pool}-{self.name}"
        return prefix + re.sub(r"[^A-Z0-9]+", "_", name.upper()) + "_URL"

    def gateway_url(self, namespace: str) -> str:
        """Where the gateway reaches this unit's OpenAI API: a SkyServe endpoint from the
        environment; a pool's Service by in-cluster DNS unless the environment says where."""
        if self.kind == "kubernetes":
            local = f"http://{self.name}.{namespace}.svc:{VLLM_PORT}"
            return f"${{{self.url_env}:-{local}}}/v1"
        return f"${{{self.url_env}}}/v1"


def slug(text: str, limit: int = 63) -> str:
    """A DNS-1123 label: lowercase alphanumerics and '-', starting with a letter."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not s or not s[0].isalpha():
        s = "x-" + s
    if len(s) > limit:
        digest = hashlib.sha1(s.encode()).hexdigest()[:6]
        s = s[: limit - 7].rstrip("-") + "-" + digest
    return s


def is_self_hosted(e: PlannedEntry, opts: ExportOptions) -> bool:
    """Owned capacity, or a provider SkyPilot does not launch on: Kubernetes manifests."""
    return (
        e.tier == "owned"
        or e.provider in opts.kubernetes_providers
        or e.provider not in SKYPILOT_CLOUDS
    )


def plan_units(plan: PlanFile, opts: ExportOptions, source: str = "plan") -> list[Unit]:
    """Every active entry as a unit, with unique names (per pool for Kubernetes); errors name
    `source` (the plan file) and the entry."""
    units: list[Unit] = []
    taken: set[tuple[str, str]] = set()
    many_models = len(plan.models) > 1
    for i, e in enumerate(plan.entries):
        if e.peak <= 0:
            continue
        where = f"{source}: entries[{i}] ({e.provider}/{e.region}/{e.accelerator})"
        acc = accelerator(e.accelerator, where)
        spec = plan.spec(e)
        repo = hf_repo(spec, opts.hf_models, where)
        tier = e.tier.replace("_", "-")
        tp = f"-x{e.accelerators_per_replica}" if e.accelerators_per_replica > 1 else ""
        if is_self_hosted(e, opts):
            pool = slug(f"{e.provider}-{e.region}" if e.region else e.provider)
            base = f"vllm-{e.model}-{e.accelerator}" if many_models else f"vllm-{e.accelerator}"
            name = slug(base + tp)
            if (pool, name) in taken:
                name = slug(f"{base}{tp}-{tier}")
            taken.add((pool, name))
            units.append(Unit("kubernetes", name, e, acc, spec, repo, pool=pool))
        else:
            name = slug(f"{e.model}-{e.provider}-{e.region}-{e.accelerator}{tp}-{tier}")
            if ("", name) in taken:
                name = slug(f"{name}-{i}")
            taken.add(("", name))
            cloud = SKYPILOT_CLOUDS[e.provider]
            units.append(Unit("skypilot", name, e, acc, spec, repo, cloud=cloud))
    return units
