"""`skyfleet bench run|sweep`: measure an OpenAI-compatible endpoint, fit a profile."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Awaitable, Callable

    from skyfleet.bench.loadgen import LiveStats, Target
    from skyfleet.bench.workload import RequestSource

bench_app = typer.Typer(
    help="Load-test any OpenAI-compatible endpoint (TTFT, TPOT, ITL, goodput) and fit profiles.",
    no_args_is_help=True,
)

_URL = typer.Argument(..., help="base URL, e.g. http://127.0.0.1:8000 (with or without /v1)")
_MODEL = typer.Option(None, "--model", help="model id (default: first served)")
_API_KEY = typer.Option(
    None, "--api-key", envvar="SKYFLEET_API_KEY", help="Bearer key (env SKYFLEET_API_KEY)"
)
_HEADER = typer.Option([], "--header", help="extra header KEY:VALUE (repeat)")
_API = typer.Option("chat", "--api", help="chat or completions")
_TIMEOUT = typer.Option(120.0, "--timeout", help="per-request timeout, s")
_IGNORE_EOS = typer.Option(
    True,
    "--ignore-eos/--no-ignore-eos",
    help="ask for exactly --output tokens with ignore_eos + min_tokens (vLLM, SGLang, "
    "llama.cpp; cloud APIs refuse them)",
)


def _target(
    url: str,
    model: str | None,
    api_key: str | None,
    header: list[str],
    api: str,
    stream: bool,
    timeout: float,
    ignore_eos: bool,
) -> Target:
    from skyfleet.bench.loadgen import Target
    from skyfleet.bench.workload import parse_headers
    from skyfleet.errors import SkyfleetError

    if api not in ("chat", "completions"):
        raise SkyfleetError(f"--api must be chat or completions, got {api!r}")
    if timeout <= 0:
        raise SkyfleetError(f"--timeout must be > 0 s, got {timeout:g}")
    return Target(
        url,
        model=model,
        api_key=api_key,
        headers=parse_headers(header),
        api=api,  # type: ignore[arg-type]
        stream=stream,
        timeout_s=timeout,
        ignore_eos=ignore_eos,
    )


def _source(dataset: str | None, input_len: str, output_len: str, seed: int, mix: list[str]) -> Any:
    from skyfleet.bench.workload import (
        DatasetRequests,
        SyntheticRequests,
        parse_mix,
        sample_dataset_path,
    )

    variants = parse_mix(mix)
    if dataset:
        path = sample_dataset_path() if dataset == "sample" else dataset
        return lambda s: DatasetRequests(path, seed=s, output_len=output_len, mix=variants)
    return lambda s: SyntheticRequests(input_len, output_len, seed=s, mix=variants)


def _run_async(main: Callable[[asyncio.Event], Awaitable[Any]]) -> Any:
    """Run `main(stop)` on uvloop; the first Ctrl-C sets `stop` (partial results), the
    second one aborts."""
    import asyncio
    import signal

    async def wrapper() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def first() -> None:
            stop.set()
            loop.remove_signal_handler(signal.SIGINT)
            signal.signal(signal.SIGINT, signal.default_int_handler)

        loop.add_signal_handler(signal.SIGINT, first)
        return await main(stop)

    try:
        import uvloop

        return uvloop.run(wrapper())
    except ImportError:  # pragma: no cover - uvloop is a default dependency on POSIX
        return asyncio.run(wrapper())


async def _with_progress(
    console: Any, work: Awaitable[Any], get_live: Callable[[], tuple[str, LiveStats] | None]
) -> Any:
    """Show a rich progress line fed by the current LiveStats while `work` runs."""
    import asyncio

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task_id = prog.add_task("starting", total=None, info="")
    fut = asyncio.ensure_future(work)
    with prog:
        while not fut.done():
            cur = get_live()
            if cur is not None:
                name, live = cur
                total: float | None = None
                done: float = float(live.completed + live.failed)
                if live.planned_total:
                    total = float(live.planned_total)
                elif live.planned_duration_s:
                    total, done = (
                        live.planned_duration_s,
                        min(live.elapsed(), live.planned_duration_s),
                    )
                info = (
                    f"{live.phase} · sent {live.sent} · ok {live.completed} · err {live.failed} · "
                    f"in flight {live.in_flight} · lag {live.last_lag_s * 1e3:.1f} ms"
                )
                prog.update(task_id, description=name, total=total, completed=done, info=info)
            await asyncio.wait({fut}, timeout=0.2)
    return fut.result()


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")


@bench_app.command("run")
def run_cmd(
    url: str = _URL,
    model: str | None = _MODEL,
    api_key: str | None = _API_KEY,
    header: list[str] = _HEADER,
    api: str = _API,
    stream: bool = typer.Option(True, "--stream/--no-stream", help="stream tokens (TTFT, ITL)"),
    timeout: float = _TIMEOUT,
    ignore_eos: bool = _IGNORE_EOS,
    rate: float | None = typer.Option(None, "--rate", help="open loop: mean req/s"),
    arrival: str = typer.Option("poisson", "--arrival", help="constant, poisson or gamma"),
    burstiness: float = typer.Option(1.0, "--burstiness", help="gamma shape (CV = 1/√b)"),
    concurrency: int | None = typer.Option(
        None, "--concurrency", help="closed loop: requests in flight (with --rate: a cap)"
    ),
    duration: float | None = typer.Option(None, "--duration", help="measured seconds"),
    requests: int | None = typer.Option(None, "--requests", help="measured request count"),
    warmup: float = typer.Option(0.0, "--warmup", help="warm-up seconds (not measured)"),
    warmup_requests: int = typer.Option(0, "--warmup-requests", help="warm-up requests"),
    cooldown: float = typer.Option(
        0.0,
        "--cooldown",
        help="cool-down seconds after the measured ones (not measured)",
    ),
    cooldown_requests: int = typer.Option(
        0, "--cooldown-requests", help="cool-down requests after the measured ones"
    ),
    exact_rate: bool = typer.Option(
        False, "--exact-rate", help="rescale the seeded gaps to hit --rate exactly (count runs)"
    ),
    input_len: str = typer.Option("256", "--input", help="prompt tokens: N, LO-HI, normal:M,S"),
    output_len: str = typer.Option("128", "--output", help="output tokens: N, LO-HI, normal:M,S"),
    dataset: str | None = typer.Option(None, "--dataset", help="JSONL file, or 'sample'"),
    mix: list[str] = typer.Option([], "--mix", help="traffic class WEIGHT:LABEL:Hdr=V;Hdr=V"),
    slo: str | None = typer.Option(None, "--slo", help="goodput SLO, e.g. ttft=500ms,tpot=50ms"),
    seed: int = typer.Option(0, "--seed"),
    time_scale: float = typer.Option(
        1.0, "--time-scale", help="endpoint runs k× faster than real time (emulator)"
    ),
    json_path: str | None = typer.Option(None, "--json", help="write every figure as JSON"),
    html_path: str | None = typer.Option(None, "--html", help="write a self-contained report"),
    png_path: str | None = typer.Option(None, "--png", help="write the latency chart"),
) -> None:
    """Run one load (open or closed loop) and report vLLM-style metrics."""
    from skyfleet.bench import output
    from skyfleet.bench.arrivals import PROCESSES
    from skyfleet.bench.checks import preflight
    from skyfleet.bench.loadgen import LiveStats, Load, run_load
    from skyfleet.bench.metrics import Slo
    from skyfleet.console import make_console, print_warning
    from skyfleet.errors import SkyfleetError

    if arrival not in PROCESSES:
        raise SkyfleetError(f"--arrival must be one of {', '.join(PROCESSES)}, got {arrival!r}")
    if duration is None and requests is None:
        requests = 100
    if time_scale <= 0:
        raise SkyfleetError(f"--time-scale must be > 0, got {time_scale:g}")
    objective = Slo.parse(slo)
    load = Load(
        rate=None if rate is None else rate * time_scale,
        process=arrival,
        burstiness=burstiness,
        concurrency=concurrency,
        duration_s=duration,
        num_requests=requests,
        warmup_s=warmup,
        warmup_requests=warmup_requests,
        cooldown_s=cooldown,
        cooldown_requests=cooldown_requests,
        exact_rate=exact_rate,
        seed=seed,
    )
    src: RequestSource = _source(dataset, input_len, output_len, seed, mix)(seed)
    tgt = _target(url, model, api_key, header, api, stream, timeout, ignore_eos)
    console = make_console()
    live = LiveStats()

    async def main(stop: asyncio.Event) -> Any:
        t, _ = await preflight(tgt)
        console.print(f"[dim]target {t.endpoint} · model {t.model} · load {load.kind}[/]")
        work = run_load(t, src, load, live=live, stop=stop)
        return await _with_progress(console, work, lambda: ("bench run", live))

    rr = _run_async(main)
    s = rr.summary(objective, time_scale=time_scale)
    if rr.interrupted:
        console.print(
            f"[yellow]interrupted: partial results ({rr.incomplete} in flight dropped)[/]"
        )
    console.print(output.throughput_table(s))
    console.print(output.summary_table(s, "latency"))
    for w in rr.warnings:
        print_warning(w, console)
    extra = {"time_scale": time_scale, "slo": objective.as_dict()}
    if json_path:
        output.write_json(output.run_json(rr, s, extra), json_path)
        console.print(f"wrote {json_path}")
    if html_path:
        output.run_html(rr, s, html_path)
        console.print(f"wrote {html_path}")
    if png_path:
        from skyfleet.report import save_png

        save_png(output.run_figure(s), png_path)
        console.print(f"wrote {png_path}")
    if rr.interrupted:
        raise typer.Exit(130)


@bench_app.command("sweep")
def sweep_cmd(
    url: str = _URL,
    model: str | None = _MODEL,
    api_key: str | None = _API_KEY,
    header: list[str] = _HEADER,
    api: str = _API,
    timeout: float = _TIMEOUT,
    ignore_eos: bool = _IGNORE_EOS,
    slo: str = typer.Option(..., "--slo", help="e.g. ttft=500ms,tpot=50ms"),
    percentile: float = typer.Option(99.0, "--slo-percentile", help="TTFT/E2E percentile"),
    input_len: str = typer.Option("256", "--input", help="prompt tokens: N, LO-HI, normal:M,S"),
    output_len: str = typer.Option("128", "--output", help="output tokens"),
    dataset: str | None = typer.Option(None, "--dataset", help="JSONL file, or 'sample'"),
    steps: int = typer.Option(5, "--steps", help="rates between synchronous and max"),
    refine: int = typer.Option(3, "--refine", help="bisection steps after the scan"),
    requests: int = typer.Option(200, "--requests", help="measured requests per rate"),
    sync_requests: int = typer.Option(20, "--sync-requests"),
    max_concurrency: int = typer.Option(64, "--max-concurrency", help="throughput run"),
    arrival: str = typer.Option("poisson", "--arrival", help="constant or poisson"),
    seed: int = typer.Option(0, "--seed"),
    time_scale: float = typer.Option(
        1.0, "--time-scale", help="endpoint runs k× faster than real time (emulator)"
    ),
    fit: str | None = typer.Option(
        None, "--fit", help="base profile MODEL@ACCEL[xN] (or YAML) to calibrate"
    ),
    profile_out: str | None = typer.Option(None, "--profile-out", help="fitted profile YAML"),
    quadratic: bool = typer.Option(
        False, "--quadratic-prefill", help="fit prefill's quadratic (attention) term too"
    ),
    json_path: str | None = typer.Option(None, "--json", help="write every figure as JSON"),
    html_path: str | None = typer.Option(None, "--html", help="write a self-contained report"),
    png_path: str | None = typer.Option(None, "--png", help="write the sweep chart"),
) -> None:
    """Find the highest rate meeting the SLO and fit a Profile to the measurements."""
    from skyfleet.bench import output
    from skyfleet.bench.checks import preflight
    from skyfleet.bench.metrics import Slo
    from skyfleet.bench.sweep import SweepConfig, sweep
    from skyfleet.bench.workload import LengthDist
    from skyfleet.console import make_console, print_warning
    from skyfleet.errors import SkyfleetError
    from skyfleet.perf import parse_profile_spec

    objective = Slo.parse(slo)
    if not objective.is_set:
        raise SkyfleetError("--slo needs at least one objective, e.g. ttft=500ms,tpot=50ms")
    if profile_out and not fit:
        raise SkyfleetError("--profile-out needs --fit MODEL@ACCEL[xN] (the profile to calibrate)")
    if arrival not in ("constant", "poisson"):
        raise SkyfleetError(f"--arrival must be constant or poisson, got {arrival!r}")
    base = parse_profile_spec(fit) if fit else None
    in_d, out_d = LengthDist.parse(input_len), LengthDist.parse(output_len)
    make = _source(dataset, input_len, output_len, seed, [])
    if dataset:
        desc = make(seed).description
        in_d = LengthDist.parse(max(1, round(desc["mean_input_tokens"])))
    cfg = SweepConfig(
        slo=objective,
        percentile=percentile,
        steps=steps,
        refine=refine,
        sync_requests=sync_requests,
        requests_per_rate=requests,
        max_concurrency=max_concurrency,
        process=arrival,  # type: ignore[arg-type]
        seed=seed,
        time_scale=time_scale,
        quadratic_prefill=quadratic,
    )
    tgt = _target(url, model, api_key, header, api, True, timeout, ignore_eos)
    console = make_console()
    current: list[tuple[str, LiveStats]] = []

    def on_point(p: Any) -> None:
        s = p.summary
        rate = "" if p.rate is None else f" at {p.rate:.3g}/s"
        console.print(
            f"  {p.kind}{rate}: {s.request_throughput:.3g} req/s, TTFT p50 "
            f"{s.ttft.p50 * 1e3:.0f} ms, TPOT {s.tpot.mean * 1e3:.1f} ms, "
            f"{'meets' if p.meets_slo else 'misses'} SLO"
        )

    async def main(stop: asyncio.Event) -> Any:
        t, _ = await preflight(tgt)
        console.print(f"[dim]target {t.endpoint} · model {t.model} · SLO {objective}[/]")
        work = sweep(
            t, make, in_d, out_d, cfg, base=base, stop=stop,
            on_phase=lambda n, lv: current.append((n, lv)), on_point=on_point,
        )  # fmt: skip
        return await _with_progress(console, work, lambda: current[-1] if current else None)

    res = _run_async(main)
    console.print(output.sweep_table(res))
    if res.interrupted:
        console.print("[yellow]interrupted: partial sweep[/]")
    console.print(f"[bold]max rate meeting {objective}: {res.max_rate:.3g} req/s[/]")
    for w in res.warnings:
        print_warning(w, console)
    if res.profile is not None:
        p = res.profile
        console.print(
            f"fitted profile {p.name}: prefill {p.prefill_base_s * 1e3:.2f} ms + "
            f"{p.prefill_per_token_s * 1e6:.2f} µs/token; decode step {p.decode_base_s * 1e3:.2f}"
            f" ms + {p.decode_per_seq_s * 1e6:.1f} µs/seq + {p.decode_per_ctx_token_s * 1e9:.1f}"
            f" ns/context token (fitted from {res.fit_method})"
        )
        if res.client_overhead_s is not None:
            console.print(
                f"client + network overhead per request: {res.client_overhead_s * 1e3:.2f} ms"
                " (in TTFT as you measured it; not part of the engine profile)"
            )
        if profile_out:
            p.save(profile_out)
            console.print(f"wrote {profile_out}")
    if json_path:
        output.write_json(res.as_dict(), json_path)
        console.print(f"wrote {json_path}")
    if html_path:
        output.sweep_html(res, html_path)
        console.print(f"wrote {html_path}")
    if png_path:
        from skyfleet.report import save_png

        save_png(output.sweep_figure(res), png_path)
        console.print(f"wrote {png_path}")
    if res.interrupted:
        raise typer.Exit(130)
