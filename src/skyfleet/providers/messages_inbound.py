"""Inbound Anthropic Messages API (`POST /v1/messages` on the gateway), pure translation.

    chat = messages_to_chat(obj)        # Anthropic request → OpenAI chat request (or error)
    ... the gateway serves `chat` like any chat request (models, tiers, admission, ledger) ...
    chat_to_message(body, model)        # chat.completion JSON → Anthropic message JSON
    ChatToMessagesStream(model)         # OpenAI chunk SSE → Anthropic SSE events
    error_to_anthropic(status, body)    # OpenAI error JSON → Anthropic error JSON

The chat request always asks for usage (`stream_options.include_usage`), because
Anthropic streams report it in `message_delta`.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from skyfleet.providers.sse import SSEParser

FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# Anthropic request fields with no chat-completions equivalent: refused, never dropped.
UNSUPPORTED = ("thinking", "container", "mcp_servers", "context_management", "citations")
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


class _Bad(Exception):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message, self.param = message, param


def _text_blocks(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for j, block in enumerate(content):
            if not isinstance(block, dict) or block.get("type") != "text":
                kind = block.get("type") if isinstance(block, dict) else None
                raise _Bad(
                    f"'{param}[{j}]': only text blocks are supported here, got {kind!r}",
                    f"{param}[{j}]",
                )
            out.append(str(block.get("text", "")))
        return "\n".join(out)
    if content is None:
        return ""
    raise _Bad(f"'{param}' must be a string or a list of text blocks", param)


def _image(block: dict[str, Any], param: str) -> dict[str, Any]:
    src = block.get("source") or {}
    if src.get("type") == "base64":
        url = f"data:{src.get('media_type')};base64,{src.get('data')}"
    elif src.get("type") == "url":
        url = str(src.get("url"))
    else:
        raise _Bad(f"'{param}.source.type' must be base64 or url", f"{param}.source")
    return {"type": "image_url", "image_url": {"url": url}}


def _message(turn: Any, i: int) -> list[dict[str, Any]]:
    """One Anthropic turn → one or more OpenAI messages (tool results become tool turns)."""
    turn_param = f"messages[{i}]"
    if not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant"):
        raise _Bad(
            f"'{turn_param}' must be an object with role user or assistant", f"{turn_param}.role"
        )
    role, content = turn["role"], turn.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise _Bad(
            f"'{turn_param}.content' must be a string or a list of content blocks",
            f"{turn_param}.content",
        )
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        block_param = f"{turn_param}.content[{j}]"
        block_type = block.get("type") if isinstance(block, dict) else None
        if block_type == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif block_type == "image" and role == "user":
            parts.append(_image(block, block_param))
        elif block_type == "tool_use" and role == "assistant":
            args = orjson.dumps(block.get("input") or {}).decode()
            function = {"name": str(block.get("name")), "arguments": args}
            calls.append({"id": str(block.get("id")), "type": "function", "function": function})
        elif block_type == "tool_result" and role == "user":
            text = _text_blocks(block.get("content"), f"{block_param}.content")
            if block.get("is_error"):
                text = f"Error: {text}"
            tools.append(
                {"role": "tool", "tool_call_id": str(block.get("tool_use_id")), "content": text}
            )
        else:
            raise _Bad(
                f"content block type {block_type!r} is not supported in {role} turns here",
                block_param,
            )
    out: list[dict[str, Any]] = list(tools)
    if parts or calls or not tools:
        msg: dict[str, Any] = {"role": role}
        if role == "assistant":
            msg["content"] = "".join(part["text"] for part in parts) or None
            if calls:
                msg["tool_calls"] = calls
        else:
            msg["content"] = parts
        out.append(msg)
    return out


def _tools(obj: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for j, tool in enumerate(obj.get("tools") or []):
        if (
            not isinstance(tool, dict)
            or "input_schema" not in tool
            or tool.get("type") not in (None, "custom")
        ):
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _Bad(
                f"tool type {kind!r} is not supported here (client tools only)", f"tools[{j}]"
            )
        function: dict[str, Any] = {
            "name": str(tool.get("name")),
            "parameters": tool["input_schema"],
        }
        if tool.get("description"):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _convert(obj: dict[str, Any]) -> dict[str, Any]:
    for field in UNSUPPORTED:
        if obj.get(field) is not None:
            raise _Bad(f"'{field}' is not supported by this gateway's Messages API", field)
    model = obj.get("model")
    if not isinstance(model, str) or not model:
        raise _Bad("'model' is required and must be a string", "model")
    max_tokens = obj.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _Bad("'max_tokens' is required and must be an integer ≥ 1", "max_tokens")
    turns = obj.get("messages")
    if not isinstance(turns, list) or not turns:
        raise _Bad("'messages' must be a non-empty list", "messages")
    out_msgs: list[dict[str, Any]] = []
    if obj.get("system") is not None:
        out_msgs.append({"role": "system", "content": _text_blocks(obj["system"], "system")})
    for i, turn in enumerate(turns):
        out_msgs.extend(_message(turn, i))
    chat: dict[str, Any] = {"model": model, "messages": out_msgs, "max_tokens": max_tokens}
    for src, dst in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k")):
        if obj.get(src) is not None:
            chat[dst] = obj[src]
    if obj.get("stop_sequences"):
        chat["stop"] = list(obj["stop_sequences"])
    tools = _tools(obj)
    if tools:
        chat["tools"] = tools
    tool_choice = obj.get("tool_choice")
    if isinstance(tool_choice, dict):
        choice_type = tool_choice.get("type")
        if choice_type == "auto":
            chat["tool_choice"] = "auto"
        elif choice_type == "any":
            chat["tool_choice"] = "required"
        elif choice_type == "none":
            chat["tool_choice"] = "none"
        elif choice_type == "tool":
            chat["tool_choice"] = {
                "type": "function",
                "function": {"name": tool_choice.get("name")},
            }
        else:
            raise _Bad("'tool_choice.type' must be auto, any, tool or none", "tool_choice")
        if tool_choice.get("disable_parallel_tool_use"):
            chat["parallel_tool_calls"] = False
    meta = obj.get("metadata")
    if isinstance(meta, dict) and meta.get("user_id"):
        chat["user"] = str(meta["user_id"])
    fmt = (obj.get("output_config") or {}).get("format")
    if isinstance(fmt, dict):
        if fmt.get("type") != "json_schema":
            raise _Bad("'output_config.format.type' must be json_schema", "output_config")
        json_schema = {"name": "output", "schema": fmt.get("schema") or {}}
        chat["response_format"] = {"type": "json_schema", "json_schema": json_schema}
    if obj.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def messages_to_chat(obj: dict[str, Any]) -> dict[str, Any] | tuple[str, str]:
    """An Anthropic Messages request → an OpenAI chat request, or (error message, param)."""
    try:
        return _convert(obj)
    except _Bad as e:
        return (e.message, e.param)


def _usage(raw: Any) -> dict[str, int]:
    if not isinstance(raw, dict):
        return {"input_tokens": 0, "output_tokens": 0}
    det = raw.get("prompt_tokens_details")
    cached = int(det.get("cached_tokens") or 0) if isinstance(det, dict) else 0
    return {
        "input_tokens": int(raw.get("prompt_tokens") or 0) - cached,
        "output_tokens": int(raw.get("completion_tokens") or 0),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


def _msg_id() -> str:
    return "msg_" + uuid.uuid4().hex[:24]


def chat_to_message(body: bytes, model: str) -> bytes:
    """An OpenAI chat.completion JSON → an Anthropic message JSON (first choice)."""
    obj = orjson.loads(body)
    first_choice = (obj.get("choices") or [{}])[0]
    msg = first_choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if msg.get("content"):
        content.append({"type": "text", "text": msg["content"]})
    for call in msg.get("tool_calls") or []:
        function = call.get("function") or {}
        try:
            args = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            args = {"_raw": function.get("arguments")}
        content.append(
            {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": args}
        )
    out = {
        "id": _msg_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": FINISH_TO_STOP.get(str(first_choice.get("finish_reason")), "end_turn"),
        "stop_sequence": None,
        "usage": _usage(obj.get("usage")),
    }
    return orjson.dumps(out)


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class ChatToMessagesStream:
    """OpenAI `chat.completion.chunk` SSE → Anthropic Messages SSE events."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._sse = SSEParser("gateway stream")
        self._started = False
        self._open: str | None = None  # "text" | "tool:<openai index>" | None
        self._index = -1  # Anthropic content block index
        self._stop = "end_turn"
        self._usage: dict[str, int] = {"input_tokens": 0, "output_tokens": 0}
        self.done = False

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        msg: dict[str, Any] = {
            "id": _msg_id(),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _sse("message_start", {"type": "message_start", "message": msg}) + _sse(
            "ping", {"type": "ping"}
        )

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return _sse("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _block(self, key: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._index += 1
        self._open = key
        event = {"type": "content_block_start", "index": self._index, "content_block": block}
        return out + _sse("content_block_start", event)

    def _delta(self, delta: dict[str, Any]) -> bytes:
        event = {"type": "content_block_delta", "index": self._index, "delta": delta}
        return _sse("content_block_delta", event)

    def _chunk(self, obj: dict[str, Any]) -> bytes:
        out = [self._start()]
        if isinstance(obj.get("error"), dict):
            err = obj["error"]
            etype = "overloaded_error" if err.get("type") == "rate_limit_error" else "api_error"
            body = {"type": "error", "error": {"type": etype, "message": str(err.get("message"))}}
            return b"".join(out) + _sse("error", body)
        if isinstance(obj.get("usage"), dict):
            self._usage = _usage(obj["usage"])
        for choice in obj.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if self._open != "text":
                    out.append(self._block("text", {"type": "text", "text": ""}))
                out.append(self._delta({"type": "text_delta", "text": delta["content"]}))
            for call in delta.get("tool_calls") or []:
                key = f"tool:{call.get('index', 0)}"
                function = call.get("function") or {}
                if self._open != key:
                    block: dict[str, Any] = {
                        "type": "tool_use",
                        "id": call.get("id") or f"toolu_{self._index + 1}",
                        "name": function.get("name") or "",
                        "input": {},
                    }
                    out.append(self._block(key, block))
                if function.get("arguments"):
                    out.append(
                        self._delta(
                            {"type": "input_json_delta", "partial_json": function["arguments"]}
                        )
                    )
            if choice.get("finish_reason"):
                self._stop = FINISH_TO_STOP.get(str(choice["finish_reason"]), "end_turn")
                out.append(self._close())
        return b"".join(out)

    def _end(self) -> bytes:
        self.done = True
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop, "stop_sequence": None},
            "usage": self._usage,
        }
        return (
            self._start()
            + self._close()
            + _sse("message_delta", delta)
            + _sse("message_stop", {"type": "message_stop"})
        )

    def _events(self, events: list[tuple[str | None, bytes]]) -> bytes:
        out = []
        for _, data in events:
            if self.done:
                break
            if data.strip() == b"[DONE]":
                out.append(self._end())
                continue
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                out.append(self._chunk(obj))
        return b"".join(out)

    def feed(self, openai_sse: bytes) -> bytes:
        return self._events(self._sse.feed(openai_sse))

    def flush(self) -> bytes:
        return self._events(self._sse.flush())


def error_to_anthropic(status: int, openai_error_body: bytes) -> bytes:
    """An OpenAI error body (any status) → `{"type":"error","error":{type, message}}`."""
    try:
        obj = orjson.loads(openai_error_body)
        err = obj.get("error") if isinstance(obj, dict) else None
        msg = str(err.get("message")) if isinstance(err, dict) else openai_error_body.decode()
    except (orjson.JSONDecodeError, UnicodeDecodeError):
        msg = f"status {status}"
    etype = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"type": "error", "error": {"type": etype, "message": msg}})
