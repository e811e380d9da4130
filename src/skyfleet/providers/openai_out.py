"""OpenAI-shaped output the translators write: completions, stream chunks, usage (pure)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from skyfleet.providers.base import Usage

DONE = b"data: [DONE]\n\n"


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def usage_from(obj: dict[str, Any] | None) -> Usage | None:
    """Usage from an OpenAI `usage` object (None when absent or malformed)."""
    if not isinstance(obj, dict):
        return None
    prompt, completion = obj.get("prompt_tokens"), obj.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    det = obj.get("prompt_tokens_details")
    cached = det.get("cached_tokens") if isinstance(det, dict) else None
    return Usage(prompt, completion, cached if isinstance(cached, int) else None)


def choice(
    index: int, content: str | None, tool_calls: list[dict[str, Any]], finish_reason: str
) -> dict[str, Any]:
    """One choice of a `chat.completion` (content None when only tools were called)."""
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        msg["tool_calls"] = tool_calls
    return {"index": index, "message": msg, "logprobs": None, "finish_reason": finish_reason}


def chat_completion(
    *,
    model: str,
    choices: list[dict[str, Any]],
    usage: Usage | None,
    rid: str | None = None,
) -> bytes:
    """A `chat.completion` JSON body."""
    body: dict[str, Any] = {
        "id": rid or completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage.as_openai()
    return orjson.dumps(body)


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


class ChunkWriter:
    """Writes one stream's `chat.completion.chunk` events with a shared, prebuilt prefix."""

    __slots__ = ("_head", "_tail", "created", "events", "include_usage", "model", "rid")

    def __init__(self, model: str, include_usage: bool, rid: str | None = None) -> None:
        self.model = model
        self.rid = rid or completion_id()
        self.created = int(time.time())
        self.include_usage = include_usage
        self.events = 0
        self._set_head()

    def _set_head(self) -> None:
        self._head = (
            b'data: {"id":'
            + orjson.dumps(self.rid)
            + b',"object":"chat.completion.chunk","created":'
            + str(self.created).encode()
            + b',"model":'
            + orjson.dumps(self.model)
            + b',"choices":['
        )

    def set_id(self, rid: str) -> None:
        """Use the provider's message id (before the first chunk)."""
        self.rid = rid
        self._set_head()

    def delta(self, delta: dict[str, Any], index: int = 0, finish: str | None = None) -> bytes:
        self.events += 1
        fin = b"null" if finish is None else orjson.dumps(finish)
        return (
            self._head
            + b'{"index":'
            + str(index).encode()
            + b',"delta":'
            + orjson.dumps(delta)
            + b',"logprobs":null,"finish_reason":'
            + fin
            + b"}]}\n\n"
        )

    def role(self, index: int = 0) -> bytes:
        return self.delta({"role": "assistant", "content": ""}, index)

    def content(self, text: str, index: int = 0) -> bytes:
        return self.delta({"content": text}, index)

    def tool_start(self, slot: int, call_id: str, name: str, index: int = 0) -> bytes:
        function = {"name": name, "arguments": ""}
        call: dict[str, Any] = {
            "index": slot,
            "id": call_id,
            "type": "function",
            "function": function,
        }
        return self.delta({"tool_calls": [call]}, index)

    def tool_args(self, slot: int, fragment: str, index: int = 0) -> bytes:
        return self.delta(
            {"tool_calls": [{"index": slot, "function": {"arguments": fragment}}]}, index
        )

    def finish(self, reason: str, index: int = 0) -> bytes:
        self.events -= 1  # not a content event
        return self.delta({}, index, reason)

    def usage_chunk(self, usage: dict[str, Any]) -> bytes:
        """The final `choices: []` chunk carrying usage (only when the client asked)."""
        if not self.include_usage:
            return b""
        return self._head + b'],"usage":' + orjson.dumps(usage) + b"}\n\n"

    @staticmethod
    def error(message: str, etype: str = "server_error", code: str | None = None) -> bytes:
        err = {"message": message, "type": etype, "param": None, "code": code}
        return b"data: " + orjson.dumps({"error": err}) + b"\n\n"
