"""`skyfleet plan`: replicas per offering per period at least cost, surviving a provider loss."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("plan")
    def plan_cmd(
        workload: str = typer.Argument(..., help="workload YAML (see examples/workloads)"),
        offerings: list[str] = typer.Option(
            [], "--offerings", help="override/extra offerings YAML (repeatable; merged by key)"
        ),
        resilience: str | None = typer.Option(
            None, "--resilience", help="provider | region | none (default: workload's, provider)"
        ),
        max_share: float | None = typer.Option(
            None, "--max-share", help="max fraction of a model's capacity on one provider"
        ),
        min_providers: int | None = typer.Option(None, "--min-providers", min=1),
        time_limit: float = typer.Option(60.0, "--time-limit", help="solver seconds"),
        out: str = typer.Option("plan.yaml", "--out", help="plan YAML to write"),
        json_path: str | None = typer.Option(None, "--json", help="also write JSON here"),
        html: str | None = typer.Option(None, "--html", help="also write an HTML report here"),
        export_gateway: str | None = typer.Option(
            None, "--export-gateway", help="write a gateway config (endpoints, tiers) here"
        ),
        export_dir: str | None = typer.Option(
            None,
            "--export",
            help="write SkyPilot services, Kubernetes vLLM manifests and a gateway config here "
            "(skyfleet export)",
        ),
        base_port: int = typer.Option(9001, "--base-port", help="first endpoint port (export)"),
        url_template: str = typer.Option(
            "http://127.0.0.1:{port}/v1",
            "--url-template",
            help="endpoint URL; {port} {index} {name} {provider} {region} {model}",
        ),
        served_model: str | None = typer.Option(
            None, "--served-model", help="model name the exported endpoints serve (e.g. emulator)"
        ),
        fallback: list[str] = typer.Option(
            [],
            "--fallback",
            help="external API endpoint PROVIDER=URL[#MODEL] added as tier fallback (repeatable)",
        ),
        per_entry: bool = typer.Option(
            False, "--per-entry", help="export one endpoint per plan entry, not per replica"
        ),
        baselines: bool = typer.Option(True, "--baselines/--no-baselines"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="no terminal report"),
    ) -> None:
        """Plan replicas per offering per period: SLO met, least cost, N-1 resilient."""
        import yaml
        from rich.console import Console

        from skyfleet.errors import ConfigError
        from skyfleet.planner.api import plan_workload
        from skyfleet.planner.plan import export_gateway_config
        from skyfleet.planner.report import print_report, write_html, write_json
        from skyfleet.workload import load_workload

        if resilience is not None and resilience not in ("provider", "region", "none"):
            raise ConfigError(
                f"--resilience: expected provider, region or none, got {resilience!r}"
            )
        if max_share is not None and not 0 < max_share <= 1:
            raise ConfigError(f"--max-share: expected a fraction in (0, 1], got {max_share}")
        w = load_workload(workload)
        err = Console(stderr=True)
        with err.status("planning…") as status:
            result = plan_workload(
                w,
                offerings,
                resilience=resilience,
                max_share=max_share,
                min_providers=min_providers,
                time_limit_s=time_limit,
                baselines=baselines,
                progress=lambda msg: status.update(f"planning: {msg}"),
            )
        plan = result.plan
        plan.save(out)
        if not quiet:
            print_report(plan)
        written = [out]
        if json_path:
            written.append(str(write_json(plan, json_path)))
        if html:
            written.append(str(write_html(plan, html)))
        if export_gateway:
            served = {m.name: served_model for m in plan.models} if served_model else None
            fbs = []
            for spec in fallback:
                prov, sep, rest = spec.partition("=")
                if not sep or not prov or not rest.startswith(("http://", "https://")):
                    raise ConfigError(f"--fallback: expected PROVIDER=URL[#MODEL], got {spec!r}")
                url, _, model = rest.partition("#")
                for m in plan.models:
                    fbs.append(
                        {
                            "name": f"{prov}-{m.name}-fallback",
                            "provider": prov,
                            "url": url,
                            "model": model or (served_model or m.model),
                            "tier": "fallback",
                            "attach": m.name,
                        }
                    )
            cfg = export_gateway_config(
                plan,
                fallbacks=fbs,
                per_replica=not per_entry,
                base_port=base_port,
                url_template=url_template,
                served_model=served,
            )
            with open(export_gateway, "w") as f:
                yaml.safe_dump(cfg, f, sort_keys=False)
            written.append(export_gateway)
        if export_dir:
            from skyfleet.deploy.cli import options
            from skyfleet.deploy.export import export_plan

            export_plan(out, export_dir, options())
            written.append(f"{export_dir}/ (SkyPilot, Kubernetes, gateway.yaml)")
        err.print(f"wrote {', '.join(written)}")
