"""Write a plan's capacity as files: DIR/skypilot/*.yaml, DIR/k8s/POOL/, DIR/gateway.yaml and
DIR/README.md saying what to run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from skyfleet.deploy.gateway import gateway_config
from skyfleet.deploy.kubernetes import kustomization, manifests, namespace
from skyfleet.deploy.plan_file import load_plan_file
from skyfleet.deploy.skypilot import header, service_yaml
from skyfleet.deploy.units import ExportOptions, Unit, plan_units


class _NoAliases(yaml.SafeDumper):
    """Shared dicts written out in full (no &id001 anchors in manifests)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(path: Path, docs: list[dict[str, Any]], comments: Sequence[str] = ()) -> Path:
    text = "".join(f"# {c}\n" for c in comments)
    text += "---\n".join(yaml.dump(d, Dumper=_NoAliases, sort_keys=False, width=100) for d in docs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def export_plan(plan_path: str | Path, out_dir: str | Path, opts: ExportOptions) -> list[Path]:
    """Write every exported file for the plan at `plan_path`; returns their paths."""
    plan = load_plan_file(plan_path)
    units = plan_units(plan, opts, str(plan_path))
    out = Path(out_dir)
    written: list[Path] = []
    sky = [u for u in units if u.kind == "skypilot"]
    pools: dict[str, list[Unit]] = {}
    for u in units:
        if u.kind == "kubernetes":
            pools.setdefault(u.pool, []).append(u)
    for u in sky:
        written.append(
            _dump(out / "skypilot" / f"{u.name}.yaml", [service_yaml(u, opts)], header(u))
        )
    for pool, members in pools.items():
        d = out / "k8s" / pool
        for u in members:
            e = u.entry
            note = [
                f"vLLM for plan entry {e.model}/{e.provider}/{e.region}/{e.accelerator}x{u.tp}/"
                f"{e.tier}; replicas per period: {','.join(str(r) for r in e.replicas)}",
            ]
            written.append(_dump(d / f"{u.name}.yaml", manifests(u, opts), note))
        written.append(_dump(d / "namespace.yaml", [namespace(opts)]))
        written.append(_dump(d / "kustomization.yaml", [kustomization(members, opts)]))
    gw = gateway_config(plan, units, opts)
    written.append(
        _dump(
            out / "gateway.yaml",
            [gw],
            [
                f"Gateway config for the exported capacity of {plan_path} (docs/config.md).",
                "SkyPilot endpoints read their address from SKYSERVE_*_URL (see README.md);",
                "pool endpoints default to in-cluster DNS (POOL_*_URL overrides, for a pool in",
                "another cluster: expose its Service and set the variable).",
                "add tenants (skyfleet keys new) and ledger/redis settings before serving.",
            ],
        )
    )
    written.append(_readme(out / "README.md", plan_path, sky, pools, opts))
    return written


def _readme(
    path: Path,
    plan_path: str | Path,
    sky: list[Unit],
    pools: dict[str, list[Unit]],
    o: ExportOptions,
) -> Path:
    lines = [f"# Capacity for {plan_path}", ""]
    if sky:
        lines += ["## SkyPilot services (clouds)", "", "```sh"]
        for u in sky:
            lines.append(f"sky serve up -y -n {u.name} --secret HF_TOKEN skypilot/{u.name}.yaml")
        lines += ["```", "", "Then export each endpoint for the gateway:", "", "```sh"]
        for u in sky:
            lines.append(f"export {u.url_env}=http://$(sky serve status {u.name} --endpoint)")
        lines += ["```", ""]
    if pools:
        lines += ["## Kubernetes pools (self-hosted)", "", "```sh"]
        for pool in pools:
            lines.append(
                f"kubectl --context {pool} apply -k k8s/{pool}   # namespace {o.namespace}"
            )
        lines += [
            "```",
            "",
            "The gateway reaches a pool's Services by in-cluster DNS; for a pool in another "
            "cluster expose them (LoadBalancer, Ingress) and set the endpoint's variable:",
            "",
            "```sh",
            *(f"export {u.url_env}=http://…:8000" for p in pools.values() for u in p),
            "```",
            "",
            f"Gated models need `kubectl -n {o.namespace} create secret generic hf-token "
            "--from-literal=token=hf_...`.",
            "",
        ]
    lines += [
        "## Gateway",
        "",
        "`gateway.yaml` routes each model to these endpoints; check it with "
        "`skyfleet config check gateway.yaml` once the SKYSERVE_*_URL variables are set.",
        "",
    ]
    path.write_text("\n".join(lines))
    return path
