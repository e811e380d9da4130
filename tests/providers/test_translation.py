"""Pure translation: OpenAI chat ⇄ Anthropic / Bedrock / Vertex, both ways, streams too."""

from __future__ import annotations

import itertools
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyfleet.config import EndpointConfig
from skyfleet.providers import anthropic as anth
from skyfleet.providers import bedrock, build_adapter, eventstream, vertex
from skyfleet.providers.messages_inbound import (
    ChatToMessagesStream,
    chat_to_message,
    messages_to_chat,
)
from skyfleet.providers.openai_out import ChunkWriter

from .live import sse_chunks

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "forecast", "parameters": SCHEMA},
    }
]
PNG = "data:image/png;base64,iVBORw0KGgo="


def cfg(kind: str, **kw: Any) -> EndpointConfig:
    base: dict[str, Any] = {"name": "ep", "provider": "p", "kind": kind, "model": "m"}
    extra: dict[str, Any] = {
        "anthropic": {"api_key": "sk-ant-secret"},
        "bedrock": {
            "bedrock": {
                "region": "us-east-1",
                "access_key_id": "AKID",
                "secret_access_key": "aws-secret",
            }
        },
        "vertex": {
            "vertex": {
                "project": "p",
                "location": "us-central1",
                "credentials_file": "/nonexistent",
            }
        },
        "azure_openai": {
            "url": "https://r.openai.azure.com",
            "api_key": "az-secret",
            "azure": {"deployment": "d"},
        },
        "openai": {"url": "http://127.0.0.1:1/v1"},
    }[kind]
    return EndpointConfig.model_validate({**base, **extra, **kw})


def body(kind: str, obj: dict[str, Any], stream: bool = False) -> dict[str, Any]:
    a = build_adapter(cfg(kind))
    assert a.check("chat", obj) is None, a.check("chat", obj)
    return dict(orjson.loads(a.build("chat", obj, stream=stream, include_usage=True).body))


# -- unsupported fields: a 400 naming field and provider, never a silent drop ------------------


@pytest.mark.parametrize(
    ("kind", "field", "value", "provider"),
    [
        ("anthropic", "logprobs", True, "Anthropic"),
        ("anthropic", "n", 2, "Anthropic"),
        ("anthropic", "seed", 1, "Anthropic"),
        ("anthropic", "presence_penalty", 0.5, "Anthropic"),
        ("anthropic", "logit_bias", {"1": 2}, "Anthropic"),
        ("bedrock", "seed", 1, "Bedrock"),
        ("bedrock", "top_k", 5, "Bedrock"),
        ("bedrock", "parallel_tool_calls", False, "Bedrock"),
        ("bedrock", "frequency_penalty", 1.0, "Bedrock"),
        ("vertex", "user", "u1", "Vertex AI"),
        ("vertex", "logprobs", True, "Vertex AI"),
        ("vertex", "ignore_eos", True, "Vertex AI"),
    ],
)
def test_unsupported_field_is_named(kind: str, field: str, value: Any, provider: str) -> None:
    obj = {"model": "x", "messages": [{"role": "user", "content": "hi"}], field: value}
    msg, param = build_adapter(cfg(kind)).check("chat", obj) or ("", "")
    assert param == field and f"'{field}'" in msg and provider in msg


@pytest.mark.parametrize("kind", ["anthropic", "bedrock", "vertex"])
def test_default_values_are_not_refused(kind: str) -> None:
    obj = {
        "model": "x",
        "messages": [{"role": "user", "content": "hi"}],
        "n": 1,
        "logprobs": False,
        "parallel_tool_calls": True,
        "stream_options": {"include_usage": True},
    }
    assert build_adapter(cfg(kind)).check("chat", obj) is None


@pytest.mark.parametrize(
    ("kind", "obj", "param"),
    [
        ("anthropic", {"response_format": {"type": "json_object"}}, "response_format"),
        ("bedrock", {"response_format": {"type": "json_object"}}, "response_format"),
        ("bedrock", {"tools": TOOLS, "tool_choice": "none"}, "tool_choice"),
        ("anthropic", {"temperature": 1.5}, "temperature"),
        (
            "bedrock",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                    }
                ]
            },
            "messages[0].content",
        ),
        (
            "anthropic",
            {
                "messages": [
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}
                ]
            },
            "messages[0].content[0]",
        ),
        (
            "vertex",
            {"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]},
            "messages[0].tool_call_id",
        ),
        (
            "anthropic",
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "other"}}},
            "tool_choice",
        ),
    ],
)
def test_untranslatable_requests_are_refused(kind: str, obj: dict[str, Any], param: str) -> None:
    full = {"model": "x", "messages": [{"role": "user", "content": "hi"}], **obj}
    bad = build_adapter(cfg(kind)).check("chat", full)
    assert bad is not None and bad[1] == param


