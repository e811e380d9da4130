"""The local Vertex AI server is faithful: google-genai in Vertex mode (custom base URL,
service-account credentials whose token_uri is the local token endpoint) parses what it
sends; the token endpoint takes only JWTs signed by the configured key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest
from google import genai
from google.auth.exceptions import RefreshError
from google.genai import errors, types
from google.oauth2 import service_account

from skyfleet.emulator.process import EmulatorProcess
from skyfleet.emulator.tokens import chat_prompt_tokens

from .conftest import GEMINI_MODEL, LOCATION, PROJECT, SCOPE, WEATHER_SCHEMA, write_key_file


def client(emu: EmulatorProcess, key_file: Path, api_version: str | None = None) -> genai.Client:
    creds = service_account.Credentials.from_service_account_file(str(key_file), scopes=[SCOPE])  # type: ignore[no-untyped-call]
    opts = types.HttpOptions(base_url=emu.url, api_version=api_version)
    return genai.Client(
        vertexai=True, project=PROJECT, location=LOCATION, credentials=creds, http_options=opts
    )


@pytest.mark.parametrize("version", [None, "v1"])  # the SDK's default (v1beta1) and v1
def test_generate_content(vertex_emu: EmulatorProcess, sa_file: Path, version: str | None) -> None:
    cfg = types.GenerateContentConfig(max_output_tokens=6, system_instruction="Be brief.")
    c = client(vertex_emu, sa_file, version)  # keep it: a collected Client closes its HTTP pool
    r = c.models.generate_content(
        model=GEMINI_MODEL, contents="Tell me about the weather.", config=cfg
    )
    u = r.usage_metadata
    assert u is not None and u.prompt_token_count == chat_prompt_tokens(
        ["Be brief.", "Tell me about the weather."]
    )
    assert r.text is not None and len(r.text.split()) == u.candidates_token_count
    fin = r.candidates[0].finish_reason  # type: ignore[index]
    assert fin == (
        types.FinishReason.MAX_TOKENS if u.candidates_token_count == 6 else types.FinishReason.STOP
    )


def test_stream_sse(vertex_emu: EmulatorProcess, sa_file: Path) -> None:
    c = client(vertex_emu, sa_file)
    chunks = list(
        c.models.generate_content_stream(
            model=GEMINI_MODEL,
            contents="hi",
            config=types.GenerateContentConfig(max_output_tokens=4),
        )
    )
    text = "".join(ch.text or "" for ch in chunks)
    last = chunks[-1]
    assert last.candidates and last.candidates[0].finish_reason is not None
    assert last.usage_metadata and last.usage_metadata.candidates_token_count == len(text.split())


@pytest.mark.parametrize("stream", [False, True])
def test_function_call(vertex_emu: EmulatorProcess, sa_file: Path, stream: bool) -> None:
    fd = types.FunctionDeclaration(name="get_weather", parameters_json_schema=WEATHER_SCHEMA)
    cfg = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[fd])],
        tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(
                mode=types.FunctionCallingConfigMode.ANY
            )
        ),
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    c = client(vertex_emu, sa_file)
    m = c.models
    if stream:
        calls = [
            fc
            for c in m.generate_content_stream(model=GEMINI_MODEL, contents="w?", config=cfg)
            for fc in c.function_calls or []
        ]
    else:
        calls = (
            m.generate_content(model=GEMINI_MODEL, contents="w?", config=cfg).function_calls or []
        )
    assert [c.name for c in calls] == ["get_weather"]
    assert set(calls[0].args or {}) == {"city", "days"}


def test_openai_compatible_endpoint(vertex_emu: EmulatorProcess, sa_file: Path) -> None:
    creds = service_account.Credentials.from_service_account_file(str(sa_file), scopes=[SCOPE])  # type: ignore[no-untyped-call]
    import google.auth.transport.requests

    creds.refresh(google.auth.transport.requests.Request())  # type: ignore[no-untyped-call]
    base = f"{vertex_emu.url}/v1/projects/{PROJECT}/locations/{LOCATION}/endpoints/openapi"
    c = openai.OpenAI(base_url=base, api_key=creds.token, max_retries=0)
    r = c.chat.completions.create(
        model=GEMINI_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert r.choices[0].message.content and r.usage is not None and r.usage.completion_tokens <= 3


def test_token_endpoint_refuses_other_keys(vertex_emu: EmulatorProcess, tmp_path: Path) -> None:
    other = write_key_file(tmp_path / "other.json", vertex_emu.url + "/token")
    c = client(vertex_emu, other)
    with pytest.raises(RefreshError, match="invalid_grant"):
        c.models.generate_content(model=GEMINI_MODEL, contents="hi")


def test_errors_are_the_sdk_classes(
    vertex_emu: EmulatorProcess, sa_file: Path, faults: list[EmulatorProcess]
) -> None:
    faults.append(vertex_emu)
    c = client(vertex_emu, sa_file)
    m = c.models

    def code(model: str = GEMINI_MODEL) -> tuple[type, Any, Any]:
        with pytest.raises(errors.APIError) as e:
            m.generate_content(model=model, contents="hi")
        return type(e.value), e.value.code, e.value.status

    assert code("gemini-none") == (errors.ClientError, 404, "NOT_FOUND")
    vertex_emu.inject("throttle")
    assert code() == (errors.ClientError, 429, "RESOURCE_EXHAUSTED")
    vertex_emu.clear_faults()
    vertex_emu.inject("error", status=503)
    assert code() == (errors.ServerError, 503, "UNAVAILABLE")
    vertex_emu.clear_faults()
    vertex_emu.inject("filter")
    r = m.generate_content(model=GEMINI_MODEL, contents="hi")
    assert (
        r.prompt_feedback is not None
        and r.prompt_feedback.block_reason == types.BlockedReason.SAFETY
    )
