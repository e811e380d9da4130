"""The local Azure OpenAI server is faithful: openai.AzureOpenAI (api-key and Entra ID
token provider) and openai.OpenAI on the /openai/v1/ base parse what it sends."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any

import openai
import pytest

from skyfleet.emulator.process import EmulatorProcess

from .conftest import AZURE_DEPLOYMENT, AZURE_KEY, ENTRA, WEATHER_SCHEMA

MSGS: Any = [{"role": "user", "content": "Tell me about the weather."}]
TOOLS: Any = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}
]
API_VERSION = "2024-10-21"


def client(emu: EmulatorProcess, key: str = AZURE_KEY) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=emu.url, api_key=key, api_version=API_VERSION, max_retries=0
    )


def entra_token(emu: EmulatorProcess, secret: str = ENTRA[1]) -> str:
    form = {
        "grant_type": "client_credentials",
        "client_id": ENTRA[0],
        "client_secret": secret,
        "scope": "https://cognitiveservices.azure.com/.default",
    }
    data = urllib.parse.urlencode(form).encode()
    with urllib.request.urlopen(emu.url + "/tenant-1/oauth2/v2.0/token", data, timeout=5) as r:
        return str(json.loads(r.read())["access_token"])


def test_chat_and_stream_with_usage(azure_emu: EmulatorProcess) -> None:
    c = client(azure_emu)
    r = c.chat.completions.create(model=AZURE_DEPLOYMENT, messages=MSGS, max_tokens=5)
    assert r.usage is not None and r.usage.completion_tokens == 5 == len(
        (r.choices[0].message.content or "").split()
    )
    chunks = list(
        c.chat.completions.create(
            model=AZURE_DEPLOYMENT,
            messages=MSGS,
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices == []  # Azure's prompt_filter_results chunk
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert (
        chunks[-1].usage is not None
        and chunks[-1].usage.completion_tokens == len(text.split()) == 3
    )


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls(azure_emu: EmulatorProcess, stream: bool) -> None:
    c = client(azure_emu)
    kw: Any = {
        "model": AZURE_DEPLOYMENT,
        "messages": MSGS,
        "tools": TOOLS,
        "tool_choice": "required",
    }
    if stream:
        chunks = list(c.chat.completions.create(**kw, stream=True))
        args = "".join(
            tc.function.arguments or ""
            for ch in chunks
            if ch.choices
            for tc in ch.choices[0].delta.tool_calls or []
            if tc.function
        )
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
    else:
        r = c.chat.completions.create(**kw)
        call = r.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"  # type: ignore[union-attr]
        args = call.function.arguments  # type: ignore[union-attr]
    assert set(json.loads(args)) == {"city", "days"}


def test_entra_id_and_v1_base(azure_emu: EmulatorProcess) -> None:
    c = openai.AzureOpenAI(
        azure_endpoint=azure_emu.url,
        azure_ad_token_provider=lambda: entra_token(azure_emu),
        api_version=API_VERSION,
        max_retries=0,
    )
    assert c.chat.completions.create(model=AZURE_DEPLOYMENT, messages=MSGS, max_tokens=2).choices
    v1 = openai.OpenAI(base_url=azure_emu.url + "/openai/v1/", api_key=AZURE_KEY, max_retries=0)
    assert v1.chat.completions.create(model=AZURE_DEPLOYMENT, messages=MSGS, max_tokens=2).choices
    with pytest.raises(urllib.error.HTTPError) as e:
        entra_token(azure_emu, "wrong-secret")
    assert e.value.code == 401


def test_errors_are_the_sdk_classes(
    azure_emu: EmulatorProcess, faults: list[EmulatorProcess]
) -> None:
    faults.append(azure_emu)
    kw: Any = {"model": AZURE_DEPLOYMENT, "messages": MSGS, "max_tokens": 2}
    with pytest.raises(openai.AuthenticationError):
        client(azure_emu, "wrong").chat.completions.create(**kw)
    with pytest.raises(openai.NotFoundError) as nf:
        client(azure_emu).chat.completions.create(**{**kw, "model": "other-deployment"})
    assert nf.value.code == "DeploymentNotFound"
    azure_emu.inject("filter")
    with pytest.raises(openai.BadRequestError) as bad:
        client(azure_emu).chat.completions.create(**kw)
    assert bad.value.code == "content_filter"
    azure_emu.clear_faults()
    azure_emu.inject("throttle", retry_after_s=2)
    with pytest.raises(openai.RateLimitError) as rl:
        client(azure_emu).chat.completions.create(**kw)
    assert rl.value.response.headers["retry-after"] == "2"
    azure_emu.clear_faults()
    azure_emu.inject("error", status=500)
    with pytest.raises(openai.InternalServerError):
        client(azure_emu).chat.completions.create(**kw)