# -- requests -----------------------------------------------------------------------------------

CONVERSATION: dict[str, Any] = {
    "model": "chat",
    "max_completion_tokens": 100,
    "temperature": 0.3,
    "top_p": 0.9,
    "stop": ["END"],
    "user": "tenant-7",
    "tools": TOOLS,
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": "Use metric units."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather in Oslo?"},
                {"type": "image_url", "image_url": {"url": PNG}},
            ],
        },
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Bergen"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": '{"t": 3}'},
        {"role": "tool", "tool_call_id": "call_b", "content": "rain"},
        {"role": "user", "content": "And tomorrow?"},
    ],
}


def test_anthropic_request() -> None:
    b = body("anthropic", CONVERSATION, stream=True)
    assert b["model"] == "m" and b["max_tokens"] == 100 and b["stream"] is True
    assert b["system"] == "You are terse.\n\nUse metric units."
    assert (b["temperature"], b["top_p"], b["stop_sequences"]) == (0.3, 0.9, ["END"])
    assert b["metadata"] == {"user_id": "tenant-7"}
    assert b["tools"] == [
        {"name": "get_weather", "description": "forecast", "input_schema": SCHEMA}
    ]
    assert b["tool_choice"] == {"type": "tool", "name": "get_weather"}
    roles = [m["role"] for m in b["messages"]]
    assert roles == ["user", "assistant", "user"]  # both tool results and the next user turn merge
    img = b["messages"][0]["content"][1]
    assert img == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    uses = [c for c in b["messages"][1]["content"] if c["type"] == "tool_use"]
    assert [u["input"] for u in uses] == [{"city": "Oslo"}, {"city": "Bergen"}]
    last = b["messages"][2]["content"]
    assert [c["type"] for c in last] == ["tool_result", "tool_result", "text"]
    assert last[0] == {"type": "tool_result", "tool_use_id": "call_a", "content": '{"t": 3}'}


