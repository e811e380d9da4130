"""Gateway CPU per request for translated providers (Anthropic, Bedrock) vs the OpenAI
pass-through, side by side in one run (issue #14: translation costs at most 2× the
pass-through's CPU per request).

One near-zero-work fake upstream per kind (raw asyncio, all pinned to the same CPU):
`gateway/fake_upstream.py` (OpenAI) and `gateway/fake_providers.py` (Anthropic Messages
JSON / SSE with named events; Bedrock Converse JSON / ConverseStream event-stream framing),
answering with the same token counts. One `skyfleet serve --workers 1` per kind with the same
config except the endpoint's kind, all pinned to the proxy CPU. The same closed-loop load
(bench_gateway.py's request, `--concurrency` connections) runs against each gateway in
turn — JSON, then streams of `--chunks` content events — interleaved A/B/C and repeated
`--repeats` times (the order rotates each round). For every run it records requests/s and the
gateway's CPU seconds (its process tree, user + system, from /proc) in the measured window:

    ratio = translated CPU µs/request ÷ pass-through CPU µs/request of the same round

Median and spread (min–max) over the rounds are reported. `--profile DIR` then records a
py-spy profile (raw collapsed stacks in DIR) of each gateway under the same load, one run per
kind and mode, and puts its CPU by category and top functions (as µs/request) in the JSON.

    .venv/bin/python benchmarks/bench_provider_overhead.py [--duration 8] [--repeats 3]

Prints a rich table, writes benchmarks/results/bench_provider_overhead.json. Only 127.0.0.1
is used; every process started is stopped on exit, error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_gateway import KEY, MODES, REQ, body, cpu_plan, measure_in_tmp, run_client, write_result
from gateway import procs

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "bench_provider_overhead.json"
FAKES = {
    "openai": [str(HERE / "gateway" / "fake_upstream.py")],
    "anthropic": [str(HERE / "gateway" / "fake_providers.py"), "anthropic"],
    "bedrock": [str(HERE / "gateway" / "fake_providers.py"), "bedrock"],
}
KINDS = ("openai", "anthropic", "bedrock")
BASE = "openai"  # the pass-through every ratio divides by
TARGET_RATIO = 2.0
BEDROCK_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"  # ':' is percent-encoded and signed
JSON_TOKENS = 32  # completion tokens of every fake's JSON answer (prompt: 120)


@dataclass
class Kind:
    """One provider kind under test: its fake upstream and the gateway in front of it."""

    name: str
    upstream_pid: int
    gateway: Any  # skyfleet.gateway.process.GatewayProcess


def endpoint(kind: str, port: int) -> dict[str, Any]:
    """The fleet config's endpoint for a kind; everything else is shared."""
    ep: dict[str, Any] = {"name": "fake", "provider": "local", "capacity": 100000}
    if kind == "openai":
        return ep | {"url": f"http://127.0.0.1:{port}/v1", "model": "m"}
    ep |= {"kind": kind, "url": f"http://127.0.0.1:{port}"}
    if kind == "anthropic":
        return ep | {"model": "m", "api_key": "sk-ant-bench"}
    creds = {"access_key_id": "AKIDBENCH", "secret_access_key": "bench-secret"}
    return ep | {"model": BEDROCK_MODEL, "bedrock": {"region": "us-east-1", **creds}}


def start_kind(ps: procs.Procs, tmp: Path, kind: str, cpus: set[int] | None, chunks: int) -> Kind:
    """The fake upstream of `kind` (pinned) and a `skyfleet serve` in front of it."""
    from skyfleet.config import hash_key
    from skyfleet.gateway.process import start_gateway

    port = procs.free_port()
    p = ps.start(f"upstream-{kind}", [sys.executable, *FAKES[kind], str(port), str(chunks)])
    procs.wait_http(f"http://127.0.0.1:{port}/health", p, 20, f"fake {kind} upstream")
    procs.pin(p.pid, cpus)
    cfg = {
        "server": {"watch_config": False},
        "ledger": {"path": str(tmp / f"usage-{kind}.sqlite")},
        "routing": {"scrape_interval_s": 0},
        "providers": [{"name": "local"}],
        "endpoints": [endpoint(kind, port)],
        "models": [{"name": "chat", "endpoints": ["fake"]}],
        "tenants": [{"name": "bench", "api_keys": [hash_key(KEY)]}],
    }
    path = tmp / f"fleet-{kind}.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    gw = start_gateway(path, env={"SKYFLEET_LOG_LEVEL": "WARNING"})
    return Kind(kind, p.pid, gw)


