"""The SSE relay: events pass through as they complete; usage is captured and stripped."""

from __future__ import annotations

import json

from skyfleet.gateway.sse import SSERelay

CHUNK = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}\n\n'
DONE = b"data: [DONE]\n\n"


def test_usage_chunk_is_captured_and_stripped_when_not_asked() -> None:
    r = SSERelay(strip_usage=True)
    out = r.feed(CHUNK + CHUNK) + r.feed(USAGE + DONE)
    assert out == CHUNK + CHUNK + DONE
    assert r.usage == {"prompt_tokens": 7, "completion_tokens": 2} and r.done


def test_usage_chunk_kept_when_client_asked() -> None:
    r = SSERelay(strip_usage=False)
    assert r.feed(CHUNK + USAGE + DONE) == CHUNK + USAGE + DONE
    assert r.usage is not None


def test_events_split_across_reads_are_reassembled() -> None:
    r = SSERelay(strip_usage=True)
    stream = CHUNK + USAGE + DONE
    out = b"".join(r.feed(stream[i : i + 7]) for i in range(0, len(stream), 7))
    assert out == CHUNK + DONE and r.usage is not None
    assert r.feed(b'data: {"partial"') == b""  # incomplete event waits for its end


def test_crlf_events_and_usage_null_chunks() -> None:
    r = SSERelay(strip_usage=True)
    ev = b'data: {"choices":[{"delta":{"content":"x"}}],"usage":null}\r\n\r\n'
    out = r.feed(ev)
    assert json.loads(out[6:]) == {"choices": [{"delta": {"content": "x"}}], "usage": None}
    assert r.usage is None and r.events == 1


def test_done_is_the_line_not_the_text_inside_an_event() -> None:
    """A model that writes 'data: [DONE]' does not end its stream (found by the SSE fuzzer)."""
    r = SSERelay(strip_usage=True)
    said = b'data: {"choices":[{"index":0,"delta":{"content":"then data: [DONE]\\n"}}]}\n\n'
    assert r.feed(said + CHUNK) == said + CHUNK and not r.done
    assert r.feed(b"\x00" + DONE) == b"\x00" + DONE and not r.done  # not a data line
    assert r.feed(b"data:[DONE]\n\n") == b"data:[DONE]\n\n" and r.done
