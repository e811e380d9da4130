"""AWS event-stream and SSE framing: our decoder agrees with botocore's, any chunking."""

from __future__ import annotations

import itertools

import pytest
from botocore.eventstream import EventStreamBuffer
from hypothesis import given, settings
from hypothesis import strategies as st

from skyfleet.providers import StreamGarbage, eventstream
from skyfleet.providers.sse import SSEParser

HEADERS = st.dictionaries(
    st.text("abcdefghij:-", min_size=1, max_size=12), st.text(max_size=30), max_size=4
)
MESSAGES = st.lists(st.tuples(HEADERS, st.binary(max_size=300)), min_size=1, max_size=8)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    pos = sorted({c % (len(data) + 1) for c in cuts})
    b = [0, *pos, len(data)]
    return [data[x:y] for x, y in itertools.pairwise(b)]


@settings(max_examples=100, deadline=None)
@given(msgs=MESSAGES, cuts=st.lists(st.integers(0, 100_000), max_size=30))
def test_encoder_output_decodes_in_botocore_and_ours(
    msgs: list[tuple[dict[str, str], bytes]], cuts: list[int]
) -> None:
    data = b"".join(eventstream.encode(h, p) for h, p in msgs)
    ours: list[eventstream.Message] = []
    theirs = []
    buf = EventStreamBuffer()
    dec = eventstream.Decoder("test")
    for part in _split(data, cuts):
        ours.extend(dec.feed(part))
        buf.add_data(part)
        theirs.extend(buf)
    assert dec.pending == 0
    assert [(m.headers, m.payload) for m in ours] == [(m.headers, m.payload) for m in theirs]
    assert [(m.headers, m.payload) for m in ours] == msgs


def test_corruption_is_garbage() -> None:
    good = eventstream.event("messageStart", b'{"role":"assistant"}')
    for i in (2, 9, 20, len(good) - 1):  # length, prelude CRC, headers, message CRC
        bad = bytearray(good)
        bad[i] ^= 0x40
        with pytest.raises(StreamGarbage):
            eventstream.Decoder("t").feed(bytes(bad) + good)


EVENTS = st.lists(
    st.tuples(
        st.one_of(st.none(), st.text("abcxyz_", min_size=1, max_size=8)),
        st.lists(
            # any text an upstream can send as UTF-8: no surrogates, no line breaks
            st.text(
                st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
                max_size=20,
            ),
            min_size=1,
            max_size=3,
        ),
    ),
    min_size=1,
    max_size=10,
)


@settings(max_examples=100, deadline=None)
@given(
    events=EVENTS,
    cuts=st.lists(st.integers(0, 10_000), max_size=30),
    eol=st.sampled_from(["\n", "\r\n", "\r"]),
)
def test_sse_any_chunking_and_line_ending(
    events: list[tuple[str | None, list[str]]], cuts: list[int], eol: str
) -> None:
    text = ""
    for name, lines in events:
        text += ": comment" + eol
        if name is not None:
            text += f"event: {name}{eol}"
        text += "".join(f"data: {ln}{eol}" for ln in lines) + eol
    p = SSEParser("t")
    got = []
    for part in _split(text.encode(), cuts):
        got.extend(p.feed(part))
    got.extend(p.flush())
    assert got == [(n, "\n".join(ls).encode()) for n, ls in events]
