"""Metric definitions (vLLM's), SLO parsing, goodput, request sizing and datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from skyfleet.bench.metrics import RequestResult, Slo, summarize
from skyfleet.bench.workload import (
    CHARS_PER_TOKEN,
    DatasetRequests,
    HeaderVariant,
    LengthDist,
    SyntheticRequests,
    build_body,
    parse_headers,
    parse_mix,
    sample_dataset_path,
)
from skyfleet.errors import ConfigError, SkyfleetError


def _r(i: int, sent: float, ttft: float, e2e: float, out: int, **kw: object) -> RequestResult:
    r = RequestResult(i, "", sent, sent, input_tokens=100, output_tokens=out, ttft=ttft, e2e=e2e)
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_tpot_excludes_first_token_and_goodput_counts_requests_meeting_every_slo() -> None:
    rs = [
        _r(0, 0.0, 0.1, 1.1, 11),  # tpot 0.1
        _r(1, 1.0, 0.5, 1.0, 11),  # ttft too slow, tpot 0.05
        _r(2, 2.0, 0.1, 0.6, 11),  # tpot 0.05: good
        _r(3, 3.0, 0.1, 0.1, 1),  # one token: TPOT undefined, counted 0 for goodput: good
        RequestResult(4, "", 3.5, 3.5, error="http_500"),
    ]
    assert rs[0].tpot == pytest.approx(0.1)
    assert rs[3].tpot is None
    s = summarize(rs, Slo.parse("ttft=200ms,tpot=60ms"))
    assert (s.requests, s.completed, s.failed) == (5, 4, 1)
    assert s.errors == {"http_500": 1}
    assert s.duration_s == pytest.approx(3.5)  # first send 0 → last event 3.5
    assert s.goodput == pytest.approx(2 / 3.5)
    assert s.tpot.count == 3 and s.tpot.mean == pytest.approx((0.1 + 0.05 + 0.05) / 3)
    assert s.output_token_throughput == pytest.approx(34 / 3.5)
    assert s.ttft.p50 == pytest.approx(np.percentile([0.1, 0.5, 0.1, 0.1], 50))


def test_warmup_excluded_and_itl_pooled() -> None:
    rs = [_r(0, 0.0, 0.1, 1.0, 3, warmup=True), _r(1, 1.0, 0.2, 0.4, 3, itl=[0.1, 0.1])]
    s = summarize(rs)
    assert s.requests == 1 and s.itl.count == 2 and s.goodput is None


def test_time_scale_converts_to_endpoint_time() -> None:
    rs = [_r(i, i * 0.1, 0.02, 0.05, 5) for i in range(11)]
    wall = summarize(rs, Slo(ttft_s=0.1))
    scaled = summarize(rs, Slo(ttft_s=0.1), time_scale=10)
    assert scaled.ttft.mean == pytest.approx(wall.ttft.mean * 10)
    assert scaled.request_throughput == pytest.approx(wall.request_throughput / 10)
    assert scaled.goodput == pytest.approx(0.0)  # TTFT 0.2 s in endpoint time > 0.1 s
    assert wall.goodput == pytest.approx(wall.request_throughput)


def test_slo_parse() -> None:
    s = Slo.parse("ttft=500ms, tpot=0.05s,e2e=2000")
    assert (s.ttft_s, s.tpot_s, s.e2e_s) == pytest.approx((0.5, 0.05, 2.0))
    with pytest.raises(SkyfleetError, match="ttft"):
        Slo.parse("latency=5ms")


def test_length_distributions() -> None:
    rng = np.random.default_rng(0)
    assert set(LengthDist.parse(64).sample(rng, 10)) == {64}
    u = LengthDist.parse("10-20").sample(rng, 2000)
    assert u.min() >= 10 and u.max() <= 20
    ln = LengthDist.parse("lognormal:200,100").sample(rng, 20000)
    assert ln.mean() == pytest.approx(200, rel=0.05) and ln.std() == pytest.approx(100, rel=0.1)
    for bad in ("x", "0", "20-10", "normal:1"):
        with pytest.raises(SkyfleetError):
            LengthDist.parse(bad)


def test_synthetic_prompts_are_sized_in_tokens_and_ask_for_exact_outputs() -> None:
    src = SyntheticRequests(300, 50, seed=1)
    a, b = src.get(0), src.get(1)
    assert len(a.prompt or "") == 300 * CHARS_PER_TOKEN
    assert a.prompt != b.prompt
    body = build_body(a, model="m", api="chat", stream=True)
    assert body["max_tokens"] == 50 and body["ignore_eos"] is True and body["min_tokens"] == 50
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"][0]["content"] == a.prompt
    body = build_body(a, model="m", api="completions", stream=False)
    assert body["prompt"] == a.prompt and "stream" not in body


def test_header_mix_is_seeded_and_follows_weights() -> None:
    mix = [HeaderVariant(3, {"x-priority": "high"}, "hi"), HeaderVariant(1, {}, "lo")]
    src = SyntheticRequests(4, 1, seed=2, mix=mix)
    labels = [src.get(i).label for i in range(4000)]
    assert labels.count("hi") / 4000 == pytest.approx(0.75, abs=0.03)
    assert parse_mix(["2:gold:Authorization=Bearer k1;x-p=1"])[0].headers == {
        "Authorization": "Bearer k1",
        "x-p": "1",
    }
    assert parse_headers(["X-A: b"]) == {"X-A": "b"}
    with pytest.raises(SkyfleetError):
        parse_headers(["nocolon"])


def test_shipped_sample_dataset_loads(tmp_path: Path) -> None:
    ds = DatasetRequests(sample_dataset_path(), seed=0)
    assert len(ds.rows) >= 50
    spec = ds.get(0)
    assert spec.prompt and spec.output_tokens
    assert 10 < ds.description["mean_input_tokens"] < 2000


def test_dataset_errors_name_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"input_tokens": 5}) + "\n{bad\n")
    with pytest.raises(ConfigError, match=r"d\.jsonl:2"):
        DatasetRequests(p)
    p.write_text(json.dumps({"input_tokens": -1}) + "\n")
    with pytest.raises(ConfigError, match="input_tokens"):
        DatasetRequests(p)
    p.write_text(json.dumps({"input_tokens": 12, "output_tokens": 3}) + "\n")
    spec = DatasetRequests(p).get(5)
    assert spec.input_tokens == 12 and len(spec.prompt or "") == 48
