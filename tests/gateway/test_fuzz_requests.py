"""Hypothesis-generated request bodies and headers against the gateway (in process, in front
of a polite fake upstream): never a 5xx from the gateway's own code, every error in OpenAI's
shape, and exactly one ledger record per accepted request (those answered with an
x-request-id)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .harness import ADMIN, KEY, FakeUpstream, Reply, chunks, completion
from .live import LiveGateway

# SKYFLEET_FUZZ_EXAMPLES: the long form (benchmarks/bench_fuzz.py)
EXAMPLES = int(os.environ.get("SKYFLEET_FUZZ_EXAMPLES", "300"))
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
MESSAGES = (
    st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "system", "assistant"]) | JSON},
            optional={"content": st.text() | JSON},
        ),
        max_size=3,
    )
    | JSON
)
FIELDS = {
    "stream": st.booleans() | JSON,
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans() | JSON})
    | JSON,
    "max_tokens": st.integers(-3, 2**63) | JSON,
    "max_completion_tokens": st.integers(-3, 40) | JSON,
    "temperature": st.floats(allow_nan=False) | JSON,
    "n": st.integers(-1, 3),
    "user": JSON,
}
BODIES = st.fixed_dictionaries(
    {"model": st.sampled_from(["chat", "chat", "chat", "nope", ""]) | JSON},
    optional={"messages": MESSAGES, "prompt": JSON | st.text(), "input": JSON, **FIELDS},
)
TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=12)
VALUE = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
HEADERS = st.dictionaries(
    st.sampled_from(
        ["Authorization", "Content-Type", "Content-Encoding", "x-skyfleet-priority", "Accept"]
    )
    | TOKEN.map(lambda t: f"X-{t}"),
    st.sampled_from(
        [
            f"Bearer {KEY}",
            f"bearer   {KEY}  ",
            f"Bearer {ADMIN}",
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "gzip",
            "deflate",
            "br",
            "application/json; charset=latin-1",
            "text/plain",
            "critical",
            "sheddable",
        ]
    )
    | VALUE,
    max_size=3,
)


def raw_bodies() -> st.SearchStrategy[bytes]:
    return (
        BODIES.map(lambda b: json.dumps(b).encode())
        | JSON.map(lambda b: json.dumps(b).encode())
        | st.binary(max_size=300)
    )


VALID = {
    "/v1/chat/completions": {"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"model": "chat", "prompt": "hi"},
    "/v1/embeddings": {"model": "chat", "input": "hi"},
}
PATHS = st.sampled_from(list(VALID))


def bodies(path: str) -> st.SearchStrategy[bytes]:
    """Half valid requests with generated optional fields, half anything."""
    extra = st.fixed_dictionaries({}, optional=FIELDS)
    valid = extra.map(lambda e: json.dumps(VALID[path] | e).encode())
    return valid | raw_bodies()


def test_generated_bodies_and_headers(tmp_path: Path) -> None:
    up = FakeUpstream(Reply(body=completion(), stream=chunks(["a", "b"])))
    live = LiveGateway([up], tmp_path, health={"consecutive_failures": 1000})
    try:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(path=PATHS, data=st.data(), headers=HEADERS)
        def one(path: str, data: st.DataObject, headers: dict[str, str]) -> None:
            body = data.draw(bodies(path))
            sent = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
            status, got, content = live.request("POST", path, sent | headers, body)
            live.judge(path, status, got, content)

        one()
        assert "internal_error" not in live.metrics()
    finally:
        live.close()
    print(f"\nrequest fuzz: {live.statuses.total()} requests, statuses {dict(live.statuses)}")
    assert len(live.accepted) > 20, "enough requests reached the upstream"
    assert sorted(live.ledger_ids()) == sorted(live.accepted)
