"""`skyfleet drill`: run the hostile-world drills on this machine (127.0.0.1 only)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("drill")
    def drill_cmd(
        names: list[str] = typer.Argument(None, help="drills to run (default: all; see --list)"),
        long: bool = typer.Option(False, "--long", help="the long form (≈ 45 s of load each)"),
        rate: float | None = typer.Option(None, "--rate", help="req/s of each kind"),
        list_: bool = typer.Option(False, "--list", help="list the drills and exit"),
        json_out: str | None = typer.Option(None, "--json", help="write the reports here"),
    ) -> None:
        """Kill upstreams and gateway workers, make upstreams rude and clients slow, under
        load; print what was lost (target: nothing) and exit 1 if a target was missed."""
        import dataclasses
        import json
        from pathlib import Path

        from skyfleet.console import make_console
        from skyfleet.drill.drills import DRILLS, LONG, SHORT, run_drill
        from skyfleet.drill.report import summary_table
        from skyfleet.errors import SkyfleetError

        console = make_console()
        if list_:
            for drill in DRILLS.values():
                console.print(f"{drill.name:16} {drill.what}", markup=False)
            return
        unknown = [n for n in names or () if n not in DRILLS]
        if unknown:
            raise SkyfleetError(f"unknown drill {unknown[0]!r}; known: {', '.join(DRILLS)}")
        timing = LONG if long else SHORT
        if rate is not None:
            if rate <= 0:
                raise SkyfleetError(f"--rate must be > 0 req/s, got {rate:g}")
            timing = dataclasses.replace(timing, rate=rate)
        reports = []
        for name in names or list(DRILLS):
            report = run_drill(name, timing)
            reports.append(report)
            console.print(report.render(), markup=False)
        console.print(summary_table(reports))
        if json_out:
            Path(json_out).write_text(json.dumps([r.to_json() for r in reports], indent=2))
        if not all(r.passed for r in reports):
            raise typer.Exit(1)
