"""The gateway's HTTP routes: inference (auth → body → validation → admission → proxy →
record), models, health, metrics and the admin API.

A request's path, in order: `auth.authenticate` → `read_body` → JSON + `validate` → the
model's endpoints → `resolve_priority` → `AdmissionController.admit` (a `Ticket`, or
`Rejected`) → `Proxy.forward` (an `Answer`) → `settle`: the record's final status, metrics,
the ledger, `ticket.release`. Refusals before admission are `GatewayError`s: one OpenAI
error response and one metric each, no ledger record.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
import zlib
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from skyfleet.config import TenantConfig
from skyfleet.gateway.admission import Rejected, Ticket, Usage
from skyfleet.gateway.auth import authenticate, require_admin
from skyfleet.gateway.call import Call
from skyfleet.gateway.errors import GatewayError, error_response
from skyfleet.gateway.fleet import LiveEndpoint
from skyfleet.gateway.ledger import UsageRecord
from skyfleet.gateway.validate import prompt_text, validate
from skyfleet.policy.outcome import Outcome
from skyfleet.policy.priority import PRIORITY_HEADER, resolve_priority
from skyfleet.policy.types import RequestFeatures
from skyfleet.providers.messages_inbound import (
    ChatToMessagesStream,
    chat_to_message,
    error_to_anthropic,
    messages_to_chat,
)
from skyfleet.vocab import PRIORITY_LABELS

if TYPE_CHECKING:
    from skyfleet.gateway.app import Gateway

log = logging.getLogger("skyfleet.gateway")

_ID_PREFIX = os.urandom(6).hex()  # per process: ids stay unique across workers and restarts
_IDS = itertools.count()


def endpoint_row(endpoint: LiveEndpoint, now: float) -> dict[str, Any]:
    """One endpoint's config, routing state and health (`/admin/endpoints`, the dashboard)."""
    state, health, cfg = endpoint.state, endpoint.health, endpoint.cfg
    return {
        "name": state.name,
        "provider": state.provider,
        "region": state.region,
        "tier": state.tier,
        "model": state.model,
        "accelerator": cfg.accelerator or "",
        "capacity": state.capacity,
        "in_flight": state.in_flight,
        "peer_in_flight": state.peer_in_flight,
        "healthy": state.healthy,
        "ejected_for_s": None
        if health.ejected_until is None
        else max(0.0, health.ejected_until - now),
        "probe_down": health.probe_down,
        "consecutive_failures": health.consecutive_failures,
        "ejections": health.total_ejections,
        "num_requests_waiting": state.num_waiting,
        "kv_cache_usage": state.kv_cache_usage,
        "scraped_age_s": None if state.scraped_at is None else now - state.scraped_at,
        "price_per_hour": state.price_per_hour,
        "price_per_1m_input_tokens": state.price_per_1m_input,
        "price_per_1m_output_tokens": state.price_per_1m_output,
    }


async def read_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The body, refused with 413 past `limit` bytes (checked while reading, too) and with
    408 when it takes longer than `timeout_s` to arrive."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(limit)
    try:
        if request.content.is_eof():  # it came with the head (the usual case): nothing to wait on
            return await _read_within(request, limit)
        async with asyncio.timeout(timeout_s):
            return await _read_within(request, limit)
    except TimeoutError:
        raise GatewayError(
            Outcome.SLOW_CLIENT, 408, f"request body not received within {timeout_s:g} s"
        ) from None
    except web.RequestPayloadError:  # framing, or a Content-Encoding the bytes do not follow
        encoding = request.headers.get("Content-Encoding", "")
        how = f" (Content-Encoding: {encoding[:40]})" if encoding else ""
        raise GatewayError(
            Outcome.BAD_REQUEST, 400, f"the request body could not be read{how}"
        ) from None


async def _read_within(request: web.Request, limit: int) -> bytes:
    buffer = bytearray()
    while True:
        chunk = await request.content.read(1 << 16)
        if not chunk:
            return bytes(buffer)
        buffer += chunk
        if len(buffer) > limit:
            raise _too_large(limit)


