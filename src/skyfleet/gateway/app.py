"""The gateway's HTTP application: auth → validation → admission → routing → relay → ledger."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from skyfleet.config import FleetConfig, TenantConfig, load_config
from skyfleet.dashboard.gateway import mount as mount_dashboard
from skyfleet.errors import ConfigError
from skyfleet.gateway.admission import Admission, AdmitAll
from skyfleet.gateway.errors import error_body, error_response
from skyfleet.gateway.fleet import Fleet, LiveEndpoint
from skyfleet.gateway.ledger import Ledger, UsageRecord
from skyfleet.gateway.metrics import GatewayMetrics
from skyfleet.gateway.monitor import Monitor
from skyfleet.gateway.sse import SSERelay, error_event
from skyfleet.gateway.validate import prompt_text, validate
from skyfleet.policy.retry import RetryBudget
from skyfleet.policy.routing import route
from skyfleet.policy.types import RequestFeatures

log = logging.getLogger("skyfleet.gateway")

PATHS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings"}
PRIORITY_HEADER = "x-skyfleet-priority"
_PRIORITIES = ("critical", "standard", "sheddable")
_ID_PREFIX = os.urandom(6).hex()  # per process: ids stay unique across workers and restarts
_IDS = itertools.count()


class AttemptFailed(Exception):
    """One upstream attempt failed before any byte reached the client."""

    def __init__(
        self,
        cause: str,
        message: str,
        *,
        status: int = 502,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        endpoint_fault: bool = True,
        retryable: bool = True,
    ) -> None:
        super().__init__(message)
        self.cause, self.message, self.status = cause, message, status
        self.body, self.headers = body, headers or {}
        self.endpoint_fault, self.retryable = endpoint_fault, retryable

    def response(self) -> web.Response:
        """The client-facing answer when no attempt is left."""
        h = {"x-skyfleet-error-source": "upstream", **self.headers}
        body = self.body or error_body(self.status, self.message, code=self.cause)
        return web.Response(
            status=self.status, body=body, content_type="application/json", headers=h
        )


@dataclass(slots=True)
class OpenedStream:
    """An upstream stream whose first bytes arrived but that reached no client yet."""

    up: aiohttp.ClientResponse
    first: bytes


@dataclass(slots=True)
class Call:
    """Per-request context carried through the attempts."""

    kind: str
    rec: UsageRecord
    feats: RequestFeatures
    obj: dict[str, Any]
    body: bytes
    t0: float
    client_usage: bool
    committed: bool = False  # bytes reached the client: no more retries
    tenant: TenantConfig | None = None


class Gateway:
    """One gateway process: live fleet state, upstream session, ledger, metrics."""

    def __init__(
        self, cfg: FleetConfig, config_path: str | None = None, admission: Admission | None = None
    ) -> None:
        self.fleet = Fleet(cfg)
        self.config_path = config_path
        self.metrics = GatewayMetrics(lambda: self.fleet)
        self.ledger = Ledger(cfg.ledger.target, cfg.ledger.flush_interval_s, cfg.ledger.max_batch)
        self.retry = self._budget(cfg)
        self.admission: Admission = admission or AdmitAll()
        self.rng = random.Random()
        self.session: aiohttp.ClientSession | None = None
        self.monitor: Monitor | None = None
        self.active = 0
        self.draining = False
        self._mtime = self._stat()
        self._watch: asyncio.Task[None] | None = None

    @staticmethod
    def _budget(cfg: FleetConfig) -> RetryBudget:
        r = cfg.routing
        return RetryBudget(
            r.retry_budget_ratio, r.retry_budget_min, r.retry_budget_window_s, r.max_attempts
        )

    # ---- lifecycle -------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        """The aiohttp application with every route."""
        app = web.Application(client_max_size=1 << 40)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/admin/endpoints", self._admin_endpoints)
        app.router.add_post("/admin/reload", self._admin_reload)
        mount_dashboard(app, self)  # /dashboard (skyfleet.dashboard; admin key)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        conn = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30)
        self.session = aiohttp.ClientSession(connector=conn, auto_decompress=False)
        await self.ledger.start()
        self.monitor = Monitor(lambda: self.fleet, self.session)
        self.monitor.start()
        if self.config_path and self.fleet.cfg.server.watch_config:
            self._watch = asyncio.create_task(self._watch_loop())

    async def _on_cleanup(self, app: web.Application) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self.monitor is not None:
            await self.monitor.stop()
        await self.ledger.close()
        if self.session is not None:
            await self.session.close()

    def _stat(self) -> float:
        if not self.config_path:
            return 0.0
        try:
            return Path(self.config_path).stat().st_mtime
        except OSError:
            return 0.0

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            m = self._stat()
            if m and m != self._mtime:
                self._mtime = m
                self.reload()

    def reload(self) -> bool:
        """Re-read the config file; keep the old config if the new one is invalid."""
        if not self.config_path:
            return False
        self._mtime = self._stat()
        try:
            cfg = load_config(self.config_path)
        except ConfigError as e:
            log.error("config reload failed, keeping the current config: %s", e)
            self.metrics.reloads.labels("error").inc()
            return False
        old = self.fleet.cfg
        self.fleet.apply(cfg)
        if cfg.routing != old.routing:
            self.retry = self._budget(cfg)
        if cfg.ledger != old.ledger:
            log.warning("ledger settings change on reload is ignored until restart")
        self.metrics.reloads.labels("ok").inc()
        log.info("config reloaded: %d endpoints, %d models", len(cfg.endpoints), len(cfg.models))
        return True

    # ---- small routes ----------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        if self.draining:
            return web.json_response({"status": "draining"}, status=503)
        healthy = sum(e.state.healthy for e in self.fleet.endpoints.values())
        return web.json_response(
            {"status": "ok", "endpoints": len(self.fleet.endpoints), "healthy_endpoints": healthy}
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    async def _models(self, request: web.Request) -> web.Response:
        _, err = self._auth(request)
        if err is not None:
            return err
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "skyfleet"}
            for m in self.fleet.models
        ]
        return web.json_response({"object": "list", "data": data})

    def _admin_check(self, request: web.Request) -> web.Response | None:
        if not self.fleet.admin_hashes:
            return error_response(403, "admin API disabled: set server.admin_api_keys")
        key = _bearer(request)
        if key is None or not self.fleet.is_admin(key):
            self.metrics.errors.labels("auth").inc()
            return error_response(401, "admin routes need an admin API key")
        return None

    async def _admin_endpoints(self, request: web.Request) -> web.Response:
        err = self._admin_check(request)
        if err is not None:
            return err
        now = time.monotonic()
        out = []
        for ep in self.fleet.endpoints.values():
            s, h = ep.state, ep.health
            out.append(
                {
                    "name": s.name,
                    "provider": s.provider,
                    "region": s.region,
                    "tier": s.tier,
                    "model": s.model,
                    "capacity": s.capacity,
                    "in_flight": s.in_flight,
                    "healthy": s.healthy,
                    "ejected_for_s": None
                    if h.ejected_until is None
                    else max(0.0, h.ejected_until - now),
                    "probe_down": h.probe_down,
                    "consecutive_failures": h.consecutive_failures,
                    "ejections": h.total_ejections,
                    "num_requests_waiting": s.num_waiting,
                    "kv_cache_usage": s.kv_cache_usage,
                    "scraped_age_s": None if s.scraped_at is None else now - s.scraped_at,
                    "price_per_hour": s.price_per_hour,
                    "price_per_1m_input_tokens": s.price_per_1m_input,
                    "price_per_1m_output_tokens": s.price_per_1m_output,
                }
            )
        models = {m: [e.cfg.name for e in eps] for m, eps in self.fleet.models.items()}
        return web.json_response({"endpoints": out, "models": models, "in_flight": self.active})

    async def _admin_reload(self, request: web.Request) -> web.Response:
        err = self._admin_check(request)
        if err is not None:
            return err
        ok = self.reload()
        return web.json_response({"reloaded": ok}, status=200 if ok else 400)

    # ---- auth and parsing ------------------------------------------------------------------

    def _auth(self, request: web.Request) -> tuple[TenantConfig | None, web.Response | None]:
        if self.fleet.open_access:
            return None, None
        key = _bearer(request)
        if key is None:
            self.metrics.errors.labels("auth").inc()
            return None, error_response(
                401, "missing API key: send 'Authorization: Bearer <key>'", code="invalid_api_key"
            )
        t = self.fleet.tenant_for(key)
        if t is None:
            self.metrics.errors.labels("auth").inc()
            return None, error_response(401, "invalid API key", code="invalid_api_key")
        return t, None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._inference(request, "chat")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._inference(request, "completions")

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._inference(request, "embeddings")

    async def _read_body(self, request: web.Request, limit: int) -> bytes | None:
        cl = request.content_length
        if cl is not None and cl > limit:
            return None
        buf = bytearray()
        while True:
            chunk = await request.content.read(1 << 16)
            if not chunk:
                return bytes(buf)
            buf += chunk
            if len(buf) > limit:
                return None

    async def _inference(self, request: web.Request, kind: str) -> web.StreamResponse:
        t0 = time.monotonic()
        wall = time.time()
        fleet = self.fleet
        tenant, err = self._auth(request)
        if err is not None:
            return err
        limit = fleet.cfg.server.max_body_bytes
        body = await self._read_body(request, limit)
        if body is None:
            self.metrics.errors.labels("too_large").inc()
            return error_response(413, f"request body exceeds the limit of {limit} bytes")
        try:
            obj = orjson.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            self.metrics.errors.labels("bad_request").inc()
            return error_response(400, f"invalid JSON body: {e}")
        if not isinstance(obj, dict):
            self.metrics.errors.labels("bad_request").inc()
            return error_response(400, "the request body must be a JSON object")
        problem = validate(kind, obj)
        if problem is not None:
            self.metrics.errors.labels("bad_request").inc()
            return error_response(400, problem[0], param=problem[1])
        model: str = obj["model"]
        states = fleet.states.get(model)
        if states is None:
            self.metrics.errors.labels("unknown_model").inc()
            served = ", ".join(sorted(fleet.models))
            return error_response(
                404,
                f"The model '{model}' does not exist; served models: {served}",
                param="model",
                code="model_not_found",
            )
        priority = tenant.priority if tenant is not None else "standard"
        hp = request.headers.get(PRIORITY_HEADER)
        if hp is not None and tenant is not None and tenant.allow_priority_header:
            if hp not in _PRIORITIES:
                return error_response(
                    400, f"{PRIORITY_HEADER} must be one of {', '.join(_PRIORITIES)}"
                )
            priority = hp  # type: ignore[assignment]
        stream = kind != "embeddings" and obj.get("stream") is True
        so = obj.get("stream_options")
        client_usage = isinstance(so, dict) and so.get("include_usage") is True
        rc = fleet.cfg.routing
        prefix = None
        if rc.prefix_affinity:
            prefix = zlib.crc32(prompt_text(kind, obj, rc.prefix_chars).encode())
        mt = obj.get("max_tokens", obj.get("max_completion_tokens"))
        feats = RequestFeatures(
            model=model,
            tenant=tenant.name if tenant is not None else "anonymous",
            priority=priority,
            stream=stream,
            input_tokens_est=len(body) // 4,
            max_tokens=mt if isinstance(mt, int) else None,
            prefix_key=prefix,
        )
        if not any(st.healthy for st in states):  # nothing to wait for: answer at once
            return self._no_healthy(model, time.monotonic())
        decision = await self.admission.admit(feats, tenant, states)
        if decision.action == "reject":
            self.metrics.errors.labels("rejected").inc()
            self.metrics.requests.labels(model, str(decision.status)).inc()
            return error_response(
                decision.status,
                decision.reason or "request rejected by admission control",
                code="rejected",
                retry_after_s=decision.retry_after_s,
                headers=decision.headers,
            )
        rid = f"req-{_ID_PREFIX}{next(_IDS):010x}"
        rec = UsageRecord(request_id=rid, ts=wall, tenant=feats.tenant, model=model, stream=stream)
        call = Call(kind, rec, feats, obj, body, t0, client_usage, tenant=tenant)
        self.active += 1
        try:
            resp = await self._forward(request, call)
            if not call.committed:
                resp.headers["x-request-id"] = rid
            return resp
        except asyncio.CancelledError:
            if not (call.committed and rec.status == 200):  # else: closed after [DONE]
                rec.status, rec.error = 499, rec.error or "client_disconnected"
                self.metrics.errors.labels("client_disconnected").inc()
            raise
        except Exception as e:  # a bug must still end in a clean error and a record
            log.exception("internal error on %s", rid)
            rec.status, rec.error = 500, f"internal: {type(e).__name__}"
            return error_response(500, "internal gateway error", code="internal_error")
        finally:
            self.active -= 1
            self._finish(call)

    def _finish(self, call: Call) -> None:
        rec = call.rec
        rec.latency_s = time.monotonic() - call.t0
        if rec.usage_estimated and rec.prompt_tokens == 0:
            rec.prompt_tokens = call.feats.input_tokens_est
        m = self.metrics
        m.requests.labels(rec.model, str(rec.status)).inc()
        m.latency.labels(rec.model).observe(rec.latency_s)
        if rec.ttft_s is not None:
            m.ttft.labels(rec.model).observe(rec.ttft_s)
        if rec.prompt_tokens:
            m.tokens.labels(rec.model, "prompt").inc(rec.prompt_tokens)
        if rec.completion_tokens:
            m.tokens.labels(rec.model, "completion").inc(rec.completion_tokens)
        ep = self.fleet.endpoints.get(rec.endpoint or "")
        if ep is not None:
            rec.cost_usd = ep.cost(rec.prompt_tokens, rec.completion_tokens, rec.latency_s)
        self.ledger.add(rec)
        self.admission.release(call.feats, call.tenant, rec.prompt_tokens, rec.completion_tokens)

    # ---- routing and attempts --------------------------------------------------------------

    async def _forward(self, request: web.Request, call: Call) -> web.StreamResponse:
        fleet = self.fleet
        rc = fleet.cfg.routing
        states = fleet.states.get(call.feats.model, [])  # [] if a reload removed the model
        now = time.monotonic()
        self.retry.record_request(now)
        tried: list[str] = []
        last: AttemptFailed | None = None
        rec = call.rec
        while True:
            d = route(call.feats, states, rc, self.rng, exclude=tried, now=now)
            if d.endpoint is None:
                if last is not None:
                    rec.status, rec.error = last.status, last.cause
                    self.metrics.errors.labels(last.cause).inc()
                    return last.response()
                rec.status, rec.error = 503, "no_healthy_endpoint"
                return self._no_healthy(call.feats.model, now)
            ep = fleet.endpoints.get(d.endpoint)
            if ep is None:  # removed by a reload since this request started
                tried.append(d.endpoint)
                continue
            if d.spilled:
                self.metrics.spillovers.labels(call.feats.model, d.tier or "").inc()
            rec.attempts += 1
            rec.endpoint, rec.provider, rec.tier = ep.cfg.name, ep.cfg.provider, ep.cfg.tier
            try:
                if call.feats.stream:
                    return await self._attempt_stream(request, call, ep)
                return await self._attempt(call, ep)
            except AttemptFailed as f:
                last = f
                self._outcome(ep, f.cause, f.endpoint_fault)
                now = time.monotonic()
                if not f.retryable:
                    rec.status, rec.error = f.status, f.cause
                    self.metrics.errors.labels(f.cause).inc()
                    return f.response()
                if not self.retry.try_retry(rec.attempts, now):
                    if rec.attempts < rc.max_attempts:
                        self.metrics.retry_budget_exhausted.inc()
                    rec.status, rec.error = f.status, f.cause
                    self.metrics.errors.labels(f.cause).inc()
                    return f.response()
                self.metrics.retries.labels(call.feats.model, f.cause).inc()
                tried.append(ep.cfg.name)

    def _no_healthy(self, model: str, now: float) -> web.Response:
        """503 with Retry-After = time until the first ejection of the model's endpoints ends."""
        self.metrics.errors.labels("no_healthy_endpoint").inc()
        eps = self.fleet.models.get(model, [])
        wait = min((e.health.seconds_until_retry(now) for e in eps), default=1.0)
        return error_response(
            503,
            f"no healthy endpoint for model '{model}'",
            code="no_healthy_endpoint",
            retry_after_s=wait,
        )

    def _outcome(self, ep: LiveEndpoint, outcome: str, fault: bool) -> None:
        self.metrics.attempts.labels(ep.cfg.name, outcome).inc()
        if not fault:
            if outcome == "ok":
                ep.health.on_success()
            return
        now = time.monotonic()
        eps = self.fleet.endpoints.values()
        ejected = sum(1 for e in eps if e.health.ejected_until is not None)
        pct = self.fleet.cfg.health.max_ejection_percent
        may = ejected == 0 or (ejected + 1) * 100.0 <= pct * len(eps)
        if ep.health.on_failure(now, self.fleet.cfg.health, may):
            ep.state.healthy = False
            log.warning(
                "endpoint %s ejected for %.1fs after consecutive failures (%s)",
                ep.cfg.name,
                ep.health.seconds_until_retry(now),
                outcome,
            )

    def _upstream_body(self, call: Call, ep: LiveEndpoint) -> bytes:
        obj = call.obj
        need_usage = call.feats.stream and not call.client_usage
        if obj["model"] == ep.cfg.model and not need_usage:
            return call.body
        o = dict(obj)
        o["model"] = ep.cfg.model
        if need_usage:
            so = dict(o.get("stream_options") or {})
            so["include_usage"] = True
            o["stream_options"] = so
        return orjson.dumps(o)

    def _status_failure(self, ep: LiveEndpoint, status: int, data: bytes, hdrs: Any) -> None:
        """Raise for a 429/5xx answer; other statuses are the client's and pass through."""
        if status == 429:
            h = {"Retry-After": hdrs["Retry-After"]} if "Retry-After" in hdrs else {}
            ep.state.throttled_until = time.monotonic() + _retry_after(hdrs.get("Retry-After"))
            raise AttemptFailed(
                "upstream_429",
                f"endpoint {ep.cfg.name} is rate limiting",
                status=429,
                body=data or None,
                headers=h,
                endpoint_fault=False,
            )
        if status >= 500:
            raise AttemptFailed(
                "upstream_5xx",
                f"endpoint {ep.cfg.name} answered {status}",
                status=status if status in (500, 502, 503, 504) else 502,
                body=data if _is_json(data) else None,
            )

    async def _attempt(self, call: Call, ep: LiveEndpoint) -> web.Response:
        assert self.session is not None
        s = ep.state
        s.in_flight += 1
        try:
            async with self.session.post(
                ep.cfg.url + PATHS[call.kind],
                data=self._upstream_body(call, ep),
                headers=ep.headers,
                timeout=ep.timeout,
            ) as up:
                data = await up.read()
                status, hdrs = up.status, up.headers
        except TimeoutError:
            raise AttemptFailed(
                "upstream_timeout", f"endpoint {ep.cfg.name} timed out", status=504
            ) from None
        except (aiohttp.ClientError, OSError) as e:
            raise AttemptFailed(
                "upstream_connect", f"endpoint {ep.cfg.name} failed: {type(e).__name__}"
            ) from None
        finally:
            s.in_flight -= 1
        self._status_failure(ep, status, data, hdrs)
        rec = call.rec
        if 200 <= status < 300:
            try:
                parsed = orjson.loads(data)
                if not isinstance(parsed, dict):
                    raise ValueError("not an object")
            except (ValueError, UnicodeDecodeError):
                raise AttemptFailed(
                    "upstream_garbage",
                    f"endpoint {ep.cfg.name} returned an invalid response (not a JSON object)",
                ) from None
            u = parsed.get("usage")
            if isinstance(u, dict):
                rec.prompt_tokens = _int(u.get("prompt_tokens"))
                rec.completion_tokens = _int(u.get("completion_tokens"))
            self._outcome(ep, "ok", False)
        else:
            self._outcome(ep, f"client_{status}", False)
        rec.status = status
        if status >= 400:
            rec.error = f"upstream_{status}"
        return web.Response(
            status=status,
            body=data,
            headers={
                "Content-Type": hdrs.get("Content-Type", "application/json"),
                "x-skyfleet-endpoint": ep.cfg.name,
                "x-skyfleet-attempts": str(rec.attempts),
            },
        )

    async def _attempt_stream(
        self, request: web.Request, call: Call, ep: LiveEndpoint
    ) -> web.StreamResponse:
        opened = await self._open_stream(call, ep)
        if isinstance(opened, web.Response):
            return opened
        return await self._commit_stream(request, call, ep, opened)

    async def _open_stream(self, call: Call, ep: LiveEndpoint) -> OpenedStream | web.Response:
        """Send the request and wait for the first bytes; nothing reaches the client yet.

        Failures before this point raise AttemptFailed (retryable); an upstream error status
        comes back as the response to pass on. On success the endpoint's in-flight count
        stays raised until `_commit_stream` ends.
        """
        assert self.session is not None
        s, rec = ep.state, call.rec
        s.in_flight += 1
        up: aiohttp.ClientResponse | None = None
        ok = False
        try:
            try:
                up = await self.session.post(
                    ep.cfg.url + PATHS[call.kind],
                    data=self._upstream_body(call, ep),
                    headers=ep.headers,
                    timeout=ep.timeout,
                )
                if up.status != 200:
                    data = await up.read()
                    self._status_failure(ep, up.status, data, up.headers)
                    self._outcome(ep, f"client_{up.status}", False)
                    rec.status, rec.error = up.status, f"upstream_{up.status}"
                    return web.Response(
                        status=up.status,
                        body=data,
                        headers={"Content-Type": up.headers.get("Content-Type", "text/plain")},
                    )
                first = await up.content.readany()
            except TimeoutError:
                raise AttemptFailed(
                    "upstream_timeout", f"endpoint {ep.cfg.name} timed out", status=504
                ) from None
            except (aiohttp.ClientError, OSError) as e:
                raise AttemptFailed(
                    "upstream_connect", f"endpoint {ep.cfg.name} failed: {type(e).__name__}"
                ) from None
            head = first.lstrip()
            if (
                not first
                or "text/event-stream" not in up.headers.get("Content-Type", "")
                or not head.startswith((b"data:", b":", b"event:", b"id:"))
            ):
                raise AttemptFailed(
                    "upstream_garbage",
                    f"endpoint {ep.cfg.name} returned an invalid stream (not server-sent events)",
                )
            ok = True
            return OpenedStream(up, first)
        finally:
            if not ok:
                s.in_flight -= 1
                if up is not None:
                    up.close()

    async def _commit_stream(
        self, request: web.Request, call: Call, ep: LiveEndpoint, opened: OpenedStream
    ) -> web.StreamResponse:
        """Relay an opened stream to the client: from here on no retry is possible."""
        rec = call.rec
        clean = False
        try:
            out = web.StreamResponse(
                status=200,
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                    "x-request-id": rec.request_id,
                    "x-skyfleet-endpoint": ep.cfg.name,
                    "x-skyfleet-attempts": str(rec.attempts),
                },
            )
            call.committed = True
            await out.prepare(request)
            rec.ttft_s = time.monotonic() - call.t0
            clean = await self._relay(out, opened.up, opened.first, call, ep)
            return out
        finally:
            ep.state.in_flight -= 1
            if clean:
                opened.up.release()
            else:
                opened.up.close()

    async def _relay(
        self,
        out: web.StreamResponse,
        up: aiohttp.ClientResponse,
        first: bytes,
        call: Call,
        ep: LiveEndpoint,
    ) -> bool:
        """Relay the stream; returns True when it ended cleanly with [DONE]."""
        rec = call.rec
        relay = SSERelay(strip_usage=not call.client_usage)
        chunk = first
        failure: str | None = None
        try:
            while chunk:
                data = relay.feed(chunk)
                if data:
                    await out.write(data)
                if relay.done:
                    break
                try:
                    chunk = await up.content.readany()
                except TimeoutError:
                    failure = "upstream stalled mid-stream"
                    break
                except (aiohttp.ClientError, OSError) as e:
                    failure = f"upstream connection lost mid-stream ({type(e).__name__})"
                    break
            if failure is None and not relay.done:
                failure = "upstream closed the stream before it finished"
            if relay.buf and failure is None:
                await out.write(relay.buf)
            if failure is not None:
                await out.write(error_event(f"endpoint {ep.cfg.name}: {failure}"))
        except ConnectionResetError:
            rec.status, rec.error = 499, "client_disconnected"
            self.metrics.errors.labels("client_disconnected").inc()
            self._usage(rec, relay)
            return False
        finally:
            self._usage(rec, relay)
        if failure is not None:
            rec.status, rec.error = 502, "mid_stream"
            self.metrics.errors.labels("mid_stream").inc()
            self._outcome(ep, "mid_stream", True)
        else:
            rec.status = 200
            self._outcome(ep, "ok", False)
        with contextlib.suppress(ConnectionResetError):
            await out.write_eof()
        if failure is None:  # read the upstream's end so its connection can be reused
            try:
                await asyncio.wait_for(up.content.read(), 1.0)
            except (TimeoutError, aiohttp.ClientError, OSError):
                return False
        return failure is None

    @staticmethod
    def _usage(rec: UsageRecord, relay: SSERelay) -> None:
        if relay.usage is not None:
            rec.prompt_tokens = _int(relay.usage.get("prompt_tokens"))
            rec.completion_tokens = _int(relay.usage.get("completion_tokens"))
            rec.usage_estimated = False
        else:  # partial stream: one token per content event is the estimate
            rec.completion_tokens = max(0, relay.events - (1 if relay.done else 0))
            rec.usage_estimated = True


def _bearer(request: web.Request) -> str | None:
    h = request.headers.get("Authorization")
    if not h or not h.startswith("Bearer "):
        return None
    key = h[7:].strip()
    return key or None


def _retry_after(v: str | None) -> float:
    """Seconds from a Retry-After header (1 s when absent or unreadable, at most 60 s)."""
    try:
        return min(60.0, max(0.0, float(v))) if v is not None else 1.0
    except ValueError:
        return 1.0


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


def _is_json(data: bytes) -> bool:
    try:
        return isinstance(orjson.loads(data), dict)
    except (ValueError, UnicodeDecodeError):
        return False