def test_anthropic_defaults_max_tokens_and_parallel_and_json_schema() -> None:
    rf = {"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA}}
    b = body(
        "anthropic",
        {
            "model": "x",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": TOOLS,
            "parallel_tool_calls": False,
            "response_format": rf,
        },
    )
    assert b["max_tokens"] == 4096 and "stream" not in b
    assert b["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert b["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}


def test_bedrock_request() -> None:
    a = build_adapter(cfg("bedrock", model="anthropic.claude-3-haiku-20240307-v1:0"))
    req = a.build("chat", CONVERSATION, stream=True, include_usage=True)
    assert req.url.endswith("/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream")
    assert req.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKID/")
    assert "/us-east-1/bedrock/aws4_request" in req.headers["Authorization"]
    b = orjson.loads(req.body)
    assert b["system"] == [{"text": "You are terse."}, {"text": "Use metric units."}]
    assert b["inferenceConfig"] == {
        "maxTokens": 100,
        "temperature": 0.3,
        "topP": 0.9,
        "stopSequences": ["END"],
    }
    assert b["toolConfig"]["toolChoice"] == {"tool": {"name": "get_weather"}}
    assert b["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"] == {"json": SCHEMA}
    assert [m["role"] for m in b["messages"]] == ["user", "assistant", "user"]
    assert b["messages"][0]["content"][1] == {
        "image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}
    }
    results = [c["toolResult"] for c in b["messages"][2]["content"] if "toolResult" in c]
    assert results[1] == {"toolUseId": "call_b", "content": [{"text": "rain"}]}
    assert b["requestMetadata"] == {"user": "tenant-7"}
    rf = {"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA}}
    b2 = body(
        "bedrock",
        {"model": "x", "messages": [{"role": "user", "content": "hi"}], "response_format": rf},
    )
    js = b2["outputConfig"]["textFormat"]["structure"]["jsonSchema"]
    assert json.loads(js["schema"]) == SCHEMA and js["name"] == "w"


def test_vertex_request() -> None:
    a = build_adapter(cfg("vertex", model="gemini-2.0-flash"))
    conv = {k: v for k, v in CONVERSATION.items() if k != "user"}  # Vertex has no `user`
    req = a.build("chat", {**conv, "n": 2, "seed": 4}, stream=True, include_usage=True)
    assert req.url == (
        "https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/"
        "us-central1/publishers/google/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    )
    b = orjson.loads(req.body)
    assert b["systemInstruction"] == {"parts": [{"text": "You are terse.\n\nUse metric units."}]}
    assert b["generationConfig"] == {
        "maxOutputTokens": 100,
        "temperature": 0.3,
        "topP": 0.9,
        "seed": 4,
        "stopSequences": ["END"],
        "candidateCount": 2,
    }
    assert b["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }
    assert [c["role"] for c in b["contents"]] == ["user", "model", "user"]
    assert b["contents"][0]["parts"][1] == {
        "inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}
    }
    fr = [p["functionResponse"] for p in b["contents"][2]["parts"] if "functionResponse" in p]
    assert fr == [
        {"name": "get_weather", "response": {"t": 3}},
        {"name": "get_weather", "response": {"content": "rain"}},
    ]
    b2 = body(
        "vertex",
        {
            "model": "x",
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_object"},
        },
    )
    assert b2["generationConfig"] == {"responseMimeType": "application/json"}


def test_azure_paths_and_auth_header() -> None:
    a = build_adapter(cfg("azure_openai"))
    req = a.build("chat", {"model": "chat", "messages": []}, stream=True, include_usage=True)
    assert (
        req.url
        == "https://r.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-10-21"
    )
    assert req.headers["api-key"] == "az-secret" and "Authorization" not in req.headers
    assert orjson.loads(req.body)["stream_options"] == {"include_usage": True}
    v1 = build_adapter(cfg("azure_openai", azure={"deployment": "d", "api": "v1"}))
    r1 = v1.build("embeddings", {"model": "e", "input": "x"}, stream=False, include_usage=False)
    assert r1.url == "https://r.openai.azure.com/openai/v1/embeddings"
    assert orjson.loads(r1.body)["model"] == "d"


# -- responses and usage -------------------------------------------------------------------------


def test_usage_counts_cached_tokens_as_openai_does() -> None:
    u = anth.usage(
        {
            "input_tokens": 5,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 20,
            "output_tokens": 7,
        }
    )
    assert (u.prompt_tokens, u.completion_tokens, u.cached_tokens) == (125, 7, 100)
    b = bedrock.usage(
        {
            "inputTokens": 5,
            "outputTokens": 7,
            "cacheReadInputTokens": 40,
            "cacheWriteInputTokens": 2,
        }
    )
    assert (b.prompt_tokens, b.completion_tokens, b.cached_tokens) == (47, 7, 40)
    v = vertex.usage(
        {
            "promptTokenCount": 50,
            "cachedContentTokenCount": 30,
            "candidatesTokenCount": 4,
            "thoughtsTokenCount": 6,
        }
    )
    assert (v.prompt_tokens, v.completion_tokens, v.cached_tokens) == (50, 10, 30)
    assert v.as_openai()["prompt_tokens_details"] == {"cached_tokens": 30}
    assert bedrock.usage({"inputTokens": 1, "outputTokens": 1}).cached_tokens is None


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_anthropic_finish_reasons(stop: str, finish: str) -> None:
    msg = {
        "id": "msg_1",
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": stop,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    out, _ = anth.completion(msg, "chat")
    assert orjson.loads(out)["choices"][0]["finish_reason"] == finish


def test_vertex_multiple_candidates_and_function_calls() -> None:
    resp = {
        "candidates": [
            {
                "index": 0,
                "content": {"role": "model", "parts": [{"text": "a"}, {"text": "b"}]},
                "finishReason": "STOP",
            },
            {
                "index": 1,
                "content": {
                    "role": "model",
                    "parts": [{"functionCall": {"name": "f", "args": {"x": 1}}}],
                },
                "finishReason": "STOP",
            },
            {
                "index": 2,
                "content": {"role": "model", "parts": [{"text": "c"}]},
                "finishReason": "SAFETY",
            },
        ],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 3},
    }
    out, _use = vertex.completion(resp, "chat")
    ch = orjson.loads(out)["choices"]
    assert [c["finish_reason"] for c in ch] == ["stop", "tool_calls", "content_filter"]
    assert ch[0]["message"]["content"] == "ab" and ch[1]["message"]["content"] is None
    assert json.loads(ch[1]["message"]["tool_calls"][0]["function"]["arguments"]) == {"x": 1}
    blocked, _ = vertex.completion({"promptFeedback": {"blockReason": "SAFETY"}}, "chat")
    assert orjson.loads(blocked)["choices"][0]["finish_reason"] == "content_filter"


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "headers", "payload", "cause", "client"),
    [
        (
            "anthropic",
            529,
            {},
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            "upstream_overloaded",
            503,
        ),
        (
            "anthropic",
            429,
            {"retry-after": "3"},
            {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}},
            "upstream_429",
            429,
        ),
        (
            "anthropic",
            400,
            {},
            {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}},
            "upstream_bad_request",
            400,
        ),
        (
            "anthropic",
            403,
            {},
            {"type": "error", "error": {"type": "permission_error", "message": "no"}},
            "upstream_auth",
            502,
        ),
        (
            "bedrock",
            429,
            {"x-amzn-ErrorType": "ThrottlingException:http://internal.amazon.com/coral/"},
            {"message": "Too many requests"},
            "upstream_overloaded",
            429,
        ),
        (
            "bedrock",
            403,
            {},
            {"__type": "com.amazon.coral.service#UnrecognizedClientException", "message": "x"},
            "upstream_auth",
            502,
        ),
        (
            "bedrock",
            408,
            {"x-amzn-ErrorType": "ModelTimeoutException"},
            {"message": "t"},
            "upstream_5xx",
            504,
        ),
        (
            "bedrock",
            400,
            {"x-amzn-ErrorType": "ServiceQuotaExceededException"},
            {"message": "q"},
            "upstream_429",
            429,
        ),
        (
            "vertex",
            429,
            {},
            {"error": {"code": 429, "message": "Quota", "status": "RESOURCE_EXHAUSTED"}},
            "upstream_overloaded",
            429,
        ),
        (
            "vertex",
            503,
            {},
            [{"error": {"code": 503, "message": "x", "status": "UNAVAILABLE"}}],
            "upstream_overloaded",
            503,
        ),
        (
            "vertex",
            400,
            {},
            {"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}},
            "upstream_bad_request",
            400,
        ),
        (
            "azure_openai",
            400,
            {},
            {"error": {"code": "content_filter", "message": "filtered", "param": "prompt"}},
            "content_filter",
            400,
        ),
        (
            "azure_openai",
            404,
            {},
            {"error": {"code": "DeploymentNotFound", "message": "x"}},
            "upstream_not_found",
            502,
        ),
        (
            "azure_openai",
            429,
            {"retry-after-ms": "1500"},
            {"error": {"code": "429", "message": "x"}},
            "upstream_429",
            429,
        ),
        ("openai", 502, {}, b"<html>bad gateway</html>", "upstream_5xx", 502),
    ],
)
def test_error_mapping(
    kind: str, status: int, headers: dict[str, str], payload: Any, cause: str, client: int
) -> None:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    e = build_adapter(cfg(kind)).error(status, headers, raw)
    assert (e.cause, e.status) == (cause, client)
    assert e.message and "secret" not in e.message
    if kind == "azure_openai" and status == 429:
        assert e.retry_after_s == 1.5
    assert json.loads(e.body())["error"]["message"] == e.message


def test_error_in_disguise_is_garbage() -> None:
    from skyfleet.providers import ResponseGarbage

    a = build_adapter(cfg("anthropic"))
    with pytest.raises(ResponseGarbage) as g:
        a.response(
            "chat",
            200,
            {},
            b'{"type":"error","error":{"type":"overloaded_error","message":"o"}}',
            model="c",
        )
    assert g.value.error.cause == "upstream_overloaded"
    with pytest.raises(ResponseGarbage) as g2:
        build_adapter(cfg("vertex")).response("chat", 200, {}, b"<html>", model="c")
    assert g2.value.error.cause == "upstream_garbage"


def test_secrets_stay_out_of_repr() -> None:
    for kind, secret in (
        ("anthropic", "sk-ant-secret"),
        ("bedrock", "aws-secret"),
        ("azure_openai", "az-secret"),
    ):
        c = cfg(kind, headers={"X-Extra": "header-secret"})
        assert secret not in repr(c) and secret not in str(c.model_dump())
        assert "header-secret" not in repr(c)


# -- streams: provider framing in any chunking → OpenAI chunks ---------------------------------

UTF8 = st.characters(codec="utf-8", exclude_categories=("Cs",))  # what JSON on the wire holds
TEXT = st.lists(
    st.text(UTF8, min_size=1, max_size=8),
    min_size=1,
    max_size=12,
)


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    pos = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *pos, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _feed(t: Any, parts: list[bytes]) -> bytes:
    return b"".join(t.feed(p) for p in parts) + t.flush()


def _text_of(raw: bytes) -> str:
    return "".join(c.choices[0].delta.content or "" for c in sse_chunks(raw) if c.choices)


@settings(max_examples=60, deadline=None)
@given(
    pieces=TEXT,
    cuts=st.lists(st.integers(0, 10_000), max_size=20),
    args=st.dictionaries(st.text(UTF8, max_size=5), st.integers(-(2**53), 2**53), max_size=3),
)
def test_bedrock_stream_any_chunking(
    pieces: list[str], cuts: list[int], args: dict[str, int]
) -> None:
    js = orjson.dumps(args).decode()
    ev = eventstream.event
    data = (
        ev("messageStart", b'{"role":"assistant"}')
        + b"".join(
            ev("contentBlockDelta", orjson.dumps({"contentBlockIndex": 0, "delta": {"text": p}}))
            for p in pieces
        )
        + ev("contentBlockStop", b'{"contentBlockIndex":0}')
        + ev(
            "contentBlockStart",
            orjson.dumps(
                {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "f"}}}
            ),
        )
        + b"".join(
            ev(
                "contentBlockDelta",
                orjson.dumps(
                    {"contentBlockIndex": 1, "delta": {"toolUse": {"input": js[i : i + 3]}}}
                ),
            )
            for i in range(0, len(js), 3)
        )
        + ev("messageStop", b'{"stopReason":"tool_use"}')
        + ev("metadata", b'{"usage":{"inputTokens":9,"outputTokens":4,"cacheReadInputTokens":2}}')
    )
    t = bedrock.BedrockStream("ep", "chat", include_usage=True)
    raw = _feed(t, _chunked(data, cuts))
    assert t.done and _text_of(raw) == "".join(pieces)
    calls = [tc for c in sse_chunks(raw) if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert (
        calls[0].id == "t1"
        and json.loads("".join(tc.function.arguments or "" for tc in calls)) == args
    )  # type: ignore[union-attr]
    assert t.usage == {
        "prompt_tokens": 11,
        "completion_tokens": 4,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 2},
    }
    assert raw.endswith(b"data: [DONE]\n\n")


