"""Anthropic Messages API on the emulator: POST /v1/messages (JSON or SSE).

Follows Anthropic's API reference: `x-api-key` and `anthropic-version` headers are required;
errors are `{"type": "error", "error": {"type", "message"}}` with the documented statuses
(400 invalid_request_error, 401 authentication_error, 403 permission_error, 404
not_found_error, 413 request_too_large, 429 rate_limit_error, 500 api_error, 529
overloaded_error); streams are SSE with named events (message_start, content_block_start,
ping, content_block_delta, content_block_stop, message_delta, message_stop).
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import orjson
from aiohttp import web

from skyfleet.emulator.api import ApiError, GenRequest
from skyfleet.emulator.fronts.base import Finish, Front, Job, Renderer, json_body, plan_tool
from skyfleet.emulator.tokens import WordStream, chat_prompt_tokens

STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}
TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    out = []
    for b in content if isinstance(content, list) else []:
        if not isinstance(b, dict):
            continue
        if b.get("type") == "text":
            out.append(str(b.get("text", "")))
        elif b.get("type") == "tool_use":
            out.append(orjson.dumps(b.get("input", {})).decode())
        elif b.get("type") == "tool_result":
            out.extend(_texts(b.get("content")))
    return out


class AnthropicRenderer(Renderer):
    def __init__(self, job: Job, words: WordStream, model: str) -> None:
        super().__init__(job, words, model)
        self.mid = "msg_" + uuid.uuid4().hex[:24]

    def usage(self, n: int) -> dict[str, Any]:
        return {
            "input_tokens": self.job.req.prompt_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": n,
        }

    def _block(self, n: int) -> dict[str, Any]:
        t = self.job.tool
        if t is None:
            return {"type": "text", "text": self.text(n)}
        return {"type": "tool_use", "id": t.call_id, "name": t.name, "input": t.arguments}

    def _message(self, content: list[dict[str, Any]], stop: str | None, n: int) -> dict[str, Any]:
        return {
            "id": self.mid,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": self.usage(n),
        }

    def head(self) -> bytes:
        t = self.job.tool
        start = {"type": "message_start", "message": self._message([], None, 1)}
        block: dict[str, Any] = {"type": "text", "text": ""}
        if t is not None:
            block = {"type": "tool_use", "id": t.call_id, "name": t.name, "input": {}}
        cbs = {"type": "content_block_start", "index": 0, "content_block": block}
        return (
            _sse("message_start", start)
            + _sse("content_block_start", cbs)
            + _sse("ping", {"type": "ping"})
        )

    def tokens(self, start: int, n: int) -> bytes:
        tool = self.job.tool is not None
        out = []
        for i in range(start, start + n):
            d = (
                {"type": "input_json_delta", "partial_json": self.piece(i)}
                if tool
                else {"type": "text_delta", "text": self.piece(i)}
            )
            out.append(
                _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d})
            )
        return b"".join(out)

    def tail(self, sent: int, finish: Finish) -> bytes:
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": STOP[finish], "stop_sequence": None},
            "usage": {"output_tokens": sent},
        }
        return (
            _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
            + _sse("message_delta", delta)
            + _sse("message_stop", {"type": "message_stop"})
        )

    def whole(self, n: int, finish: Finish) -> web.Response:
        return web.json_response(self._message([self._block(n)], STOP[finish], n))

    def filtered(self, stream: bool) -> tuple[int, bytes, str]:
        if not stream:
            return 200, orjson.dumps(self._message([], "refusal", 0)), "application/json"
        start = {"type": "message_start", "message": self._message([], None, 0)}
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": "refusal", "stop_sequence": None},
            "usage": {"output_tokens": 0},
        }
        body = (
            _sse("message_start", start)
            + _sse("message_delta", delta)
            + _sse("message_stop", {"type": "message_stop"})
        )
        return 200, body, self.content_type


class AnthropicFront(Front):
    api = "anthropic"

    def __init__(self, api_key: str | None) -> None:
        self.api_key = api_key

    def routes(self, handler: Any) -> list[web.RouteDef]:
        return [web.post("/v1/messages", handler)]

    async def parse(self, request: web.Request) -> Job:
        key = request.headers.get("x-api-key")
        auth = request.headers.get("Authorization", "")
        if key is None and auth.startswith("Bearer "):
            key = auth[7:]  # newer SDKs send the API key as a bearer token
        if key is None:
            raise ApiError(401, "x-api-key header is required")
        if self.api_key is not None and not secrets.compare_digest(key, self.api_key):
            raise ApiError(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            raise ApiError(400, "anthropic-version: header is required")
        body = json_body(await request.read())
        model = body.get("model")
        if not isinstance(model, str):
            raise ApiError(400, "model: Field required")
        mt = body.get("max_tokens")
        if isinstance(mt, bool) or not isinstance(mt, int) or mt < 1:
            raise ApiError(400, "max_tokens: Field required (an integer ≥ 1)")
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise ApiError(400, "messages: Field required (a non-empty list)")
        texts = _texts(body.get("system") or "") if body.get("system") else []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
                raise ApiError(400, f"messages.{i}.role: Input should be 'user' or 'assistant'")
            texts.extend(_texts(m.get("content")))
        tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and "name" in t]
        texts.extend(orjson.dumps(t).decode() for t in tools)
        req = GenRequest(
            True,
            model,
            "\n".join(texts),
            chat_prompt_tokens(texts),
            mt,
            bool(body.get("stream")),
            True,
            None,
        )
        job = Job(req)
        tc = body.get("tool_choice") or {}
        if tools and tc.get("type") in ("any", "tool"):
            name = tc.get("name") if tc.get("type") == "tool" else tools[0]["name"]
            t = next((x for x in tools if x["name"] == name), None)
            if t is None:
                raise ApiError(400, f"tool_choice.name: tool {name!r} not found in tools")
            job.tool = plan_tool(
                str(t["name"]), t.get("input_schema"), "toolu_" + uuid.uuid4().hex[:24]
            )
        return job

    def not_found(self, model: str) -> ApiError:
        return ApiError(404, f"model: {model}")

    def renderer(self, job: Job, words: WordStream, model: str) -> Renderer:
        return AnthropicRenderer(job, words, model)

    def error(self, e: ApiError) -> web.Response:
        etype = TYPES.get(e.status, "api_error")
        msg = "Overloaded" if etype == "overloaded_error" else e.message
        body = {"type": "error", "error": {"type": etype, "message": msg}}
        headers = {"request-id": "req_" + uuid.uuid4().hex[:24], **e.headers}
        if "Retry-After" in headers:
            headers["retry-after"] = headers.pop("Retry-After")
        return web.json_response(body, status=e.status, headers=headers)
