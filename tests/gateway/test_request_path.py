"""The request path in process: auth → validation → admission → proxy → record, against
scripted upstreams (tests/gateway/harness.py). Each request ends in one ledger record whose
status and error name how it ended (`policy.outcome.Outcome`)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from skyfleet.policy.outcome import Outcome

from .harness import ADMIN, AUTH, FakeUpstream, Reply, chat, chunks, completion, serving


def ledger(tmp: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(tmp / "usage.sqlite")
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute("SELECT * FROM usage ORDER BY ts")]
    conn.close()
    return rows


async def test_json_answer_passes_through_and_is_recorded_once(tmp_path: Path) -> None:
    body = completion("exactly these bytes", prompt=7, completion_tokens=3)
    up = FakeUpstream(Reply(body=body))
    async with serving([up], tmp_path) as (client, _):
        resp = await client.post("/v1/chat/completions", json=chat(), headers=AUTH)
        assert resp.status == 200
        assert await resp.read() == json.dumps(body).encode()  # byte for byte
        assert resp.headers["x-skyfleet-endpoint"] == "e0"
        rid = resp.headers["x-request-id"]
    assert up.received[0]["model"] == "m"  # the endpoint's own model name
    (rec,) = ledger(tmp_path)
    assert (rec["request_id"], rec["status"], rec["error"]) == (rid, 200, None)
    assert (rec["prompt_tokens"], rec["completion_tokens"], rec["attempts"]) == (7, 3, 1)
    assert rec["cost_usd"] == (7 * 1.0 + 3 * 2.0) / 1e6


async def test_server_error_fails_over_and_the_record_names_the_endpoint_that_served(
    tmp_path: Path,
) -> None:
    bad, good = FakeUpstream(Reply(status=500, body={"error": "boom"})), FakeUpstream()
    async with serving([bad, good], tmp_path) as (client, gateway):
        resp = await client.post("/v1/chat/completions", json=chat(), headers=AUTH)
        assert resp.status == 200 and resp.headers["x-skyfleet-endpoint"] == "e1"
        text = gateway.metrics.render().decode()
    assert 'skyfleet_retries_total{cause="upstream_5xx",model="chat"} 1.0' in text
    (rec,) = ledger(tmp_path)
    assert (rec["endpoint"], rec["attempts"], rec["status"]) == ("e1", 2, 200)


async def test_client_error_is_passed_on_not_retried_and_does_not_eject(tmp_path: Path) -> None:
    err = {"error": {"message": "bad temperature", "type": "invalid_request_error"}}
    first, second = FakeUpstream(Reply(status=400, body=err)), FakeUpstream()
    async with serving([first, second], tmp_path) as (client, gateway):
        for _ in range(3):  # more than consecutive_failures: still not ejected
            resp = await client.post("/v1/chat/completions", json=chat(), headers=AUTH)
            assert resp.status == 400 and (await resp.json()) == err
        assert gateway.fleet.endpoints["e0"].state.healthy
    assert not second.received
    assert {r["error"] for r in ledger(tmp_path)} == {Outcome.UPSTREAM_CLIENT_ERROR.value}


async def test_garbage_everywhere_ends_in_a_502_naming_the_cause(tmp_path: Path) -> None:
    ups = [FakeUpstream(Reply(body=b"<html>oops</html>")) for _ in range(2)]
    async with serving(ups, tmp_path) as (client, _):
        resp = await client.post("/v1/chat/completions", json=chat(), headers=AUTH)
        assert resp.status == 502
        err = (await resp.json())["error"]
        assert err["code"] == "upstream_garbage" and "not a JSON object" in err["message"]
        assert resp.headers["x-skyfleet-error-source"] == "upstream"
    (rec,) = ledger(tmp_path)
    assert (rec["status"], rec["error"], rec["attempts"]) == (502, "upstream_garbage", 2)


async def test_consecutive_faults_eject_the_endpoint_and_traffic_moves(tmp_path: Path) -> None:
    flaky, steady = FakeUpstream(Reply(status=503)), FakeUpstream()
    async with serving([flaky, steady], tmp_path) as (client, gateway):
        for _ in range(2):  # consecutive_failures: 2
            resp = await client.post("/v1/chat/completions", json=chat(), headers=AUTH)
            assert resp.status == 200
        assert not gateway.fleet.endpoints["e0"].state.healthy
        seen = len(flaky.received)
        resp = await client.post("/v1/chat/completions", json=chat(), headers=AUTH)
        assert resp.status == 200 and len(flaky.received) == seen  # not tried again
    assert [r["attempts"] for r in ledger(tmp_path)] == [2, 2, 1]


async def test_stream_is_relayed_with_usage_stripped_unless_asked(tmp_path: Path) -> None:
    up = FakeUpstream(Reply(stream=chunks(["a", "b", "c"], prompt=4)))
    async with serving([up], tmp_path) as (client, _):
        resp = await client.post("/v1/chat/completions", json=chat(stream=True), headers=AUTH)
        text = await resp.text()
        assert resp.status == 200 and text.endswith("data: [DONE]\n\n")
        assert '"usage"' not in text and text.count('"content"') == 3
        asked = chat(stream=True, stream_options={"include_usage": True})
        resp = await client.post("/v1/chat/completions", json=asked, headers=AUTH)
        assert '"usage"' in await resp.text()
    assert up.received[0]["stream_options"] == {"include_usage": True}  # the ledger needs it
    recs = ledger(tmp_path)
    assert [(r["status"], r["prompt_tokens"], r["completion_tokens"]) for r in recs] == [
        (200, 4, 3),
        (200, 4, 3),
    ]
    assert all(r["ttft_s"] is not None and not r["usage_estimated"] for r in recs)


async def test_stream_cut_mid_way_ends_with_an_error_event_and_a_mid_stream_record(
    tmp_path: Path,
) -> None:
    up = FakeUpstream(Reply(stream=chunks(["a", "b"])[:2], cut=True))
    async with serving([up, FakeUpstream()], tmp_path) as (client, _):
        resp = await client.post("/v1/chat/completions", json=chat(stream=True), headers=AUTH)
        text = await resp.text()
    assert text.count('"content"') == 2 and '"error"' in text  # no retry after bytes
    (rec,) = ledger(tmp_path)
    assert (rec["status"], rec["error"], rec["attempts"]) == (502, "mid_stream", 1)
    assert rec["usage_estimated"] and rec["completion_tokens"] == 2


async def test_refusals_before_admission_get_openai_errors_and_no_record(tmp_path: Path) -> None:
    async with serving([FakeUpstream()], tmp_path, server={"max_body_bytes": 2000}) as (
        client,
        gateway,
    ):
        post = client.post
        assert (await post("/v1/chat/completions", json=chat())).status == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await post("/v1/chat/completions", json=chat(), headers=wrong)).status == 401
        resp = await post("/v1/chat/completions", data=b"{not json", headers=AUTH)
        assert resp.status == 400 and "invalid JSON" in (await resp.json())["error"]["message"]
        resp = await post("/v1/chat/completions", json=chat(model="gpt-9"), headers=AUTH)
        body = await resp.json()
        assert resp.status == 404 and body["error"]["code"] == "model_not_found"
        huge = chat(messages=[{"role": "user", "content": "x" * 5000}])
        assert (await post("/v1/chat/completions", json=huge, headers=AUTH)).status == 413
        assert (await client.get("/admin/endpoints", headers=AUTH)).status == 401
        admin = {"Authorization": f"bearer {ADMIN}"}  # the scheme is case-insensitive
        rows = (await (await client.get("/admin/endpoints", headers=admin)).json())["endpoints"]
        assert rows[0]["name"] == "e0" and rows[0]["healthy"] is True
        text = gateway.metrics.render().decode()
    for cause in ("auth", "bad_request", "unknown_model", "too_large"):
        assert f'skyfleet_errors_total{{cause="{cause}"}}' in text
    assert ledger(tmp_path) == []
