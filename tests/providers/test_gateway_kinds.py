"""The gateway (`skyfleet serve`, a real process) in front of every provider kind's local
server, driven by the official `openai` SDK — and by the `anthropic` SDK on the gateway's
own `/v1/messages` — as a client of a multi-provider fleet would: answers, streams, tools,
usage in the ledger, each error class's failover rule, and failover from one kind to
another while a provider is down."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from skyfleet.config import hash_key
from skyfleet.emulator.process import EmulatorProcess
from skyfleet.gateway.process import GatewayProcess, start_gateway

from .conftest import (
    ANTHROPIC_KEY,
    AWS_KEY_ID,
    AWS_SECRET,
    AZURE_DEPLOYMENT,
    AZURE_KEY,
    BEDROCK_MODEL,
    GEMINI_MODEL,
    LOCATION,
    PROJECT,
    REGION,
    WEATHER_SCHEMA,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

KEY = "sk-fleet-client"
ADMIN = "sk-fleet-admin"
KINDS = ("anthropic", "bedrock", "vertex", "azure_openai")
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather forecast",
            "parameters": WEATHER_SCHEMA,
        },
    }
]


def endpoints(emus: dict[str, EmulatorProcess], sa_file: Path) -> dict[str, dict[str, Any]]:
    """One endpoint per kind, as the fleet config names them."""
    a, b, v, z = (emus[k] for k in KINDS)
    return {
        "anthropic": {
            "kind": "anthropic",
            "url": a.url,
            "model": "claude-sonnet-4-5",
            "api_key": ANTHROPIC_KEY,
        },
        "bedrock": {
            "kind": "bedrock",
            "url": b.url,
            "model": BEDROCK_MODEL,
            "bedrock": {
                "region": REGION,
                "access_key_id": AWS_KEY_ID,
                "secret_access_key": AWS_SECRET,
            },
        },
        "vertex": {
            "kind": "vertex",
            "url": v.url,
            "model": GEMINI_MODEL,
            "vertex": {"project": PROJECT, "location": LOCATION, "credentials_file": str(sa_file)},
        },
        "azure_openai": {
            "kind": "azure_openai",
            "url": z.url,
            "model": AZURE_DEPLOYMENT,
            "api_key": AZURE_KEY,
            "azure": {"deployment": AZURE_DEPLOYMENT},
        },
    }


@pytest.fixture(scope="module")
def emus(
    anthropic_emu: EmulatorProcess,
    bedrock_emu: EmulatorProcess,
    vertex_emu: EmulatorProcess,
    azure_emu: EmulatorProcess,
) -> dict[str, EmulatorProcess]:
    return dict(zip(KINDS, (anthropic_emu, bedrock_emu, vertex_emu, azure_emu), strict=True))


@pytest.fixture(scope="module")
def fleet(
    emus: dict[str, EmulatorProcess], sa_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, Path]]:
    """One public model per kind (`via-<kind>`), `chat` = anthropic first, bedrock behind it,
    and `bad-key` = an anthropic endpoint with a wrong key before a bedrock one."""
    tmp = tmp_path_factory.mktemp("gateway-kinds")
    eps = endpoints(emus, sa_file)
    cfg_eps = [
        {"name": kind, "provider": kind, "capacity": 16, "tier": "primary", **spec}
        for kind, spec in eps.items()
    ]
    cfg_eps += [
        {**cfg_eps[1], "name": "bedrock-spill", "tier": "spillover"},
        {**cfg_eps[0], "name": "anthropic-bad-key", "api_key": "sk-ant-wrong"},
    ]
    for e in cfg_eps:
        e.setdefault("price", {"per_1m_input_tokens": 3.0, "per_1m_output_tokens": 15.0})
    cfg = {
        "server": {"watch_config": False, "admin_api_keys": [hash_key(ADMIN)]},
        "ledger": {"path": str(tmp / "usage.sqlite"), "flush_interval_s": 0.05},
        "routing": {"scrape_interval_s": 0},
        "health": {"consecutive_failures": 10, "base_ejection_s": 2.0},
        "providers": [{"name": k} for k in KINDS],
        "endpoints": cfg_eps,
        "models": [
            *({"name": f"via-{k}", "endpoints": [k]} for k in KINDS),
            {"name": "chat", "endpoints": ["anthropic", "bedrock-spill"]},
            {"name": "bad-key", "endpoints": ["anthropic-bad-key", "bedrock-spill"]},
        ],
        "tenants": [{"name": "acme", "api_keys": [hash_key(KEY)]}],
    }
    path = tmp / "fleet.yaml"
    path.write_text(json.dumps(cfg))
    gw = start_gateway(path)
    try:
        yield gw, tmp / "usage.sqlite"
    finally:
        gw.stop()


@pytest.fixture
def client(fleet: tuple[GatewayProcess, Path]) -> openai.OpenAI:
    return openai.OpenAI(base_url=fleet[0].url + "/v1", api_key=KEY, max_retries=0)


def ledger_row(db: Path, request_id: str) -> dict[str, Any]:
    """The request's ledger record (the gateway flushes every 50 ms)."""
    for _ in range(100):
        conn = sqlite3.connect(db)
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM usage WHERE request_id = ?", (request_id,)).fetchone()
        conn.close()
        if row is not None:
            return dict(row)
        time.sleep(0.05)
    raise AssertionError(f"no ledger record for {request_id}")


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]


