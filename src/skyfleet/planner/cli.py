"""`skyfleet plan`: replicas per offering per period at least cost, surviving a provider loss;
`skyfleet plan diff OLD NEW`: what changed between two plans."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup


class _PlanGroup(TyperGroup):
    """`skyfleet plan WORKLOAD.yaml …` runs `plan make`; `skyfleet plan diff …` the diff."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["make", *args]
        return super().parse_args(ctx, args)


def register(app: typer.Typer) -> None:
    plan_app = typer.Typer(
        cls=_PlanGroup,
        help="Plan replicas per offering per period (`skyfleet plan WORKLOAD.yaml`), or "
        "compare two plans (`skyfleet plan diff OLD NEW`).",
        no_args_is_help=True,
    )
    app.add_typer(plan_app, name="plan")

    @plan_app.command("diff")
    def diff_cmd(
        old: str = typer.Argument(..., help="the earlier plan YAML"),
        new: str = typer.Argument(..., help="the later plan YAML"),
        as_json: bool = typer.Option(False, "--json", help="print JSON instead of tables"),
    ) -> None:
        """What changed between two plan files: cost, settings, providers, entries, N-1."""
        import json

        from skyfleet.planner.diff import diff_plans
        from skyfleet.planner.plan import Plan
        from skyfleet.planner.report import print_diff

        d = diff_plans(Plan.load(old), Plan.load(new))
        if as_json:
            typer.echo(json.dumps(d.as_dict(), indent=1, default=str))
        else:
            print_diff(d, old, new)

    @plan_app.command("make")
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
        headroom: float | None = typer.Option(
            None, "--headroom", help="spare capacity over demand, e.g. 0.1 (default: workload's)"
        ),
        spot_in_survivors: str | None = typer.Option(
            None,
            "--spot-in-survivors",
            help="none (default) | discounted: does spot count after a provider loss?",
        ),
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
        """Plan replicas per offering per period: SLO met, least cost, N-1 resilient.

        The plan is re-checked (quotas, N-1 coverage) before it is written; one that fails
        is not written.
        """
        import yaml

        from skyfleet.console import make_console
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
        if headroom is not None and not 0 <= headroom <= 2:
            raise ConfigError(f"--headroom: expected a fraction in [0, 2], got {headroom}")
        if spot_in_survivors is not None and spot_in_survivors not in ("none", "discounted"):
            raise ConfigError(
                f"--spot-in-survivors: expected none or discounted, got {spot_in_survivors!r}"
            )
        w = load_workload(workload)
        err = make_console(stderr=True)
        with err.status("planning…") as status:
            result = plan_workload(
                w,
                offerings,
                resilience=resilience,
                max_share=max_share,
                min_providers=min_providers,
                headroom=headroom,
                spot_in_survivors=spot_in_survivors,
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
