"""`kind: anthropic` — the Anthropic Messages API (POST /v1/messages), both ways.

Auth: `x-api-key` (the endpoint's api_key) and `anthropic-version`. Streams are SSE with
named events: message_start, content_block_start/delta/stop, message_delta, message_stop,
ping, error. Usage: prompt = input + cache read + cache creation tokens (OpenAI counts
cached tokens inside prompt_tokens); cached = cache read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from skyfleet.providers.base import (
    RequestRejected,
    ResponseGarbage,
    StreamGarbage,
    UpstreamError,
    UpstreamRequest,
    Usage,
    cause_of_status,
    client_status,
    make_error,
    retry_after,
)
from skyfleet.providers.chat import Chat, Image, Message, read_chat, text
from skyfleet.providers.common import TranslatingAdapter, json_args, loads
from skyfleet.providers.openai_out import DONE, ChunkWriter, chat_completion, choice, tool_call
from skyfleet.providers.sse import SSEParser

if TYPE_CHECKING:
    from skyfleet.config import EndpointConfig

FIELDS = frozenset(
    {
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "top_k",
        "stop",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "user",
    }
)
FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
DEFAULT_URL = "https://api.anthropic.com"


def _image(img: Image) -> dict[str, Any]:
    if img.data is not None:
        src = {"type": "base64", "media_type": img.media_type, "data": img.data}
    else:
        src = {"type": "url", "url": img.url}
    return {"type": "image", "source": src}


def _blocks(parts: list[str | Image]) -> list[dict[str, Any]]:
    return [
        {"type": "text", "text": p} if isinstance(p, str) else _image(p)
        for p in parts
        if not (isinstance(p, str) and not p)
    ]


def messages(msgs: list[Message]) -> list[dict[str, Any]]:
    """OpenAI turns → Anthropic turns: tool results join one user turn, as the API wants."""
    out: list[dict[str, Any]] = []
    for i, m in enumerate(msgs):
        if m.role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": m.tool_call_id,
                "content": text(m.parts),
            }
            if out and out[-1]["role"] == "user" and out[-1].get("_tools"):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block], "_tools": True})
            continue
        content = _blocks(m.parts)
        if m.role == "assistant":
            for j, tc in enumerate(m.tool_calls):
                args = json_args(tc.arguments, f"messages[{i}].tool_calls[{j}]", "Anthropic")
                content.append({"type": "tool_use", "id": tc.id, "name": tc.name, "input": args})
        if m.role == "user" and out and out[-1].get("_tools"):
            out[-1]["content"].extend(content)  # text after the tool results of a turn
            continue
        out.append({"role": m.role, "content": content})
    for o in out:
        o.pop("_tools", None)
    return out


def request_body(chat: Chat, model: str, default_max_tokens: int) -> dict[str, Any]:
    """The Messages API body for a neutral chat request (no `stream` key)."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": chat.max_tokens or default_max_tokens,
        "messages": messages(chat.messages),
    }
    if chat.system:
        body["system"] = "\n\n".join(chat.system)
    if chat.temperature is not None:
        if chat.temperature > 1:
            raise RequestRejected(
                "'temperature' must be between 0 and 1 for Anthropic endpoints", "temperature"
            )
        body["temperature"] = chat.temperature
    if chat.top_p is not None:
        body["top_p"] = chat.top_p
    if "top_k" in chat.extra:
        body["top_k"] = chat.extra["top_k"]
    if chat.stop:
        body["stop_sequences"] = chat.stop
    if chat.tools:
        body["tools"] = [
            {
                "name": t.name,
                **({"description": t.description} if t.description else {}),
                "input_schema": t.parameters,
            }
            for t in chat.tools
        ]
    tc: dict[str, Any] | None = None
    if chat.tool_choice == "auto":
        tc = {"type": "auto"}
    elif chat.tool_choice == "required":
        tc = {"type": "any"}
    elif chat.tool_choice == "none":
        tc = {"type": "none"}
    elif chat.tool_name():
        tc = {"type": "tool", "name": chat.tool_name()}
    if chat.parallel_tool_calls is False and chat.tools:
        tc = tc or {"type": "auto"}
        if tc["type"] != "none":
            tc["disable_parallel_tool_use"] = True
    if tc is not None:
        body["tool_choice"] = tc
    rf = chat.response_format
    if rf is not None:
        if rf["type"] != "json_schema":
            raise RequestRejected(
                "response_format 'json_object' is not supported by Anthropic endpoints "
                "(use json_schema)",
                "response_format",
            )
        body["output_config"] = {"format": {"type": "json_schema", "schema": rf.get("schema", {})}}
    if chat.user:
        body["metadata"] = {"user_id": chat.user}
    return body


