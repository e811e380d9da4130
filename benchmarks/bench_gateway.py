"""Gateway overhead, side by side in one run: direct vs skyfleet vs LiteLLM proxy vs nginx.

Against a near-zero-work fake OpenAI upstream (raw asyncio, pinned to its own CPU), for JSON
and streamed chat completions it measures, for each proxy:

- max requests/s (closed loop, `--concurrency` connections, `--duration` s) and the proxy's
  CPU seconds in that window → requests/s per core (= requests / proxy CPU-seconds);
- latency at half of skyfleet's max rate and at a light rate (`--light-rate`, 100 req/s)
  (open loop, Poisson arrivals, the same rate for every target that can sustain it) →
  added latency = proxy p50/p99 minus direct p50/p99;
- memory (RSS, PSS of the process tree) idle and after the load.

    .venv/bin/python benchmarks/bench_gateway.py [--duration 10] [--skip-litellm] [--stacks]

LiteLLM runs from its own venv (benchmarks/.venv-litellm, installed on first use with a
pinned version). nginx (proxy_pass, keep-alive upstream pool) is the ceiling. `--stacks` adds
bare one-file proxies per HTTP server × client library (benchmarks/gateway_hotpath.py).
Only 127.0.0.1 is used; every process started is stopped on exit, error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import litellm_setup, procs

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "bench_gateway.json"
UPSTREAM = HERE / "gateway" / "fake_upstream.py"
HOTPATH = HERE / "gateway_hotpath.py"  # bare one-file proxies on each candidate HTTP stack
CLIENT = HERE / "gateway" / "loadclient.py"
KEY = "sk-bench"
REQ: dict[str, Any] = {
    "model": "chat",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant. " * 8},
        {"role": "user", "content": "Write a haiku about load balancers. " * 6},
    ],
    "max_tokens": 64,
    "temperature": 0.7,
}
MODES = ("json", "stream")
TARGET_P50_MS, TARGET_P99_MS, TARGET_RATIO = 1.0, 5.0, 3.0
BEFORE = "skyfleet before (1 worker)"  # --before-src: another checkout, side by side


@dataclass
class Target:
    """One thing to send load to: direct or a proxy (root pid for CPU and memory)."""

    name: str
    port: int
    pid: int | None
    mem_idle: dict[str, float] = field(default_factory=dict)
    mem_after: dict[str, float] = field(default_factory=dict)


class Stop(Exception):
    """SIGTERM/SIGHUP: unwind and clean up."""


def _on_signal(signum: int, _frame: object) -> None:
    raise Stop(signal.Signals(signum).name)


def cpu_plan(no_pin: bool) -> dict[str, set[int] | None]:
    """Which CPUs the upstream, the client and the proxy get."""
    cpus = sorted(os.sched_getaffinity(0))
    if no_pin or len(cpus) < 2:
        return {"upstream": None, "client": None, "proxy": None}
    if len(cpus) == 2:  # proxy alone on one core; upstream and client share the other
        return {"upstream": {cpus[0]}, "client": {cpus[0]}, "proxy": {cpus[1]}}
    return {"upstream": {cpus[0]}, "client": set(cpus[1:-1]), "proxy": {cpus[-1]}}


def body(mode: str) -> str:
    return json.dumps({**REQ, "stream": mode == "stream"})


def run_client(spec: dict[str, Any], cpus: set[int] | None, timeout: float) -> dict[str, Any]:
    """Run the load client once (a subprocess on its CPUs) and return its JSON result."""
    cmd = [sys.executable, str(CLIENT), json.dumps(spec)]
    if cpus:
        cmd = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode != 0 or not out.stdout.strip():
        raise RuntimeError(f"load client failed ({out.returncode}): {out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def preflight(t: Target) -> None:
    """One JSON and one streamed request must come back right before measuring."""
    url = f"http://127.0.0.1:{t.port}/v1/chat/completions"
    h = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    for mode in MODES:
        status, data = procs.post(url, body(mode).encode(), h)
        ok = status == 200 and (
            b"[DONE]" in data if mode == "stream" else b"chat.completion" in data
        )
        if not ok:
            raise RuntimeError(f"{t.name}: pre-flight {mode} request gave {status}: {data[:300]!r}")


def start_upstream(ps: procs.Procs, cpus: set[int] | None, chunks: int) -> Target:
    port = procs.free_port()
    p = ps.start("upstream", [sys.executable, str(UPSTREAM), str(port), str(chunks)])
    procs.wait_http(f"http://127.0.0.1:{port}/health", p, 20, "fake upstream")
    procs.pin(p.pid, cpus)
    return Target("direct", port, p.pid)


def start_skyfleet(tmp: Path, upstream_port: int, src: str | None = None) -> Any:
    """`skyfleet serve` in front of the upstream; `src`: run another checkout's package."""
    from skyfleet.config import hash_key
    from skyfleet.gateway.process import start_gateway

    cfg = {
        "server": {"watch_config": False},
        "ledger": {"path": str(tmp / "usage.sqlite")},
        "routing": {"scrape_interval_s": 0},
        "providers": [{"name": "local"}],
        "endpoints": [
            {
                "name": "fake",
                "provider": "local",
                "url": f"http://127.0.0.1:{upstream_port}/v1",
                "model": "m",
                "capacity": 100000,
            }
        ],
        "models": [{"name": "chat", "endpoints": ["fake"]}],
        "tenants": [{"name": "bench", "api_keys": [hash_key(KEY)]}],
    }
    path = tmp / ("fleet-before.yaml" if src else "fleet.yaml")
    cfg["ledger"] = {"path": str(tmp / ("before.sqlite" if src else "usage.sqlite"))}
    path.write_text(json.dumps(cfg))  # JSON is YAML
    env = {"SKYFLEET_LOG_LEVEL": "WARNING"}
    if src:
        env["PYTHONPATH"] = str(Path(src) / "src")  # before the installed package on sys.path
    return start_gateway(path, env=env)


