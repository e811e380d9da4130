"""Every fault mode, as a client sees it; admin API; schedules; drill files."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from skyfleet.emulator.faults import Fault, FaultSet, load_drill
from skyfleet.emulator.process import EmulatorProcess, start_emulator
from skyfleet.errors import ConfigError, SkyfleetError

from .conftest import FAST_PROFILE, MODEL

MSG: Any = [{"role": "user", "content": "hello"}]


def client(emu: EmulatorProcess, timeout: float = 10.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=emu.base_url, api_key="none", max_retries=0, timeout=timeout)


def ask(emu: EmulatorProcess, max_tokens: int = 3, timeout: float = 10.0) -> str:
    r = client(emu, timeout).chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=max_tokens
    )
    return r.choices[0].message.content or ""


def health(emu: EmulatorProcess) -> int:
    try:
        with urllib.request.urlopen(emu.url + "/health", timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_down_refuse_drops_connections_but_admin_works(clean: EmulatorProcess) -> None:
    clean.inject("down", mode="refuse")
    with pytest.raises(openai.APIConnectionError):
        ask(clean)
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        health(clean)
    assert [f["kind"] for f in clean.faults()] == ["down"]  # admin still answers
    assert clean.metrics()  # so does /metrics
    clean.clear_faults()
    assert ask(clean) and health(clean) == 200


def test_down_503(clean: EmulatorProcess) -> None:
    clean.inject("down", mode="503")
    with pytest.raises(openai.InternalServerError) as e:
        ask(clean)
    assert e.value.status_code == 503
    assert health(clean) == 503


def test_error_fraction(clean: EmulatorProcess) -> None:
    clean.inject("error", fraction=1.0)
    with pytest.raises(openai.InternalServerError) as e:
        ask(clean)
    assert e.value.status_code == 500 and health(clean) == 200
    clean.clear_faults()
    clean.inject("error", fraction=0.5)
    outcomes = []
    c = client(clean)
    for _ in range(40):
        try:
            c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=1)
            outcomes.append(True)
        except openai.InternalServerError:
            outcomes.append(False)
    assert 5 <= outcomes.count(False) <= 35  # about half, seeded


def test_throttle_429_with_retry_after(clean: EmulatorProcess) -> None:
    clean.inject("throttle", retry_after_s=7)
    with pytest.raises(openai.RateLimitError) as e:
        ask(clean)
    assert e.value.status_code == 429
    assert e.value.response.headers["retry-after"] == "7"


def stream_times(emu: EmulatorProcess, n: int) -> tuple[float, float, int]:
    """(TTFT, mean TPOT, tokens) of one streamed request, wall seconds."""
    t0 = time.perf_counter()
    times = []
    stream = client(emu).chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=n, stream=True
    )
    for c in stream:
        if c.choices and c.choices[0].delta.content:
            times.append(time.perf_counter())
    return times[0] - t0, (times[-1] - times[0]) / (len(times) - 1), len(times)


def test_slow_first_token_and_per_token(clean: EmulatorProcess) -> None:
    base_ttft, base_tpot, _ = stream_times(clean, 10)
    clean.inject("slow", ttft_delay_s=0.4)
    ttft, _, n = stream_times(clean, 10)
    assert ttft >= 0.4 > base_ttft and n == 10
    clean.clear_faults()
    clean.inject("slow", per_token_delay_s=0.05)
    _, tpot, _ = stream_times(clean, 10)
    assert tpot >= 0.05 > base_tpot
    clean.clear_faults()
    clean.inject("slow", factor=5)
    _, tpot5, _ = stream_times(clean, 20)
    assert 3.5 * base_tpot < tpot5 < 8 * base_tpot + 0.01


def test_hang_never_answers(clean: EmulatorProcess) -> None:
    clean.inject("hang")
    t0 = time.perf_counter()
    with pytest.raises(openai.APITimeoutError):
        ask(clean, timeout=0.5)
    assert time.perf_counter() - t0 >= 0.5
    clean.clear_faults()
    assert ask(clean)


def test_cut_ends_streams_midway(clean: EmulatorProcess) -> None:
    clean.inject("cut", cut_after_tokens=4)
    got = []
    with pytest.raises((httpx.RemoteProtocolError, openai.APIError)):
        stream = client(clean).chat.completions.create(
            model=MODEL, messages=MSG, max_tokens=20, stream=True
        )
        for c in stream:
            if c.choices and c.choices[0].delta.content:
                got.append(c.choices[0].delta.content)
    assert len(got) == 4
    with pytest.raises(openai.APIConnectionError):  # non-streaming: no response at all
        ask(clean, max_tokens=20)


def test_scheduled_fault_starts_and_ends(clean: EmulatorProcess) -> None:
    f = clean.inject("error", start_after_s=0.6, duration_s=0.8)
    assert f["active"] is False and f["ends_at_s"] - f["starts_at_s"] == pytest.approx(0.8)
    assert ask(clean, max_tokens=1)
    time.sleep(0.8)
    with pytest.raises(openai.InternalServerError):
        ask(clean, max_tokens=1)
    time.sleep(0.8)
    assert ask(clean, max_tokens=1)
    assert clean.faults() == []  # expired faults are not listed


def test_bad_fault_is_400(clean: EmulatorProcess) -> None:
    with pytest.raises(SkyfleetError, match="400"):
        clean.inject("melt")
    with pytest.raises(SkyfleetError, match="fraction"):
        clean.inject("error", fraction=2)


def test_drill_file(tmp_path: Path) -> None:
    drill = tmp_path / "drill.yaml"
    drill.write_text(
        "faults:\n"
        "  - {kind: throttle, duration_s: 1.0, retry_after_s: 2}\n"
        "  - {kind: down, mode: '503', start_after_s: 1.0, duration_s: 60}\n"
        "  - {kind: clear, start_after_s: 2.0}\n"
    )
    with start_emulator(FAST_PROFILE, time_scale=4, extra_args=["--faults", str(drill)]) as emu:
        seen = []
        t_end = time.monotonic() + 8
        while time.monotonic() < t_end:
            try:
                ask(emu, max_tokens=1)
                seen.append("ok")
            except openai.RateLimitError:
                seen.append("429")
            except openai.InternalServerError as e:
                seen.append(str(e.status_code))
            if seen[-1] == "ok" and "503" in seen:
                break
            time.sleep(0.05)
    order = [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s]
    assert order[-3:] == ["429", "503", "ok"] or order == ["429", "503", "ok"]


def test_bad_drill_file_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("faults:\n  - {kind: slow, factor: 0.5}\n")
    with pytest.raises(ConfigError, match=r"faults\[0\]: key 'factor'"):
        load_drill(bad)
    with pytest.raises(SkyfleetError, match="factor"):
        start_emulator(FAST_PROFILE, extra_args=["--faults", str(bad)])


def test_fault_set_schedule_is_pure() -> None:
    fs = FaultSet()
    fs.add(Fault(kind="error", start_after_s=1, duration_s=2), now_s=0)
    fs.add(Fault(kind="slow", factor=2, per_token_delay_s=0.01), now_s=0)
    fs.add(Fault(kind="clear", start_after_s=5), now_s=0)
    assert fs.first("error", 0.5) is None and fs.first("error", 1.5) is not None
    assert fs.first("error", 3.0) is None
    assert fs.slow_params(4.0) == (2.0, 0.01) and fs.slow_params(5.0) == (1.0, 0.0)


def test_drill_down_from_the_start(tmp_path: Path) -> None:
    """start_emulator returns even when the drill starts with the engine down."""
    drill = tmp_path / "down.yaml"
    drill.write_text("- {kind: down, mode: '503', duration_s: 1.0}\n")
    with start_emulator(FAST_PROFILE, extra_args=["--faults", str(drill)]) as emu:
        assert health(emu) == 503
        time.sleep(1.1)
        assert health(emu) == 200 and ask(emu, max_tokens=1)
