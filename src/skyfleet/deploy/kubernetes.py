"""Kubernetes manifests for self-hosted pools: per pool (provider-region = one cluster) a
vLLM Deployment + Service per accelerator type, with node selector, resources and TP, and a
kustomization.yaml (`kubectl apply -k DIR/k8s/POOL`)."""

from __future__ import annotations

from typing import Any

from skyfleet.deploy.units import VLLM_PORT, ExportOptions, Unit

HF_SECRET = "hf-token"  # optional Secret with key `token` for gated models


def manifests(u: Unit, opts: ExportOptions) -> list[dict[str, Any]]:
    """Deployment and Service for one unit."""
    e, tp = u.entry, u.tp
    labels = {
        "app.kubernetes.io/name": u.name,
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": "skyfleet",
    }
    meta_labels = labels | {
        "skyfleet.io/model": u.spec,
        "skyfleet.io/accelerator": e.accelerator,
        "skyfleet.io/tier": e.tier.replace("_", "-"),
    }
    key, value = opts.node_selectors.get(e.accelerator, u.accel.node_label)
    res = u.accel.k8s_resource
    resources = {
        "requests": {"cpu": str(4 * tp), "memory": f"{32 * tp}Gi", res: str(tp)},
        "limits": {"memory": f"{32 * tp}Gi", res: str(tp)},
    }
    probe = {"httpGet": {"path": "/health", "port": "http"}}
    container: dict[str, Any] = {
        "name": "vllm",
        "image": opts.image(u.accel.vendor),
        "command": ["vllm", "serve"],
        "args": u.vllm_args(),
        "ports": [{"name": "http", "containerPort": VLLM_PORT, "protocol": "TCP"}],
        "env": [
            {
                "name": "HF_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {"name": HF_SECRET, "key": "token", "optional": True}
                },
            }
        ],
        "readinessProbe": probe | {"periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": probe | {"periodSeconds": 20, "timeoutSeconds": 5, "failureThreshold": 3},
        # weights download and load: up to 30 min before liveness applies
        "startupProbe": probe | {"periodSeconds": 10, "failureThreshold": 180},
        "resources": resources,
        "volumeMounts": [
            {"name": "shm", "mountPath": "/dev/shm"},
            {"name": "hf-cache", "mountPath": "/root/.cache/huggingface"},
        ],
    }
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": u.name,
            "labels": meta_labels,
            "annotations": {
                "skyfleet.io/plan-entry": (
                    f"{e.model}/{e.provider}/{e.region}/{e.accelerator}x{tp}/{e.tier}"
                ),
                "skyfleet.io/replicas-by-period": ",".join(str(r) for r in e.replicas),
            },
        },
        "spec": {
            "replicas": e.peak,
            "selector": {"matchLabels": {"app.kubernetes.io/name": u.name}},
            # accelerators are the scarce resource: replace pods one by one, never surge
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
            },
            "template": {
                "metadata": {"labels": dict(meta_labels)},
                "spec": {
                    "terminationGracePeriodSeconds": 60,
                    "nodeSelector": {key: value},
                    "tolerations": [{"key": res, "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [container],
                    "volumes": [
                        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}},
                        {"name": "hf-cache", "emptyDir": {}},
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": u.name, "labels": labels},
        "spec": {
            "selector": {"app.kubernetes.io/name": u.name},
            "ports": [{"name": "http", "port": VLLM_PORT, "targetPort": "http"}],
        },
    }
    return [deployment, service]


def namespace(opts: ExportOptions) -> dict[str, Any]:
    """The pool's Namespace (the gateway's, so that its in-cluster URLs resolve)."""
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": opts.namespace}}


def kustomization(units: list[Unit], opts: ExportOptions) -> dict[str, Any]:
    """The pool's kustomization.yaml."""
    return {
        "namespace": opts.namespace,
        "resources": ["namespace.yaml", *(f"{u.name}.yaml" for u in units)],
    }
