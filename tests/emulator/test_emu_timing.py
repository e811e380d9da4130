"""Measured timing of a real emulator process against the engine and skyfleet.perf."""

from __future__ import annotations

import asyncio
import os
import time
from statistics import fmean

import aiohttp
import pytest

from skyfleet.emulator.metrics import metric, parse_metrics
from skyfleet.emulator.probe import StreamTiming, stream_once
from skyfleet.emulator.process import start_emulator
from skyfleet.emulator.virtual import poisson_arrivals, run_trace
from skyfleet.perf import RequestSizes, max_throughput, parse_profile_spec, steady_state

from .conftest import FAST_PROFILE, MODEL

PROMPT, OUTPUT = 500, 32
SCALE = float(os.environ.get("EMU_SCALE", "1.0"))  # decode steps ~8-20 ms wall
REQUESTS = 240
# One seeded Poisson sample, rescaled to the exact mean rate of each level: the window's
# mean TTFT/TPOT of a few hundred requests varies by ±5-15 % from sample to sample (queueing
# noise), so the sample is fixed and its engine replay asserted close to the long-run mean.
ARRIVAL_SEED = 11
SAMPLE_TOL = 0.06
MAX_LAG = 0.02  # mean lateness of a token release behind its deadline, × scale / TTFT
LO, HI = REQUESTS // 5, REQUESTS * 9 // 10  # scrape window: warm-up and drain excluded


