"""The local Anthropic server is faithful: the official `anthropic` SDK parses all it sends."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from skyfleet.emulator.process import EmulatorProcess
from skyfleet.emulator.tokens import chat_prompt_tokens

from .conftest import ANTHROPIC_KEY, ANTHROPIC_MODEL, WEATHER_SCHEMA

MSGS: Any = [{"role": "user", "content": "Tell me about the weather."}]
TOOLS: Any = [{"name": "get_weather", "description": "forecast", "input_schema": WEATHER_SCHEMA}]


def client(emu: EmulatorProcess, key: str = ANTHROPIC_KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=emu.url, api_key=key, max_retries=0)


def test_message_text_usage_and_stop_reason(anthropic_emu: EmulatorProcess) -> None:
    r = client(anthropic_emu).messages.create(
        model=ANTHROPIC_MODEL, max_tokens=6, system="Be brief.", messages=MSGS
    )
    assert r.type == "message" and r.role == "assistant" and r.model == ANTHROPIC_MODEL
    assert r.content[0].type == "text" and len(r.content[0].text.split()) == r.usage.output_tokens
    assert r.usage.input_tokens == chat_prompt_tokens(["Be brief.", MSGS[0]["content"]])
    assert r.stop_reason == ("max_tokens" if r.usage.output_tokens == 6 else "end_turn")


def test_stream_events_accumulate(anthropic_emu: EmulatorProcess) -> None:
    with client(anthropic_emu).messages.stream(
        model=ANTHROPIC_MODEL, max_tokens=5, messages=MSGS
    ) as s:
        kinds = [ev.type for ev in s]
        final = s.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_delta" in kinds and "message_delta" in kinds
    assert final.usage.output_tokens == len(final.content[0].text.split()) <= 5  # type: ignore[union-attr]
    assert final.stop_reason in ("max_tokens", "end_turn")


@pytest.mark.parametrize("stream", [False, True])
def test_forced_tool_use(anthropic_emu: EmulatorProcess, stream: bool) -> None:
    kw: Any = {
        "model": ANTHROPIC_MODEL,
        "max_tokens": 200,
        "messages": MSGS,
        "tools": TOOLS,
        "tool_choice": {"type": "tool", "name": "get_weather"},
    }
    c = client(anthropic_emu)
    if stream:
        with c.messages.stream(**kw) as s:
            msg = s.get_final_message()
    else:
        msg = c.messages.create(**kw)
    assert msg.stop_reason == "tool_use"
    block = msg.content[-1]
    assert block.type == "tool_use" and block.name == "get_weather"
    assert set(block.input) == {"city", "days"}  # the SDK parsed the streamed JSON


def test_errors_are_the_sdk_classes(
    anthropic_emu: EmulatorProcess, faults: list[EmulatorProcess]
) -> None:
    faults.append(anthropic_emu)
    kw: Any = {"model": ANTHROPIC_MODEL, "max_tokens": 4, "messages": MSGS}
    with pytest.raises(anthropic.AuthenticationError):
        client(anthropic_emu, "sk-ant-wrong").messages.create(**kw)
    with pytest.raises(anthropic.NotFoundError):
        client(anthropic_emu).messages.create(**{**kw, "model": "claude-none"})
    with pytest.raises(anthropic.BadRequestError):
        client(anthropic_emu).messages.create(**{**kw, "max_tokens": 0})
    anthropic_emu.inject("error", status=529)
    with pytest.raises(anthropic.OverloadedError) as ov:
        client(anthropic_emu).messages.create(**kw)
    assert ov.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    anthropic_emu.clear_faults()
    anthropic_emu.inject("throttle", retry_after_s=7)
    with pytest.raises(anthropic.RateLimitError) as rl:
        client(anthropic_emu).messages.create(**kw)
    assert rl.value.response.headers["retry-after"] == "7"
    anthropic_emu.clear_faults()
    anthropic_emu.inject("error", status=500)
    with pytest.raises(anthropic.InternalServerError):
        client(anthropic_emu).messages.create(**kw)
    anthropic_emu.clear_faults()
    anthropic_emu.inject("filter")
    assert client(anthropic_emu).messages.create(**kw).stop_reason == "refusal"
