"""Render Kustomize overlays with kubectl and validate Kubernetes objects offline."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBECTL = shutil.which("kubectl")
# The newest Kubernetes whose schemas kubernetes-validate ships, and an older one still
# common in production clusters.
OLDEST = "1.30.0"

needs_kubectl = pytest.mark.skipif(
    KUBECTL is None,
    reason="kubectl is not installed (`make deps` installs Debian's kubernetes-client)",
)


def render(overlay: str | Path) -> list[dict[str, Any]]:
    """`kubectl kustomize` → the list of objects."""
    assert KUBECTL is not None
    out = subprocess.run(
        [KUBECTL, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def validate(objs: list[dict[str, Any]]) -> list[str]:
    """Validate each built-in object against the newest and an older schema (strict: no
    unknown fields). Returns the kinds skipped for having no schema (CRDs)."""
    import kubernetes_validate
    from kubernetes_validate import utils

    skipped = []
    for version in (utils.latest_version(), OLDEST):
        for o in objs:
            try:
                kubernetes_validate.validate(o, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                skipped.append(o["kind"])
            except kubernetes_validate.ValidationError as e:
                raise AssertionError(
                    f"{o['kind']}/{o['metadata']['name']} invalid for Kubernetes {version}: "
                    f"{e.message} at {'/'.join(str(p) for p in e.path)}"
                ) from None
    return sorted(set(skipped))


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The single object of `kind` (and `name`)."""
    found = [o for o in objs if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def all_of(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels form) matches these labels."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def resolve_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's targetPort (number or name) → the container port number."""
    for p in container.get("ports", []):
        if port in (p["containerPort"], p.get("name")):
            return int(p["containerPort"])
    raise AssertionError(f"port {port!r} is not a port of container {container['name']}")
