"""The `skyfleet` command: one entry point, each part registers its own sub-commands."""

from __future__ import annotations

import importlib
import sys

import typer

from skyfleet.console import print_error
from skyfleet.errors import SkyfleetError

app = typer.Typer(
    name="skyfleet",
    help="Run LLM inference across many clouds as one stable, cost-efficient service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Usage errors and help: rich panels on a terminal, click's plain unwrapped text when piped.
    rich_markup_mode="rich" if sys.stderr.isatty() else None,
)

# Each module exposes `register(app)`; heavy imports stay inside the command functions.
_PARTS = (
    "skyfleet.perf.cli",
    "skyfleet.emulator.cli",
    "skyfleet.gateway.cli",
    "skyfleet.bench.cli",
    "skyfleet.planner.cli",
    "skyfleet.deploy.cli",
    "skyfleet.sim.cli",
    "skyfleet.demo.cli",
    "skyfleet.drill.cli",
)

for _name in _PARTS:
    try:
        _mod = importlib.import_module(_name)
    except ModuleNotFoundError as _e:  # a part not built yet
        if _e.name is None or not _name.startswith(_e.name):
            raise
        continue
    _mod.register(app)


@app.callback()
def _root() -> None:
    """Run LLM inference across many clouds as one stable, cost-efficient service."""


def main() -> None:
    """Console-script entry: run the app, print SkyfleetError as a plain message (exit 2)."""
    try:
        app()
    except SkyfleetError as e:
        print_error(str(e))
        sys.exit(2)


if __name__ == "__main__":
    main()
