"""`skyfleet serve`, `skyfleet config check`, `skyfleet keys new|hash`, `skyfleet usage`."""

from __future__ import annotations

import re
import time
from datetime import datetime

import typer

from skyfleet.errors import SkyfleetError

_REL = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str | None, now: float | None = None) -> float | None:
    """'2026-11-25', '2026-11-25T10:00', '90m', '2h', '7d' (ago) or 'now' → epoch seconds."""
    if text is None:
        return None
    now = time.time() if now is None else now
    if text == "now":
        return now
    match = _REL.match(text)
    if match:
        return now - float(match.group(1)) * _UNIT[match.group(2)]
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise SkyfleetError(
            f"cannot read time {text!r}: expected ISO date/time (2026-11-25T10:00), "
            "a duration ago (30m, 2h, 7d) or 'now'"
        ) from None


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_cmd(
        config: str = typer.Option(..., "--config", "-c", help="fleet config YAML"),
        host: str | None = typer.Option(None, help="listen address (default: server.host)"),
        port: int | None = typer.Option(None, help="listen port (default: server.port)"),
        workers: int = typer.Option(1, min=1, help="SO_REUSEPORT worker processes"),
    ) -> None:
        """Run the OpenAI-compatible gateway in front of the fleet."""
        from skyfleet.gateway.server import serve

        serve(config, host, port, workers)

    config_app = typer.Typer(help="Fleet config files.", no_args_is_help=True)
    app.add_typer(config_app, name="config")

    @config_app.command("check")
    def check_cmd(file: str = typer.Argument(..., help="fleet config YAML")) -> None:
        """Validate a fleet config without serving; print a summary."""
        from rich.table import Table

        from skyfleet.config import load_config
        from skyfleet.console import make_console, print_warning

        cfg = load_config(file)
        table = Table(title=f"{file}: OK", show_lines=False)
        for col in ("model", "endpoint", "kind", "provider", "region", "tier", "capacity", "price"):
            table.add_column(col)
        for model in cfg.models:
            for name in model.endpoints:
                endpoint = cfg.endpoint(name)
                price = endpoint.price
                if price.per_hour is not None:
                    price_text = f"${price.per_hour:g}/h"
                elif (
                    price.per_1m_input_tokens is not None or price.per_1m_output_tokens is not None
                ):
                    price_text = (
                        f"${price.per_1m_input_tokens or 0:g}/${price.per_1m_output_tokens or 0:g}"
                        " per 1M in/out"
                    )
                else:
                    price_text = "-"
                table.add_row(
                    model.name,
                    endpoint.name,
                    endpoint.kind,
                    endpoint.provider,
                    endpoint.region,
                    endpoint.tier,
                    str(endpoint.capacity),
                    price_text,
                )
        console = make_console()
        console.print(table)
        console.print(
            f"{len(cfg.providers)} providers, {len(cfg.endpoints)} endpoints, "
            f"{len(cfg.models)} models, {len(cfg.tenants)} tenants"
        )
        if not cfg.tenants:
            print_warning("no tenants: the gateway accepts requests without a key", console)
        used = {name for model in cfg.models for name in model.endpoints}
        for endpoint in cfg.endpoints:
            if endpoint.name not in used:
                print_warning(f"endpoint {endpoint.name} is not used by any model", console)

    keys_app = typer.Typer(help="API keys (stored hashed in the config).", no_args_is_help=True)
    app.add_typer(keys_app, name="keys")

    @keys_app.command("new")
    def keys_new(prefix: str = typer.Option("sk-sf-", help="key prefix")) -> None:
        """Make a new random API key and print it with its config hash."""
        import secrets

        from skyfleet.config import hash_key

        key = prefix + secrets.token_urlsafe(32)
        typer.echo(f"key:  {key}")
        typer.echo(f"hash: {hash_key(key)}")

    @keys_app.command("hash")
    def keys_hash(
        key: str | None = typer.Argument(None, help="the key (read from stdin when omitted)"),
    ) -> None:
        """Print the `sha256:<hex>` form of a key for the config."""
        import sys

        from skyfleet.config import hash_key

        key_text = key if key is not None else sys.stdin.readline().strip()
        if not key_text:
            raise SkyfleetError("no key given (pass it as an argument or on stdin)")
        typer.echo(hash_key(key_text))

    @app.command("usage")
    def usage_cmd(
        db: str = typer.Option(
            "skyfleet-usage.sqlite",
            "--db",
            help="usage ledger: SQLite file, sqlite:///file or postgresql://user:pw@host/db",
        ),
        since: str | None = typer.Option(None, help="start: ISO time or '2h', '7d' ago"),
        until: str | None = typer.Option(None, help="end: ISO time, '1h' ago or 'now'"),
        by: str = typer.Option("tenant", help="tenant | provider | model | endpoint"),
    ) -> None:
        """Summarise the usage ledger by tenant, provider or model over a time range."""
        from rich.table import Table

        from skyfleet.console import make_console
        from skyfleet.gateway.ledger import parse_target, summarize

        target = parse_target(db)
        if target.kind == "sqlite" and not target.path.exists():
            raise SkyfleetError(f"{db}: no such usage ledger (see ledger.path in the config)")
        if by not in ("tenant", "provider", "model", "endpoint"):
            raise SkyfleetError(f"--by: expected tenant, provider, model or endpoint, got {by!r}")
        rows = summarize(target.location, since=parse_time(since), until=parse_time(until), by=by)
        table = Table(title=f"usage by {by}")
        for col in (by, "requests", "errors", "prompt tok", "completion tok", "cost $"):
            table.add_column(col, justify="left" if col == by else "right")
        table.add_column("mean TTFT", justify="right")
        table.add_column("mean latency", justify="right")
        totals = [0, 0, 0, 0, 0.0]
        for row in rows:
            vals = [row["requests"], row["errors"], row["prompt_tokens"], row["completion_tokens"]]
            for i, value in enumerate(vals):
                totals[i] += value or 0
            totals[4] += row["cost_usd"] or 0.0
            ttft = f"{row['mean_ttft_s'] * 1e3:.0f} ms" if row["mean_ttft_s"] is not None else "-"
            latency = (
                f"{row['mean_latency_s'] * 1e3:.0f} ms"
                if row["mean_latency_s"] is not None
                else "-"
            )
            table.add_row(
                str(row["key"]),
                *(f"{value or 0:,}" for value in vals),
                f"{row['cost_usd'] or 0:.4f}",
                ttft,
                latency,
            )
        table.add_row(
            "total",
            *(f"{value:,}" for value in totals[:4]),
            f"{totals[4]:.4f}",
            "",
            "",
            style="bold",
        )
        make_console().print(table)
