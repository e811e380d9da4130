"""Inbound Anthropic Messages API translation, checked with the anthropic SDK's own types."""

from __future__ import annotations

import anthropic.types
import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter

from skyfleet.providers.messages_inbound import (
    ChatToMessagesStream,
    chat_to_message,
    error_to_anthropic,
    messages_to_chat,
)
from skyfleet.providers.openai_out import ChunkWriter

SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}}


def test_request_translation() -> None:
    req = {
        "model": "chat",
        "max_tokens": 50,
        "system": [{"type": "text", "text": "Be terse."}],
        "temperature": 0.5,
        "top_k": 3,
        "stop_sequences": ["STOP"],
        "stream": True,
        "metadata": {"user_id": "u1"},
        "tools": [{"name": "search", "description": "web", "input_schema": SCHEMA}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Find x"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Searching"},
                    {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {"q": "x"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "found"}],
                    },
                    {"type": "text", "text": "thanks"},
                ],
            },
        ],
    }
    chat = messages_to_chat(req)
    assert isinstance(chat, dict)
    assert chat["messages"][0] == {"role": "system", "content": "Be terse."}
    assert chat["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AAAA"},
    }
    asst = chat["messages"][2]
    assert asst["content"] == "Searching" and asst["tool_calls"][0]["function"] == {
        "name": "search",
        "arguments": '{"q":"x"}',
    }
    assert chat["messages"][3] == {"role": "tool", "tool_call_id": "toolu_1", "content": "found"}
    assert chat["messages"][4] == {"role": "user", "content": [{"type": "text", "text": "thanks"}]}
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is False
    assert chat["stop"] == ["STOP"] and chat["top_k"] == 3 and chat["user"] == "u1"
    assert chat["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("req", "param"),
    [
        ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "x"}],
                "thinking": {"type": "enabled"},
            },
            "thinking",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "document"}]}],
            },
            "messages[0].content[0]",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "web_search_20250305", "name": "w"}],
            },
            "tools[0]",
        ),
    ],
)
def test_refused_requests_name_the_param(req: dict[str, object], param: str) -> None:
    out = messages_to_chat(req)
    assert isinstance(out, tuple) and out[1] == param


def test_response_parses_as_an_anthropic_message() -> None:
    chat = {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "x",
        "choices": [
            {
                "index": 0,
                "finish_reason": "length",
                "message": {"role": "assistant", "content": "hello"},
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    }
    m = anthropic.types.Message.model_validate_json(chat_to_message(orjson.dumps(chat), "claude"))
    assert m.stop_reason == "max_tokens" and m.content[0].text == "hello"  # type: ignore[union-attr]
    assert m.usage.input_tokens == 9 and m.usage.output_tokens == 2


def test_stream_accumulates_in_the_anthropic_sdk() -> None:
    w = ChunkWriter("x", include_usage=True)
    sse = (
        w.role()
        + w.content("Hel")
        + w.content("lo")
        + w.tool_start(0, "call_9", "search")
        + w.tool_args(0, '{"q":')
        + w.tool_args(0, '"y"}')
        + w.finish("tool_calls")
        + w.usage_chunk({"prompt_tokens": 7, "completion_tokens": 4})
        + b"data: [DONE]\n\n"
    )
    t = ChatToMessagesStream("claude")
    out = t.feed(sse[:37]) + t.feed(sse[37:]) + t.flush()
    assert t.done
    ta: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)
    snap = None
    bufs: dict[int, bytes] = {}
    names = []
    for block in out.decode().split("\n\n")[:-1]:
        ev_line, data_line = block.split("\n")
        names.append(ev_line[len("event: ") :])
        if names[-1] != "ping":
            snap = accumulate_event(
                event=ta.validate_json(data_line[len("data: ") :]),
                current_snapshot=snap,
                json_bufs=bufs,
            )
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert snap is not None and snap.stop_reason == "tool_use"
    assert snap.content[0].text == "Hello"  # type: ignore[union-attr]
    assert snap.content[1].input == {"q": "y"} and snap.content[1].id == "call_9"  # type: ignore[union-attr]
    assert snap.usage.output_tokens == 4 and snap.usage.input_tokens == 7


@pytest.mark.parametrize(
    ("status", "etype"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (429, "rate_limit_error"),
        (503, "overloaded_error"),
        (502, "api_error"),
    ],
)
def test_errors(status: int, etype: str) -> None:
    body = orjson.dumps({"error": {"message": "nope", "type": "x"}})
    out = orjson.loads(error_to_anthropic(status, body))
    assert out == {"type": "error", "error": {"type": etype, "message": "nope"}}
