"""Benchmark: one emulator process on one core with 100 / 300 / 500 / 700 concurrent streams.

The emulator is pinned to CPU 0 (taskset semantics: os.sched_setaffinity) and this client
to CPU 1. Each level is a closed loop of N streaming clients (prompt 200 tokens, 256
output tokens, back to back, started over 5 s). Over an 8 s window after a 12 s warm-up
it measures the emulator's mean TTFT and TPOT (its vLLM histograms, wall clock), the
clients' TPOT, the emulator's CPU use (/proc/PID/stat), the time it was runnable but
waiting for a CPU taken by other processes ("starved", /proc/PID/schedstat) and its loop
lag. It compares them with the same engine run in virtual time on the very same arrivals
(zero overhead: what the emulator should show) and with the analytic model at that
concurrency (skyfleet.perf.rate_at_concurrency).
Writes benchmarks/results/bench_emulator.json.

    .venv/bin/python benchmarks/bench_emulator.py [--profile MODEL@ACCEL[xN]] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.table import Table

from skyfleet.emulator.metrics import metric, parse_metrics
from skyfleet.emulator.probe import prompt_of_tokens
from skyfleet.emulator.process import start_emulator
from skyfleet.emulator.virtual import run_trace
from skyfleet.perf import RequestSizes, parse_profile_spec

ROOT = Path(__file__).resolve().parents[1]
PROMPT, OUTPUT = 200, 256
RAMP_S, WARMUP_S, WINDOW_S = 5.0, 12.0, 8.0


class Window:
    """Client-side token gaps (token-weighted, like vLLM) and TTFTs (send → first content
    chunk) of tokens arriving inside the measurement window."""

    def __init__(self) -> None:
        self.t0 = self.t1 = float("inf")
        self.gap_sum = 0.0
        self.gap_n = 0
        self.ttft_sum = 0.0
        self.ttft_n = 0


async def one(
    session: aiohttp.ClientSession, url: str, body: bytes, w: Window, sent: list[float]
) -> None:
    """One streamed request; tokens counted per read without JSON parsing (cheap client)."""
    start = time.perf_counter()
    sent.append(start)
    prev = 0.0
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
        async for chunk in resp.content.iter_any():
            n = chunk.count(b'"content"')
            if n:
                now = time.perf_counter()
                if prev and w.t0 <= now < w.t1:
                    w.gap_sum += now - prev
                    w.gap_n += n
                elif not prev and w.t0 <= now < w.t1:
                    w.ttft_sum += now - start
                    w.ttft_n += 1
                prev = now


async def closed_loop(base: str, model: str, users: int, w: Window, sent: list[float]) -> None:
    """`users` clients sending back to back (started over RAMP_S) until cancelled."""
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": prompt_of_tokens(PROMPT)}],
            "max_tokens": OUTPUT,
            "stream": True,
        }
    ).encode()
    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:

        async def user(i: int) -> None:
            await asyncio.sleep(i * RAMP_S / users)
            while True:
                await one(s, base + "/v1/chat/completions", body, w, sent)

        await asyncio.gather(*(user(i) for i in range(users)))


def runqueue_wait_seconds(pid: int) -> float:
    """Seconds the process spent runnable but waiting for a CPU (/proc/PID/schedstat)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def scrape(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
        return parse_metrics(await r.text())


def hist_mean(a: dict[str, float], b: dict[str, float], name: str) -> float:
    n = metric(b, name + "_count") - metric(a, name + "_count")
    return (metric(b, name + "_sum") - metric(a, name + "_sum")) / max(n, 1)


async def level(emu_url: str, pid: int, model: str, users: int) -> dict[str, Any]:
    w, sent = Window(), []
    t0 = time.perf_counter()
    load = asyncio.create_task(closed_loop(emu_url, model, users, w, sent))
    await asyncio.sleep(WARMUP_S)
    a, cpu_a, w0 = await scrape(emu_url), cpu_seconds(pid), time.perf_counter()
    rq_a = runqueue_wait_seconds(pid)
    w.t0, w.t1 = w0, w0 + WINDOW_S
    await asyncio.sleep(WINDOW_S)
    b, cpu_b, w1 = await scrape(emu_url), cpu_seconds(pid), time.perf_counter()
    rq_b = runqueue_wait_seconds(pid)
    load.cancel()  # clients disconnect; the emulator aborts their sequences
    with contextlib.suppress(asyncio.CancelledError):
        await load
    return {
        "users": users,
        "running_at_window_start": metric(a, "vllm:num_requests_running"),
        "waiting_at_window_start": metric(a, "vllm:num_requests_waiting"),
        "requests_sent": len(sent),
        "ttft_s": hist_mean(a, b, "vllm:time_to_first_token_seconds"),
        "tpot_s": hist_mean(a, b, "vllm:time_per_output_token_seconds"),
        "client_tpot_s": w.gap_sum / max(w.gap_n, 1),
        "client_ttft_s": w.ttft_sum / max(w.ttft_n, 1),
        "lag_mean_s": hist_mean(a, b, "skyfleet_emulator_loop_lag_seconds"),
        "lag_max_s": metric(b, "skyfleet_emulator_loop_lag_max_seconds"),
        "cpu_fraction": (cpu_b - cpu_a) / (w1 - w0),
        "runqueue_wait_fraction": (rq_b - rq_a) / (w1 - w0),
        "tokens_per_s": (
            metric(b, "vllm:generation_tokens_total") - metric(a, "vllm:generation_tokens_total")
        )
        / (w1 - w0),
        "_window": (w0 - t0, w1 - t0),
        "_sent": [x - t0 for x in sent],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="Llama-3.1-8B@H100-SXM-80GB")
    ap.add_argument("--quick", action="store_true", help="levels 100 and 500 only")
    args = ap.parse_args()
    console = Console(width=200)
    # max_num_seqs 1024 so that every stream is in the running batch (none queue).
    base = parse_profile_spec(args.profile)
    prof = base.model_copy(update={"engine": base.engine.model_copy(update={"max_num_seqs": 1024})})
    tmp = Path(tempfile.mkdtemp()) / "profile.yaml"
    prof.save(tmp)
    multi = hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2
    if multi:
        os.sched_setaffinity(0, {1})
    levels = [100, 500] if args.quick else [100, 300, 500, 700]
    rows: list[dict[str, Any]] = []
    with start_emulator(str(tmp), cpu=0 if multi else None) as emu:
        for users in levels:
            console.print(f"[dim]{users} concurrent streams…[/]")
            r = asyncio.run(level(emu.url, emu.proc.pid, prof.model, users))
            w0, w1 = r.pop("_window")
            sent = sorted(r.pop("_sent"))
            t_first = sent[0]
            engine = run_trace(prof, [t - t_first for t in sent], PROMPT, OUTPUT)
            e_ttft, e_tpot = engine.window(w0 - t_first, w1 - t_first)
            r["engine_ttft_s"], r["engine_tpot_s"] = e_ttft, e_tpot
            try:
                from skyfleet.perf import rate_at_concurrency

                m = rate_at_concurrency(prof, RequestSizes(PROMPT, OUTPUT), users)
                r["model_ttft_s"], r["model_tpot_s"] = m.ttft_mean, m.tpot_mean
            except ImportError:
                r["model_ttft_s"] = r["model_tpot_s"] = float("nan")
            rows.append(r)
            time.sleep(1.0)
    t = Table(title=f"emulator on one core: {prof.name}, prompt {PROMPT}, output {OUTPUT}")
    for col in (
        "streams",
        "running",
        "tok/s",
        "CPU (1 core)",
        "starved",
        "TPOT meas / engine",
        "TPOT client / engine",
        "TTFT meas / engine",
        "TTFT client / engine",
        "TPOT model",
        "lag mean / max",
    ):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(
            str(r["users"]),
            f"{r['running_at_window_start']:.0f}",
            f"{r['tokens_per_s']:,.0f}",
            f"{r['cpu_fraction']:.0%}",
            f"{r['runqueue_wait_fraction']:.0%}",
            f"{r['tpot_s'] * 1e3:.1f} / {r['engine_tpot_s'] * 1e3:.1f} ms"
            f" ({r['tpot_s'] / r['engine_tpot_s'] - 1:+.1%})",
            f"{r['client_tpot_s'] * 1e3:.1f} ms"
            f" ({r['client_tpot_s'] / r['engine_tpot_s'] - 1:+.1%})",
            f"{r['ttft_s'] * 1e3:.0f} / {r['engine_ttft_s'] * 1e3:.0f} ms"
            f" ({r['ttft_s'] / r['engine_ttft_s'] - 1:+.1%})",
            f"{r['client_ttft_s'] * 1e3:.0f} ms"
            f" ({r['client_ttft_s'] / r['engine_ttft_s'] - 1:+.1%})",
            f"{r['model_tpot_s'] * 1e3:.1f} ms",
            f"{r['lag_mean_s'] * 1e3:.2f} / {r['lag_max_s'] * 1e3:.0f} ms",
        )
    console.print(t)
    out = {
        "benchmark": "bench_emulator",
        "profile": prof.name,
        "prompt_tokens": PROMPT,
        "output_tokens": OUTPUT,
        "window_s": WINDOW_S,
        "pinned": multi,
        "machine": {
            "nproc": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "loadavg_at_end": os.getloadavg(),
        },
        "levels": rows,
    }
    dest = ROOT / "benchmarks/results/bench_emulator.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2))
    console.print(f"wrote {dest.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
