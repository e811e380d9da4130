"""`skyfleet emulate`: run an emulated inference engine (OpenAI-compatible server)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("emulate")
    def emulate_cmd(
        profile: str = typer.Option(
            ..., "--profile", help="MODEL@ACCELERATOR[xN] or a profile YAML file"
        ),
        port: int = typer.Option(8000, "--port", help="TCP port (0: pick a free one)"),
        host: str = typer.Option("127.0.0.1", "--host"),
        served_model_name: str | None = typer.Option(
            None, "--served-model-name", help="model id clients send (default: the model)"
        ),
        time_scale: float = typer.Option(
            1.0, "--time-scale", help="run this many times faster than real time"
        ),
        seed: int = typer.Option(0, "--seed", help="seed for output lengths and faults"),
        faults: str | None = typer.Option(
            None, "--faults", help="chaos drill: YAML file of timed faults"
        ),
    ) -> None:
        """Serve an OpenAI-compatible API that behaves like a continuous-batching engine."""
        import asyncio
        from collections.abc import Callable, Coroutine
        from typing import Any

        from skyfleet.emulator.faults import load_drill
        from skyfleet.emulator.server import EmulatorServer, serve
        from skyfleet.errors import SkyfleetError, UnknownNameError
        from skyfleet.perf import parse_profile_spec

        if time_scale <= 0:
            raise SkyfleetError(f"--time-scale must be > 0, got {time_scale:g}")
        try:
            prof = parse_profile_spec(profile)
        except UnknownNameError as e:
            from skyfleet.catalog import accelerators, models

            other = (
                f"known accelerators: {', '.join(sorted(accelerators()))}"
                if e.kind == "model"
                else f"known models: {', '.join(sorted(models()))}"
            )
            raise SkyfleetError(f"profile {profile!r}: {e}; {other}") from e
        drill = load_drill(faults) if faults else []

        async def main() -> None:
            server = EmulatorServer(
                prof,
                served_model_name=served_model_name,
                time_scale=time_scale,
                seed=seed,
                faults=drill,
            )
            await serve(server, host, port)

        run: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
        try:
            import uvloop  # a faster event loop when installed (POSIX)

            run = uvloop.run
        except ImportError:  # pragma: no cover
            pass
        try:
            run(main())
        except KeyboardInterrupt:
            pass
        except OSError as e:
            raise SkyfleetError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