def start_litellm(ps: procs.Procs, tmp: Path, venv: Path, upstream_port: int) -> Target:
    litellm_setup.ensure_litellm(venv)
    port = procs.free_port()
    cfg = litellm_setup.litellm_config(tmp / "litellm.yaml", upstream_port, KEY)
    cmd = [str(venv / "bin" / "litellm"), "--config", str(cfg), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--num_workers", "1"]
    p = ps.start("litellm", cmd, env=litellm_setup.LITELLM_ENV)
    try:
        procs.wait_http(f"http://127.0.0.1:{port}/health/liveliness", p, 180, "litellm")
    except RuntimeError as e:
        raise RuntimeError(f"{e}\n{ps.log('litellm')}") from None
    return Target(f"litellm {litellm_setup.LITELLM_VERSION}", port, p.pid)


def start_nginx(ps: procs.Procs, tmp: Path, upstream_port: int) -> Target:
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    prefix = tmp / "nginx"
    prefix.mkdir()
    port = procs.free_port()
    conf = procs.nginx_conf(prefix, port, upstream_port)
    p = ps.start("nginx", [exe, "-p", str(prefix), "-c", str(conf)])
    procs.wait_http(f"http://127.0.0.1:{port}/health", p, 20, "nginx")
    return Target("nginx", port, p.pid)


def start_stacks(ps: procs.Procs, alt_python: str, upstream_port: int) -> list[Target]:
    """Bare proxies (no auth, routing or ledger) on each server+client library pair."""
    kinds = [("aiohttp+aiohttp", sys.executable), ("aiohttp+httpx", sys.executable)]
    if Path(alt_python).exists():  # uvicorn (httptools, uvloop) lives outside the project venv
        kinds += [("uvicorn+aiohttp", alt_python), ("uvicorn+httpx", alt_python)]
    else:
        print(f"  --alt-python {alt_python} missing: skipping the uvicorn stacks")
    out = []
    for kind, py in kinds:
        port = procs.free_port()
        up = f"http://127.0.0.1:{upstream_port}"
        p = ps.start(f"bare-{kind}", [py, str(HOTPATH), "proxy", kind, str(port), up])
        procs.wait_tcp(port, p, 30, f"bare proxy {kind}")
        out.append(Target(f"bare {kind}", port, p.pid))
    return out


def measure(a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    plan = cpu_plan(a.no_pin)
    ps = procs.Procs(tmp)
    gw = before = None
    try:
        up = start_upstream(ps, plan["upstream"], a.chunks)
        targets = [up]
        gw = start_skyfleet(tmp, up.port)
        targets.append(Target("skyfleet (1 worker)", gw.port, gw.proc.pid))
        if a.before_src:
            before = start_skyfleet(tmp, up.port, a.before_src)
            targets.append(Target(BEFORE, before.port, before.proc.pid))
        if not a.skip_litellm:
            targets.append(start_litellm(ps, tmp, Path(a.litellm_venv), up.port))
        if not a.skip_nginx:
            targets.append(start_nginx(ps, tmp, up.port))
        if a.stacks:
            targets += start_stacks(ps, a.alt_python, up.port)
        for t in targets:
            preflight(t)
            if t is not up and t.pid is not None:
                procs.pin(t.pid, plan["proxy"])
                t.mem_idle = procs.memory_mib(t.pid)
        rows: list[dict[str, Any]] = []
        limit = a.duration + a.warmup + 60
        headers = {"Authorization": f"Bearer {KEY}"}
        for mode in MODES:
            base = {"path": "/v1/chat/completions", "body": body(mode), "headers": headers}
            base |= {"duration": a.duration, "warmup": a.warmup, "timeout": 30}
            maxes: dict[str, float] = {}
            for t in targets:
                pids = {"upstream": procs.tree(up.pid or 0)}
                if t is not up and t.pid is not None:
                    procs.pin(t.pid, plan["proxy"])
                    pids["proxy"] = procs.tree(t.pid)
                spec = {**base, "port": t.port, "pids": pids, "mode": "closed"}
                spec["concurrency"] = a.concurrency
                print(f"  {mode:6} {t.name:24} closed loop, {a.concurrency} connections ...")
                r = run_client(spec, plan["client"], limit)
                maxes[t.name] = r["rps"]
                rows.append({"target": t.name, "mode": mode, "load": "max", **r})
            # Latency at half of skyfleet's max rate (the point) and at a light rate
            # (little queueing: the per-request cost, less the CPU contention of a busy box).
            points = [("half", 0.5 * maxes["skyfleet (1 worker)"]), ("light", a.light_rate)]
            for load, rate in points:
                for t in targets:
                    pids = {"upstream": procs.tree(up.pid or 0)}
                    if t is not up and t.pid is not None:
                        pids["proxy"] = procs.tree(t.pid)
                    # A proxy that the rate would load over 50 % (LiteLLM) would only measure
                    # its queueing (and open thousands of connections): it is measured at
                    # half of its own max rate instead.
                    own = rate > 0.5 * maxes[t.name] and t.name != "skyfleet (1 worker)"
                    r_rate = 0.5 * maxes[t.name] if own else rate
                    spec = {**base, "port": t.port, "pids": pids, "mode": "open", "rate": r_rate}
                    spec |= {"arrivals": a.arrivals, "timeout": 10}
                    print(f"  {mode:6} {t.name:24} open loop at {r_rate:,.0f} req/s ...")
                    r = run_client(spec, plan["client"], limit)
                    row = {"target": t.name, "mode": mode, "load": load, "rate": r_rate, **r}
                    rows.append(row | {"own_rate": own})
        for t in targets:
            if t is not up and t.pid is not None:
                t.mem_after = procs.memory_mib(t.pid)
        return {
            "rows": rows,
            "targets": [
                {"name": t.name, "memory_idle": t.mem_idle, "memory_after": t.mem_after}
                for t in targets
            ],
            "cpu_plan": {k: sorted(v) if v else None for k, v in plan.items()},
        }
    finally:
        for g in (gw, before):
            if g is not None:
                g.stop(10)
        ps.stop_all()


def _row(rows: list[dict[str, Any]], target: str, mode: str, load: str) -> dict[str, Any]:
    return next(
        r for r in rows if r["target"] == target and r["mode"] == mode and r["load"] == load
    )


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _le(a: float | None, limit: float) -> bool | None:
    return None if a is None else a <= limit


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    """Per-core rates, added latency, ratios and whether the issue's targets are met."""
    rows = res["rows"]
    names = [t["name"] for t in res["targets"]]
    out: dict[str, Any] = {}
    for mode in MODES:
        d_half = _row(rows, "direct", mode, "half")
        per: dict[str, Any] = {}
        for n in names:
            mx, half = _row(rows, n, mode, "max"), _row(rows, n, mode, "half")
            light, d_light = _row(rows, n, mode, "light"), _row(rows, "direct", mode, "light")
            cpu = mx["cpu_s"].get("proxy")
            lat, dl = half["latency_ms"], d_half["latency_ms"]
            per[n] = {
                "max_rps": mx["rps"],
                "proxy_cpu_cores": cpu / mx["wall_s"] if cpu else None,
                "rps_per_core": mx["requests"] / cpu if cpu else None,
                "client_cpu_cores": mx["cpu_s"]["client"] / mx["wall_s"],
                "upstream_cpu_cores": mx["cpu_s"]["upstream"] / mx["wall_s"],
                "errors": sum(mx["errors"].values()) + sum(half["errors"].values()),
                "half_rate": half["rate"],
                "half_rps": half["rps"],
                "own_rate": half.get("own_rate", False),
                "p50_ms": lat["p50"],
                "p99_ms": lat["p99"],
                "added_p50_ms": _sub(lat["p50"], dl["p50"]) if n != "direct" else None,
                "added_p99_ms": _sub(lat["p99"], dl["p99"]) if n != "direct" else None,
                "cpu_us_per_request": cpu / mx["requests"] * 1e6 if cpu else None,
                "light_rate": light["rate"],
                "light_own_rate": light.get("own_rate", False),
                "light_p50_ms": light["latency_ms"]["p50"],
                "light_p99_ms": light["latency_ms"]["p99"],
                "light_added_p50_ms": _sub(light["latency_ms"]["p50"], d_light["latency_ms"]["p50"])
                if n != "direct"
                else None,
                "light_added_p99_ms": _sub(light["latency_ms"]["p99"], d_light["latency_ms"]["p99"])
                if n != "direct"
                else None,
                "ttfb_p50_ms": half["ttfb_ms"]["p50"],
                "ttfb_p99_ms": half["ttfb_ms"]["p99"],
            }
        sky = per["skyfleet (1 worker)"]
        lite = next((v for k, v in per.items() if k.startswith("litellm")), None)
        ngx = per.get("nginx")
        ratio = (
            sky["rps_per_core"] / lite["rps_per_core"]
            if lite and lite["rps_per_core"] and sky["rps_per_core"]
            else None
        )
        old = per.get(BEFORE)
        out[mode] = {
            "per_target": per,
            "skyfleet_vs_before_per_core": (
                sky["rps_per_core"] / old["rps_per_core"]
                if old and old["rps_per_core"] and sky["rps_per_core"]
                else None
            ),
            "skyfleet_vs_litellm_per_core": ratio,
            "skyfleet_vs_litellm_max_rps": sky["max_rps"] / lite["max_rps"] if lite else None,
            "skyfleet_vs_nginx_per_core": (
                sky["rps_per_core"] / ngx["rps_per_core"]
                if ngx and ngx["rps_per_core"] and sky["rps_per_core"]
                else None
            ),
            "targets_met": {
                "per_core_ratio_ge_3": None if ratio is None else ratio >= TARGET_RATIO,
                "added_p50_le_1ms": _le(sky["added_p50_ms"], TARGET_P50_MS),
                "added_p99_le_5ms": _le(sky["added_p99_ms"], TARGET_P99_MS),
            },
        }
    return out


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def show(res: dict[str, Any], summary: dict[str, Any], a: argparse.Namespace) -> None:
    """Two rich tables per mode (throughput + memory, latency) and the target verdicts."""
    from rich.console import Console
    from rich.table import Table

    con = Console(width=max(130, shutil.get_terminal_size().columns))
    mem = {t["name"]: t for t in res["targets"]}
    for mode in MODES:
        s = summary[mode]
        t = Table(
            title=f"{mode}: max rate, closed loop, {a.concurrency} connections, {a.duration:g} s"
        )
        cols = ["target", "max req/s", "proxy CPU", "req/s per core", "CPU µs/req", "client CPU"]
        cols += ["upstream CPU", "RSS MiB idle→after", "errors"]
        for c in cols:
            t.add_column(c, justify="left" if c == "target" else "right")
        for name, v in s["per_target"].items():
            m = mem[name]
            rss = "-"
            if m["memory_after"]:
                rss = f"{m['memory_idle']['rss_mib']:.0f}→{m['memory_after']['rss_mib']:.0f}"
            t.add_row(
                name,
                _f(v["max_rps"], ",.0f"),
                _f(v["proxy_cpu_cores"], ".2f"),
                _f(v["rps_per_core"], ",.0f"),
                _f(v["cpu_us_per_request"], ",.0f"),
                _f(v["client_cpu_cores"], ".2f"),
                _f(v["upstream_cpu_cores"], ".2f"),
                rss,
                str(v["errors"]),
            )
        con.print(t)
        t = Table(title=f"{mode}: latency, open loop ({a.arrivals}), ms; added = minus direct")
        cols = ["target", "half: req/s", "p50", "p99", "added p50", "added p99"]
        cols += ["light: req/s", "p50", "p99", "added p50", "added p99"]
        for c in cols:
            t.add_column(c, justify="left" if c == "target" else "right")
        for name, v in s["per_target"].items():
            t.add_row(
                name,
                _f(v["half_rate"], ",.0f") + ("*" if v["own_rate"] else ""),
                _f(v["p50_ms"], ".2f"),
                _f(v["p99_ms"], ".2f"),
                _f(v["added_p50_ms"], "+.2f"),
                _f(v["added_p99_ms"], "+.2f"),
                _f(v["light_rate"], ",.0f") + ("*" if v["light_own_rate"] else ""),
                _f(v["light_p50_ms"], ".2f"),
                _f(v["light_p99_ms"], ".2f"),
                _f(v["light_added_p50_ms"], "+.2f"),
                _f(v["light_added_p99_ms"], "+.2f"),
            )
        con.print(t)
        con.print("  * that rate is over half of its max: measured at half of its own max rate")
        ratio, ngx = s["skyfleet_vs_litellm_per_core"], s["skyfleet_vs_nginx_per_core"]
        met = s["targets_met"]
        r_txt = "-" if ratio is None else f"{ratio:.1f}x"
        n_txt = "-" if ngx is None else f"{ngx:.2f}x"
        con.print(
            f"  {mode}: skyfleet / LiteLLM req/s per core = {r_txt} (target ≥ {TARGET_RATIO:g}x: "
            f"{met['per_core_ratio_ge_3']}); skyfleet / nginx per core = {n_txt}; "
            f"at half rate added p50 ≤ 1 ms: {met['added_p50_le_1ms']}, "
            f"added p99 ≤ 5 ms: {met['added_p99_le_5ms']}\n"
        )


def measure_in_tmp(
    measure: Callable[[argparse.Namespace, Path], dict[str, Any]],
    a: argparse.Namespace,
    prefix: str,
) -> tuple[dict[str, Any], float, dict[str, Any]]:
    """Run `measure(a, tmp)` in a temp dir that is removed after; Ctrl-C, SIGTERM and SIGHUP
    stop it (every process it started is stopped). The machine, start time and result."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if inherited as ignored
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    info = machine()
    t_start = time.time()
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        res = measure(a, tmp)
    except KeyboardInterrupt:
        sys.exit("interrupted: every process started was stopped")
    except Stop as e:
        sys.exit(f"stopped by {e}: every process started was stopped")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info, t_start, res


def write_result(
    out: Path,
    script: str,
    info: dict[str, Any],
    t_start: float,
    a: argparse.Namespace,
    **fields: Any,
) -> None:
    """The results JSON: command, machine, start, elapsed, args, then `fields`."""
    doc = {
        "command": " ".join([".venv/bin/python", f"benchmarks/{script}", *sys.argv[1:]]),
        "machine": info,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
        "elapsed_s": time.time() - t_start,
        "args": vars(a),
        **fields,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    print(f"wrote {out} ({doc['elapsed_s']:.0f} s)")


def machine() -> dict[str, Any]:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    names = [ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if "Model name" in ln]
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": names[0] if names else "",
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "loadavg_at_start": load,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds measured per run")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds before each window")
    ap.add_argument("--concurrency", type=int, default=64, help="closed-loop connections")
    ap.add_argument("--arrivals", choices=("poisson", "uniform"), default="poisson")
    ap.add_argument("--light-rate", type=float, default=100.0, help="second latency point")
    ap.add_argument("--chunks", type=int, default=8, help="SSE content events per stream")
    ap.add_argument("--skip-litellm", action="store_true")
    ap.add_argument(
        "--before-src", help="also run the gateway of another checkout (e.g. a git worktree)"
    )
    ap.add_argument("--skip-nginx", action="store_true")
    ap.add_argument(
        "--stacks",
        action="store_true",
        help="also bare proxies per HTTP server+client library (benchmarks/gateway_hotpath.py)",
    )
    ap.add_argument("--alt-python", default="/tmp/hpvenv/bin/python", help="has uvicorn")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    ap.add_argument("--litellm-venv", default=str(HERE / ".venv-litellm"))
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args()
    info, t_start, res = measure_in_tmp(measure, a, "skyfleet-bench-gw-")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"partial": True, **res}, indent=2))  # kept if summarising fails
    summary = summarize(res)
    show(res, summary, a)
    write_result(
        out,
        "bench_gateway.py",
        info,
        t_start,
        a,
        litellm_version=None if a.skip_litellm else litellm_setup.LITELLM_VERSION,
        summary=summary,
        **res,
    )


if __name__ == "__main__":
    main()