def _too_large(limit: int) -> GatewayError:
    return GatewayError(Outcome.TOO_LARGE, 413, f"request body exceeds the limit of {limit} bytes")


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; 400 otherwise."""
    try:
        parsed = orjson.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise GatewayError(Outcome.BAD_REQUEST, 400, f"invalid JSON body: {e}") from None
    if not isinstance(parsed, dict):
        raise GatewayError(Outcome.BAD_REQUEST, 400, "the request body must be a JSON object")
    return parsed


def parse_request(api: str, body: bytes) -> dict[str, Any]:
    """The body as a JSON object with valid fields the gateway reads; 400 otherwise."""
    parsed = json_object(body)
    problem = validate(api, parsed)
    if problem is not None:
        raise GatewayError(Outcome.BAD_REQUEST, 400, problem[0], param=problem[1])
    return parsed


class Handlers:
    """The routes of one gateway process."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def add_to(self, app: web.Application) -> None:
        """Register every route on `app`."""
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/admin/endpoints", self.admin_endpoints)
        app.router.add_post("/admin/reload", self.admin_reload)

    # ---- inference ----------------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self.inference(request, "chat")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self.inference(request, "completions")

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self.inference(request, "embeddings")

    async def messages(self, request: web.Request) -> web.StreamResponse:
        """Anthropic's Messages API (`POST /v1/messages`) over the same models, tiers,
        admission and ledger: translated to a chat request, answered in Anthropic's shapes."""
        dialect = MessagesDialect()
        response = await self.inference(request, "chat", dialect)
        if isinstance(response, web.Response) and response.body is not None:
            return dialect.reshape(response)
        return response

    async def inference(
        self, request: web.Request, api: str, dialect: MessagesDialect | None = None
    ) -> web.StreamResponse:
        """One inference request, from the client's bytes to its ledger record."""
        gateway = self.gateway
        started, wall = time.monotonic(), time.time()
        try:
            tenant = authenticate(gateway.fleet, request, x_api_key=dialect is not None)
            server = gateway.fleet.cfg.server
            body = await read_body(request, server.max_body_bytes, server.body_timeout_s)
            if dialect is not None:
                body = dialect.chat_body(body)
            parsed = parse_request(api, body)
            features = self.features(request, api, parsed, body, tenant)
            states = gateway.fleet.states[features.model]
            if not any(state.healthy for state in states):  # nothing to wait for
                answer = gateway.proxy.no_healthy_endpoint(features.model, time.monotonic())
                gateway.metrics.errors.labels(answer.outcome.value).inc()
                return answer.response
            ticket = await gateway.admission.admit(features, tenant, states)
        except Rejected as rejected:  # admission: counted as a request of the model, too
            gateway.metrics.requests.labels(features.model, str(rejected.status)).inc()
            gateway.metrics.errors.labels(rejected.outcome.value).inc()
            return rejected.response()
        except GatewayError as refused:
            gateway.metrics.errors.labels(refused.outcome.value).inc()
            return refused.response()
        rid = f"req-{_ID_PREFIX}{next(_IDS):010x}"
        record = UsageRecord(
            request_id=rid,
            ts=wall,
            tenant=features.tenant,
            model=features.model,
            stream=features.stream,
        )
        call = Call(api, record, features, parsed, body, started, _client_usage(parsed), tenant)
        if dialect is not None and features.stream:
            call.reshape_stream = dialect.stream(features.model)
        return await self.proxy(request, call, ticket)

    def features(
        self,
        request: web.Request,
        api: str,
        parsed: dict[str, Any],
        body: bytes,
        tenant: TenantConfig | None,
    ) -> RequestFeatures:
        """What routing and admission know about the request; 404 for an unknown model, 400
        for a priority header the tenant may set but got wrong."""
        fleet = self.gateway.fleet
        model: str = parsed["model"]
        if model not in fleet.states:
            served = ", ".join(sorted(fleet.models))
            raise GatewayError(
                Outcome.UNKNOWN_MODEL,
                404,
                f"The model '{model}' does not exist; served models: {served}",
                param="model",
                code="model_not_found",
            )
        header = request.headers.get(PRIORITY_HEADER)
        try:
            priority = resolve_priority(
                tenant.priority if tenant is not None else "standard",
                header,
                tenant is not None and tenant.allow_priority_header,
            )
        except ValueError:
            raise GatewayError(
                Outcome.BAD_REQUEST,
                400,
                f"{PRIORITY_HEADER} must be one of {', '.join(PRIORITY_LABELS)}, got {header!r}",
                param=PRIORITY_HEADER,
            ) from None
        routing = fleet.cfg.routing
        prefix = None
        if routing.prefix_affinity:
            prefix = zlib.crc32(prompt_text(api, parsed, routing.prefix_chars).encode())
        max_tokens = parsed.get("max_tokens", parsed.get("max_completion_tokens"))
        return RequestFeatures(
            model=model,
            tenant=tenant.name if tenant is not None else "anonymous",
            priority=priority,
            stream=api != "embeddings" and parsed.get("stream") is True,
            input_tokens_est=len(body) // 4,
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            prefix_key=prefix,
        )

    async def proxy(self, request: web.Request, call: Call, ticket: Ticket) -> web.StreamResponse:
        """Forward an admitted request; whatever happens, it ends in one record."""
        gateway = self.gateway
        gateway.active += 1
        outcome, status, detail = Outcome.INTERNAL, 500, None
        try:
            answer = await gateway.proxy.forward(request, call)
            outcome, status = answer.outcome, answer.status
            if not call.committed:
                answer.response.headers["x-request-id"] = call.record.request_id
            return answer.response
        except asyncio.CancelledError:  # the client left (after the stream's end: served)
            outcome = Outcome.OK if call.finished else Outcome.CLIENT_DISCONNECTED
            status = 200 if call.finished else 499
            raise
        except Exception as e:  # a bug must still end in a clean error and a record
            log.exception("internal error on %s", call.record.request_id)
            detail = f"internal: {type(e).__name__}"
            return error_response(500, "internal gateway error", code="internal_error")
        finally:
            gateway.active -= 1
            self.settle(call, outcome, status, ticket, detail)

    def settle(
        self, call: Call, outcome: Outcome, status: int, ticket: Ticket, detail: str | None = None
    ) -> None:
        """The one place a request's final status is set: record, metrics, ledger, ticket."""
        gateway = self.gateway
        record = call.record
        record.status = status
        if not outcome.ok:
            record.error = detail or outcome.value
            if outcome is not Outcome.UPSTREAM_CLIENT_ERROR:
                gateway.metrics.errors.labels(outcome.value).inc()
        record.latency_s = time.monotonic() - call.started
        if record.usage_estimated and record.prompt_tokens == 0:
            record.prompt_tokens = call.features.input_tokens_est
        endpoint = gateway.fleet.endpoints.get(record.endpoint or "")
        if endpoint is not None:
            record.cost_usd = endpoint.cost(
                record.prompt_tokens, record.completion_tokens, record.latency_s
            )
        gateway.metrics.observe(record)
        gateway.ledger.add(record)
        ticket.release(
            outcome, Usage(record.prompt_tokens, record.completion_tokens, record.cost_usd)
        )

    # ---- the small routes ---------------------------------------------------------------
    async def models(self, request: web.Request) -> web.Response:
        try:
            authenticate(self.gateway.fleet, request)
        except GatewayError as refused:
            self.gateway.metrics.errors.labels(refused.outcome.value).inc()
            return refused.response()
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "skyfleet"}
            for m in self.gateway.fleet.models
        ]
        return web.json_response({"object": "list", "data": data})

    async def health(self, request: web.Request) -> web.Response:
        gateway = self.gateway
        if gateway.draining:
            return web.json_response({"status": "draining"}, status=503)
        endpoints = gateway.fleet.endpoints.values()
        healthy = sum(e.state.healthy for e in endpoints)
        return web.json_response(
            {"status": "ok", "endpoints": len(endpoints), "healthy_endpoints": healthy}
        )

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.gateway.metrics.render(),
            headers={"Content-Type": "text/plain; version=0.0.4"},
        )

    def _admin(self, request: web.Request) -> web.Response | None:
        try:
            require_admin(self.gateway.fleet, request)
        except GatewayError as refused:
            self.gateway.metrics.errors.labels(refused.outcome.value).inc()
            return refused.response()
        return None

    async def admin_endpoints(self, request: web.Request) -> web.Response:
        refused = self._admin(request)
        if refused is not None:
            return refused
        fleet = self.gateway.fleet
        now = time.monotonic()
        rows = [endpoint_row(e, now) for e in fleet.endpoints.values()]
        models = {m: [e.cfg.name for e in eps] for m, eps in fleet.models.items()}
        return web.json_response(
            {"endpoints": rows, "models": models, "in_flight": self.gateway.active}
        )

    async def admin_reload(self, request: web.Request) -> web.Response:
        refused = self._admin(request)
        if refused is not None:
            return refused
        ok = self.gateway.reload()
        return web.json_response({"reloaded": ok}, status=200 if ok else 400)


def _client_usage(parsed: dict[str, Any]) -> bool:
    options = parsed.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


class MessagesDialect:
    """The Anthropic Messages API in front of the chat path (`providers.messages_inbound`)."""

    def __init__(self) -> None:
        self.model = ""

    def chat_body(self, body: bytes) -> bytes:
        """The Messages request as chat-completions bytes; 400 (Anthropic-shaped later)."""
        chat = messages_to_chat(json_object(body))
        if isinstance(chat, tuple):
            raise GatewayError(Outcome.BAD_REQUEST, 400, chat[0], param=chat[1])
        self.model = str(chat["model"])
        return orjson.dumps(chat)

    def stream(self, model: str) -> ChatToMessagesStream:
        """The reshaper of one streamed answer."""
        return ChatToMessagesStream(model)

    def reshape(self, response: web.Response) -> web.Response:
        """A whole chat answer (or error) as Anthropic's message (or error) JSON."""
        assert isinstance(response.body, bytes)
        if response.status == 200:
            body = chat_to_message(response.body, self.model)
        else:
            body = error_to_anthropic(response.status, response.body)
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        headers["Content-Type"] = "application/json"
        return web.Response(status=response.status, body=body, headers=headers)
