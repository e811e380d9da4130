"""The local Bedrock server is faithful: boto3's bedrock-runtime client (endpoint_url) parses
what it sends, and it checks SigV4 signatures with botocore's own signer."""

from __future__ import annotations

from typing import Any

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from skyfleet.emulator.process import EmulatorProcess
from skyfleet.emulator.tokens import chat_prompt_tokens

from .conftest import AWS_KEY_ID, AWS_SECRET, BEDROCK_MODEL, REGION, WEATHER_SCHEMA

MSGS: Any = [{"role": "user", "content": [{"text": "Tell me about the weather."}]}]
TOOLS: Any = {
    "tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": WEATHER_SCHEMA}}}],
    "toolChoice": {"any": {}},
}
NO_RETRY = botocore.config.Config(retries={"total_max_attempts": 1})


def client(
    emu: EmulatorProcess, key_id: str = AWS_KEY_ID, secret: str = AWS_SECRET, region: str = REGION
) -> Any:
    return boto3.client(
        "bedrock-runtime",
        region_name=region,
        endpoint_url=emu.url,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=NO_RETRY,
    )


def test_converse(bedrock_emu: EmulatorProcess) -> None:
    r = client(bedrock_emu).converse(
        modelId=BEDROCK_MODEL,
        messages=MSGS,
        system=[{"text": "Be brief."}],
        inferenceConfig={"maxTokens": 6, "temperature": 0.2},
    )
    text = r["output"]["message"]["content"][0]["text"]
    u = r["usage"]
    assert u["inputTokens"] == chat_prompt_tokens(["Be brief.", "Tell me about the weather."])
    assert (
        u["outputTokens"] == len(text.split())
        and u["totalTokens"] == u["inputTokens"] + u["outputTokens"]
    )
    assert r["stopReason"] == ("max_tokens" if u["outputTokens"] == 6 else "end_turn")


def test_converse_stream_event_stream_framing(bedrock_emu: EmulatorProcess) -> None:
    r = client(bedrock_emu).converse_stream(
        modelId=BEDROCK_MODEL, messages=MSGS, inferenceConfig={"maxTokens": 4}
    )
    events = list(r["stream"])  # botocore decodes and CRC-checks every message
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and kinds[-3:] == [
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    text = "".join(
        e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e
    )
    assert events[-1]["metadata"]["usage"]["outputTokens"] == len(text.split()) <= 4


@pytest.mark.parametrize("stream", [False, True])
def test_tool_use(bedrock_emu: EmulatorProcess, stream: bool) -> None:
    c = client(bedrock_emu)
    if not stream:
        r = c.converse(modelId=BEDROCK_MODEL, messages=MSGS, toolConfig=TOOLS)
        assert r["stopReason"] == "tool_use"
        tu = r["output"]["message"]["content"][0]["toolUse"]
        assert tu["name"] == "get_weather" and set(tu["input"]) == {"city", "days"}
        return
    events = list(
        c.converse_stream(modelId=BEDROCK_MODEL, messages=MSGS, toolConfig=TOOLS)["stream"]
    )
    start = next(
        e["contentBlockStart"]["start"]["toolUse"] for e in events if "contentBlockStart" in e
    )
    args = "".join(
        e["contentBlockDelta"]["delta"]["toolUse"]["input"]
        for e in events
        if "contentBlockDelta" in e
    )
    assert start["name"] == "get_weather" and '"city"' in args
    assert any(e.get("messageStop", {}).get("stopReason") == "tool_use" for e in events)


def _code(call: Any) -> str:
    with pytest.raises(ClientError) as e:
        call()
    return str(e.value.response["Error"]["Code"])


def test_sigv4_is_verified(bedrock_emu: EmulatorProcess) -> None:
    def call(**kw: Any) -> Any:
        return lambda: client(bedrock_emu, **kw).converse(modelId=BEDROCK_MODEL, messages=MSGS)

    assert _code(call(secret="not-the-secret")) == "InvalidSignatureException"
    assert _code(call(key_id="AKIDSOMEONEELSE")) == "UnrecognizedClientException"
    assert _code(call(region="eu-west-1")) == "InvalidSignatureException"
    assert call()()["stopReason"] in ("end_turn", "max_tokens")


def test_errors_are_the_sdk_exceptions(
    bedrock_emu: EmulatorProcess, faults: list[EmulatorProcess]
) -> None:
    faults.append(bedrock_emu)
    c = client(bedrock_emu)
    with pytest.raises(c.exceptions.ValidationException):
        c.converse(modelId="amazon.unknown-v1", messages=MSGS)
    bedrock_emu.inject("throttle")
    with pytest.raises(c.exceptions.ThrottlingException):
        c.converse(modelId=BEDROCK_MODEL, messages=MSGS)
    bedrock_emu.clear_faults()
    bedrock_emu.inject("error", status=503)
    with pytest.raises(c.exceptions.ServiceUnavailableException):
        c.converse_stream(modelId=BEDROCK_MODEL, messages=MSGS)
    bedrock_emu.clear_faults()
    bedrock_emu.inject("error", status=500)
    with pytest.raises(c.exceptions.InternalServerException):
        c.converse(modelId=BEDROCK_MODEL, messages=MSGS)
    bedrock_emu.clear_faults()
    bedrock_emu.inject("filter")
    assert c.converse(modelId=BEDROCK_MODEL, messages=MSGS)["stopReason"] == "guardrail_intervened"
