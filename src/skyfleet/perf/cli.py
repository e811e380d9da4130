"""`skyfleet profile`: inspect the perf model for a model on an accelerator."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("profile")
    def profile_cmd(
        spec: str = typer.Argument(..., help="MODEL@ACCELERATOR[xN] or a profile YAML file"),
        input_tokens: int = typer.Option(1000, "--input", help="mean prompt tokens"),
        output_tokens: int = typer.Option(256, "--output", help="mean output tokens"),
        ttft_ms: float = typer.Option(1000.0, "--ttft-ms", help="TTFT SLO (p99), ms"),
        tpot_ms: float = typer.Option(50.0, "--tpot-ms", help="TPOT SLO (mean), ms"),
        save: str | None = typer.Option(None, "--save", help="write the profile as YAML"),
    ) -> None:
        """Show a profile's memory, timing and capacity at an SLO."""
        from rich.console import Console
        from rich.table import Table

        from skyfleet.catalog import get_model
        from skyfleet.perf import (
            RequestSizes,
            max_rate_at_slo,
            max_throughput,
            parse_profile_spec,
            weight_bytes_per_device,
        )

        p = parse_profile_spec(spec)
        m = get_model(p.model)
        sizes = RequestSizes(input_tokens, output_tokens)
        t = Table(title=f"{p.name} ({p.source})", show_header=False)
        rows = [
            ("weights per device", f"{weight_bytes_per_device(m, p.tp) / 1e9:.1f} GB"),
            ("KV bytes per token", f"{m.kv_bytes_per_token / 1024:.0f} KiB"),
            ("KV capacity", f"{p.kv_capacity_tokens:,} tokens"),
            ("prefill of the mean prompt", f"{p.prefill_time(input_tokens) * 1e3:.1f} ms"),
            ("decode step, batch 1", f"{p.decode_step_time(1, sizes.avg_context) * 1e3:.2f} ms"),
            (
                "decode step, batch 64",
                f"{p.decode_step_time(64, 64 * sizes.avg_context) * 1e3:.2f} ms",
            ),
            ("max concurrent sequences", f"{p.max_concurrency(sizes.avg_context)}"),
            ("max output tokens/s", f"{p.max_output_tokens_per_s(sizes.avg_context):,.0f}"),
            ("max request rate (no SLO)", f"{max_throughput(p, sizes):.2f} req/s"),
            (
                f"max rate at TTFT p99 ≤ {ttft_ms:g} ms, TPOT ≤ {tpot_ms:g} ms",
                f"{max_rate_at_slo(p, sizes, ttft_ms / 1e3, tpot_ms / 1e3):.2f} req/s",
            ),
        ]
        for k, v in rows:
            t.add_row(k, v)
        Console().print(t)
        if save:
            p.save(save)
            Console().print(f"saved {save}")
