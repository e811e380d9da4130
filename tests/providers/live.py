"""Drive an adapter against a real server the way the gateway will, and read its OpenAI
output with the openai SDK's own types and stream accumulator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import yarl
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from skyfleet.config import EndpointConfig
from skyfleet.providers import Adapter, UpstreamError, build_adapter


def endpoint(kind: str, url: str, model: str, **kw: Any) -> EndpointConfig:
    return EndpointConfig.model_validate(
        {"name": f"{kind}-test", "provider": kind, "kind": kind, "url": url, "model": model, **kw}
    )


@dataclass
class Result:
    """What the client would get: an error, a completion, or a stream."""

    error: UpstreamError | None = None
    completion: ChatCompletion | None = None
    usage: Any = None
    chunks: list[ChatCompletionChunk] = field(default_factory=list)
    raw: bytes = b""
    done: bool = False
    stream_error: UpstreamError | None = None

    def final(self) -> ChatCompletion:
        """The stream accumulated by the openai SDK (or the whole completion)."""
        if self.completion is not None:
            return self.completion
        state: ChatCompletionStreamState = ChatCompletionStreamState()
        for ch in self.chunks:
            state.handle_chunk(ch)
        return state.current_completion_snapshot


def sse_chunks(raw: bytes) -> list[ChatCompletionChunk]:
    out = []
    for ev in raw.split(b"\n\n"):
        if not ev.startswith(b"data: ") or ev == b"data: [DONE]":
            continue
        obj = orjson.loads(ev[6:])
        if obj.get("object") == "" and "prompt_filter_results" in obj:
            continue  # Azure's filter-results chunk, passed through as Azure sends it
        if "error" not in obj:
            out.append(ChatCompletionChunk.model_validate(obj))
    return out


async def send(
    session: aiohttp.ClientSession, adapter: Adapter, obj: dict[str, Any], *, stream: bool
) -> Result:
    """One attempt: build, POST, translate (as the gateway's request path will)."""
    bad = adapter.check("chat", obj)
    assert bad is None, bad
    req = adapter.build("chat", obj, stream=stream, include_usage=True)
    async with session.post(
        yarl.URL(req.url, encoded=True), data=req.body, headers=req.headers
    ) as r:
        if r.status >= 300:
            return Result(error=adapter.error(r.status, r.headers, await r.read()))
        if not stream:
            body, usage = adapter.response(
                "chat", r.status, r.headers, await r.read(), model="chat"
            )
            return Result(
                completion=ChatCompletion.model_validate_json(body), usage=usage, raw=body
            )
        first = await r.content.readany()
        assert adapter.stream_start_ok(r.headers, first)
        t = adapter.stream("chat", model="chat", include_usage=True)
        out = t.feed(first)
        async for chunk in r.content.iter_any():
            out += t.feed(chunk)
        out += t.flush()
        return Result(
            chunks=sse_chunks(out), raw=out, done=t.done, usage=t.usage, stream_error=t.error
        )


async def call(cfg: EndpointConfig, obj: dict[str, Any], *, stream: bool = False) -> Result:
    """Start the adapter (credentials), make one call, close it."""
    adapter = build_adapter(cfg)
    async with aiohttp.ClientSession() as s:
        await adapter.start(s)
        try:
            return await send(s, adapter, obj, stream=stream)
        finally:
            await adapter.close()