@settings(max_examples=60, deadline=None)
@given(pieces=TEXT, cuts=st.lists(st.integers(0, 10_000), max_size=20), crlf=st.booleans())
def test_vertex_stream_any_chunking(pieces: list[str], cuts: list[int], crlf: bool) -> None:
    sep = b"\r\n\r\n" if crlf else b"\n\n"
    evs = [{"candidates": [{"content": {"role": "model", "parts": [{"text": p}]}}]} for p in pieces]
    evs[-1]["candidates"][0]["finishReason"] = "MAX_TOKENS"
    evs[-1]["usageMetadata"] = {"promptTokenCount": 3, "candidatesTokenCount": len(pieces)}
    data = b"".join(b"data: " + orjson.dumps(e) + sep for e in evs)
    t = vertex.VertexStream("ep", "chat", include_usage=False)
    raw = _feed(t, _chunked(data, cuts))
    chunks = sse_chunks(raw)
    assert t.done and _text_of(raw) == "".join(pieces)
    assert chunks[-1].choices[0].finish_reason == "length"
    assert t.usage is not None and t.usage["completion_tokens"] == len(pieces)
    assert b'"usage"' not in raw  # the client did not ask for usage


@settings(max_examples=40, deadline=None)
@given(
    pieces=TEXT,
    cuts=st.lists(st.integers(0, 10_000), max_size=20),
    args=st.dictionaries(st.text(UTF8, max_size=5), st.integers(-(2**53), 2**53), max_size=3),
)
def test_openai_to_anthropic_to_openai_stream_round_trip(
    pieces: list[str], cuts: list[int], args: dict[str, int]
) -> None:
    """OpenAI chunks → (inbound) Anthropic SSE → (adapter) OpenAI chunks: same content."""
    w = ChunkWriter("chat", include_usage=True)
    js = orjson.dumps(args).decode()
    openai_sse = (
        w.role()
        + b"".join(w.content(p) for p in pieces)
        + w.tool_start(0, "call_1", "f")
        + b"".join(w.tool_args(0, js[i : i + 2]) for i in range(0, len(js), 2))
        + w.finish("tool_calls")
        + w.usage_chunk(
            {
                "prompt_tokens": 12,
                "completion_tokens": 5,
                "prompt_tokens_details": {"cached_tokens": 4},
            }
        )
        + b"data: [DONE]\n\n"
    )
    inbound = ChatToMessagesStream("claude")
    anthropic_sse = _feed(inbound, _chunked(openai_sse, cuts))
    assert inbound.done
    back = anth.AnthropicStream("ep", "chat", include_usage=True)
    raw = _feed(back, _chunked(anthropic_sse, [c * 7 for c in cuts]))
    assert back.done and _text_of(raw) == "".join(pieces)
    calls = [tc for c in sse_chunks(raw) if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == args  # type: ignore[union-attr]
    assert sse_chunks(raw)[-1].usage is not None
    assert back.usage == {
        "prompt_tokens": 12,
        "completion_tokens": 5,
        "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 4},
    }


def test_stream_errors_and_broken_framing() -> None:
    from skyfleet.providers import StreamGarbage

    a = anth.AnthropicStream("ep", "chat", include_usage=False)
    out = a.feed(
        b"event: message_start\ndata: "
        b'{"type":"message_start","message":{"id":"m","usage":{"input_tokens":1}}}\n\n'
        b"event: error\ndata: "
        b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    assert a.error is not None and a.error.cause == "upstream_overloaded" and not a.done
    assert b'"error"' in out
    b = bedrock.BedrockStream("ep", "chat", include_usage=False)
    b.feed(eventstream.exception("throttlingException", b'{"message":"slow down"}'))
    assert b.error is not None and b.error.cause == "upstream_overloaded"
    bad = bytearray(eventstream.event("messageStart", b"{}"))
    bad[-1] ^= 0xFF
    with pytest.raises(StreamGarbage):
        bedrock.BedrockStream("ep", "chat", include_usage=False).feed(bytes(bad))
    cut = bedrock.BedrockStream("ep", "chat", include_usage=False)
    cut.feed(eventstream.event("messageStart", b"{}")[:-3])
    with pytest.raises(StreamGarbage):
        cut.flush()


# -- round trips through the inbound Messages translation ----------------------------------------

MSG = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant"]),
        "content": st.text(UTF8, min_size=1, max_size=20),
    }
)


