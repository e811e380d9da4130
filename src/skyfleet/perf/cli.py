"""`skyfleet profile` and `skyfleet profile-fit`: inspect and calibrate the perf model."""

from __future__ import annotations

from typing import Any

import typer


def register(app: typer.Typer) -> None:
    @app.command("profile")
    def profile_cmd(
        spec: str = typer.Argument(
            ..., help="MODEL@ACCELERATOR[xN][:PRESET] or a profile YAML file"
        ),
        input_tokens: int = typer.Option(1000, "--input", help="mean prompt tokens"),
        output_tokens: int = typer.Option(256, "--output", help="mean output tokens"),
        ttft_ms: float = typer.Option(1000.0, "--ttft-ms", help="TTFT SLO (p99), ms"),
        tpot_ms: float = typer.Option(50.0, "--tpot-ms", help="TPOT SLO (mean), ms"),
        preset: str | None = typer.Option(
            None, "--preset", help="efficiency preset: vllm-2025 (default), trtllm-2025, …"
        ),
        as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
        save: str | None = typer.Option(None, "--save", help="write the profile as YAML"),
    ) -> None:
        """Show a profile's memory, timing and capacity at an SLO."""
        from skyfleet.perf import parse_profile_spec

        p = parse_profile_spec(spec, preset=preset)
        summary = _summary(p, input_tokens, output_tokens, ttft_ms, tpot_ms)
        _emit(summary, f"{p.name} ({p.source})", as_json)
        if save:
            p.save(save)
            if not as_json:
                _console().print(f"saved {save}")

    @app.command("profile-fit")
    def fit_cmd(
        points: str = typer.Argument(..., help="YAML/JSON file of measured decode/prefill points"),
        base: str | None = typer.Option(
            None, "--base", help="profile to start from (default: the file's `base`)"
        ),
        as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
        save: str | None = typer.Option(None, "--save", help="write the fitted profile as YAML"),
    ) -> None:
        """Fit a profile's timing to measured points and show the error per point.

        The file holds `base: MODEL@ACCEL[xN][:PRESET]` (optional with --base),
        `decode: [{batch, context, seconds}, ...]` and `prefill: [{tokens, seconds}, ...]`.
        """
        from skyfleet.perf.fitfile import fit_from_file

        result = fit_from_file(points, base)
        if as_json:
            _emit(result.as_dict(), "", True)
        else:
            from rich.table import Table

            t = Table(title=f"{result.profile.name} fitted to {points}")
            for col in ("point", "measured ms", "model ms", "error"):
                t.add_column(col, justify="right" if col != "point" else "left")
            for row in result.rows:
                t.add_row(
                    row.label,
                    f"{row.measured * 1e3:.2f}",
                    f"{row.model * 1e3:.2f}",
                    f"{row.error:+.1%}",
                )
            _console().print(t)
            _console().print(f"max error {result.max_error:.1%}")
        if save:
            result.profile.save(save)
            if not as_json:
                _console().print(f"saved {save}")


def _console() -> Any:
    from skyfleet.console import make_console

    return make_console()


def _emit(data: dict[str, Any], title: str, as_json: bool) -> None:
    if as_json:
        import json

        typer.echo(json.dumps(data, indent=2))
        return
    from rich.table import Table

    t = Table(title=title, show_header=False)
    labels = {
        "weights_per_device_gb": ("weights per device", "{:.1f} GB"),
        "kv_bytes_per_token": ("KV bytes per token (all devices)", "{:,.0f} B"),
        "kv_capacity_tokens": ("KV capacity", "{:,} tokens"),
        "prefill_ms": ("prefill of the mean prompt", "{:.1f} ms"),
        "decode_step_b1_ms": ("decode step, batch 1", "{:.2f} ms"),
        "decode_step_b64_ms": ("decode step, batch 64", "{:.2f} ms"),
        "max_concurrency": ("max concurrent sequences", "{}"),
        "max_output_tokens_per_s": ("max output tokens/s (decode only)", "{:,.0f}"),
        "max_rate": ("max request rate (no SLO)", "{:.2f} req/s"),
        "max_rate_at_slo": ("max rate at the SLO", "{:.2f} req/s"),
    }
    for key, (label, fmt) in labels.items():
        if key in data:
            t.add_row(label, fmt.format(data[key]))
    if "slo" in data:
        t.add_row("SLO", data["slo"])
    _console().print(t)


def _summary(p: Any, i: int, o: int, ttft_ms: float, tpot_ms: float) -> dict[str, Any]:
    from skyfleet.catalog import get_model
    from skyfleet.perf import (
        RequestSizes,
        max_rate_at_slo,
        max_throughput,
        weight_bytes_per_device,
    )

    m = get_model(p.model)
    sizes = RequestSizes(i, o)
    ctx = sizes.avg_context
    return {
        "profile": p.name,
        "source": p.source,
        "input_tokens": i,
        "output_tokens": o,
        "weights_per_device_gb": weight_bytes_per_device(m, p.tp) / 1e9,
        "kv_bytes_per_token": m.kv_bytes_per_token,
        "kv_capacity_tokens": p.kv_capacity_tokens,
        "prefill_ms": p.prefill_time(i) * 1e3,
        "decode_step_b1_ms": p.decode_step_time(1, ctx) * 1e3,
        "decode_step_b64_ms": p.decode_step_time(64, 64 * ctx) * 1e3,
        "max_concurrency": p.max_concurrency(ctx),
        "max_output_tokens_per_s": p.max_output_tokens_per_s(ctx),
        "max_rate": max_throughput(p, sizes),
        "max_rate_at_slo": max_rate_at_slo(p, sizes, ttft_ms / 1e3, tpot_ms / 1e3),
        "slo": f"TTFT p99 ≤ {ttft_ms:g} ms, TPOT ≤ {tpot_ms:g} ms",
    }
