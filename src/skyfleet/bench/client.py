"""Send one OpenAI-style request with aiohttp and time it (TTFT, chunk gaps, E2E, usage)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from skyfleet.bench.fastclient import FastHttp, HttpError
from skyfleet.bench.metrics import RequestResult
from skyfleet.bench.workload import CHARS_PER_TOKEN

_DONE = b"[DONE]"
CUT_STREAM = (
    "the stream ended with data: [DONE] but no choice ever had a finish_reason: the server cut "
    "it short (llama-cpp-python's server does so to an answer in progress when another request "
    "arrives, unless started with --interrupt_requests False)"
)


def _content(obj: dict[str, Any]) -> str:
    """Generated text in one chunk or response (chat delta/message, or completions text)."""
    choices = obj.get("choices") or ()
    out = []
    for c in choices:
        d = c.get("delta") or c.get("message")
        if d is not None:
            out.append(d.get("content") or d.get("reasoning_content") or "")
        else:
            out.append(c.get("text") or "")
    return "".join(out)


def _usage(res: RequestResult, obj: dict[str, Any]) -> None:
    u = obj.get("usage")
    if isinstance(u, dict) and u.get("completion_tokens") is not None:
        res.output_tokens = int(u["completion_tokens"])
        if u.get("prompt_tokens") is not None:
            res.input_tokens = int(u["prompt_tokens"])
        res.usage_reported = True


def classify(exc: BaseException) -> str:
    """Error kind for an exception raised while sending or reading."""
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "disconnected"
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError | ValueError):
        return "bad_response"
    if isinstance(exc, aiohttp.ClientError | OSError):
        return "client_error"
    return type(exc).__name__


async def send(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    res: RequestResult,
    *,
    stream: bool,
    t0: float,
    timeout: aiohttp.ClientTimeout,
) -> RequestResult:
    """Send `body` to `url`, filling `res` (times are offsets from `t0`, perf_counter)."""
    now = time.perf_counter
    start = now()
    res.sent = start - t0
    try:
        async with session.post(url, data=body, headers=headers, timeout=timeout) as resp:
            res.status = resp.status
            res.note_headers(resp.headers)
            if resp.status != 200:
                text = (await resp.read())[:2000].decode("utf-8", "replace")
                res.error, res.detail = f"http_{resp.status}", text
                return res
            if stream:
                await _read_stream(resp, res, start)
            else:
                obj = json.loads(await resp.read())
                _usage(res, obj)
                if not res.usage_reported:
                    res.output_tokens = max(1, len(_content(obj)) // CHARS_PER_TOKEN)
                if isinstance(obj, dict) and obj.get("error"):
                    res.error, res.detail = "server_error", str(obj["error"])[:2000]
                    return res
            res.e2e = now() - start
    except asyncio.CancelledError:
        raise
    except BaseException as e:  # every failure is a counted result, never a crash
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        res.error = res.error or classify(e)
        res.detail = res.detail or (str(e) or type(e).__name__)
        res.e2e = None
    return res


async def _read_stream(resp: aiohttp.ClientResponse, res: RequestResult, start: float) -> None:
    now = time.perf_counter
    buf = b""
    last = 0.0
    chunks = 0
    done = finished = False
    async for data in resp.content.iter_any():
        t = now()
        buf += data
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                break
            line, buf = buf[:nl].strip(), buf[nl + 1 :]
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == _DONE:
                done = True
                continue
            obj = json.loads(payload)
            if obj.get("error"):
                res.error, res.detail = "stream_error", str(obj["error"])[:2000]
            if obj.get("usage"):
                _usage(res, obj)
            finished = finished or any(c.get("finish_reason") for c in obj.get("choices") or ())
            if _content(obj):
                if chunks == 0:
                    res.ttft = t - start
                else:
                    res.itl.append(t - last)
                last = t
                chunks += 1
    if not res.usage_reported:
        res.output_tokens = chunks
    if res.error is None and not done:
        res.error, res.detail = "incomplete_stream", "the stream ended without data: [DONE]"
    elif res.error is None and not finished:
        res.error, res.detail = "cut_stream", CUT_STREAM


async def send_fast(
    fast: FastHttp,
    path: str,
    body: bytes,
    headers: Mapping[str, str],
    res: RequestResult,
    *,
    t0: float,
    timeout_s: float,
) -> RequestResult:
    """Non-streaming request over the raw keep-alive client (same results as `send`)."""
    now = time.perf_counter
    start = now()
    res.sent = start - t0
    try:
        status, data, kept = await fast.post(path, headers, body, timeout_s)
        res.status = status
        res.note_headers(kept)
        if status != 200:
            res.error, res.detail = f"http_{status}", data[:2000].decode("utf-8", "replace")
            return res
        obj = json.loads(data)
        _usage(res, obj)
        if not res.usage_reported:
            res.output_tokens = max(1, len(_content(obj)) // CHARS_PER_TOKEN)
        if isinstance(obj, dict) and obj.get("error"):
            res.error, res.detail = "server_error", str(obj["error"])[:2000]
            return res
        res.e2e = now() - start
    except asyncio.CancelledError:
        raise
    except HttpError as e:
        res.error, res.detail = "disconnected", str(e)
    except BaseException as e:  # every failure is a counted result, never a crash
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        res.error, res.detail = classify(e), str(e) or type(e).__name__
    return res
