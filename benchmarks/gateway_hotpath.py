"""Hot-path choice for the gateway: HTTP server × upstream client, side by side in one run.

Against a fast local fake upstream (fixed chat completion, or 32 SSE chunks), it measures
requests/s and latency for: no proxy (direct), bare proxies built on each candidate stack, and
the full skyfleet gateway (auth, JSON parse, routing, metrics, ledger). Also times json vs
orjson on a typical body. Stacks that need packages outside the project venv (uvicorn,
starlette, httptools, orjson) run from `--alt-python` (a separate venv) and are skipped if it
is missing.

    .venv/bin/python benchmarks/gateway_hotpath.py --seconds 4 --alt-python /tmp/hpvenv/bin/python
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "gateway_hotpath.json"
CHUNKS = 32
REQ = {
    "model": "chat",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant. " * 8},
        {"role": "user", "content": "Write a haiku about load balancers. " * 6},
    ],
    "max_tokens": 64,
    "temperature": 0.7,
}
RESP = {
    "id": "chatcmpl-x",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "word " * 64},
            "finish_reason": "length",
        }
    ],
    "usage": {"prompt_tokens": 120, "completion_tokens": 64, "total_tokens": 184},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- fake upstream -----------------------------------------------------------------------


def run_upstream(port: int) -> None:
    from aiohttp import web

    body = json.dumps(RESP).encode()
    chunk = (
        b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,'
        b'"delta":{"content":"word "},"finish_reason":null}]}\n\n'
    )
    tail = (
        b'data: {"id":"c","object":"chat.completion.chunk","choices":[],'
        b'"usage":{"prompt_tokens":120,"completion_tokens":32,"total_tokens":152}}\n\n'
        b"data: [DONE]\n\n"
    )

    async def chat(request: web.Request) -> web.StreamResponse:
        data = await request.read()
        if b'"stream":true' not in data and b'"stream": true' not in data:
            return web.Response(body=body, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(CHUNKS):
            await resp.write(chunk)
        await resp.write(tail)
        await resp.write_eof()
        return resp

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    import uvloop

    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# ---- bare proxies ------------------------------------------------------------------------


def run_proxy(kind: str, port: int, upstream: str) -> None:
    server, client = kind.split("+")
    target = upstream + "/v1/chat/completions"
    import uvloop

    if server == "aiohttp":
        from aiohttp import web

        state: dict[str, Any] = {}

        async def startup(app: web.Application) -> None:
            if client == "aiohttp":
                import aiohttp

                state["s"] = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
                )
            else:
                import httpx

                state["s"] = httpx.AsyncClient(limits=httpx.Limits(max_connections=1000))

        async def handler(request: web.Request) -> web.StreamResponse:
            data = await request.read()
            obj = json.loads(data)
            stream = obj.get("stream") is True
            if client == "aiohttp":
                async with state["s"].post(target, data=data, headers=_H) as up:
                    if not stream:
                        return web.Response(body=await up.read(), content_type="application/json")
                    out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
                    await out.prepare(request)
                    async for c in up.content.iter_any():
                        await out.write(c)
                    await out.write_eof()
                    return out
            req = state["s"].build_request("POST", target, content=data, headers=_H)
            up = await state["s"].send(req, stream=True)
            try:
                if not stream:
                    return web.Response(body=await up.aread(), content_type="application/json")
                out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
                await out.prepare(request)
                async for c in up.aiter_raw():
                    await out.write(c)
                await out.write_eof()
                return out
            finally:
                await up.aclose()

        app = web.Application()
        app.on_startup.append(startup)
        app.router.add_post("/v1/chat/completions", handler)
        uvloop.install()
        web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)
        return

    # ASGI on uvicorn (httptools + uvloop): the FastAPI/LiteLLM-style server stack.
    import uvicorn

    st: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                m = await receive()
                if m["type"] == "lifespan.startup":
                    if client == "aiohttp":
                        import aiohttp

                        st["s"] = aiohttp.ClientSession(
                            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
                        )
                    else:
                        import httpx

                        st["s"] = httpx.AsyncClient(limits=httpx.Limits(max_connections=1000))
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        stream = json.loads(body).get("stream") is True
        ctype = b"text/event-stream" if stream else b"application/json"
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", ctype)],
        }
        if client == "aiohttp":
            async with st["s"].post(target, data=body, headers=_H) as up:
                await send(start)
                async for c in up.content.iter_any():
                    await send({"type": "http.response.body", "body": c, "more_body": True})
        else:
            req = st["s"].build_request("POST", target, content=body, headers=_H)
            up = await st["s"].send(req, stream=True)
            await send(start)
            async for c in up.aiter_raw():
                await send({"type": "http.response.body", "body": c, "more_body": True})
            await up.aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="error", loop="uvloop", http="httptools"
    )


_H = {"Content-Type": "application/json"}


# ---- load generator ----------------------------------------------------------------------


async def _load(url: str, seconds: float, conc: int, stream: bool) -> dict[str, Any]:
    import aiohttp

    body = json.dumps({**REQ, "stream": stream}).encode()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
    lat: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:

        async def one() -> None:
            nonlocal errors
            t = time.perf_counter()
            async with s.post(url, data=body, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    errors += 1
            lat.append(time.perf_counter() - t)

        async def worker(stop: float) -> None:
            while time.perf_counter() < stop:
                await one()

        await asyncio.gather(*(worker(time.perf_counter() + 0.5) for _ in range(conc)))
        lat.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(t0 + seconds) for _ in range(conc)))
        wall = time.perf_counter() - t0
    lat.sort()
    n = len(lat)
    return {
        "requests": n,
        "errors": errors,
        "rps": n / wall,
        "p50_ms": lat[n // 2] * 1e3,
        "p99_ms": lat[min(n - 1, int(n * 0.99))] * 1e3,
    }


def run_load(url: str, seconds: float, conc: int, stream: bool) -> None:
    import uvloop

    uvloop.install()
    print(json.dumps(asyncio.run(_load(url, seconds, conc, stream))))


# ---- orchestration -----------------------------------------------------------------------


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    u = urllib.request.urlparse(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited")
        try:
            with socket.create_connection((u.hostname, u.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def spawn(py: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [py, str(HERE), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def measure(url: str, seconds: float, conc: int, stream: bool) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(HERE), "load", url, str(seconds), str(conc), str(int(stream))],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout))


def json_micro(py: str) -> dict[str, float] | None:
    code = (
        f"import json,timeit;body=json.dumps({REQ!r}).encode();resp=json.dumps({RESP!r}).encode()\n"
        "def std(): o=json.loads(body); o['model']='x'; json.dumps(o).encode(); json.loads(resp)\n"
        "r={'json_us':min(timeit.repeat(std,number=20000,repeat=3))/20000*1e6}\n"
        "try:\n import orjson\n def fast(): o=orjson.loads(body); o['model']='x'; "
        "orjson.dumps(o); orjson.loads(resp)\n"
        " r['orjson_us']=min(timeit.repeat(fast,number=20000,repeat=3))/20000*1e6\n"
        "except ImportError: pass\nprint(json.dumps(r))"
    )
    try:
        out = subprocess.run([py, "-c", code], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return dict(json.loads(out.stdout))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repetitions (median)")
    ap.add_argument("--alt-python", default="/tmp/hpvenv/bin/python")
    a = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    from skyfleet.config import hash_key
    from skyfleet.gateway.process import start_gateway

    alt = a.alt_python if Path(a.alt_python).exists() else None
    procs: list[subprocess.Popen[bytes]] = []
    gw = None
    rows: list[dict[str, Any]] = []
    try:
        up_port = free_port()
        procs.append(spawn(sys.executable, "upstream", str(up_port)))
        upstream = f"http://127.0.0.1:{up_port}"
        wait_up(upstream, procs[-1])
        targets: list[tuple[str, str]] = [("direct (no proxy)", upstream)]
        kinds = [("aiohttp+aiohttp", sys.executable), ("aiohttp+httpx", sys.executable)]
        if alt:
            kinds += [("uvicorn+aiohttp", alt), ("uvicorn+httpx", alt)]
        for kind, py in kinds:
            port = free_port()
            procs.append(spawn(py, "proxy", kind, str(port), upstream))
            wait_up(f"http://127.0.0.1:{port}", procs[-1])
            targets.append((f"bare proxy {kind}", f"http://127.0.0.1:{port}"))
        d = Path(tempfile.mkdtemp(prefix="skyfleet-bench-"))
        cfg = d / "fleet.yaml"
        cfg.write_text(
            json.dumps(
                {
                    "ledger": {"path": str(d / "usage.sqlite")},
                    "routing": {"scrape_interval_s": 0},
                    "providers": [{"name": "local"}],
                    "endpoints": [
                        {
                            "name": "fake",
                            "provider": "local",
                            "url": upstream + "/v1",
                            "model": "m",
                            "capacity": 100000,
                        }
                    ],
                    "models": [{"name": "chat", "endpoints": ["fake"]}],
                    "tenants": [{"name": "bench", "api_keys": [hash_key("sk-bench")]}],
                }
            )
        )
        gw = start_gateway(cfg)
        targets.append(("skyfleet gateway (1 worker)", gw.url))
        reps: dict[tuple[str, bool], list[dict[str, Any]]] = {}
        for _ in range(a.rounds):  # interleaved rounds: a busy machine hits every row alike
            for stream in (False, True):
                for name, url in targets:
                    r = measure(url + "/v1/chat/completions", a.seconds, a.concurrency, stream)
                    reps.setdefault((name, stream), []).append(r)
        for (name, stream), rs in reps.items():
            med = {k: statistics.median(x[k] for x in rs) for k in ("rps", "p50_ms", "p99_ms")}
            errs = sum(x["errors"] for x in rs)
            rows.append({"target": name, "stream": stream, **med, "errors": errs, "rounds": rs})
    finally:
        if gw is not None:
            gw.stop()
        for p in procs:
            p.terminate()
            p.wait()
    micro = {
        "project_venv": json_micro(sys.executable),
        "alt_venv": json_micro(alt) if alt else None,
    }
    t = Table(
        title=f"gateway hot path, concurrency {a.concurrency}, median of {a.rounds} × "
        f"{a.seconds:g} s"
    )
    for c in ("target", "mode", "req/s", "vs direct", "p50 ms", "p99 ms", "errors"):
        t.add_column(c, justify="left" if c in ("target", "mode") else "right")
    for stream in (False, True):
        base = next(r for r in rows if r["stream"] == stream and r["target"].startswith("direct"))
        for r in rows:
            if r["stream"] != stream:
                continue
            t.add_row(
                r["target"],
                "stream" if stream else "json",
                f"{r['rps']:,.0f}",
                f"{r['rps'] / base['rps']:.2f}",
                f"{r['p50_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                str(r["errors"]),
            )
    Console().print(t)
    Console().print(f"json vs orjson (parse+rewrite request, parse response): {micro}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    machine = {"nproc": os.cpu_count(), "platform": platform.platform(), "python": sys.version}
    RESULTS.write_text(
        json.dumps(
            {"rows": rows, "json_micro": micro, "machine": machine, "args": vars(a)}, indent=2
        )
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "upstream":
        run_upstream(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "proxy":
        run_proxy(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif len(sys.argv) > 1 and sys.argv[1] == "load":
        run_load(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1")
    else:
        main()
