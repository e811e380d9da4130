"""The official openai SDK (sync, async, streaming) against a real emulator process."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest

from skyfleet.emulator.metrics import metric
from skyfleet.emulator.process import EmulatorProcess
from skyfleet.emulator.tokens import chat_prompt_tokens, text_tokens

from .conftest import MODEL

MSG = [{"role": "user", "content": "Say something about clouds."}]


def client(emu: EmulatorProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=emu.base_url, api_key="none", max_retries=0)


def test_chat_sync_usage_and_words(emu: EmulatorProcess) -> None:
    r = client(emu).chat.completions.create(model=MODEL, messages=MSG, max_tokens=12)  # type: ignore[arg-type]
    assert r.object == "chat.completion" and r.model == MODEL
    assert r.choices[0].finish_reason == "length"
    text = r.choices[0].message.content or ""
    assert len(text.split()) == 12 and text.replace(" ", "").isalpha()
    assert r.usage is not None
    assert r.usage.prompt_tokens == chat_prompt_tokens([MSG[0]["content"]])
    assert r.usage.completion_tokens == 12 and r.usage.total_tokens == r.usage.prompt_tokens + 12


def test_max_completion_tokens_and_seeded_length(emu: EmulatorProcess) -> None:
    c = client(emu)
    r = c.chat.completions.create(model=MODEL, messages=MSG, max_completion_tokens=3)  # type: ignore[arg-type]
    assert r.usage is not None and r.usage.completion_tokens == 3
    # Without max_tokens the length is a seeded draw: same request, same length and text.
    msgs: Any = [{"role": "user", "content": "x" * 40}]
    a = c.chat.completions.create(model=MODEL, messages=msgs, seed=3)
    b = c.chat.completions.create(model=MODEL, messages=msgs, seed=3)
    assert a.choices[0].finish_reason == "stop"
    assert a.usage is not None and b.usage is not None
    assert a.usage.completion_tokens == b.usage.completion_tokens >= 1
    assert a.choices[0].message.content == b.choices[0].message.content


def test_chat_streaming_with_usage(emu: EmulatorProcess) -> None:
    stream = client(emu).chat.completions.create(
        model=MODEL,
        messages=MSG,  # type: ignore[arg-type]
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    content = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(content) == 8
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finals[-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 8


async def test_async_client_concurrent(emu: EmulatorProcess) -> None:
    import asyncio

    ac = openai.AsyncOpenAI(base_url=emu.base_url, api_key="none", max_retries=0)
    rs = await asyncio.gather(
        *[ac.chat.completions.create(model=MODEL, messages=MSG, max_tokens=5) for _ in range(20)]  # type: ignore[arg-type]
    )
    assert all(r.usage is not None and r.usage.completion_tokens == 5 for r in rs)
    stream = await ac.completions.create(model=MODEL, prompt="abcdefgh", max_tokens=4, stream=True)
    texts = [c.choices[0].text async for c in stream if c.choices and c.choices[0].text]
    assert len(texts) == 4
    await ac.close()


def test_completions_and_models(emu: EmulatorProcess) -> None:
    c = client(emu)
    r = c.completions.create(model=MODEL, prompt="hello world, hi")
    assert r.object == "text_completion" and r.usage is not None
    assert r.usage.prompt_tokens == text_tokens("hello world, hi")
    assert r.usage.completion_tokens == 16  # OpenAI's default max_tokens for completions
    r2 = c.completions.create(model=MODEL, prompt=[1, 2, 3, 4, 5], max_tokens=2)
    assert r2.usage is not None and r2.usage.prompt_tokens == 5
    ids = [m.id for m in c.models.list()]
    assert ids == [MODEL]


def test_embeddings_one_unit_vector_per_input(emu: EmulatorProcess) -> None:
    c = client(emu)
    r = c.embeddings.create(model=MODEL, input=["a cloud", "a fleet", "a cloud"], dimensions=8)
    assert [d.index for d in r.data] == [0, 1, 2] and r.object == "list"
    vectors = [d.embedding for d in r.data]
    assert all(len(v) == 8 and abs(sum(x * x for x in v) - 1) < 1e-4 for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]  # deterministic per text
    assert r.usage.prompt_tokens == r.usage.total_tokens >= 3
    one = c.embeddings.create(model=MODEL, input=[1, 2, 3])
    assert len(one.data) == 1 and len(one.data[0].embedding) == 64
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        c.embeddings.create(model=MODEL, input="x", dimensions=100_000)
    with pytest.raises(openai.BadRequestError, match="input"):
        c.embeddings.create(model=MODEL, input=[])


def test_served_model_name_and_metrics(emu: EmulatorProcess) -> None:
    m = emu.metrics()
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:time_to_first_token_seconds_count",
        "vllm:time_per_output_token_seconds_sum",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:request_success_total",
    ):
        assert any(k.split("{")[0] == name for k in m), name
    before = metric(m, "vllm:generation_tokens_total")
    client(emu).chat.completions.create(model=MODEL, messages=MSG, max_tokens=7)  # type: ignore[arg-type]
    assert metric(emu.metrics(), "vllm:generation_tokens_total") == before + 7


def post(emu: EmulatorProcess, path: str, raw: bytes) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        emu.url + path, data=raw, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def chat(**fields: Any) -> bytes:
    """A chat body: model and messages, overridden or extended by `fields`."""
    return json.dumps({"model": MODEL, "messages": MSG, **fields}).encode()


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (json.dumps({"messages": MSG}).encode(), 400, "model"),
        (chat(messages="hi"), 400, "messages"),
        (chat(messages=[{"content": "no role"}]), 400, "messages[0]"),
        (chat(max_tokens="5"), 400, "max_tokens"),
        (chat(max_tokens=0), 400, "max_tokens"),
        (chat(max_completion_tokens=1.5), 400, "max_completion_tokens"),
        (chat(stream="yes"), 400, "stream"),
        (chat(stream_options={"include_usage": 1}), 400, "stream_options.include_usage"),
        (chat(n=2), 400, "n"),
        (chat(temperature="hot"), 400, "temperature"),
        (chat(max_tokens=10**7), 400, "max_tokens"),
        (chat(model="gpt-9"), 404, "model"),
    ],
)
def test_bad_input_gets_openai_errors(
    emu: EmulatorProcess, body: bytes, status: int, param: str | None
) -> None:
    code, out = post(emu, "/v1/chat/completions", body)
    assert code == status
    err = out["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["param"] == param
    if status == 400:
        assert err["type"] == "invalid_request_error"


def test_context_overflow_message(emu: EmulatorProcess) -> None:
    code, out = post(
        emu, "/v1/completions", json.dumps({"model": MODEL, "prompt": "abcd" * 200_000}).encode()
    )
    assert code == 400 and out["error"]["code"] == "context_length_exceeded"
    assert "maximum context length" in out["error"]["message"]


def test_sdk_raises_typed_errors(emu: EmulatorProcess) -> None:
    with pytest.raises(openai.NotFoundError):
        client(emu).chat.completions.create(model="nope", messages=MSG)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError) as e:
        client(emu).chat.completions.create(model=MODEL, messages=MSG, n=3)  # type: ignore[arg-type]
    assert e.value.body is not None


def test_unknown_profile_lists_models_and_accelerators() -> None:
    cmd = [sys.executable, "-c", "from skyfleet.cli import main; main()", "emulate"]
    r = subprocess.run(
        [*cmd, "--profile", "Llama-9@H100-SXM-80GB", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "Llama-3.1-8B" in r.stderr and "H100-SXM-80GB" in r.stderr and "L4" in r.stderr