def usage(u: Mapping[str, Any]) -> Usage:
    """Anthropic usage → OpenAI semantics."""
    read = int(u.get("cache_read_input_tokens") or 0)
    made = int(u.get("cache_creation_input_tokens") or 0)
    return Usage(
        int(u.get("input_tokens") or 0) + read + made,
        int(u.get("output_tokens") or 0),
        read if "cache_read_input_tokens" in u else None,
    )


def completion(msg: dict[str, Any], model: str) -> tuple[bytes, Usage | None]:
    """A Messages API response → chat.completion JSON."""
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for b in msg.get("content") or []:
        if not isinstance(b, dict):
            continue
        if b.get("type") == "text":
            text.append(str(b.get("text", "")))
        elif b.get("type") == "tool_use":
            calls.append(
                tool_call(
                    str(b.get("id")), str(b.get("name")), orjson.dumps(b.get("input", {})).decode()
                )
            )
    u = msg.get("usage")
    use = usage(u) if isinstance(u, dict) else None
    finish = FINISH.get(str(msg.get("stop_reason")), "stop")
    content = "".join(text) if text or not calls else None
    rid = msg.get("id")
    body = chat_completion(
        model=model,
        choices=[choice(0, content, calls, finish)],
        usage=use,
        rid=f"chatcmpl-{rid}" if isinstance(rid, str) else None,
    )
    return body, use


ERRORS: dict[str, str] = {
    "rate_limit_error": "upstream_429",
    "overloaded_error": "upstream_overloaded",
    "api_error": "upstream_5xx",
    "timeout_error": "upstream_5xx",
    "authentication_error": "upstream_auth",
    "permission_error": "upstream_auth",
    "billing_error": "upstream_auth",
    "not_found_error": "upstream_not_found",
    "invalid_request_error": "upstream_bad_request",
    "request_too_large": "upstream_bad_request",
}


