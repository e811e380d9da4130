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
        api: str = typer.Option(
            "openai", "--api", help="openai | azure_openai | anthropic | bedrock | vertex"
        ),
        api_key: str | None = typer.Option(
            None, "--api-key", help="anthropic x-api-key / azure api-key the server accepts"
        ),
        aws_credentials: str | None = typer.Option(
            None, "--aws-credentials", help="bedrock: ACCESS_KEY_ID:SECRET that SigV4 must use"
        ),
        region: str = typer.Option("us-east-1", "--region", help="bedrock: signing region"),
        project: str = typer.Option("emulator-project", "--project", help="vertex: project"),
        location: str = typer.Option("us-central1", "--location", help="vertex: location"),
        service_account: str | None = typer.Option(
            None, "--service-account", help="vertex: key file whose JWTs /token accepts"
        ),
        entra: str | None = typer.Option(
            None, "--entra", help="azure: CLIENT_ID:SECRET the Entra token endpoint accepts"
        ),
        token_ttl: float = typer.Option(
            3600.0, "--token-ttl", help="lifetime (s) of access tokens issued (vertex, azure)"
        ),
    ) -> None:
        """Serve an emulated continuous-batching engine behind one provider's API."""
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
        from skyfleet.emulator.fronts import APIS, FrontOptions, make_front

        if api not in APIS:
            raise SkyfleetError(f"--api: expected one of {', '.join(APIS)}, got {api!r}")

        def pair(opt: str, v: str | None) -> tuple[str, str] | None:
            if v is None:
                return None
            a, sep, b = v.partition(":")
            if not sep or not a or not b:
                raise SkyfleetError(f"{opt}: expected ID:SECRET")
            return a, b

        if service_account is not None and api == "vertex":
            import os

            if not os.access(service_account, os.R_OK):
                raise SkyfleetError(f"--service-account: cannot read {service_account}")
        front = make_front(
            api,
            FrontOptions(
                api_key=api_key,
                aws_credentials=pair("--aws-credentials", aws_credentials),
                region=region,
                project=project,
                location=location,
                service_account=service_account,
                entra=pair("--entra", entra),
                token_ttl_s=token_ttl,
                served_model=served_model_name or prof.model,
            ),
        )

        async def main() -> None:
            server = EmulatorServer(
                prof,
                served_model_name=served_model_name,
                time_scale=time_scale,
                seed=seed,
                faults=drill,
                front=front,
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
