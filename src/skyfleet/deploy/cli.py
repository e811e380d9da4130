"""`skyfleet export PLAN --out DIR`: the plan's capacity as SkyPilot, Kubernetes and gateway
files (the same as `skyfleet plan … --export DIR`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from skyfleet.errors import ConfigError

if TYPE_CHECKING:
    from skyfleet.deploy.units import ExportOptions


def options(
    namespace: str = "skyfleet",
    vllm_version: str = "0.11.0",
    hf_model: list[str] | None = None,
    node_selector: list[str] | None = None,
    kubernetes_provider: list[str] | None = None,
) -> ExportOptions:
    """ExportOptions from command-line strings (SPEC=REPO, ACCEL=KEY=VALUE)."""
    from skyfleet.deploy.units import ExportOptions

    hf: dict[str, str] = {}
    for spec in hf_model or []:
        name, sep, repo = spec.partition("=")
        if not sep or not name or "/" not in repo:
            raise ConfigError(f"--hf-model: expected SPEC=ORG/NAME, got {spec!r}")
        hf[name] = repo
    sel: dict[str, tuple[str, str]] = {}
    for spec in node_selector or []:
        parts = spec.split("=", 2)
        if len(parts) != 3 or not all(parts):
            raise ConfigError(f"--node-selector: expected ACCEL=LABEL=VALUE, got {spec!r}")
        sel[parts[0]] = (parts[1], parts[2])
    return ExportOptions(
        namespace=namespace,
        vllm_version=vllm_version,
        hf_models=hf,
        node_selectors=sel,
        kubernetes_providers=frozenset(kubernetes_provider or []),
    )


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_cmd(
        plan: str = typer.Argument(..., help="plan YAML written by `skyfleet plan`"),
        out: str = typer.Option("capacity", "--out", "-o", help="directory to write"),
        namespace: str = typer.Option("skyfleet", help="Kubernetes namespace of the pools"),
        vllm_version: str = typer.Option("0.11.0", help="vLLM release to run"),
        hf_model: list[str] = typer.Option(
            [], "--hf-model", help="catalog model → Hugging Face repo, SPEC=ORG/NAME (repeatable)"
        ),
        node_selector: list[str] = typer.Option(
            [], "--node-selector", help="node label for an accelerator, ACCEL=LABEL=VALUE"
        ),
        kubernetes_provider: list[str] = typer.Option(
            [], "--kubernetes-provider", help="also deploy this provider with Kubernetes manifests"
        ),
    ) -> None:
        """Write SkyPilot services, Kubernetes vLLM manifests and a gateway config for a plan."""
        from skyfleet.console import make_console
        from skyfleet.deploy.export import export_plan

        opts = options(namespace, vllm_version, hf_model, node_selector, kubernetes_provider)
        files = export_plan(plan, out, opts)
        make_console(stderr=True).print(
            f"wrote {len(files)} files under {out}/ (see {out}/README.md)"
        )
