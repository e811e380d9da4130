"""The OpenAI API through the gateway: SDK compatibility, auth, bad input, ledger, metrics."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skyfleet.emulator.process import EmulatorProcess, start_emulator
from skyfleet.gateway.process import GatewayProcess, start_gateway

from .conftest import ADMIN_KEY, HTTP, KEY, PROFILE, UPSTREAM_MODEL, fleet_config, ledger_rows

MSG = [{"role": "user", "content": "Say hello"}]
SECRET = "provider-secret-9f8e7d"


class _Fake(BaseHTTPRequestHandler):
    """A provider that answers garbage to chat and valid JSON to embeddings."""

    def log_message(self, *a: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._send(200, b'{"status":"ok"}')

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(n))
        if self.path.endswith("/embeddings"):
            out = {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                "model": body["model"],
                "usage": {"prompt_tokens": 3, "total_tokens": 3},
            }
            self._send(200, json.dumps(out).encode())
        else:
            self._send(200, b"<html>upstream proxy error page</html>", "text/html")

    def _send(self, code: int, data: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    d = tmp_path_factory.mktemp("api")
    emus: list[EmulatorProcess] = []
    fake = ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    gw: GatewayProcess | None = None
    try:
        for seed in range(2):
            emus.append(
                start_emulator(PROFILE, time_scale=50, seed=seed, served_model_name=UPSTREAM_MODEL)
            )
        fake_url = f"http://127.0.0.1:{fake.server_address[1]}/v1"
        cfg = fleet_config(
            d / "fleet.yaml",
            [
                {"name": "a0", "provider": "azure", "url": emus[0].base_url},
                {"name": "g0", "provider": "gcp", "url": emus[1].base_url},
            ],
            server={"max_body_bytes": 20000},
        )
        # extra models: garbage-answering provider, embeddings, and a dead endpoint
        import yaml

        doc = yaml.safe_load(cfg.read_text())
        doc["providers"].append({"name": "fake"})
        doc["endpoints"] += [
            {"name": "junk", "provider": "fake", "url": fake_url, "model": "junk"},
            {"name": "emb", "provider": "fake", "url": fake_url, "model": "e5"},
            {
                "name": "dead",
                "provider": "fake",
                "url": "http://127.0.0.1:9/v1",
                "model": "x",
                "api_key": "${SKYF_TEST_PROVIDER_KEY}",
            },
        ]
        doc["models"] += [
            {"name": "junk", "endpoints": ["junk"]},
            {"name": "embed", "endpoints": ["emb"]},
            {"name": "dead", "endpoints": ["dead"]},
        ]
        cfg.write_text(yaml.safe_dump(doc))
        gw = start_gateway(cfg, env={"SKYF_TEST_PROVIDER_KEY": SECRET})
        yield {"gw": gw, "dir": d, "emus": emus}
    finally:
        if gw is not None:
            gw.stop()
        for e in emus:
            e.stop()
        fake.shutdown()


def client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=KEY, max_retries=0)


def test_openai_sdk_sync_async_and_streaming(fleet: dict[str, Any]) -> None:
    gw = fleet["gw"]
    c = client(gw)
    r = c.chat.completions.create(model="chat", messages=MSG, max_tokens=12)  # type: ignore[arg-type]
    assert r.choices[0].message.content and r.usage is not None
    assert r.usage.completion_tokens == 12
    chunks = list(c.chat.completions.create(model="chat", messages=MSG, max_tokens=9, stream=True))  # type: ignore[arg-type]
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text and all(ch.usage is None for ch in chunks)  # usage stripped: not asked for
    chunks = list(
        c.chat.completions.create(
            model="chat",
            messages=MSG,  # type: ignore[arg-type]
            max_tokens=9,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 9
    comp = c.completions.create(model="chat", prompt="Once upon a time", max_tokens=5)
    assert comp.choices[0].text and comp.usage is not None
    emb = c.embeddings.create(model="embed", input="hello")
    assert emb.data[0].embedding == [0.1, 0.2]
    assert {m.id for m in c.models.list()} == {"chat", "junk", "embed", "dead"}

    async def run_async() -> int:
        ac = openai.AsyncOpenAI(base_url=gw.base_url, api_key=KEY, max_retries=0)
        import asyncio

        rs = await asyncio.gather(
            *(
                ac.chat.completions.create(model="chat", messages=MSG, max_tokens=4)
                for _ in range(8)
            )  # type: ignore[arg-type]
        )
        await ac.close()
        return sum(1 for x in rs if x.choices[0].message.content)

    import asyncio

    assert asyncio.run(run_async()) == 8


def test_auth_and_admin(fleet: dict[str, Any]) -> None:
    gw = fleet["gw"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gw.base_url, api_key="wrong", max_retries=0).models.list()
    r = HTTP.post(gw.base_url + "/chat/completions", json={"model": "chat", "messages": MSG})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert HTTP.get(gw.url + "/admin/endpoints", headers=auth(KEY)).status_code == 401
    st_ = HTTP.get(gw.url + "/admin/endpoints", headers=auth(ADMIN_KEY)).json()
    names = {e["name"] for e in st_["endpoints"]}
    assert {"a0", "g0", "junk"} <= names
    assert all("api_key" not in e for e in st_["endpoints"])
    assert SECRET not in json.dumps(st_)
    a0 = next(e for e in st_["endpoints"] if e["name"] == "a0")
    assert a0["num_requests_waiting"] is not None  # the engine's /metrics is scraped
    assert a0["kv_cache_usage"] is not None


def test_provider_secrets_never_logged(fleet: dict[str, Any]) -> None:
    gw = fleet["gw"]
    for _ in range(3):  # errors against the endpoint that holds the secret
        post(gw, {"model": "dead", "messages": MSG})
    assert SECRET not in gw.log()
    assert SECRET not in HTTP.get(gw.url + "/metrics").text


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def post(
    gw: GatewayProcess, body: bytes | dict[str, Any], path: str = "/chat/completions"
) -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    h = {**auth(KEY), "Content-Type": "application/json"}
    return HTTP.post(gw.base_url + path, content=data, headers=h)


def test_bad_input_statuses(fleet: dict[str, Any]) -> None:
    gw = fleet["gw"]
    r = post(gw, b"x" * 30000)
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]
    r = post(gw, b"{not json")
    assert r.status_code == 400 and "invalid JSON" in r.json()["error"]["message"]
    r = post(gw, {"model": "chat", "messages": "hi"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    r = post(gw, {"model": "chat", "messages": MSG, "max_tokens": "ten"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    r = post(gw, {"model": "gpt-5", "messages": MSG})
    assert r.status_code == 404
    msg = r.json()["error"]["message"]
    assert "gpt-5" in msg and "chat" in msg and "embed" in msg
    r = post(gw, {"model": "junk", "messages": MSG})
    assert r.status_code == 502 and "invalid response" in r.json()["error"]["message"]
    # connection refused: 502 until passive ejection or failing probes take it out, then 503
    codes = [post(gw, {"model": "dead", "messages": MSG}).status_code for _ in range(5)]
    assert set(codes) <= {502, 503} and codes[-1] == 503
    r = post(gw, {"model": "dead", "messages": MSG})
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
    assert "127.0.0.1:9" not in r.text  # no upstream address in errors
    metrics = HTTP.get(gw.url + "/metrics").text
    assert 'skyfleet_upstream_attempts_total{endpoint="junk",outcome="upstream_garbage"}' in metrics


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 10**6)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_bodies = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "model": st.sampled_from(["chat", "embed", "nope"]) | _json,
            "messages": st.just(MSG)
            | st.lists(st.fixed_dictionaries({"role": _json, "content": _json}), max_size=3)
            | _json,
            "stream": st.booleans() | _json,
            "max_tokens": st.integers(-2, 8) | _json,
            "stream_options": _json,
            "temperature": _json,
            "prompt": _json,
            "n": st.integers(0, 3),
        },
    ).map(lambda d: json.dumps(d).encode()),
    _json.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=_bodies, path=st.sampled_from(["/chat/completions", "/completions", "/embeddings"]))
def test_fuzzed_bodies_never_get_a_gateway_5xx(
    fleet: dict[str, Any], body: bytes, path: str
) -> None:
    r = post(fleet["gw"], body, path)
    if r.status_code >= 500:
        assert r.headers.get("x-skyfleet-error-source") == "upstream", r.text


def test_ledger_matches_requests_and_provider_usage(fleet: dict[str, Any]) -> None:
    gw, d = fleet["gw"], fleet["dir"]
    before = {r["request_id"] for r in ledger_rows(d)}

    def upstream_tokens() -> tuple[float, float]:
        p = g = 0.0
        for e in fleet["emus"]:
            for k, v in e.metrics().items():
                if k.startswith("vllm:prompt_tokens_total"):
                    p += v
                elif k.startswith("vllm:generation_tokens_total"):
                    g += v
        return p, g

    p0, g0 = upstream_tokens()
    c = client(gw)
    sent = 0
    for i in range(24):
        kw: dict[str, Any] = {
            "model": "chat",
            "messages": [{"role": "user", "content": "x " * i}],
            "max_tokens": 3 + i % 5,
        }
        if i % 3 == 0:
            c.chat.completions.create(**kw)
        elif i % 3 == 1:
            list(c.chat.completions.create(stream=True, **kw))
        else:
            list(
                c.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw)
            )
        sent += 1
    p1, g1 = upstream_tokens()
    rows = [r for r in ledger_rows(d, wait_for=len(before) + sent) if r["request_id"] not in before]
    assert len(rows) == sent
    assert {r["status"] for r in rows} == {200}
    assert sum(r["prompt_tokens"] for r in rows) == p1 - p0
    assert sum(r["completion_tokens"] for r in rows) == g1 - g0
    assert all(r["tenant"] == "acme" and r["provider"] in ("azure", "gcp") for r in rows)
    assert all(r["cost_usd"] >= 0 and r["latency_s"] > 0 and r["attempts"] == 1 for r in rows)
    assert all(r["ttft_s"] is not None for r in rows if r["stream"])
