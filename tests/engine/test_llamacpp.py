"""A real engine in the suite: llama.cpp serving SmolLM2-135M behind `skyfleet serve`, next
to an emulator; `skyfleet bench run` through the gateway and `bench sweep` against it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from skyfleet.emulator.process import EmulatorProcess
from skyfleet.gateway.process import GatewayProcess

from .llamacpp import ALIAS, LlamaServer

MSGS: Any = [{"role": "user", "content": "Name a colour."}]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from skyfleet.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0, timeout=120)


def test_chat_completion_through_gateway(gateway: GatewayProcess) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="smol", messages=MSGS, max_tokens=12
    )
    assert raw.headers["x-skyfleet-endpoint"] == "llama-0"  # the primary: the real engine
    r = raw.parse()
    assert r.choices[0].message.content and r.choices[0].finish_reason in ("stop", "length")
    assert (
        r.usage is not None and 1 <= r.usage.completion_tokens <= 12 and r.usage.prompt_tokens > 5
    )


def test_stream_through_gateway(gateway: GatewayProcess) -> None:
    with httpx.stream(
        "POST",
        gateway.base_url + "/chat/completions",
        timeout=120,
        json={"model": "smol", "messages": MSGS, "max_tokens": 8, "stream": True},
    ) as r:
        assert r.status_code == 200 and r.headers["x-skyfleet-endpoint"] == "llama-0"
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text and chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    # llama-cpp-python's server sends one piece per token and never a usage chunk
    assert not any("usage" in c and c["usage"] for c in chunks)


def test_emulator_next_to_it(gateway: GatewayProcess, emu: EmulatorProcess) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="smol-emulated", messages=MSGS, max_tokens=4
    )
    assert raw.headers["x-skyfleet-endpoint"] == "emu-0"
    assert raw.parse().usage.completion_tokens == 4  # type: ignore[union-attr]


def test_bench_run_through_gateway(gateway: GatewayProcess, tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    p = cli(
        "bench",
        "run",
        gateway.url,
        "--model",
        "smol",
        "--requests",
        "6",
        "--concurrency",
        "2",
        "--input",
        "32",
        "--output",
        "12",
        "--json",
        str(out),
    )
    assert p.returncode == 0, p.stderr + p.stdout
    s = json.loads(out.read_text())["summary"]
    assert s["completed"] == 6 and s["failed"] == 0 and s["ttft_ms"]["p50"] > 0
    assert s["output_token_throughput"] > 0


@pytest.mark.timeout(900)  # ~70 s on a quiet machine; a CPU-bound engine on shared cores
def test_bench_sweep_warns_instead_of_a_wrong_profile(llama: LlamaServer, tmp_path: Path) -> None:
    """llama-cpp-python's server decodes one request at a time: the sweep measures it, says
    so, and writes no profile (its batch terms could not be measured)."""
    js, prof = tmp_path / "sweep.json", tmp_path / "profile.yaml"
    p = cli(
        "bench",
        "sweep",
        llama.url,
        "--model",
        ALIAS,
        "--slo",
        "ttft=3000ms,tpot=300ms",
        "--input",
        "24",
        "--output",
        "4",
        "--requests",
        "6",
        "--steps",
        "1",
        "--refine",
        "0",
        "--sync-requests",
        "3",
        "--max-concurrency",
        "3",
        "--fit",
        "SmolLM2-135M@L4",
        "--profile-out",
        str(prof),
        "--json",
        str(js),
        timeout=880,
    )
    assert p.returncode == 0, p.stderr + p.stdout
    res = json.loads(js.read_text())
    warnings = " ".join(res["warnings"])
    assert "decoded one sequence at a time" in warnings and "no profile is fitted" in warnings
    assert "carry no usage" in warnings
    assert res["fit"]["profile"] is None and not prof.exists()
    thr = next(pt for pt in res["points"] if pt["kind"] == "throughput")
    assert thr["summary"]["max_concurrency"] == 3 and thr["decode_batch_littles_law"] < 1.5
    assert "decoded one sequence at a time" in p.stdout + p.stderr
