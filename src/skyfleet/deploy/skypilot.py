"""A SkyPilot service YAML (a task with a `service:` section) per cloud offering of a plan:
`sky serve up -n NAME NAME.yaml`. Keys follow sky.utils.schemas (task, resources, service)."""

from __future__ import annotations

from typing import Any

from skyfleet.deploy.units import VLLM_PORT, ExportOptions, Unit, slug


def service_yaml(u: Unit, opts: ExportOptions) -> dict[str, Any]:
    """The task/service document for one SkyPilot unit."""
    e = u.entry
    resources: dict[str, Any] = {
        "cloud": u.cloud,
        "accelerators": u.accel.skypilot_accelerators(u.tp),
        "use_spot": e.tier == "spot",
        "ports": VLLM_PORT,
        "disk_size": 256,
        "labels": {
            "skyfleet-model": slug(u.entry.model),
            "skyfleet-tier": e.tier.replace("_", "-"),
        },
    }
    if e.region:
        resources["region"] = e.region
    if u.accel.vendor == "amd":
        resources["image_id"] = f"docker:{opts.image('amd')}"
    setup = {
        "nvidia": f'pip install "vllm=={opts.vllm_version}"',
        "tpu": "pip install vllm-tpu",
        "amd": "",  # the ROCm vLLM image already has it
    }[u.accel.vendor]
    if e.low == e.peak:
        service: dict[str, Any] = {"replicas": e.peak}
    else:
        policy: dict[str, Any] = {"min_replicas": e.low, "max_replicas": e.peak}
        if e.capacity_rps_per_replica > 0:  # SkyServe scales on QPS: the plan's SLO rate
            policy["target_qps_per_replica"] = round(e.capacity_rps_per_replica, 2)
        service = {"replica_policy": policy}
    service["readiness_probe"] = {"path": "/health", "initial_delay_seconds": 1800}
    doc: dict[str, Any] = {
        "name": u.name,
        "resources": resources,
        "envs": {"MODEL_ID": u.repo, "SERVED_MODEL_NAME": u.spec, "TP": str(u.tp)},
        "secrets": {"HF_TOKEN": None},  # sky serve up --secret HF_TOKEN
    }
    if setup:
        doc["setup"] = setup
    doc["run"] = (
        "vllm serve $MODEL_ID --served-model-name $SERVED_MODEL_NAME "
        f"--tensor-parallel-size $TP --host 0.0.0.0 --port {VLLM_PORT}"
    )
    doc["service"] = service
    return doc


def header(u: Unit) -> list[str]:
    """Comment lines for the top of the file."""
    e = u.entry
    lines = [
        f"SkyPilot service for plan entry {e.model}/{e.provider}/{e.region}/"
        f"{e.accelerator}x{u.tp}/{e.tier} (written by skyfleet plan --export).",
        f"Bring it up: sky serve up -n {u.name} --secret HF_TOKEN {u.name}.yaml",
        f"Then give the gateway its endpoint: {u.url_env}=http://$(sky serve status "
        f"{u.name} --endpoint)",
        "Replicas per period: " + ",".join(str(r) for r in e.replicas),
    ]
    if e.tier in ("reserved_1y", "reserved_3y"):
        lines.append(
            "Reserved capacity: point SkyPilot at your reservation (e.g. aws.specific_reservations"
            " or gcp.specific_reservations in ~/.sky/config.yaml)."
        )
    return lines
