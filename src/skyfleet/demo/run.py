"""Orchestrate the demo: plan → emulators → gateway → load with a surge and an outage →
report, stopping every child process on the way out (normal end, Ctrl-C, or failure)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from skyfleet.dashboard.monitor import FleetMonitor
from skyfleet.demo.fleet import DemoFleet, EndpointPlan, build_fleet, solve_plan, workload_path
from skyfleet.demo.procs import ChildGroup
from skyfleet.demo.results import ClientLog
from skyfleet.demo.scenario import Scenario
from skyfleet.errors import SkyfleetError

if TYPE_CHECKING:
    from rich.console import Console

    from skyfleet.emulator.process import EmulatorProcess
    from skyfleet.gateway.process import GatewayProcess

MIN_LOAD_S = 8.0


@dataclass(frozen=True)
class DemoOptions:
    """What `skyfleet demo` was asked to do."""

    duration_s: float = 180.0
    html: Path | None = Path("out/demo-report.html")
    host: str = "127.0.0.1"
    port: int = 8080
    live: bool = True
    time_scale: float = 0.5
    surge_factor: float = 2.0
    seed: int = 0
    workload: Path | None = None
    plan: Path | None = None
    outage_provider: str | None = None


@dataclass
class Outage:
    """The injected outage: wall-clock times (epoch seconds) of down and back."""

    provider: str
    endpoints: list[str]
    down_at: float | None = None
    up_at: float | None = None


@dataclass
class DemoRun:
    """Everything the final report needs."""

    opts: DemoOptions
    fleet: DemoFleet
    scenario: Scenario
    log: ClientLog
    monitor: FleetMonitor
    outage: Outage
    load_wall_start: float
    startup_s: float
    gateway_url: str
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)


def check_port(host: str, port: int) -> None:
    """Fail early, with a clear message, when the gateway's port is taken."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise SkyfleetError(
                    f"port {port} on {host} is already in use: stop what listens there or "
                    "choose another with --port (0 picks a free one)"
                ) from None
            raise SkyfleetError(f"cannot listen on {host}:{port}: {e.strerror}") from None


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def require_parts() -> None:
    """Import the parts the demo drives; a missing one is a clear error, not a traceback."""
    parts = {
        "skyfleet.emulator.process": "the emulator",
        "skyfleet.gateway.process": "the gateway",
        "skyfleet.planner.plan": "the planner",
        "skyfleet.bench.loadgen": "the load generator",
    }
    import importlib

    for mod, what in parts.items():
        try:
            importlib.import_module(mod)
        except ImportError as e:
            raise SkyfleetError(
                f"skyfleet demo needs {what} ({mod}), which cannot be imported: {e}. "
                "Reinstall skyfleet with `make` or `pip install -e .`"
            ) from None


def pick_outage_provider(fleet: DemoFleet, wanted: str | None) -> str:
    """The provider to take down: as asked, else the one with the most primary capacity."""
    providers = fleet.providers()
    if wanted:
        if wanted not in providers:
            raise SkyfleetError(
                f"--outage {wanted!r} is not a provider of the plan ({', '.join(providers)})"
            )
        return wanted
    primary = fleet.primary_capacity()
    if primary:
        return max(sorted(primary), key=lambda provider: primary[provider])
    return providers[0]