def error(name: str, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
    """An Anthropic error answer → UpstreamError."""
    obj = loads(body)
    err = obj.get("error") if isinstance(obj, dict) else None
    etype = str(err.get("type")) if isinstance(err, dict) else ""
    msg = str(err.get("message", "")) if isinstance(err, dict) else ""
    cause = ERRORS.get(etype)
    if cause is None:
        cause = cause_of_status(status, throttled="upstream_429")
    where = f"endpoint {name} (Anthropic)"
    ra = retry_after(headers)
    if cause == "upstream_overloaded":
        return make_error(
            cause,
            f"{where} is overloaded: {msg}",
            status=503,
            retry_after_s=ra if ra is not None else 1.0,
            code=etype,
        )
    if cause == "upstream_429":
        return make_error(cause, f"{where} is rate limiting: {msg}", retry_after_s=ra, code=etype)
    if cause == "upstream_auth":
        return make_error(
            cause, f"{where} rejected the gateway's credentials ({etype or status})", code=etype
        )
    if cause == "upstream_not_found":
        return make_error(cause, f"{where}: {msg or 'model not found'}", code=etype)
    if cause == "upstream_5xx":
        return make_error(
            cause, f"{where} answered {status}: {msg}", status=client_status(status), code=etype
        )
    return make_error(cause, f"Anthropic: {msg or f'status {status}'}", code=etype)


class AnthropicStream:
    """Anthropic SSE → OpenAI chunks."""

    __slots__ = ("_blocks", "_finish", "_in", "_name", "_sse", "_w", "done", "error", "usage")

    def __init__(self, name: str, model: str, include_usage: bool) -> None:
        self._name = name
        self._sse = SSEParser(f"endpoint {name} (Anthropic)")
        self._w = ChunkWriter(model, include_usage)
        self._blocks: dict[int, int] = {}  # content block index → tool call slot
        self._in: dict[str, Any] = {}
        self._finish = "stop"
        self.done = False
        self.usage: dict[str, Any] | None = None
        self.error: UpstreamError | None = None

    @property
    def events(self) -> int:
        return self._w.events

    def _event(self, name: str | None, data: bytes) -> bytes:
        if self.done or name == "ping":
            return b""
        ev = loads(data)
        if not isinstance(ev, dict):
            raise StreamGarbage(
                make_error("upstream_garbage", f"endpoint {self._name} (Anthropic): bad event")
            )
        t = ev.get("type", name)
        w = self._w
        if t == "content_block_delta":
            d = ev.get("delta") or {}
            if d.get("type") == "text_delta":
                return w.content(str(d.get("text", "")))
            if d.get("type") == "input_json_delta":
                slot = self._blocks.get(int(ev.get("index", 0)))
                if slot is not None:
                    return w.tool_args(slot, str(d.get("partial_json", "")))
            return b""  # thinking / signature / citations deltas: no OpenAI equivalent
        if t == "message_start":
            msg = ev.get("message") or {}
            if isinstance(msg.get("id"), str):
                w.set_id("chatcmpl-" + msg["id"])
            self._in = dict(msg.get("usage") or {})
            return w.role()
        if t == "content_block_start":
            cb = ev.get("content_block") or {}
            if cb.get("type") == "tool_use":
                slot = len(self._blocks)
                self._blocks[int(ev.get("index", 0))] = slot
                return w.tool_start(slot, str(cb.get("id")), str(cb.get("name")))
            if cb.get("type") == "text" and cb.get("text"):
                return w.content(str(cb["text"]))
            return b""
        if t == "message_delta":
            d = ev.get("delta") or {}
            if d.get("stop_reason"):
                self._finish = FINISH.get(str(d["stop_reason"]), "stop")
            u = ev.get("usage")
            if isinstance(u, dict):
                self._in.update({k: v for k, v in u.items() if v is not None})
            return b""
        if t == "message_stop":
            self.done = True
            use = usage(self._in).as_openai()
            self.usage = use
            return w.finish(self._finish) + w.usage_chunk(use) + DONE
        if t == "error":
            err = ev.get("error") or {}
            status = 529 if err.get("type") == "overloaded_error" else 500
            self.error = error(self._name, status, {}, orjson.dumps(ev))
            return w.error(self.error.message, self.error.error_type, self.error.code)
        return b""  # content_block_stop and unknown future events

    def feed(self, chunk: bytes) -> bytes:
        out = [self._event(n, d) for n, d in self._sse.feed(chunk)]
        return b"".join(out)

    def flush(self) -> bytes:
        return b"".join(self._event(n, d) for n, d in self._sse.flush())


class AnthropicAdapter(TranslatingAdapter):
    kind = "anthropic"
    provider = "Anthropic"
    fields = FIELDS

    def __init__(self, cfg: EndpointConfig) -> None:
        super().__init__(cfg)
        opts = cfg.anthropic
        self.version = opts.version if opts else "2023-06-01"
        self.default_max_tokens = opts.default_max_tokens if opts else 4096
        self.url = cfg.url.rstrip("/") + "/v1/messages"
        self.headers = {"content-type": "application/json", "anthropic-version": self.version}
        if opts and opts.beta:
            self.headers["anthropic-beta"] = ",".join(opts.beta)
        if cfg.api_key is not None:
            self.headers["x-api-key"] = cfg.api_key.get_secret_value()
        self.headers.update(self.extra_headers)

    def translate(self, obj: dict[str, Any]) -> dict[str, Any]:
        chat = read_chat(obj, "Anthropic", FIELDS)
        return request_body(chat, self.cfg.model, self.default_max_tokens)

    def build(
        self, api: str, obj: dict[str, Any], *, stream: bool, include_usage: bool
    ) -> UpstreamRequest:
        body = self.translated(obj)
        if stream:
            body["stream"] = True
        return UpstreamRequest(self.url, dict(self.headers), orjson.dumps(body))

    def response(
        self, api: str, status: int, headers: Mapping[str, str], body: bytes, *, model: str
    ) -> tuple[bytes, Usage | None]:
        msg = self.parse_ok(body)
        if msg.get("type") == "error":
            raise ResponseGarbage(error(self.name, 500, headers, body))
        return completion(msg, model)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        return error(self.name, status, headers, body)

    def stream(self, api: str, *, model: str, include_usage: bool) -> AnthropicStream:
        return AnthropicStream(self.name, model, include_usage)
