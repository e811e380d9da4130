"""Validation against reality at small scale (slow): gateway + emulators vs the simulator.

Three emulated providers (one Llama-3.1-8B@L4 replica each, `--time-scale 2`) behind a real
`skyfleet serve` with overload control on. A scripted open-loop load (Poisson, 60 s, a
critical/standard/sheddable mix by tenant) runs while one provider is taken down for 25 s
by fault injection. The request-level simulator runs the same fleet (the profile's timings
divided by the emulators' time scale, i.e. in the same wall-clock frame; the gateway's
routing, health and overload settings), the same load (every request's arrival time and
class, replayed as a scripted trace) and the same outage (the emulator's `down` fault
refuses new requests and lets running ones finish: `in_flight: finish`).
SLO attainment and p99 TTFT must agree within TOLERANCE.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import yaml

from skyfleet.config import hash_key
from skyfleet.perf import parse_profile_spec
from skyfleet.sim import Fleet, ModelLoad, Slo, Trace, make_group, parse_scenario, simulate
from skyfleet.sim.fluid import TPOT_TOLERANCE

pytestmark = pytest.mark.slow

# The target, on attainment and on p99 TTFT. With the same requests (not a second
# Poisson draw) the simulator is within 0-3% on attainment and 0-5% on p99 TTFT of each
# real run (busy 2-core machine; docs/simulate.md has the runs). p99 TTFT is estimated on
# both sides with the Harrell-Davis estimator: this script's top 1% is one burst of ~18
# standard requests in two clusters (~2.2 s and ~2.65 s), so the plain 99th order
# statistic jumps ~15% when a single request changes side; Harrell-Davis weights the order
# statistics around it and estimates the same quantile without that jitter. The plain p99
# is checked too, within PLAIN_P99_TOLERANCE (the height of that step plus margin).
TOLERANCE = 0.15
PLAIN_P99_TOLERANCE = 0.25
SIM_SEEDS = range(1, 9)  # the simulator's routing randomness, averaged
SPEC = "Llama-3.1-8B@L4"
SCALE = 2.0
DURATION = 60.0
OUTAGE = (20.0, 25.0)  # start, duration (wall s)
IN_TOK, OUT_TOK = 512, 32
SLO = Slo(ttft_s=1.0 / SCALE, tpot_s=0.2 / SCALE, percentile=0.99)  # wall-clock frame
MIX = (0.2, 0.6, 0.2)
PROVIDERS = ("alpha", "beta", "gamma")
UTILISATION = 0.75  # of the three replicas' capacity at the SLO
STEP = 5.0  # s: the simulator's reporting step (TPOT is judged per endpoint and step)
ROUTING = {"scrape_interval_s": 0}
HEALTH = {
    "consecutive_failures": 1,
    "base_ejection_s": 1.0,
    "max_ejection_s": 2.0,
    "probe_interval_s": 0.5,
    "probe_timeout_s": 0.5,
}
OVERLOAD = {"enabled": True, "adaptive_concurrency": False}


def scaled_profile():  # type: ignore[no-untyped-def]
    p = parse_profile_spec(SPEC)
    fields = (
        "prefill_base_s",
        "prefill_per_token_s",
        "prefill_quad_s",
        "decode_base_s",
        "decode_per_seq_s",
        "decode_per_ctx_token_s",
    )
    return p.model_copy(update={f: getattr(p, f) / SCALE for f in fields})


def sim_fleet() -> Fleet:
    """The fleet, with the gateway's settings and the scripted load as a trace."""
    from skyfleet.config import HealthConfig, OverloadConfig, RoutingConfig
    from skyfleet.policy.settings import admission_settings

    prof = scaled_profile()
    ml = ModelLoad(
        "chat", "Llama-3.1-8B", np.array([0.0]), 3600.0, [(IN_TOK, OUT_TOK, 1.0)], SLO, MIX
    )
    groups = [make_group(p, ml, p, "r1", prof, [1], price=1.0) for p in PROVIDERS]
    rate = UTILISATION * sum(g.capacity_rps for g in groups)
    ml.demand_rps = np.array([rate])
    times, prios = scripted_load(rate)
    n = len(times)
    ml.trace = Trace(
        times, np.full(n, float(IN_TOK)), np.full(n, float(OUT_TOK)), "scripted", prios, DURATION
    )
    return Fleet(
        groups,
        {"chat": ml},
        3600.0,
        "validation",
        admission=admission_settings(OverloadConfig(**OVERLOAD)),  # type: ignore[arg-type]
        routing=RoutingConfig(**ROUTING),  # type: ignore[arg-type]
        health=HealthConfig(**HEALTH),  # type: ignore[arg-type]
    )