def _sse_data(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for ev in raw.split(b"\n\n"):
        for line in ev.split(b"\n"):
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                out.append(json.loads(line[6:]))
    return out


def preflight(k: Kind) -> dict[str, Any]:
    """One JSON and two streamed requests (load body; with usage) through the gateway:
    the client-visible text and token counts, to compare across kinds."""
    url = f"{k.gateway.url}/v1/chat/completions"
    h = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    status, data = procs.post(url, body("json").encode(), h)
    if status != 200:
        raise RuntimeError(f"{k.name}: pre-flight JSON request gave {status}: {data[:300]!r}")
    ans = json.loads(data)
    seen: dict[str, Any] = {
        "json_text": ans["choices"][0]["message"]["content"],
        "json_usage": [ans["usage"]["prompt_tokens"], ans["usage"]["completion_tokens"]],
    }
    for with_usage in (False, True):
        req = {**REQ, "stream": True}
        if with_usage:
            req["stream_options"] = {"include_usage": True}
        status, data = procs.post(url, json.dumps(req).encode(), h)
        if status != 200 or not data.rstrip().endswith(b"data: [DONE]"):
            raise RuntimeError(f"{k.name}: pre-flight stream gave {status}: {data[-300:]!r}")
        chunks = _sse_data(data)
        deltas = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
        text = [d for d in deltas if d]
        if with_usage:
            u = next(c["usage"] for c in chunks if c.get("usage"))
            seen["stream_usage"] = [u["prompt_tokens"], u["completion_tokens"]]
        else:
            seen["stream_text"] = "".join(text)
            seen["stream_content_events"] = len(text)
    return seen


def check_same(seen: dict[str, dict[str, Any]], chunks: int) -> None:
    """Every kind must give the client the same answer (text, token counts)."""
    want = {
        "json_text": "word " * JSON_TOKENS,
        "json_usage": [120, JSON_TOKENS],
        "stream_text": "word " * chunks,
        "stream_content_events": chunks,
        "stream_usage": [120, chunks],
    }
    for kind, got in seen.items():
        if got != want:
            diff = {key: (got.get(key), v) for key, v in want.items() if got.get(key) != v}
            raise RuntimeError(f"{kind}: the gateway's answer differs (got, want): {diff}")


def one_run(k: Kind, mode: str, a: argparse.Namespace, plan: dict[str, Any]) -> dict[str, Any]:
    """One closed-loop window against k's gateway: requests/s and CPU of every process."""
    procs.pin(k.gateway.proc.pid, plan["proxy"])  # threads started since (executors) too
    headers = {"Authorization": f"Bearer {KEY}"}
    spec: dict[str, Any] = {"path": "/v1/chat/completions", "body": body(mode), "headers": headers}
    spec |= {"duration": a.duration, "warmup": a.warmup, "timeout": 30, "mode": "closed"}
    spec |= {"concurrency": a.concurrency, "port": k.gateway.port}
    spec["pids"] = {"upstream": procs.tree(k.upstream_pid), "proxy": procs.tree(k.gateway.proc.pid)}
    r = run_client(spec, plan["client"], a.duration + a.warmup + 60)
    cpu = r["cpu_s"].get("proxy")
    return {
        "rps": r["rps"],
        "requests": r["requests"],
        "errors": r["errors"],
        "wall_s": r["wall_s"],
        "cpu_s": r["cpu_s"],
        "cpu_us_per_request": cpu / r["requests"] * 1e6 if cpu and r["requests"] else None,
        "proxy_cpu_cores": cpu / r["wall_s"] if cpu else None,
        "upstream_cpu_us_per_request": (
            r["cpu_s"]["upstream"] / r["requests"] * 1e6 if r["requests"] else None
        ),
        "latency_ms": r["latency_ms"],
        "loadavg_after": os.getloadavg()[0],
    }


# where a gateway's CPU goes: frames (py-spy raw, `func (path:line)`) matched by path
CATEGORIES = {
    "adapter (skyfleet.providers)": "skyfleet/providers/",
    "SigV4 signing (botocore)": "botocore/",
    "pass-through SSE relay": "skyfleet/gateway/sse.py",
    "upstream URL (yarl)": "yarl/",
    "aiohttp client": "aiohttp/client",
    "aiohttp server": "aiohttp/web",
    "ledger": "skyfleet/gateway/ledger/",
    "metrics (prometheus_client)": "prometheus_client/",
}


def spy_summary(path: Path, cpu_us: float | None) -> dict[str, Any]:
    """Shares of py-spy samples by category (inclusive) and by function (self), also as
    µs/request (share × the profiled run's measured CPU µs/request)."""
    stacks: list[tuple[list[str], int]] = []
    for line in path.read_text().splitlines():
        frames, _, n = line.rpartition(" ")
        if frames and n.isdigit():
            stacks.append((frames.split(";"), int(n)))
    total = sum(n for _, n in stacks) or 1
    cats = {c: 0 for c in CATEGORIES}
    self_time: dict[str, int] = {}
    for frames, n in stacks:
        for cat, needle in CATEGORIES.items():
            if any(needle in f for f in frames):
                cats[cat] += n
        top = re.sub(r":\d+\)$", ")", frames[-1])
        self_time[top] = self_time.get(top, 0) + n

    def share(n: int) -> dict[str, float | None]:
        return {"share": n / total, "us_per_request": n / total * cpu_us if cpu_us else None}

    top_self = sorted(self_time.items(), key=lambda kv: -kv[1])[:15]
    return {
        "samples": total,
        "cpu_us_per_request": cpu_us,
        "categories": {c: share(n) for c, n in cats.items()},
        "top_self": {f: share(n) for f, n in top_self},
    }


def profile(
    k: Kind, mode: str, a: argparse.Namespace, plan: dict[str, Any], out: Path
) -> dict[str, Any]:
    """py-spy record (raw collapsed stacks) of k's gateway during one closed-loop window."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    dest = out / f"{k.name}-{mode}.txt"
    secs = max(2, int(a.duration))
    cmd = [spy, "record", "-p", str(k.gateway.proc.pid), "-d", str(secs), "-r", "250"]
    cmd += ["-f", "raw", "-o", str(dest), "--nonblocking"]
    if plan["client"]:  # py-spy samples from the client's CPU, not the gateway's
        cmd = ["taskset", "-c", ",".join(map(str, sorted(plan["client"]))), *cmd]
    spy_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        r = one_run(k, mode, argparse.Namespace(**{**vars(a), "warmup": 0.5}), plan)
        spy_proc.wait(secs + 30)
    finally:
        if spy_proc.poll() is None:
            spy_proc.terminate()
            spy_proc.wait(10)
    return {"kind": k.name, "mode": mode, "file": str(dest)} | spy_summary(
        dest, r["cpu_us_per_request"]
    )


def measure(a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    plan = cpu_plan(a.no_pin)
    ps = procs.Procs(tmp)
    kinds: list[Kind] = []
    loads = [os.getloadavg()[0]]
    try:
        for name in KINDS:
            kinds.append(start_kind(ps, tmp, name, plan["upstream"], a.chunks))
        seen = {k.name: preflight(k) for k in kinds}
        check_same(seen, a.chunks)
        rows: list[dict[str, Any]] = []
        for rnd in range(a.repeats):
            order = kinds[rnd % len(kinds) :] + kinds[: rnd % len(kinds)]  # rotate each round
            for mode in MODES:
                for k in order:
                    print(f"  round {rnd + 1}/{a.repeats} {mode:6} {k.name:9} ...", flush=True)
                    r = one_run(k, mode, a, plan)
                    loads.append(r["loadavg_after"])
                    rows.append({"round": rnd, "kind": k.name, "mode": mode, **r})
        profiles = []
        if a.profile:
            out = Path(a.profile)
            out.mkdir(parents=True, exist_ok=True)
            for mode in MODES:
                for k in kinds:
                    print(f"  profile {mode:6} {k.name:9} ...", flush=True)
                    profiles.append(profile(k, mode, a, plan, out))
        return {
            "rows": rows,
            "answers": seen,
            "profiles": profiles,
            "loadavg_1min": {"min": min(loads), "max": max(loads), "samples": loads},
            "cpu_plan": {key: sorted(v) if v else None for key, v in plan.items()},
        }
    finally:
        for k in kinds:
            k.gateway.stop(10)
        ps.stop_all()


def _spread(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    """Per mode and kind: median and spread of req/s, CPU µs/request and the ratio."""
    rows = res["rows"]
    out: dict[str, Any] = {}
    for mode in MODES:
        per: dict[str, Any] = {}
        base = {r["round"]: r for r in rows if r["mode"] == mode and r["kind"] == BASE}
        for kind in KINDS:
            mine = [r for r in rows if r["mode"] == mode and r["kind"] == kind]
            paired = [
                (r["cpu_us_per_request"], base[r["round"]]["cpu_us_per_request"])
                for r in mine
                if r["cpu_us_per_request"] and base[r["round"]]["cpu_us_per_request"]
            ]
            per[kind] = {
                "rps": _spread([r["rps"] for r in mine]),
                "cpu_us_per_request": _spread([c for c, _ in paired]),
                "proxy_cpu_cores": _spread([r["proxy_cpu_cores"] or 0.0 for r in mine]),
                "upstream_cpu_us_per_request": _spread(
                    [r["upstream_cpu_us_per_request"] or 0.0 for r in mine]
                ),
                "ratio_vs_passthrough": _spread([c / b for c, b in paired]),
                "extra_cpu_us_per_request": _spread([c - b for c, b in paired]),
                "errors": sum(sum(r["errors"].values()) for r in mine),
                "rounds": len(mine),
            }
            if kind != BASE:
                per[kind]["target_met"] = (
                    per[kind]["ratio_vs_passthrough"]["median"] <= TARGET_RATIO
                )
        out[mode] = per
    return out


def _range(s: dict[str, float], fmt: str) -> str:
    return f"{s['median']:{fmt}} ({s['min']:{fmt}}–{s['max']:{fmt}})"


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def show(summary: dict[str, Any], res: dict[str, Any], a: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=max(170, shutil.get_terminal_size().columns))
    for mode in MODES:
        t = Table(
            title=f"{mode}: gateway CPU per request by upstream kind — closed loop, "
            f"{a.concurrency} connections, {a.duration:g} s × {a.repeats} rounds; "
            "median (min–max)"
        )
        cols = ["kind", "req/s", "gateway CPU µs/req", "× pass-through", "extra µs/req"]
        cols += ["gateway cores", "upstream µs/req", "errors"]
        for c in cols:
            t.add_column(c, justify="left" if c == "kind" else "right")
        for kind, v in summary[mode].items():
            t.add_row(
                kind + (" (pass-through)" if kind == BASE else ""),
                _range(v["rps"], ",.0f"),
                _range(v["cpu_us_per_request"], ",.0f"),
                _range(v["ratio_vs_passthrough"], ".2f"),
                "-" if kind == BASE else _range(v["extra_cpu_us_per_request"], "+,.0f"),
                _range(v["proxy_cpu_cores"], ".2f"),
                _range(v["upstream_cpu_us_per_request"], ",.0f"),
                str(v["errors"]),
            )
        con.print(t)
        verdicts = [
            f"{kind} {v['ratio_vs_passthrough']['median']:.2f}× "
            f"({'met' if v['target_met'] else 'MISSED'})"
            for kind, v in summary[mode].items()
            if kind != BASE
        ]
        con.print(f"  {mode}: target ≤ {TARGET_RATIO:g}× the pass-through: " + "; ".join(verdicts))
    if res["profiles"]:
        t = Table(title="py-spy: gateway CPU µs/request by where it is spent (inclusive)")
        t.add_column("category")
        for pr in res["profiles"]:
            t.add_column(f"{pr['kind']} {pr['mode']}", justify="right")
        t.add_row(
            "whole request (measured)", *(_f(p["cpu_us_per_request"]) for p in res["profiles"])
        )
        for cat in CATEGORIES:
            t.add_row(cat, *(_f(p["categories"][cat]["us_per_request"]) for p in res["profiles"]))
        con.print(t)
    la = res["loadavg_1min"]
    con.print(f"  load average (1 min) during the run: {la['min']:.2f}–{la['max']:.2f}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=8.0, help="seconds measured per run")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds before each window")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of A/B/C runs (≥ 3)")
    ap.add_argument("--concurrency", type=int, default=64, help="closed-loop connections")
    ap.add_argument("--chunks", type=int, default=8, help="content events per stream")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    ap.add_argument("--profile", metavar="DIR", help="also write py-spy profiles to DIR")
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args()
    if a.repeats < 1:
        ap.error("--repeats must be at least 1")
    info, t_start, res = measure_in_tmp(measure, a, "skyfleet-bench-prov-")
    summary = summarize(res)
    show(summary, res, a)
    write_result(
        Path(a.out),
        "bench_provider_overhead.py",
        info,
        t_start,
        a,
        target_ratio=TARGET_RATIO,
        summary=summary,
        **res,
    )


if __name__ == "__main__":
    main()
