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
        {"type": "text", "text": part} if isinstance(part, str) else _image(part)
        for part in parts
        if not (isinstance(part, str) and not part)
    ]


def messages(chat_messages: list[Message]) -> list[dict[str, Any]]:
    """OpenAI turns → Anthropic turns: tool results join one user turn, as the API wants."""
    out: list[dict[str, Any]] = []
    for i, message in enumerate(chat_messages):
        if message.role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id,
                "content": text(message.parts),
            }
            if out and out[-1]["role"] == "user" and out[-1].get("_tools"):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block], "_tools": True})
            continue
        content = _blocks(message.parts)
        if message.role == "assistant":
            for j, call in enumerate(message.tool_calls):
                args = json_args(call.arguments, f"messages[{i}].tool_calls[{j}]", "Anthropic")
                content.append(
                    {"type": "tool_use", "id": call.id, "name": call.name, "input": args}
                )
        if message.role == "user" and out and out[-1].get("_tools"):
            out[-1]["content"].extend(content)  # text after the tool results of a turn
            continue
        out.append({"role": message.role, "content": content})
    for turn in out:
        turn.pop("_tools", None)
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
                "name": tool.name,
                **({"description": tool.description} if tool.description else {}),
                "input_schema": tool.parameters,
            }
            for tool in chat.tools
        ]
    tool_choice: dict[str, Any] | None = None
    if chat.tool_choice == "auto":
        tool_choice = {"type": "auto"}
    elif chat.tool_choice == "required":
        tool_choice = {"type": "any"}
    elif chat.tool_choice == "none":
        tool_choice = {"type": "none"}
    elif chat.tool_name():
        tool_choice = {"type": "tool", "name": chat.tool_name()}
    if chat.parallel_tool_calls is False and chat.tools:
        tool_choice = tool_choice or {"type": "auto"}
        if tool_choice["type"] != "none":
            tool_choice["disable_parallel_tool_use"] = True
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    response_format = chat.response_format
    if response_format is not None:
        if response_format["type"] != "json_schema":
            raise RequestRejected(
                "response_format 'json_object' is not supported by Anthropic endpoints "
                "(use json_schema)",
                "response_format",
            )
        body["output_config"] = {
            "format": {"type": "json_schema", "schema": response_format.get("schema", {})}
        }
    if chat.user:
        body["metadata"] = {"user_id": chat.user}
    return body


def usage(raw: Mapping[str, Any]) -> Usage:
    """Anthropic usage → OpenAI semantics."""
    read = int(raw.get("cache_read_input_tokens") or 0)
    made = int(raw.get("cache_creation_input_tokens") or 0)
    return Usage(
        int(raw.get("input_tokens") or 0) + read + made,
        int(raw.get("output_tokens") or 0),
        read if "cache_read_input_tokens" in raw else None,
    )


def completion(msg: dict[str, Any], model: str) -> tuple[bytes, Usage | None]:
    """A Messages API response → chat.completion JSON."""
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in msg.get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            text.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            calls.append(
                tool_call(
                    str(block.get("id")),
                    str(block.get("name")),
                    orjson.dumps(block.get("input", {})).decode(),
                )
            )
    raw_usage = msg.get("usage")
    use = usage(raw_usage) if isinstance(raw_usage, dict) else None
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
    retry_after_s = retry_after(headers)
    if cause == "upstream_overloaded":
        return make_error(
            cause,
            f"{where} is overloaded: {msg}",
            status=503,
            retry_after_s=retry_after_s if retry_after_s is not None else 1.0,
            code=etype,
        )
    if cause == "upstream_429":
        return make_error(
            cause, f"{where} is rate limiting: {msg}", retry_after_s=retry_after_s, code=etype
        )
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

    __slots__ = (
        "_blocks",
        "_finish",
        "_name",
        "_raw_usage",
        "_sse",
        "_writer",
        "done",
        "error",
        "usage",
    )

    def __init__(self, name: str, model: str, include_usage: bool) -> None:
        self._name = name
        self._sse = SSEParser(f"endpoint {name} (Anthropic)")
        self._writer = ChunkWriter(model, include_usage)
        self._blocks: dict[int, int] = {}  # content block index → tool call slot
        self._raw_usage: dict[str, Any] = {}
        self._finish = "stop"
        self.done = False
        self.usage: dict[str, Any] | None = None
        self.error: UpstreamError | None = None

    @property
    def events(self) -> int:
        return self._writer.events

    def _event(self, name: str | None, data: bytes) -> bytes:
        if self.done or name == "ping":
            return b""
        event = loads(data)
        if not isinstance(event, dict):
            raise StreamGarbage(
                make_error("upstream_garbage", f"endpoint {self._name} (Anthropic): bad event")
            )
        event_type = event.get("type", name)
        writer = self._writer
        if event_type == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return writer.content(str(delta.get("text", "")))
            if delta.get("type") == "input_json_delta":
                slot = self._blocks.get(int(event.get("index", 0)))
                if slot is not None:
                    return writer.tool_args(slot, str(delta.get("partial_json", "")))
            return b""  # thinking / signature / citations deltas: no OpenAI equivalent
        if event_type == "message_start":
            msg = event.get("message") or {}
            if isinstance(msg.get("id"), str):
                writer.set_id("chatcmpl-" + msg["id"])
            self._raw_usage = dict(msg.get("usage") or {})
            return writer.role()
        if event_type == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                slot = len(self._blocks)
                self._blocks[int(event.get("index", 0))] = slot
                return writer.tool_start(slot, str(block.get("id")), str(block.get("name")))
            if block.get("type") == "text" and block.get("text"):
                return writer.content(str(block["text"]))
            return b""
        if event_type == "message_delta":
            delta = event.get("delta") or {}
            if delta.get("stop_reason"):
                self._finish = FINISH.get(str(delta["stop_reason"]), "stop")
            raw_usage = event.get("usage")
            if isinstance(raw_usage, dict):
                self._raw_usage.update(
                    {key: value for key, value in raw_usage.items() if value is not None}
                )
            return b""
        if event_type == "message_stop":
            self.done = True
            use = usage(self._raw_usage).as_openai()
            self.usage = use
            return writer.finish(self._finish) + writer.usage_chunk(use) + DONE
        if event_type == "error":
            err = event.get("error") or {}
            status = 529 if err.get("type") == "overloaded_error" else 500
            self.error = error(self._name, status, {}, orjson.dumps(event))
            return writer.error(self.error.message, self.error.error_type, self.error.code)
        return b""  # content_block_stop and unknown future events

    def feed(self, chunk: bytes) -> bytes:
        out = [self._event(event_name, data) for event_name, data in self._sse.feed(chunk)]
        return b"".join(out)

    def flush(self) -> bytes:
        return b"".join(self._event(event_name, data) for event_name, data in self._sse.flush())


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
