"""A small open-loop streaming client to check the emulator against the perf model.

Requests arrive as a seeded Poisson process (or all at once for a fixed concurrency);
each streams a chat completion and records wall-clock TTFT and mean TPOT. Used by the
emulator's tests and benchmark; the full load generator is `skyfleet bench`.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True)
class StreamTiming:
    """One streamed request: wall seconds to the first token and per later token."""

    ttft: float
    tpot: float
    tokens: int
    start: float = 0.0  # time.perf_counter() when the request was sent


def prompt_of_tokens(n: int) -> str:
    """A chat message whose prompt costs exactly n tokens (see tokens.py)."""
    return "abcd" * max(0, n - 7)  # 3 + 4 framing tokens, 4 chars per token


async def stream_once(
    session: aiohttp.ClientSession,
    base_url: str,
    model: str,
    prompt_tokens: int,
    max_tokens: int,
) -> StreamTiming:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt_of_tokens(prompt_tokens)}],
        "max_tokens": max_tokens,
        "stream": True,
    }
    t0 = time.perf_counter()
    first = last = 0.0
    n = 0
    async with session.post(base_url + "/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.content:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                if n == 0:
                    first = last
                n += 1
    tpot = (last - first) / (n - 1) if n > 1 else 0.0
    return StreamTiming(first - t0, tpot, n, t0)


async def run_load(
    base_url: str,
    model: str,
    *,
    rate: float | None,
    requests: int,
    prompt_tokens: int,
    max_tokens: int,
    seed: int = 0,
) -> list[StreamTiming]:
    """`requests` streams arriving at `rate`/s (Poisson), or all at once if rate is None."""
    rng = random.Random(seed)
    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        tasks = []
        t = time.perf_counter()
        for _ in range(requests):
            if rate is not None:
                t += rng.expovariate(rate)
                await asyncio.sleep(max(0.0, t - time.perf_counter()))
            coro = stream_once(session, base_url, model, prompt_tokens, max_tokens)
            tasks.append(asyncio.create_task(coro))
        return list(await asyncio.gather(*tasks))
