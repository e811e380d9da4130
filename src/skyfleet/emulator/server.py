"""The emulator's HTTP server: one asyncio loop drives the engine and serves OpenAI APIs.

The driver task plans an iteration with `Engine.step()`, then for each of its token events
sleeps until the event's absolute wall deadline (iteration start + offset / time_scale;
the next iteration starts at this one's deadline, so event-loop lag never accumulates),
waking early by the timer lateness it has measured and yielding to the loop until the
deadline (a token is never released early; the clock is `time.perf_counter`, finer than
uvloop's millisecond loop clock), and releases the tokens to the waiting streams. An
iteration starting at deadline D admits only requests that arrived by D (stamped on
arrival): one read late, while the driver caught up, waits for the next iteration.
Timings recorded in /metrics are emulated seconds (wall × time_scale) measured at token
release, loop lag included.
"""

from __future__ import annotations

import asyncio
import base64
import math
import random
import struct
import time
import zlib
from time import perf_counter as clock

from aiohttp import web

from skyfleet.emulator.api import ApiError, parse_embeddings, parse_json
from skyfleet.emulator.engine import Engine, Sequence
from skyfleet.emulator.faults import Fault, FaultSet, parse_fault
from skyfleet.emulator.fronts.base import Front, Renderer
from skyfleet.emulator.fronts.openai import OpenAIFront
from skyfleet.emulator.metrics import EngineMetrics
from skyfleet.emulator.tokens import WordStream, draw_output_tokens
from skyfleet.errors import SkyfleetError
from skyfleet.perf import Profile

MAX_LEAD_S = 0.005  # most the driver wakes early to cancel timer lateness
MAX_CATCH_UP_S = 0.25  # wall seconds of lag the driver will catch up on before resetting


class Stream:
    """Per-request state shared by the driver (producer) and its handler (consumer)."""

    __slots__ = (
        "arrival",
        "done",
        "first_at",
        "last_at",
        "ready",
        "seq",
        "waiter",
    )

    def __init__(self, seq: Sequence, arrival: float) -> None:
        self.seq = seq
        self.arrival = arrival
        self.ready = 0  # tokens released by the engine, not yet written
        self.waiter: asyncio.Future[None] | None = None
        self.first_at = 0.0
        self.last_at = 0.0
        self.done = False

    def wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)
        self.waiter = None