@pytest.mark.parametrize("kind", KINDS)
def test_answer_usage_and_its_ledger_record(
    kind: str, client: openai.OpenAI, fleet: tuple[GatewayProcess, Path]
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=f"via-{kind}",
        messages=MESSAGES,
        max_tokens=6,  # type: ignore[arg-type]
    )
    done = raw.parse()
    # translated answers name the public model; Azure's OpenAI bodies pass through unchanged
    assert done.model == (AZURE_DEPLOYMENT if kind == "azure_openai" else f"via-{kind}")
    assert done.choices[0].message.content
    assert done.usage is not None and done.usage.completion_tokens >= 1
    row = ledger_row(fleet[1], raw.headers["x-request-id"])
    assert (row["status"], row["endpoint"], row["error"]) == (200, kind, None)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (
        done.usage.prompt_tokens,
        done.usage.completion_tokens,
    )
    assert row["cost_usd"] == pytest.approx(
        (3.0 * row["prompt_tokens"] + 15.0 * row["completion_tokens"]) / 1e6
    )


@pytest.mark.parametrize("kind", KINDS)
def test_stream_in_openai_chunks_with_usage_when_asked(
    kind: str, client: openai.OpenAI, fleet: tuple[GatewayProcess, Path]
) -> None:
    chunks = list(
        client.chat.completions.create(
            model=f"via-{kind}",
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    assert text and finish in ("stop", "length")
    usage = chunks[-1].usage  # the usage chunk the client asked for comes last
    assert usage is not None and usage.completion_tokens == len(text.split())


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_tool_calls_come_back_as_openai_tool_calls(
    kind: str, stream: bool, client: openai.OpenAI
) -> None:
    args: dict[str, Any] = {
        "model": f"via-{kind}",
        "messages": [{"role": "user", "content": "Weather in Oslo for 2 days?"}],
        "tools": TOOLS,
        "tool_choice": "required",
        "max_tokens": 32,
    }
    if stream:
        with client.chat.completions.stream(**args) as events:
            choice = events.get_final_completion().choices[0]
    else:
        choice = client.chat.completions.create(**args).choices[0]
    assert choice.finish_reason == "tool_calls"
    call = (choice.message.tool_calls or [])[0]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert set(json.loads(call.function.arguments)) == {"city", "days"}  # type: ignore[union-attr]


def test_a_field_the_provider_cannot_take_is_a_400_naming_field_and_provider(
    client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="via-anthropic",
            messages=MESSAGES,
            max_tokens=4,
            n=2,  # type: ignore[arg-type]
        )
    assert "'n'" in e.value.message and "Anthropic" in e.value.message
    assert e.value.body["param"] == "n"  # type: ignore[index]


@pytest.mark.parametrize(
    ("fault", "params", "served_by"),
    [
        ("throttle", {"retry_after_s": 1}, "bedrock-spill"),  # 429 → retried elsewhere
        ("error", {"status": 500}, "bedrock-spill"),  # server error → retried elsewhere
        ("down", {}, "bedrock-spill"),  # provider gone → retried elsewhere
    ],
)
def test_retryable_provider_failures_fail_over_to_another_kind(
    fault: str,
    params: dict[str, Any],
    served_by: str,
    emus: dict[str, EmulatorProcess],
    client: openai.OpenAI,
    fleet: tuple[GatewayProcess, Path],
) -> None:
    emus["anthropic"].inject(fault, **params)
    try:
        for n, stream in enumerate((False, True)):
            raw = client.chat.completions.with_raw_response.create(
                model="chat",
                messages=MESSAGES,
                max_tokens=4,
                stream=stream,  # type: ignore[arg-type]
            )
            assert raw.headers["x-skyfleet-endpoint"] == served_by
            if stream:
                chunks = list(raw.parse())  # type: ignore[call-overload]
                assert chunks and chunks[-1].choices[0].finish_reason in ("stop", "length")
            else:
                assert raw.parse().choices[0].message.content  # type: ignore[union-attr]
            row = ledger_row(fleet[1], raw.headers["x-request-id"])
            # after a 429 the endpoint is saturated until its Retry-After: not tried again
            assert row["status"] == 200
            assert row["attempts"] == (1 if fault == "throttle" and n else 2)
    finally:
        emus["anthropic"].clear_faults()
        time.sleep(params.get("retry_after_s", 0) + 0.1)  # the next test starts unthrottled


def test_content_filter_is_not_retried(
    emus: dict[str, EmulatorProcess], client: openai.OpenAI, fleet: tuple[GatewayProcess, Path]
) -> None:
    """Azure refuses a filtered prompt with a 400 (the client's; not retried, no ejection);
    Anthropic answers 200 with a refusal, which is OpenAI's `content_filter` finish reason."""
    emus["azure_openai"].inject("filter")
    emus["anthropic"].inject("filter")
    try:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(
                model="via-azure_openai",
                messages=MESSAGES,
                max_tokens=4,  # type: ignore[arg-type]
            )
        assert e.value.code == "content_filter"
        row = ledger_row(fleet[1], e.value.response.headers["x-request-id"])
        assert (row["status"], row["error"], row["attempts"]) == (400, "content_filter", 1)
        refused = client.chat.completions.create(
            model="chat",
            messages=MESSAGES,
            max_tokens=4,  # type: ignore[arg-type]
        )
        assert refused.choices[0].finish_reason == "content_filter"
    finally:
        emus["azure_openai"].clear_faults()
        emus["anthropic"].clear_faults()


def test_rejected_credentials_fail_over_without_counting_against_the_endpoint(
    client: openai.OpenAI, fleet: tuple[GatewayProcess, Path]
) -> None:
    """The gateway's own key was refused: the operator's mistake, not the endpoint's health
    (retried elsewhere, the endpoint's consecutive-failure count stays 0)."""
    for _ in range(4):
        raw = client.chat.completions.with_raw_response.create(
            model="bad-key",
            messages=MESSAGES,
            max_tokens=4,  # type: ignore[arg-type]
        )
        assert raw.headers["x-skyfleet-endpoint"] == "bedrock-spill"
    admin = {"Authorization": f"Bearer {ADMIN}"}
    rows = httpx.get(fleet[0].url + "/admin/endpoints", headers=admin).json()["endpoints"]
    bad = next(r for r in rows if r["name"] == "anthropic-bad-key")
    assert bad["healthy"] and bad["consecutive_failures"] == 0
    text = httpx.get(fleet[0].url + "/metrics").text
    want = (
        'skyfleet_upstream_attempts_total{endpoint="anthropic-bad-key",outcome="upstream_auth"} 4.0'
    )
    assert want in text
    assert ANTHROPIC_KEY not in text and "sk-ant-wrong" not in text


def test_anthropic_sdk_on_the_gateways_messages_api(
    fleet: tuple[GatewayProcess, Path],
) -> None:
    """Anthropic-SDK clients use the same models: Bedrock answers a Messages request."""
    claude = anthropic.Anthropic(base_url=fleet[0].url, api_key=KEY, max_retries=0)
    msg = claude.messages.create(
        model="via-bedrock",
        max_tokens=6,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello"}],
    )
    assert msg.type == "message" and msg.content[0].type == "text" and msg.content[0].text
    assert msg.usage.output_tokens >= 1 and msg.stop_reason in ("end_turn", "max_tokens")
    with claude.messages.stream(
        model="via-vertex", max_tokens=5, messages=[{"role": "user", "content": "Hello"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.usage.output_tokens == len(text.split())
    tool = claude.messages.create(
        model="via-azure_openai",
        max_tokens=32,
        tools=[{"name": "get_weather", "input_schema": WEATHER_SCHEMA}],  # type: ignore[list-item]
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "Weather in Oslo for 2 days?"}],
    )
    use = next(b for b in tool.content if b.type == "tool_use")
    assert use.name == "get_weather" and set(use.input) == {"city", "days"}  # type: ignore[arg-type]
    with pytest.raises(anthropic.NotFoundError) as e:
        claude.messages.create(
            model="gpt-9", max_tokens=4, messages=[{"role": "user", "content": "Hi"}]
        )
    assert e.value.body["type"] == "error"  # type: ignore[index]


def test_bench_through_the_gateway_to_a_cloud_kind(fleet: tuple[GatewayProcess, Path]) -> None:
    """`skyfleet bench run` against a translated endpoint: a clear error while it asks for
    `ignore_eos` (a cloud API cannot honour it), a run with `--no-ignore-eos`."""
    import subprocess
    import sys

    cmd = [sys.executable, "-c", "from skyfleet.cli import main; main()", "bench", "run"]
    cmd += [fleet[0].url, "--model", "via-anthropic", "--api-key", KEY]
    cmd += ["--requests", "4", "--concurrency", "2", "--input", "16", "--output", "4"]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--no-ignore-eos" in refused.stderr
    ran = subprocess.run([*cmd, "--no-ignore-eos"], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert "requests (completed / failed)" in ran.stdout and "4 / 0" in ran.stdout
