"""Check the target before a run: reachable, key accepted, model served, endpoint works."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import aiohttp

from skyfleet.bench.loadgen import Target
from skyfleet.bench.workload import exact_length
from skyfleet.errors import SkyfleetError


def _msg(text: str) -> str:
    """The `error.message` of an OpenAI-shaped error body, else the text itself."""
    try:
        obj = json.loads(text)
        err = obj.get("error") if isinstance(obj, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    except (json.JSONDecodeError, ValueError):
        pass
    return text.strip()[:300] or "(empty body)"


async def _get(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], timeout: float
) -> tuple[int, str]:
    async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
        return r.status, await r.text()


async def preflight(target: Target, *, timeout_s: float = 10.0) -> tuple[Target, dict[str, Any]]:
    """Return the target with its model set, and what was learnt; raise a clear error if not.

    1. `GET /v1/models`: the URL answers, the key is accepted, the model is served (when
       no `--model` is given the first served model is used).
    2. A 1-token request on the chosen API: the endpoint exists and accepts this key.
    """
    headers = target.base_headers()
    url = target.root + "/v1/models"
    info: dict[str, Any] = {}
    async with aiohttp.ClientSession() as s:
        try:
            status, text = await _get(s, url, headers, timeout_s)
        except (aiohttp.ClientConnectorError, aiohttp.InvalidURL, OSError) as e:
            raise SkyfleetError(
                f"cannot reach {target.root}: {e.__class__.__name__}: {e}; is the server "
                "running and the URL right (e.g. http://127.0.0.1:8000)?"
            ) from e
        except (TimeoutError, aiohttp.ClientError) as e:
            raise SkyfleetError(
                f"{url} did not answer within {timeout_s:g} s ({e.__class__.__name__})"
            ) from e
        if status in (401, 403):
            raise SkyfleetError(
                f"{target.root} rejected the API key (HTTP {status}: {_msg(text)}); "
                "pass a valid one with --api-key"
            )
        models: list[str] = []
        if status == 200:
            try:
                models = [str(m["id"]) for m in json.loads(text).get("data", [])]
            except (json.JSONDecodeError, AttributeError, KeyError, TypeError) as e:
                raise SkyfleetError(f"{url} did not return an OpenAI model list") from e
        elif status != 404:
            raise SkyfleetError(f"{url} answered HTTP {status}: {_msg(text)}")
        info["served_models"] = models
        model = target.model
        if model is None:
            if not models:
                raise SkyfleetError(f"{target.root} lists no models; pass --model")
            model = models[0]
        elif models and model not in models:
            raise SkyfleetError(
                f"model {model!r} is not served by {target.root}; it serves: {', '.join(models)}"
            )
        tgt = replace(target, model=model)
        body: dict[str, Any] = {"model": model, "max_tokens": 1}
        if target.ignore_eos:  # as the load will send it
            body.update(exact_length(1))
        if target.api == "chat":
            body["messages"] = [{"role": "user", "content": "ping"}]
        else:
            body["prompt"] = "ping"
        t = time.perf_counter()
        try:
            async with s.post(
                tgt.endpoint,
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=max(timeout_s, 30.0)),
            ) as r:
                status, text = r.status, await r.text()
        except TimeoutError as e:
            raise SkyfleetError(
                f"a 1-token test request to {tgt.endpoint} got no answer in time"
            ) from e
        except aiohttp.ClientError as e:
            raise SkyfleetError(f"a 1-token test request to {tgt.endpoint} failed: {e}") from e
        info["probe_latency_s"] = time.perf_counter() - t
        if status in (401, 403):
            raise SkyfleetError(
                f"{tgt.endpoint} rejected the API key (HTTP {status}: {_msg(text)}); "
                "pass a valid one with --api-key"
            )
        if status == 404:
            other = "completions" if target.api == "chat" else "chat"
            raise SkyfleetError(
                f"{tgt.endpoint} does not exist (HTTP 404: {_msg(text)}); try --api {other}"
            )
        if status == 400 and ("ignore_eos" in text or "min_tokens" in text):
            raise SkyfleetError(
                f"{tgt.endpoint} refuses 'ignore_eos'/'min_tokens' (HTTP 400: {_msg(text)}): "
                "a cloud API cannot be told to generate exactly --output tokens; "
                "rerun with --no-ignore-eos (output lengths are then the model's own, "
                "up to --output)"
            )
        if status != 200:
            raise SkyfleetError(
                f"a 1-token test request to {tgt.endpoint} failed with HTTP {status}: {_msg(text)}"
            )
    return tgt, info
