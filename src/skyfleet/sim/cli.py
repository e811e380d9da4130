"""`skyfleet simulate`: replay demand against a plan or fleet config through a scenario."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate_cmd(
        plan: Path | None = typer.Option(None, "--plan", help="plan YAML from `skyfleet plan`"),
        config: Path | None = typer.Option(None, "--config", help="gateway fleet config YAML"),
        workload: Path | None = typer.Option(None, "--workload", help="workload YAML"),
        trace: Path | None = typer.Option(
            None, "--trace", help="CSV timestamp,input_tokens,output_tokens ('sample' = shipped)"
        ),
        trace_model: str | None = typer.Option(
            None, "--trace-model", help="model the trace is for"
        ),
        daily_volume: float | None = typer.Option(
            None, "--daily-volume", help="rescale demand (or the trace) to N requests/day"
        ),
        scenario: Path | None = typer.Option(None, "--scenario", help="scenario YAML"),
        engine: str = typer.Option(
            "fluid", "--engine", help="fluid (day/week at full rate) or des"
        ),
        step: float | None = typer.Option(None, "--step", help="time step, s (default: scenario)"),
        hours: float | None = typer.Option(None, "--hours", help="simulate this many hours"),
        seed: int = typer.Option(0, "--seed"),
        json_out: bool = typer.Option(False, "--json", help="print the result as JSON"),
        html: Path | None = typer.Option(None, "--html", help="write a self-contained HTML report"),
        value_per_request: float | None = typer.Option(
            None, "--value-per-request", help="$ per lost request"
        ),
        value_per_minute: float | None = typer.Option(
            None, "--value-per-minute", help="$ per minute out of SLO"
        ),
        impact: bool = typer.Option(
            True, "--impact/--no-impact", help="per-provider business impact"
        ),
    ) -> None:
        """Simulate a day of demand against a fleet with outages, surges and recovery."""
        import json
        import time
        from typing import cast

        from rich.progress import Progress

        from skyfleet.console import make_console
        from skyfleet.errors import ConfigError
        from skyfleet.sim.api import EngineName, build_fleet, simulate
        from skyfleet.sim.fluid import run_fluid
        from skyfleet.sim.impact import Value, business_impact
        from skyfleet.sim.report import document, print_summary, write_html
        from skyfleet.sim.scenario import Scenario, load_scenario
        from skyfleet.sim.trace import sample_trace_path

        if engine not in ("fluid", "des"):
            raise ConfigError(f"--engine: expected fluid or des, got {engine!r}")
        if value_per_request is not None and value_per_minute is not None:
            raise ConfigError("give --value-per-request or --value-per-minute, not both")
        if workload is None and trace is None and config is not None:
            raise ConfigError("--config needs --workload (and optionally --trace)")
        trace_path = sample_trace_path() if trace is not None and str(trace) == "sample" else trace
        fleet = build_fleet(
            plan=plan,
            config=config,
            workload=workload,
            trace=trace_path,
            daily_volume=daily_volume,
            trace_model=trace_model,
        )
        if scenario is not None:
            incidents, lines = load_scenario(scenario)
        else:
            incidents, lines = Scenario(name="no incidents"), {}
        horizon = hours * 3600.0 if hours else None
        err = make_console(stderr=True)
        started = time.perf_counter()
        with Progress(console=err, transient=True, disable=json_out) as bar:
            task = bar.add_task(f"simulating ({engine})", total=1.0)
            result = simulate(
                fleet,
                incidents,
                cast(EngineName, engine),
                step=step,
                horizon=horizon,
                seed=seed,
                progress=lambda done: bar.update(task, completed=done),
                scenario_path=scenario or "scenario",
                lines=lines,
            )
            bar.update(task, completed=1.0)
            table = None
            if impact:
                impact_task = bar.add_task("business impact per provider (fluid)", total=None)

                def fluid(variant, what_if, timeline):  # type: ignore[no-untyped-def]
                    return run_fluid(variant, what_if, timeline, step=step)

                over_horizon = incidents.model_copy(
                    update={"horizon": horizon or incidents.horizon}
                )
                table = business_impact(
                    fleet,
                    over_horizon,
                    fluid,
                    Value(value_per_request, value_per_minute),
                    progress=lambda provider: bar.update(
                        impact_task, description=f"impact: {provider} fails"
                    ),
                )
        meta = {
            "scenario": incidents.name,
            "description": incidents.description,
            "source": incidents.source,
            "fleet": f"{fleet.source}: {len(fleet.groups)} groups, providers "
            f"{', '.join(sorted(fleet.providers))}",
            "engine": engine,
            "elapsed_s": time.perf_counter() - started,
        }
        if json_out:
            print(json.dumps(document(result, meta, table), default=str))
        else:
            print_summary(result, meta, table)
        if html is not None:
            written = write_html(result, meta, table, html)
            if not json_out:
                make_console().print(f"wrote {written}")