async def scrape(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with session.get(url + "/metrics") as r:
        return parse_metrics(await r.text())


def window_mean(a: dict[str, float], b: dict[str, float], name: str) -> float:
    """Mean of a histogram's observations between two scrapes."""
    n = metric(b, name + "_count") - metric(a, name + "_count")
    return (metric(b, name + "_sum") - metric(a, name + "_sum")) / n


async def one_level(
    url: str, arrivals: list[float]
) -> tuple[float, float, float, list[StreamTiming]]:
    """Send requests at `arrivals` (emulated s): the server's mean TTFT, TPOT and loop lag
    between the LO-th and HI-th arrival, and every request's client-side timing."""
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:
        tasks: list[asyncio.Task[StreamTiming]] = []
        snaps: list[dict[str, float]] = []
        t0 = time.perf_counter()
        for i, t in enumerate(arrivals):
            await asyncio.sleep(max(0.0, t0 + t / SCALE - time.perf_counter()))
            if i in (LO, HI):
                snaps.append(await scrape(s, url))
            coro = stream_once(s, url + "/v1", MODEL, PROMPT, OUTPUT)
            tasks.append(asyncio.create_task(coro))
        res = await asyncio.gather(*tasks)
    a, b = snaps
    ttft = window_mean(a, b, "vllm:time_to_first_token_seconds")
    tpot = window_mean(a, b, "vllm:time_per_output_token_seconds")
    lag = window_mean(a, b, "skyfleet_emulator_loop_lag_seconds")
    return ttft, tpot, lag, list(res)


@pytest.mark.slow
async def test_measured_ttft_tpot_match_the_model_at_three_loads() -> None:
    """Three Poisson loads against a real process; see docs/emulator.md (timing checks)."""
    profile = parse_profile_spec(FAST_PROFILE)
    sizes = RequestSizes(PROMPT, OUTPUT)
    top = max_throughput(profile, sizes)
    report = []
    unit = poisson_arrivals(1.0, REQUESTS, seed=ARRIVAL_SEED)
    stretch = unit[-1] / REQUESTS  # the sample's mean gap, rescaled to exactly 1/rate
    with start_emulator(FAST_PROFILE, time_scale=SCALE, seed=1) as emu:
        for load in (0.3, 0.5, 0.7):
            model = steady_state(profile, load * top, sizes)
            assert model.stable
            arrivals = [t / (load * top * stretch) for t in unit]
            # The sample itself: the engine in virtual time on exactly these arrivals.
            planned = run_trace(profile, arrivals, PROMPT, OUTPUT)
            p_ttft, p_tpot = planned.window(arrivals[LO], arrivals[HI])
            assert p_ttft == pytest.approx(model.ttft_mean, rel=SAMPLE_TOL)
            assert p_tpot == pytest.approx(model.tpot_mean, rel=SAMPLE_TOL)
            # A run during which the OS starved the emulator (its token releases fell
            # behind their deadlines: other processes on a small shared machine) measures
            # the machine, not the emulator: run that level once more.
            lags = []
            for _attempt in range(3):
                ttft, tpot, lag, res = await one_level(emu.url, arrivals)
                lags.append(lag)
                if lag * SCALE < MAX_LAG * model.ttft_mean:
                    break
                await asyncio.sleep(2.0)
            else:
                pytest.skip(
                    f"load {load}: the OS kept the emulator from running on time in 3 runs"
                    f" (mean release lag {', '.join(f'{x * 1e3:.2f}' for x in lags)} ms);"
                    " this machine is too busy to measure timing"
                )
            # The engine on the arrivals as actually sent (a busy client sends late, bunched).
            sent = [(r.start - res[0].start) * SCALE for r in res]
            engine = run_trace(profile, sent, PROMPT, OUTPUT)
            e_ttft, e_tpot = engine.window(sent[LO], sent[HI])
            c_tpot = fmean(r.tpot for r in res[LO:HI]) * SCALE
            e_tpot_req = fmean(
                (engine.last[i] - engine.first[i]) / (OUTPUT - 1) for i in range(LO, HI)
            )
            report.append(
                f"load {load}: TTFT model {model.ttft_mean * 1e3:.1f} sample {p_ttft * 1e3:.1f}"
                f" engine {e_ttft * 1e3:.1f}"
                f" measured {ttft * 1e3:.1f} ms; TPOT model {model.tpot_mean * 1e3:.2f} sample"
                f" {p_tpot * 1e3:.2f} engine"
                f" {e_tpot * 1e3:.2f} measured {tpot * 1e3:.2f} client {c_tpot * 1e3:.2f}"
                f" (engine per request {e_tpot_req * 1e3:.2f}) ms;"
                f" lag {lag * 1e3:.2f} ms"
            )
            print(report[-1])
            assert all(r.tokens == OUTPUT for r in res)
            # Measured (the engine's vLLM histograms, wall clock × scale) vs the engine run
            # in virtual time on the same arrivals: what real-time emulation adds. A first
            # token released late is late by the emulator's measured release lag (its own
            # overhead, mostly CPU starvation here), which is taken out.
            assert ttft - lag * SCALE == pytest.approx(e_ttft, rel=0.10), report
            assert tpot == pytest.approx(e_tpot, rel=0.05), report
            assert c_tpot == pytest.approx(e_tpot_req, rel=0.10), report  # as clients see it
            # Against the analytic model directly (issue 2: within 10 % at three loads).
            assert ttft == pytest.approx(model.ttft_mean, rel=0.10), report
            assert tpot == pytest.approx(model.tpot_mean, rel=0.10), report
            assert c_tpot == pytest.approx(model.tpot_mean, rel=0.10), report
            await asyncio.sleep(0.5)  # drain before the next level


@pytest.mark.slow
def test_ttft_is_never_below_the_prefill() -> None:
    """No first token before its prefill could have run, as the client measures it (from
    before sending to after reading), idle and under Poisson load, at a high time scale
    where a release 1 ms (wall) early would show as 10 ms."""
    profile = parse_profile_spec(FAST_PROFILE)
    scale = 10.0
    prompt = 2000
    floor = profile.prefill_time(prompt) / scale
    rate = 0.5 * max_throughput(profile, RequestSizes(prompt, 8)) * scale

    async def go(url: str) -> list[StreamTiming]:
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as s:
            idle = [await stream_once(s, url + "/v1", MODEL, prompt, 8) for _ in range(20)]
            tasks = []
            t0 = time.perf_counter()
            for t in poisson_arrivals(rate, 200, seed=5):
                await asyncio.sleep(max(0.0, t0 + t - time.perf_counter()))
                tasks.append(asyncio.create_task(stream_once(s, url + "/v1", MODEL, prompt, 8)))
            return idle + list(await asyncio.gather(*tasks))

    with start_emulator(FAST_PROFILE, time_scale=scale, seed=2) as emu:
        res = asyncio.run(go(emu.url))
    ttfts = sorted(r.ttft for r in res)
    assert all(r.tokens == 8 for r in res)
    assert ttfts[0] >= floor, (ttfts[0] * scale, floor * scale)


def test_kv_bounded_admission_shows_in_waiting() -> None:
    """Prompts that together exceed the KV cache queue up (vllm:num_requests_waiting)."""
    profile = parse_profile_spec("Llama-3.1-8B@L4")
    prompt = profile.kv_capacity_tokens // 3  # two fit at once (1 % watermark), not three
    with start_emulator("Llama-3.1-8B@L4", time_scale=10) as emu:

        async def burst() -> list[dict[str, float]]:
            async with aiohttp.ClientSession() as s:
                tasks = [
                    asyncio.create_task(stream_once(s, emu.base_url, MODEL, prompt, 8))
                    for _ in range(6)
                ]
                seen = []
                while not all(t.done() for t in tasks):
                    seen.append(await scrape(s, emu.url))
                    await asyncio.sleep(0.02)
                await asyncio.gather(*tasks)
                seen.append(await scrape(s, emu.url))
                return seen

        seen = asyncio.run(burst())
    running = [metric(m, "vllm:num_requests_running") for m in seen]
    waiting = [metric(m, "vllm:num_requests_waiting") for m in seen]
    kv = [metric(m, "vllm:kv_cache_usage_perc") for m in seen]
    assert max(running) == 2  # never more than the KV cache holds
    assert max(waiting) >= 3  # the rest waits
    assert max(kv) > 0.6
    assert waiting[-1] == 0 and kv[-1] == 0 and running[-1] == 0