class Demo:
    """One demo run. `children` is owned by the caller, who stops it whatever happens."""

    def __init__(
        self,
        opts: DemoOptions,
        console: Console,
        children: ChildGroup,
        view: Callable[[Demo], Any] | None = None,
    ) -> None:
        self.opts = opts
        self.console = console
        self.children = children
        self.view_factory = view
        self.t_start = time.monotonic()
        self.deadline = self.t_start + opts.duration_s
        self.workdir = Path(tempfile.mkdtemp(prefix="skyfleet-demo-"))
        self.emulators: dict[str, EmulatorProcess] = {}
        self.gateway: GatewayProcess | None = None
        self.fleet: DemoFleet | None = None
        self.scenario: Scenario | None = None
        self.monitor = FleetMonitor()
        self.log = ClientLog()
        self.outage: Outage | None = None
        self.phase = "planning"
        self.load_t0: float | None = None  # perf_counter at the start of the load
        self.load_wall_start = 0.0
        self.stop_load = asyncio.Event()

    # -- helpers ------------------------------------------------------------------------
    def say(self, message: str) -> None:
        elapsed = time.monotonic() - self.t_start
        self.console.print(f"[dim]{elapsed:6.1f}s[/] {message}", soft_wrap=True)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def load_offset(self) -> float:
        return 0.0 if self.load_t0 is None else time.perf_counter() - self.load_t0

    # -- phases -------------------------------------------------------------------------
    async def plan(self) -> DemoFleet:
        if self.opts.plan is not None:
            from skyfleet.planner.plan import Plan

            self.say(f"using the plan [bold]{self.opts.plan}[/]")
            plan = Plan.load(self.opts.plan)
        else:
            path = self.opts.workload or workload_path()
            self.say(f"planning the fleet for [bold]{path.name}[/] with the planner (HiGHS MILP)…")
            plan = await asyncio.to_thread(solve_plan, path)
        port = self.opts.port if self.opts.port else free_port(self.opts.host)
        fleet = build_fleet(
            plan, host=self.opts.host, port=port, ledger_path=self.workdir / "usage.sqlite"
        )
        per_day = plan.totals.cost_per_day
        self.say(
            f"plan: {len(fleet.endpoints)} replicas across {', '.join(fleet.providers())} "
            f"(${per_day:,.0f}/day)"
        )
        return fleet

    async def _in_threads(self, jobs: list[Callable[[], None]]) -> None:
        """Run blocking start-ups in threads; on cancel or failure, wait for them all so
        that every process started is registered (and stopped by the caller)."""
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(max_workers=max(1, min(8, len(jobs))))
        try:
            await asyncio.gather(*(loop.run_in_executor(pool, job) for job in jobs))
        finally:
            pool.shutdown(wait=True)

    async def start_fleet(self, fleet: DemoFleet) -> GatewayProcess:
        """Start one emulator per endpoint (in parallel), then the gateway, and wait until the
        gateway sees every endpoint healthy."""
        from skyfleet.emulator.process import start_emulator
        from skyfleet.gateway.process import start_gateway

        self.phase = "starting"
        self.say(
            f"starting {len(fleet.endpoints)} emulated replicas and the gateway "
            f"(time scale {self.opts.time_scale:g}: slow motion, so one machine copes)…"
        )
        host = self.opts.host
        config_path = self.workdir / "fleet.yaml"
        gateway_port = int(fleet.config["server"]["port"])
        started: list[GatewayProcess] = []

        def emulator(index: int, endpoint: EndpointPlan) -> Callable[[], None]:
            def job() -> None:
                try:
                    process = start_emulator(
                        endpoint.profile,
                        time_scale=self.opts.time_scale,
                        seed=self.opts.seed + index,
                        served_model_name=endpoint.served_model,
                    )
                except Exception as e:
                    raise SkyfleetError(
                        f"could not start the emulator for endpoint {endpoint.name} "
                        f"({endpoint.profile}): {e}"
                    ) from None
                self.children.add(f"emulator {endpoint.name}", process)
                self.emulators[endpoint.name] = process

            return job

        def gateway() -> None:
            try:
                process = start_gateway(config_path, port=gateway_port, host=host)
            except Exception as e:
                raise SkyfleetError(
                    f"could not start the gateway on port {gateway_port}: {e}"
                ) from None
            self.children.add("gateway", process)
            started.append(process)

        # Emulators first: a gateway started before them would probe, mark every endpoint
        # down and show that as a (false) outage on the dashboard.
        await self._in_threads(
            [emulator(index, endpoint) for index, endpoint in enumerate(fleet.endpoints)]
        )
        config = fleet.with_urls(
            {name: process.base_url for name, process in self.emulators.items()}
        )
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        await self._in_threads([gateway])
        await self.wait_all_healthy(started[0], fleet, timeout_s=10.0)
        return started[0]

    async def wait_all_healthy(
        self, gateway: GatewayProcess, fleet: DemoFleet, timeout_s: float
    ) -> None:
        """Until the gateway's probes have seen every endpoint up (or the timeout)."""
        import aiohttp

        deadline = time.monotonic() + timeout_s
        headers = {"Authorization": f"Bearer {fleet.admin_key}"}
        timeout = aiohttp.ClientTimeout(total=2.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < deadline:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                    url = gateway.url + "/admin/endpoints"
                    async with session.get(url, headers=headers) as response:
                        rows = (await response.json()).get("endpoints", [])
                        if rows and all(row.get("healthy") for row in rows):
                            return
                await asyncio.sleep(0.1)
        self.say("[yellow]not every endpoint is healthy yet; starting the load anyway[/]")

    async def inject(self, outage: Outage, down: bool) -> None:
        emulators = [self.emulators[name] for name in outage.endpoints if name in self.emulators]

        def job() -> None:
            for emulator in emulators:
                if down:
                    emulator.inject("down")
                else:
                    emulator.clear_faults()

        await asyncio.to_thread(job)

    async def chaos(self, scenario: Scenario, outage: Outage) -> None:
        """Take the provider down at the scenario's time and bring it back."""
        await asyncio.sleep(max(0.0, scenario.outage_at - self.load_offset()))
        outage.down_at = time.time()
        await self.inject(outage, down=True)
        self.say(f"[bold red]outage:[/] provider [bold]{outage.provider}[/] is down")
        await asyncio.sleep(max(0.0, scenario.recover_at - self.load_offset()))
        await self.inject(outage, down=False)
        outage.up_at = time.time()
        self.say(f"[bold green]recovery:[/] provider [bold]{outage.provider}[/] is back")

    async def sample_loop(self, source: Any, every_s: float = 0.5) -> None:
        while True:
            with contextlib.suppress(Exception):
                self.monitor.add(await source.sample())
            await asyncio.sleep(every_s)

    async def drive(self, fleet: DemoFleet, gateway: GatewayProcess, scenario: Scenario) -> None:
        from skyfleet.bench.loadgen import Load, Target, run_load
        from skyfleet.bench.workload import HeaderVariant, SyntheticRequests

        shares = {"critical": 0.2, "standard": 0.6, "sheddable": 0.2}
        mix = [
            HeaderVariant(shares[priority], {"Authorization": f"Bearer {key}"}, priority)
            for priority, key in fleet.keys.items()
        ]
        source = SyntheticRequests("100-600", "20-80", seed=self.opts.seed, mix=mix)
        target = Target(url=gateway.url, model=fleet.public_model, stream=True, timeout_s=60.0)
        load = Load(
            rate=scenario.rate, process="poisson", duration_s=scenario.load_s, seed=self.opts.seed
        )
        self.load_t0 = time.perf_counter()
        self.load_wall_start = time.time()
        self.phase = "load"
        await run_load(
            target, source, load, on_result=self.log.add, stop=self.stop_load, scrape_metrics=False
        )

    async def watchdog(self, gateway: GatewayProcess) -> None:
        """End the run with a clear error if the gateway process dies."""
        while gateway.proc.poll() is None:
            await asyncio.sleep(0.5)
        tail = "\n".join(gateway.log().strip().splitlines()[-15:])
        code = gateway.proc.returncode
        raise SkyfleetError(f"the gateway exited unexpectedly (code {code}):\n{tail}")

    async def stop_at(self, when: float) -> None:
        await asyncio.sleep(max(0.0, when - time.monotonic()))
        self.stop_load.set()

    # -- the whole run ------------------------------------------------------------------
    async def run(self) -> DemoRun:
        from skyfleet.dashboard.ledger_tail import LedgerTail
        from skyfleet.dashboard.source import HttpSource

        check_port(self.opts.host, self.opts.port)
        require_parts()
        fleet = self.fleet = await self.plan()
        provider = pick_outage_provider(fleet, self.opts.outage_provider)
        outage = self.outage = Outage(
            provider,
            [endpoint.name for endpoint in fleet.endpoints if endpoint.provider == provider],
        )
        gateway = self.gateway = await self.start_fleet(fleet)
        startup = time.monotonic() - self.t_start
        self.say(
            f"gateway up at [bold]{gateway.url}[/] · dashboard [link]{gateway.url}/dashboard/"
            f"#key={fleet.admin_key}[/link]"
        )
        tail_s = max(5.0, 0.08 * self.opts.duration_s)
        load_s = self.remaining() - tail_s
        if load_s < MIN_LOAD_S:
            need = startup + tail_s + MIN_LOAD_S
            raise SkyfleetError(
                f"--duration {self.opts.duration_s:g}s leaves {max(load_s, 0):.0f}s of load after "
                f"{startup:.0f}s of start-up; use --duration {need:.0f} or more"
            )
        base = fleet.plan.demand(fleet.public_model)
        base_rps = max(base) * self.opts.time_scale
        scenario = self.scenario = Scenario(load_s, base_rps, self.opts.surge_factor, provider)
        tenants = {tenant["name"]: tenant["priority"] for tenant in fleet.config["tenants"]}
        source = HttpSource(
            gateway.url, fleet.admin_key, ledger=LedgerTail(self.workdir / "usage.sqlite", tenants)
        )
        self.say(
            f"load: {base_rps:.1f} req/s (the plan's peak × time scale), surge ×"
            f"{self.opts.surge_factor:g}, {provider} down at {scenario.outage_at:.0f}s and back "
            f"at {scenario.recover_at:.0f}s of {load_s:.0f}s"
        )
        tasks = [
            asyncio.create_task(self.sample_loop(source)),
            asyncio.create_task(self.chaos(scenario, outage)),
            asyncio.create_task(self.stop_at(self.deadline - 0.6 * tail_s)),
        ]
        view = self.view_factory(self) if self.view_factory else None
        if view is not None:
            tasks.append(asyncio.create_task(view.run()))
        try:
            drive = asyncio.create_task(self.drive(fleet, gateway, scenario))
            watch = asyncio.create_task(self.watchdog(gateway))
            tasks.append(watch)
            done, _ = await asyncio.wait({drive, watch}, return_when=asyncio.FIRST_COMPLETED)
            if watch in done:
                drive.cancel()
                await asyncio.gather(drive, return_exceptions=True)
                watch.result()  # raises the gateway's failure
            await drive
            self.phase = "report"
            await asyncio.sleep(0.6)  # the ledger flushes every 0.5 s
            with contextlib.suppress(Exception):
                self.monitor.add(await source.sample())
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if view is not None:
                view.close()
            await source.close()
            if outage.down_at is not None and outage.up_at is None:
                with contextlib.suppress(Exception):
                    await self.inject(outage, down=False)
        return DemoRun(
            self.opts,
            fleet,
            scenario,
            self.log,
            self.monitor,
            outage,
            self.load_wall_start,
            startup,
            gateway.url,
        )

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def run_demo(
    opts: DemoOptions,
    console: Console,
    view: Callable[[Demo], Any] | None = None,
) -> tuple[DemoRun | None, ChildGroup]:
    """Run the demo in a fresh event loop; every child is stopped before this returns.

    SIGINT (Ctrl-C) and SIGTERM cancel the run; the children are stopped and KeyboardInterrupt
    is raised to the caller.
    """
    children = ChildGroup()
    demo = Demo(opts, console, children, view)

    async def main() -> DemoRun:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            for sig in (signal.SIGINT, signal.SIGTERM):
                # explicit, so Ctrl-C works even where SIGINT was inherited as ignored
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, task.cancel)
        return await demo.run()

    try:
        try:
            result = asyncio.run(main())
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None
        return result, children
    finally:
        old = _ignore_sigint()
        try:
            left = children.stop_all(log=lambda message: console.print(f"[yellow]{message}[/]"))
            if left:
                console.print(f"[yellow]killed {len(left)} leftover process(es)[/]")
            demo.cleanup()
        finally:
            _restore_sigint(old)


def _ignore_sigint() -> Any:
    """Ignore Ctrl-C while stopping children (a second Ctrl-C must not abort the cleanup)."""
    try:
        return signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        return None


def _restore_sigint(old: Any) -> None:
    if old is not None:
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(signal.SIGINT, old)
