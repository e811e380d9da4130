"""`skyfleet demo`: the whole story on one machine in a few minutes."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        duration: float = typer.Option(
            180.0, "--duration", help="seconds the whole demo takes, start-up and report included"
        ),
        html: Path | None = typer.Option(
            Path("out/demo-report.html"),
            "--html",
            help="HTML report path ('' for none)",
        ),
        json_out: Path | None = typer.Option(
            None, "--json", help="also write the report's numbers as JSON"
        ),
        port: int = typer.Option(8080, "--port", help="gateway port (0 picks a free one)"),
        no_live: bool = typer.Option(
            False, "--no-live", help="print a line every few seconds instead of the live view"
        ),
        time_scale: float = typer.Option(
            0.5, "--time-scale", help="emulator speed (<1: slow motion so one machine copes)"
        ),
        surge: float = typer.Option(2.0, "--surge", help="demand multiplier during the surge"),
        outage: str | None = typer.Option(
            None, "--outage", help="provider to take down (default: the largest primary)"
        ),
        seed: int = typer.Option(0, "--seed", help="seed for the load and the emulators"),
        workload: Path | None = typer.Option(
            None, "--workload", help="workload YAML to plan (default: the packaged demo one)"
        ),
        plan: Path | None = typer.Option(
            None, "--plan", help="serve this plan (from `skyfleet plan`) instead of planning"
        ),
    ) -> None:
        """Plan a fleet over four emulated providers, serve it through the gateway, drive a
        surge, take a provider down and bring it back, then report (terminal + HTML)."""
        import sys

        from skyfleet.console import make_console
        from skyfleet.demo.live import LiveView
        from skyfleet.demo.report import print_report, summarize, write_html
        from skyfleet.demo.run import DemoOptions, run_demo
        from skyfleet.errors import SkyfleetError

        if html is not None and str(html) in ("", "."):
            html = None  # --html '' : no HTML file
        if duration <= 0:
            raise SkyfleetError(f"--duration must be > 0 seconds, got {duration:g}")
        if time_scale <= 0:
            raise SkyfleetError(f"--time-scale must be > 0, got {time_scale:g}")
        if surge < 1:
            raise SkyfleetError(f"--surge must be ≥ 1, got {surge:g}")
        if not 0 <= port <= 65535:
            raise SkyfleetError(f"--port must be in 0..65535, got {port}")
        console = make_console()
        opts = DemoOptions(
            duration_s=duration,
            html=html,
            port=port,
            live=not no_live,
            time_scale=time_scale,
            surge_factor=surge,
            seed=seed,
            workload=workload,
            plan=plan,
            outage_provider=outage,
        )
        try:
            run, _ = run_demo(opts, console, view=lambda current: LiveView(current, opts.live))
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: every process the demo started is stopped[/]")
            sys.exit(130)
        if run is None:
            sys.exit(1)
        summary = summarize(run)
        failed_write = False
        if html is not None:
            try:
                write_html(summary, run, html)
            except ImportError as e:
                console.print(f"[yellow]HTML report skipped (missing dependency): {e}[/]")
                html = None
            except OSError as e:
                console.print(f"[red]cannot write the HTML report to {html}: {e.strerror}[/]")
                html, failed_write = None, True
        if json_out is not None:
            try:
                json_out.parent.mkdir(parents=True, exist_ok=True)
                json_out.write_text(summary.to_json())
            except OSError as e:
                console.print(f"[red]cannot write {json_out}: {e.strerror}[/]")
                failed_write = True
        print_report(summary, console, html)
        if failed_write:
            sys.exit(2)