@settings(max_examples=60, deadline=None)
@given(
    msgs=st.lists(MSG, min_size=1, max_size=6),
    system=st.text(UTF8, min_size=1, max_size=20),
    mt=st.integers(1, 1000),
)
def test_chat_to_anthropic_and_back(msgs: list[dict[str, str]], system: str, mt: int) -> None:
    """OpenAI chat → Anthropic request (adapter) → OpenAI chat (inbound): same turns."""
    chat = {
        "model": "chat",
        "max_tokens": mt,
        "messages": [{"role": "system", "content": system}, *msgs],
    }
    req = body("anthropic", chat)
    back = messages_to_chat({**req, "model": "chat"})
    assert isinstance(back, dict) and back["max_tokens"] == mt
    assert back["messages"][0] == {"role": "system", "content": system}
    got = [
        (
            m["role"],
            m["content"]
            if isinstance(m["content"], str)
            else "".join(p["text"] for p in m["content"]),
        )
        for m in back["messages"][1:]
    ]
    merged: list[tuple[str, str]] = []
    for m in msgs:  # Anthropic turns hold blocks; consecutive same-role turns stay separate
        merged.append((m["role"], m["content"]))
    assert got == merged


def test_anthropic_response_round_trip_and_sdk_types() -> None:
    import anthropic.types

    msg = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 3},
    }
    chat, use = anth.completion(msg, "chat")
    assert use is not None and use.prompt_tokens == 13
    again = anthropic.types.Message.model_validate_json(chat_to_message(chat, "claude"))
    assert again.stop_reason == "tool_use" and again.content[0].text == "Let me check."  # type: ignore[union-attr]
    assert again.content[1].input == {"city": "Oslo"}  # type: ignore[union-attr]
    assert (
        again.usage.input_tokens,
        again.usage.cache_read_input_tokens,
        again.usage.output_tokens,
    ) == (10, 3, 5)