def scripted_load(rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Poisson arrival times over DURATION and each request's class (0/1/2)."""
    rng = np.random.default_rng(11)
    times = np.cumsum(rng.exponential(1.0 / rate, size=int(rate * DURATION * 1.5)))
    times = times[times < DURATION]
    return times, rng.choice(3, size=len(times), p=MIX)


@pytest.fixture
def live_fleet(tmp_path: Path) -> Iterator[tuple[str, list[object], dict[str, str]]]:
    from skyfleet.emulator.process import start_emulator
    from skyfleet.gateway.process import start_gateway

    fleet = sim_fleet()
    emus = []
    gw = None
    try:
        for i, _ in enumerate(PROVIDERS):
            emus.append(start_emulator(SPEC, time_scale=SCALE, seed=i, served_model_name="chat"))
        keys = {p: f"sk-{p}-validation" for p in ("critical", "standard", "sheddable")}
        cfg = {
            "providers": [{"name": p} for p in PROVIDERS],
            "endpoints": [
                {
                    "name": p,
                    "provider": p,
                    "region": "r1",
                    "url": e.base_url,
                    "model": "chat",
                    "tier": "primary",
                    "capacity": g.concurrency,
                    "accelerator": "L4",
                }
                for p, e, g in zip(PROVIDERS, emus, fleet.groups, strict=True)
            ],
            "models": [{"name": "chat", "endpoints": list(PROVIDERS)}],
            "tenants": [
                {"name": p, "api_keys": [hash_key(k)], "priority": p} for p, k in keys.items()
            ],
            "routing": ROUTING,
            "health": HEALTH,
            "overload": OVERLOAD,
            "ledger": {"path": str(tmp_path / "ledger.sqlite")},
        }
        path = tmp_path / "fleet.yaml"
        path.write_text(yaml.safe_dump(cfg))
        gw = start_gateway(path)
        yield gw.base_url, emus, keys
    finally:
        if gw is not None:
            gw.stop()
        for e in emus:
            e.stop()  # type: ignore[attr-defined]


Outcome = tuple[str, float, float, str]  # status, TTFT, TPOT, endpoint


async def _one(session: aiohttp.ClientSession, url: str, key: str, at: float, t0: float) -> Outcome:
    await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
    start = time.monotonic()
    body = {
        "model": "chat",
        "stream": True,
        "max_tokens": OUT_TOK,
        "messages": [{"role": "user", "content": "x" * (4 * (IN_TOK - 7))}],
    }
    first = None
    bad = ("failed", float("nan"), float("nan"), "")
    try:
        async with session.post(
            url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as r:
            if r.status in (429, 503):
                return "shed", float("nan"), float("nan"), ""
            if r.status != 200:
                return bad
            n = 0
            async for line in r.content:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                obj = json.loads(line[6:])
                if "error" in obj:
                    return bad
                if obj.get("choices") and obj["choices"][0].get("delta", {}).get("content"):
                    n += 1
                    if first is None:
                        first = time.monotonic()
            end = time.monotonic()
            if first is None or n < OUT_TOK:
                return bad
            tpot = (end - first) / max(OUT_TOK - 1, 1)
            return "served", first - start, tpot, r.headers.get("x-skyfleet-endpoint", "")
    except (TimeoutError, aiohttp.ClientError):
        return bad


async def _drive(
    url: str, keys: dict[str, str], emu: object, times: np.ndarray, prios: np.ndarray
) -> list[Outcome]:
    names = ("critical", "standard", "sheddable")
    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=40)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
        t0 = time.monotonic() + 0.5
        emu.inject("down", start_after_s=0.5 + OUTAGE[0], duration_s=OUTAGE[1])  # type: ignore[attr-defined]
        return await asyncio.gather(
            *(_one(s, url, keys[names[p]], float(t), t0) for t, p in zip(times, prios, strict=True))
        )


def p99(samples: np.ndarray) -> float:
    """The 99th percentile by the Harrell-Davis estimator (a Beta-weighted mean of the
    order statistics; see TOLERANCE)."""
    from scipy.stats.mstats import hdquantiles

    return float(hdquantiles(np.asarray(samples, dtype=float), [0.99])[0])


def attainment(
    at: np.ndarray, st: np.ndarray, ttft: np.ndarray, tpot: np.ndarray, ep: np.ndarray
) -> tuple[float, np.ndarray]:
    """Share served within the SLO, judged as the simulator does: TTFT per request, TPOT as
    the mean per endpoint and step (the workload's TPOT objective is a mean); and per step."""
    served = st == "served"
    step = np.minimum((at // STEP).astype(np.int64), int(DURATION // STEP) - 1)
    cells = {(int(s), str(e)) for s, e in zip(step[served], ep[served], strict=True)}
    mean = {c: float(tpot[served & (step == c[0]) & (ep == c[1])].mean()) for c in cells}
    tpot_ok = np.array(
        [
            ok and mean[(int(s), str(e))] <= SLO.tpot_s * TPOT_TOLERANCE
            for ok, s, e in zip(served, step, ep, strict=True)
        ]
    )
    ok = served & (ttft <= SLO.ttft_s) & tpot_ok
    series = np.array([ok[step == k].mean() for k in range(int(DURATION // STEP))])
    return float(ok.mean()), series


def test_simulator_matches_gateway_and_emulators(
    live_fleet: tuple[str, list[object], dict[str, str]],
) -> None:
    url, emus, keys = live_fleet
    fleet = sim_fleet()
    tr = fleet.models["chat"].trace
    assert tr is not None and tr.priorities is not None
    out = asyncio.run(_drive(url, keys, emus[0], tr.times, tr.priorities))
    st = np.array([o[0] for o in out])
    ttft = np.array([o[1] for o in out])
    served = st == "served"
    real_att, real_series = attainment(
        tr.times, st, ttft, np.array([o[2] for o in out]), np.array([o[3] for o in out])
    )
    real_p99 = p99(ttft[served])
    real_plain = float(np.quantile(ttft[served], 0.99))

    sc = parse_scenario(
        {
            "horizon": DURATION,
            "step": STEP,
            "slo_target": 0.99,
            "provisioning": {"model_load": 0},
            "outages": [
                {
                    "provider": PROVIDERS[0],
                    "start": OUTAGE[0],
                    "duration": OUTAGE[1],
                    "in_flight": "finish",  # the emulator's `down` fault
                }
            ],
        }
    )
    sims = [simulate(fleet, sc, "des", seed=s) for s in SIM_SEEDS]
    assert all(r.total("arrivals") == len(out) for r in sims)  # the same requests
    sim_att = float(np.mean([r.slo_attainment for r in sims]))
    sim_p99 = float(np.mean([p99(r.ttft_samples) for r in sims if r.ttft_samples is not None]))
    sim_plain = float(np.mean([r.ttft_percentile(0.99) for r in sims]))
    sim_series = np.mean([r.attainment_series() for r in sims], axis=0)
    report = (
        f"reality: {len(out)} requests, attainment {real_att:.3f}, p99 TTFT {real_p99:.3f} s "
        f"(plain {real_plain:.3f} s), shed {(st == 'shed').sum()}, failed "
        f"{(st == 'failed').sum()}; simulator: attainment {sim_att:.3f}, p99 TTFT "
        f"{sim_p99:.3f} s (plain {sim_plain:.3f} s), shed "
        f"{np.mean([r.total('shed') for r in sims]):.0f}, failed "
        f"{np.mean([r.total('failed') for r in sims]):.0f}; attainment per {STEP:g} s "
        "(reality/simulator): "
        + " ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(real_series, sim_series, strict=True))
    )
    print(report)
    assert abs(sim_att - real_att) / real_att <= TOLERANCE, report
    assert abs(sim_p99 - real_p99) / real_p99 <= TOLERANCE, report
    assert abs(sim_plain - real_plain) / real_plain <= PLAIN_P99_TOLERANCE, report