class EmulatorServer:
    """An emulated engine for one profile, speaking one provider's API (`front`; OpenAI by
    default)."""

    def __init__(
        self,
        profile: Profile,
        *,
        served_model_name: str | None = None,
        time_scale: float = 1.0,
        seed: int = 0,
        faults: list[Fault] | None = None,
        front: Front | None = None,
    ) -> None:
        if time_scale <= 0:
            raise SkyfleetError("--time-scale must be > 0")
        self.profile = profile
        self.model_name = served_model_name or profile.model
        self.front = front or OpenAIFront()
        self.scale = time_scale
        self.seed = seed
        self.engine = Engine(profile)
        self.metrics = EngineMetrics(self.model_name)
        self.faults = FaultSet()
        self._drill = list(faults or [])
        self._rng = random.Random(seed)
        self._streams: dict[int, Stream] = {}
        self._wake = asyncio.Event()
        self._t0 = 0.0
        self._created = int(time.time())
        self._driver: asyncio.Task[None] | None = None
        self._lead = 0.0  # learned timer lateness (wall s)
        self.app = web.Application(client_max_size=32 * 1024 * 1024)
        self.app.add_routes(
            [
                *self.front.routes(self._generate),
                *self.front.extra_routes(),
                *(
                    [web.post("/v1/embeddings", self._embeddings)]
                    if self.front.api == "openai"
                    else []
                ),
                web.get("/v1/models", self._models),
                web.get("/health", self._health),
                web.get("/metrics", self._metrics),
                web.get("/admin/faults", self._faults_list),
                web.post("/admin/faults", self._faults_add),
                web.delete("/admin/faults", self._faults_clear),
                web.delete("/admin/faults/{fid}", self._faults_delete),
            ]
        )
        self.app.on_startup.append(self._on_startup)
        self.app.on_cleanup.append(self._on_cleanup)

    # -- time -----------------------------------------------------------------------------
    def now(self) -> float:
        """Wall seconds since start: the clock of the fault schedule."""
        return clock() - self._t0

    async def _on_startup(self, _app: web.Application) -> None:
        self._t0 = clock()
        for f in self._drill:
            self.faults.add(f, 0.0)
        self._driver = asyncio.create_task(self._drive())

    async def _on_cleanup(self, _app: web.Application) -> None:
        if self._driver:
            self._driver.cancel()

    # -- the engine loop -------------------------------------------------------------------
    async def _drive(self) -> None:
        eng, m, scale = self.engine, self.metrics, self.scale
        deadline = clock()
        while True:
            if eng.idle:
                self._wake.clear()
                await self._wake.wait()
            if not eng.running and eng.waiting:
                # Nothing in flight: the engine starts when the oldest request arrived (not
                # when the driver woke up), and never before it arrived.
                deadline = max(deadline, eng.waiting[0].arrival)
            # The iteration starts at `deadline`; a request that arrived after it (handled
            # while the driver ran late) waits for the next one, as in the engine.
            res = eng.step(deadline)
            factor, extra = self.faults.slow_params(self.now())
            if res.preempted:
                m.preemptions += len(res.preempted)
            start = deadline
            if not res.events:  # only re-prefills after preemption
                deadline = start + res.duration * factor / scale
                await asyncio.sleep(max(deadline - clock(), 0.001))
                continue
            last = res.events[-1][1]
            for offset, seqs in res.events:
                deadline = start + offset * factor / scale
                if seqs is last and res.decode_batch:
                    deadline += extra
                # Wake early by the timer lateness learned so far, so tokens are released on
                # their deadline on average.
                target = deadline - self._lead
                delay = target - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                    late = clock() - target
                    self._lead = min(MAX_LEAD_S, max(0.0, 0.95 * self._lead + 0.05 * late))
                # ...but never release a token before its deadline (a first token released
                # early would make TTFT shorter than the prefill): yield to the loop for the
                # rest of the early wake-up.
                while clock() < deadline:
                    await asyncio.sleep(0)
                t = clock()
                lag = t - deadline
                m.loop_lag.observe(lag)  # ≥ 0: releases are never early
                m.loop_lag_max = max(m.loop_lag_max, lag)
                self._release(seqs, t)
            deadline = start + res.duration * factor / scale + (extra if res.decode_batch else 0)
            # Never start the next iteration early: it must see every request that arrives
            # before its start. Yield to the loop (it reads new requests) for the last
            # fraction of a millisecond that an early wake-up left.
            while clock() < deadline:
                await asyncio.sleep(0)
            if clock() - deadline > MAX_CATCH_UP_S:
                deadline = clock()  # a long stall: do not replay it as a burst

    def _release(self, emitted: list[Sequence], t: float) -> None:
        m, scale, streams = self.metrics, self.scale, self._streams
        m.generation_tokens += len(emitted)
        for s in emitted:
            st = streams.get(s.seq_id)
            if st is None:
                continue
            if st.first_at == 0.0:
                st.first_at = t
                m.ttft.observe((t - st.arrival) * scale)
            else:
                m.tpot.observe((t - st.last_at) * scale)
            st.last_at = t
            st.ready += 1
            if s.finished:
                del streams[s.seq_id]
                st.done = True
                m.e2e.observe((t - st.arrival) * scale)
            st.wake()

    # -- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _error(e: ApiError) -> web.Response:
        return web.json_response(e.body(), status=e.status, headers=e.headers)

    def _hit(self, f: Fault) -> bool:
        return f.fraction >= 1.0 or self._rng.random() < f.fraction

    async def _gate(self, request: web.Request, health: bool = False) -> web.StreamResponse | None:
        """Apply request-level faults; a response (or abort) when the request is hit.

        `health=True` (GET /health, /v1/models) applies only `down`, in OpenAI's format;
        generation requests get the front's (the provider's) error format."""
        now = self.now()
        render = self._error if health else self.front.error
        down = self.faults.first("down", now)
        if down is not None and self._hit(down):
            if down.mode == "refuse":
                _abort(request)
                return web.Response(status=503)
            return render(
                ApiError(
                    503, "engine is down (injected fault)", None, "unavailable", "server_error"
                )
            )
        if health:
            return None
        hang = self.faults.first("hang", now)
        if hang is not None and self._hit(hang):
            await self._hang_until_cleared(hang)
            _abort(request)
            return web.Response(status=503)
        thr = self.faults.first("throttle", now)
        if thr is not None and self._hit(thr):
            return render(
                ApiError(
                    429,
                    "rate limit exceeded (injected fault)",
                    None,
                    "rate_limit_exceeded",
                    "requests",
                    {"Retry-After": f"{thr.retry_after_s:g}"},
                )
            )
        err = self.faults.first("error", now)
        if err is not None and self._hit(err):
            return render(
                ApiError(
                    err.status,
                    "internal server error (injected fault)",
                    None,
                    "injected_fault",
                    "server_error",
                )
            )
        return None

    async def _hang_until_cleared(self, f: Fault) -> None:
        while f in self.faults.active(self.now()):
            await asyncio.sleep(0.05)

    # -- generation (any front) -----------------------------------------------------------
    async def _generate(self, request: web.Request) -> web.StreamResponse:
        front = self.front
        gated = await self._gate(request)
        if gated is not None:
            return gated
        try:
            job = await front.parse(request)
            req = job.req
            if req.model != self.model_name:
                raise front.not_found(req.model)
            limit = self.engine.max_sequence_tokens
            if req.prompt_tokens >= limit or (
                req.max_tokens is not None and req.prompt_tokens + req.max_tokens > limit
            ):
                raise front.context_error(limit, req.prompt_tokens, req.max_tokens, req.chat)
        except ApiError as e:
            return front.error(e)
        words = WordStream(self.seed, req.seed, req.prompt_text)
        render = front.renderer(job, words, self.model_name)
        now = self.now()
        flt = self.faults.first("filter", now)
        if flt is not None and self._hit(flt):
            status, body, ctype = render.filtered(req.stream)
            return web.Response(status=status, body=body, headers={"Content-Type": ctype})
        drawn = 0
        if job.tool is None and (req.max_tokens is None or not job.exact):
            drawn = draw_output_tokens(
                self.seed, req.seed, req.prompt_text, limit - req.prompt_tokens
            )
        out, finish = job.output_tokens(drawn)
        slow = self.faults.first("slow", now)
        if slow is not None and slow.ttft_delay_s > 0 and self._hit(slow):
            await asyncio.sleep(slow.ttft_delay_s)
        cut_f = self.faults.first("cut", now)
        cut = cut_f.cut_after_tokens if cut_f is not None and self._hit(cut_f) else None
        arrival = clock()
        seq = self.engine.add(req.prompt_tokens, out, arrival)
        st = Stream(seq, arrival)
        self._streams[seq.seq_id] = st
        self.metrics.prompt_tokens += req.prompt_tokens
        self._wake.set()
        finished = False
        try:
            if req.stream:
                resp = await self._stream(request, render, st, cut, finish)
            else:
                resp = await self._whole(request, render, st, cut, finish)
            finished = st.done
            return resp
        finally:
            if not finished:
                self._streams.pop(seq.seq_id, None)
                self.engine.abort(seq)
                self.metrics.success["abort"] += 1
            else:
                self.metrics.success["length" if finish == "length" else "stop"] += 1

    async def _next(self, st: Stream) -> int:
        """Wait until the engine released tokens (or finished); return how many."""
        while st.ready == 0 and not st.done:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            st.waiter = fut
            await fut
        n, st.ready = st.ready, 0
        return n

    async def _whole(
        self, request: web.Request, render: Renderer, st: Stream, cut: int | None, finish: str
    ) -> web.StreamResponse:
        got = 0
        while not st.done:
            got += await self._next(st)
            if cut is not None and got >= cut:
                _abort(request)
                return web.Response(status=500)
        return render.whole(st.seq.generated, finish)

    async def _stream(
        self, request: web.Request, render: Renderer, st: Stream, cut: int | None, finish: str
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": render.content_type, "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        head = render.head()
        if head:
            await resp.write(head)
        sent = 0
        while True:
            n = await self._next(st)
            if n:
                if cut is not None and sent + n >= cut:
                    await resp.write(render.tokens(sent, max(0, cut - sent)))
                    _abort(request)
                    return resp
                await resp.write(render.tokens(sent, n))
                sent += n
            if st.done and st.ready == 0:
                break
        await resp.write(render.tail(sent, finish))
        await resp.write_eof()
        return resp

    def _embedding_routes(self) -> list[web.RouteDef]:
        """/v1/embeddings on the OpenAI-compatible front (vLLM serves it too)."""
        return [web.post("/v1/embeddings", self._embeddings)] if self.front.api == "openai" else []

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        """Deterministic unit vectors (one per input), answered at once: the API's shape for
        clients and gateways, not an embedding model's timing."""
        gated = await self._gate(request)
        if gated is not None:
            return gated
        try:
            req = parse_embeddings(parse_json(await request.read()))
            if req.model != self.model_name:
                raise ApiError(
                    404, f"The model `{req.model}` does not exist.", "model", "model_not_found"
                )
        except ApiError as e:
            return self._error(e)
        self.metrics.prompt_tokens += req.prompt_tokens
        dims, b64 = req.dimensions, req.base64
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(text, dims, b64)}
            for i, text in enumerate(req.inputs)
        ]
        tokens = {"prompt_tokens": req.prompt_tokens, "total_tokens": req.prompt_tokens}
        return web.json_response(
            {"object": "list", "data": data, "model": self.model_name, "usage": tokens}
        )

    async def _models(self, request: web.Request) -> web.StreamResponse:
        gated = await self._gate(request, health=True)
        if gated is not None:
            return gated
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": self.model_name,
                        "object": "model",
                        "created": self._created,
                        "owned_by": "skyfleet-emulator",
                        "root": self.profile.model,
                        "max_model_len": self.engine.max_sequence_tokens,
                    }
                ],
            }
        )

    async def _health(self, request: web.Request) -> web.StreamResponse:
        gated = await self._gate(request, health=True)
        if gated is not None:
            return gated
        return web.json_response(
            {"status": "ok", "profile": self.profile.name, "model": self.model_name}
        )

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        e = self.engine
        text = self.metrics.render(len(e.running), len(e.waiting), e.kv_usage)
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    # -- admin ---------------------------------------------------------------------------------
    async def _faults_list(self, request: web.Request) -> web.StreamResponse:
        now = self.now()
        return web.json_response({"now_s": now, "faults": self.faults.listing(now)})

    async def _faults_add(self, request: web.Request) -> web.StreamResponse:
        try:
            body = parse_json(await request.read())
        except ApiError as e:
            return self._error(e)
        items = body.get("faults", [body]) if isinstance(body.get("faults"), list) else [body]
        now = self.now()
        added = []
        try:
            faults = [parse_fault(x) for x in items]
        except SkyfleetError as e:
            return self._error(ApiError(400, str(e), "kind", "invalid_fault"))
        for f in faults:
            added.append(self.faults.add(f, now).to_json(now))
        return web.json_response({"now_s": now, "added": added})

    async def _faults_clear(self, request: web.Request) -> web.StreamResponse:
        self.faults.clear()
        return web.json_response({"now_s": self.now(), "faults": []})

    async def _faults_delete(self, request: web.Request) -> web.StreamResponse:
        try:
            fid = int(request.match_info["fid"])
        except ValueError:
            fid = -1
        if not self.faults.remove(fid):
            return self._error(ApiError(404, f"no fault with id {fid}", "id", "not_found"))
        return web.json_response({"now_s": self.now(), "removed": fid})


def _vector(text: str, dimensions: int, b64: bool) -> list[float] | str:
    """A unit vector drawn from the text's hash (float32 little-endian in base64 if `b64`)."""
    rng = random.Random(zlib.crc32(text.encode("utf-8", "surrogatepass")))
    xs = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in xs)) or 1.0
    unit = [round(x / norm, 6) for x in xs]
    return base64.b64encode(struct.pack(f"<{dimensions}f", *unit)).decode() if b64 else unit


def _abort(request: web.Request) -> None:
    """Drop the TCP connection without a response (RST)."""
    tr = request.transport
    if tr is not None:
        tr.abort()


async def serve(server: EmulatorServer, host: str, port: int) -> None:
    """Run until cancelled; prints `listening on http://HOST:PORT` once bound."""
    runner = web.AppRunner(server.app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, backlog=2048)
    await site.start()
    bound = int(runner.addresses[0][1]) if runner.addresses else port
    print(f"listening on http://{host}:{bound}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
