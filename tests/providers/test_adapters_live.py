"""Each adapter against its provider's local server: the OpenAI client's request goes out in
the provider's format, and what comes back parses with the openai SDK's own types."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from skyfleet.config import EndpointConfig
from skyfleet.emulator.process import EmulatorProcess
from skyfleet.emulator.tokens import chat_prompt_tokens
from skyfleet.providers import build_adapter
from skyfleet.providers.vertex import VertexAdapter

from .conftest import (
    ANTHROPIC_KEY,
    ANTHROPIC_MODEL,
    AWS_KEY_ID,
    AWS_SECRET,
    AZURE_DEPLOYMENT,
    AZURE_KEY,
    BEDROCK_MODEL,
    ENTRA,
    GEMINI_MODEL,
    LOCATION,
    PROJECT,
    REGION,
    WEATHER_SCHEMA,
    write_key_file,
)
from .live import call, endpoint, send

KINDS = ["anthropic", "bedrock", "vertex", "azure_openai"]
PROMPT = "Tell me about the weather."
CHAT: dict[str, Any] = {
    "model": "chat",
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}],
    "max_tokens": 6,
}
TOOL_CHAT: dict[str, Any] = {
    "model": "chat",
    "messages": [{"role": "user", "content": PROMPT}],
    "tools": [
        {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}
    ],
    "tool_choice": "required",
    "max_tokens": 200,
}


@pytest.fixture()
def emus(
    anthropic_emu: EmulatorProcess,
    bedrock_emu: EmulatorProcess,
    vertex_emu: EmulatorProcess,
    azure_emu: EmulatorProcess,
) -> dict[str, EmulatorProcess]:
    return {
        "anthropic": anthropic_emu,
        "bedrock": bedrock_emu,
        "vertex": vertex_emu,
        "azure_openai": azure_emu,
    }


def cfg_for(
    kind: str, emus: dict[str, EmulatorProcess], sa_file: Path, **over: Any
) -> EndpointConfig:
    e = emus[kind]
    if kind == "anthropic":
        kw: dict[str, Any] = {"api_key": ANTHROPIC_KEY}
        return endpoint(kind, e.url, over.pop("model", ANTHROPIC_MODEL), **{**kw, **over})
    if kind == "bedrock":
        b = {"region": REGION, "access_key_id": AWS_KEY_ID, "secret_access_key": AWS_SECRET}
        b.update(over.pop("bedrock", {}))
        return endpoint(kind, e.url, over.pop("model", BEDROCK_MODEL), bedrock=b, **over)
    if kind == "vertex":
        v = {"project": PROJECT, "location": LOCATION, "credentials_file": str(sa_file)}
        v.update(over.pop("vertex", {}))
        return endpoint(kind, e.url, over.pop("model", GEMINI_MODEL), vertex=v, **over)
    a = {"deployment": AZURE_DEPLOYMENT, **over.pop("azure", {})}
    kw = {"api_key": AZURE_KEY} if "entra" not in a else {}
    return endpoint(kind, e.url, AZURE_DEPLOYMENT, azure=a, **{**kw, **over})


@pytest.mark.parametrize("kind", KINDS)
async def test_chat_completion_and_usage(
    kind: str, emus: dict[str, EmulatorProcess], sa_file: Path
) -> None:
    r = await call(cfg_for(kind, emus, sa_file), CHAT)
    assert r.error is None and r.completion is not None
    text = r.completion.choices[0].message.content or ""
    assert r.usage.prompt_tokens == chat_prompt_tokens(["Be brief.", PROMPT])
    assert r.usage.completion_tokens == len(text.split()) <= 6
    u = r.completion.usage
    assert u is not None and (u.prompt_tokens, u.completion_tokens) == (
        r.usage.prompt_tokens,
        r.usage.completion_tokens,
    )
    fin = r.completion.choices[0].finish_reason
    assert fin == ("length" if r.usage.completion_tokens == 6 else "stop")


@pytest.mark.parametrize("kind", KINDS)
async def test_stream_translates_to_openai_chunks(
    kind: str, emus: dict[str, EmulatorProcess], sa_file: Path
) -> None:
    r = await call(cfg_for(kind, emus, sa_file), {**CHAT, "max_tokens": 5}, stream=True)
    assert r.error is None and r.done and r.raw.endswith(b"data: [DONE]\n\n")
    final = r.final()
    text = final.choices[0].message.content or ""
    assert r.usage["completion_tokens"] == len(text.split()) <= 5
    assert r.usage["prompt_tokens"] == chat_prompt_tokens(["Be brief.", PROMPT])
    assert final.choices[0].finish_reason in ("stop", "length")
    assert r.chunks[-1].usage is not None  # the usage chunk the client asked for


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("kind", KINDS)
async def test_tool_calls(
    kind: str, stream: bool, emus: dict[str, EmulatorProcess], sa_file: Path
) -> None:
    r = await call(cfg_for(kind, emus, sa_file), TOOL_CHAT, stream=stream)
    assert r.error is None
    choice = r.final().choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather"]  # type: ignore[union-attr]
    assert set(json.loads(calls[0].function.arguments)) == {"city", "days"}  # type: ignore[union-attr]
    assert calls[0].id


async def test_tool_results_go_back(emus: dict[str, EmulatorProcess], sa_file: Path) -> None:
    """A second turn carrying the tool call and its result is accepted by every provider."""
    turn = {
        "model": "chat",
        "max_tokens": 4,
        "tools": TOOL_CHAT["tools"],
        "messages": [
            {"role": "user", "content": PROMPT},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{"city":"Oslo","days":2}',
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"forecast":"rain"}'},
        ],
    }
    for kind in KINDS:
        r = await call(cfg_for(kind, emus, sa_file), turn)
        assert r.error is None and r.completion is not None, (kind, r.error)


FAULTS = [
    # (fault, params, cause, client status, retryable, endpoint fault)
    (
        "throttle",
        {"retry_after_s": 2},
        {
            "anthropic": "upstream_429",
            "bedrock": "upstream_overloaded",
            "vertex": "upstream_overloaded",
            "azure_openai": "upstream_429",
        },
        429,
        True,
        False,
    ),
    ("error", {"status": 500}, "upstream_5xx", 500, True, True),
    (
        "error",
        {"status": 503},
        {
            "anthropic": "upstream_5xx",
            "bedrock": "upstream_overloaded",
            "vertex": "upstream_overloaded",
            "azure_openai": "upstream_5xx",
        },
        503,
        True,
        None,
    ),
]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f"{f[0]}-{f[1]}")
@pytest.mark.parametrize("kind", KINDS)
async def test_faults_map_to_failover_rules(
    kind: str,
    fault: Any,
    emus: dict[str, EmulatorProcess],
    sa_file: Path,
    faults: list[EmulatorProcess],
) -> None:
    name, params, causes, status, retryable, ep_fault = fault
    emu = emus[kind]
    faults.append(emu)
    emu.inject(name, **params)
    r = await call(cfg_for(kind, emus, sa_file), CHAT)
    e = r.error
    cause = causes if isinstance(causes, str) else causes[kind]
    assert e is not None and e.cause == cause and e.status == status
    assert e.retryable is retryable
    assert e.endpoint_fault is (cause == "upstream_5xx" if ep_fault is None else ep_fault)
    assert f"{kind}-test" in e.message
    if name == "throttle" and kind in ("anthropic", "azure_openai"):
        assert e.retry_after_s == 2.0


@pytest.mark.parametrize("kind", KINDS)
async def test_content_filter(
    kind: str, emus: dict[str, EmulatorProcess], sa_file: Path, faults: list[EmulatorProcess]
) -> None:
    emus[kind].inject("filter")
    faults.append(emus[kind])
    r = await call(cfg_for(kind, emus, sa_file), CHAT)
    if kind == "azure_openai":  # Azure refuses the prompt with a 400
        assert r.error is not None and r.error.cause == "content_filter" and r.error.status == 400
        assert not r.error.retryable and not r.error.endpoint_fault
    else:  # the others answer 200 with a refusal
        assert (
            r.completion is not None and r.completion.choices[0].finish_reason == "content_filter"
        )


BAD_AUTH = {
    "anthropic": {"api_key": "sk-ant-wrong"},
    "bedrock": {"bedrock": {"secret_access_key": "wrong-secret"}},
    "azure_openai": {"api_key": "wrong"},
}


@pytest.mark.parametrize("kind", sorted(BAD_AUTH))
async def test_rejected_credentials(
    kind: str, emus: dict[str, EmulatorProcess], sa_file: Path
) -> None:
    r = await call(cfg_for(kind, emus, sa_file, **BAD_AUTH[kind]), CHAT)
    e = r.error
    assert e is not None and e.cause == "upstream_auth" and e.status == 502
    assert e.retryable and not e.endpoint_fault
    secret = {"anthropic": "sk-ant-wrong", "bedrock": "wrong-secret", "azure_openai": "wrong"}[kind]
    assert secret not in e.message


async def test_vertex_key_not_trusted_is_auth_error(
    emus: dict[str, EmulatorProcess], tmp_path: Path
) -> None:
    other = write_key_file(tmp_path / "other.json", emus["vertex"].url + "/token")
    r = await call(cfg_for("vertex", emus, other), CHAT)
    assert r.error is not None and r.error.cause == "upstream_auth"


@pytest.mark.parametrize("kind", KINDS)
async def test_unknown_model_is_not_found(
    kind: str, emus: dict[str, EmulatorProcess], sa_file: Path
) -> None:
    over: dict[str, Any] = (
        {"azure": {"deployment": "other"}} if kind == "azure_openai" else {"model": "no-such-model"}
    )
    r = await call(cfg_for(kind, emus, sa_file, **over), CHAT)
    assert r.error is not None
    # Bedrock answers ValidationException for an unknown model id (as AWS does)
    assert r.error.cause == ("upstream_bad_request" if kind == "bedrock" else "upstream_not_found")


async def test_vertex_token_refreshed_before_expiry(
    emus: dict[str, EmulatorProcess], sa_file: Path
) -> None:
    """Tokens from the local endpoint live 3 s: the adapter refreshes them in the background
    and requests keep succeeding without ever waiting for a refresh."""
    adapter = build_adapter(cfg_for("vertex", emus, sa_file))
    assert isinstance(adapter, VertexAdapter)
    async with aiohttp.ClientSession() as s:
        await adapter.start(s)
        try:
            assert adapter.tokens is not None
            first = adapter.tokens.token
            for _ in range(4):
                r = await send(s, adapter, CHAT, stream=False)
                assert r.error is None
                await asyncio.sleep(1.0)
            assert adapter.tokens.refreshes >= 3 and adapter.tokens.token != first
        finally:
            await adapter.close()


async def test_vertex_openai_compatible_endpoint(
    emus: dict[str, EmulatorProcess], sa_file: Path
) -> None:
    cfg = cfg_for("vertex", emus, sa_file, vertex={"api": "openai"})
    r = await call(cfg, CHAT)
    assert r.completion is not None and r.usage.completion_tokens >= 1
    s = await call(cfg, CHAT, stream=True)
    assert s.done and s.usage is not None


async def test_azure_entra_id_and_v1(emus: dict[str, EmulatorProcess], sa_file: Path) -> None:
    entra = {
        "tenant_id": "tenant-1",
        "client_id": ENTRA[0],
        "client_secret": ENTRA[1],
        "authority_host": emus["azure_openai"].url,
    }
    r = await call(cfg_for("azure_openai", emus, sa_file, azure={"entra": entra}), CHAT)
    assert r.error is None and r.completion is not None
    bad = await call(
        cfg_for("azure_openai", emus, sa_file, azure={"entra": {**entra, "client_secret": "x"}}),
        CHAT,
    )
    assert bad.error is not None and bad.error.cause == "upstream_auth"  # no token: Azure says 401
    v1 = await call(cfg_for("azure_openai", emus, sa_file, azure={"api": "v1"}), CHAT, stream=True)
    assert v1.done and v1.usage is not None


async def test_bedrock_standard_credential_chain(
    emus: dict[str, EmulatorProcess], sa_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No keys in the config: botocore's chain finds them (here: the environment)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    cfg = endpoint("bedrock", emus["bedrock"].url, BEDROCK_MODEL, bedrock={"region": REGION})
    r = await call(cfg, CHAT, stream=True)
    assert r.error is None and r.done
