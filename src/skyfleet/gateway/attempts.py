"""One upstream attempt: send the request to an endpoint and relay its answer.

`PlainAttempts` is the attempt strategy without hedging: a JSON attempt reads the whole
answer; a streaming attempt is two halves — `open_stream` sends the request and waits for
the first bytes (nothing has reached the client, so a failure may still be retried), and
`commit_stream` relays the stream (from its first byte on, no retry). Every attempt's
outcome goes to the `AttemptRecorder`: the endpoint's outlier detection, its adaptive
concurrency limit, and the attempt metrics. `gateway.hedging.HedgedAttempts` races two of
these halves.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson
import yarl
from aiohttp import web
from prometheus_client import Counter

from skyfleet.gateway.answers import (
    answer_problem,
    client_error,
    first_event,
    json_object,
    stream_problem,
    upstream_error_body,
)
from skyfleet.gateway.call import Answer, Call
from skyfleet.gateway.errors import error_body
from skyfleet.gateway.fleet import Fleet, LiveEndpoint
from skyfleet.gateway.ledger import UsageRecord
from skyfleet.gateway.metrics import GatewayMetrics
from skyfleet.gateway.sse import SSERelay, error_event
from skyfleet.policy.outcome import Outcome
from skyfleet.policy.outlier import OutlierDetector
from skyfleet.providers import (
    RequestRejected,
    ResponseGarbage,
    StreamGarbage,
    UpstreamError,
    Usage,
)

log = logging.getLogger("skyfleet.gateway")

SOCKET_BUFFER_BYTES = 16384  # Linux's default TCP send buffer: a body this small never blocks
_STREAM_STATUS = {Outcome.OK: 200, Outcome.CLIENT_DISCONNECTED: 499}  # else 502
API_PATHS = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}


class AttemptFailed(Exception):
    """One upstream attempt failed before any byte reached the client."""

    def __init__(
        self,
        outcome: Outcome,
        message: str,
        *,
        status: int = 502,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.outcome, self.message, self.status = outcome, message, status
        self.body, self.headers, self.param = body, headers or {}, param

    def response(self) -> web.Response:
        """The client-facing answer when no attempt is left."""
        source = "gateway" if self.outcome is Outcome.UNSUPPORTED else "upstream"
        headers = {"x-skyfleet-error-source": source, **self.headers}
        body = self.body or error_body(
            self.status, self.message, param=self.param, code=self.outcome.value
        )
        return web.Response(
            status=self.status, body=body, content_type="application/json", headers=headers
        )


class Relay(Protocol):
    """Upstream stream bytes in, OpenAI SSE bytes for the client out (`gateway.sse.SSERelay`
    for pass-through, a provider's `StreamTranslator` otherwise)."""

    done: bool
    usage: dict[str, Any] | None
    events: int

    def feed(self, chunk: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


@dataclass(slots=True)
class OpenedStream:
    """An upstream stream whose first bytes arrived but that reached no client yet."""

    upstream: aiohttp.ClientResponse
    first: bytes
    relay: Relay


class AttemptStrategy(Protocol):
    """How the proxy makes one attempt on an endpoint (plain or hedged)."""

    async def json(self, call: Call, endpoint: LiveEndpoint) -> Answer:
        """A non-streaming attempt; raises AttemptFailed when it may be retried."""
        ...

    async def stream(self, request: web.Request, call: Call, endpoint: LiveEndpoint) -> Answer:
        """A streaming attempt; raises AttemptFailed before the first byte is relayed."""
        ...


class LatencyObserver(Protocol):
    """Fed with attempt latencies and overload answers (the adaptive concurrency limits)."""

    def on_latency(self, endpoint: LiveEndpoint, seconds: float) -> None:
        """A time-to-first-byte sample of one attempt."""
        ...

    def on_drop(self, endpoint: LiveEndpoint) -> None:
        """The endpoint answered with an overload signal (429, 503, timeout)."""
        ...


class AttemptRecorder:
    """Where each attempt's outcome goes: outlier detection, adaptive limit, metrics."""

    def __init__(
        self,
        fleet: Fleet,
        metrics: GatewayMetrics,
        observer: LatencyObserver | None = None,
    ) -> None:
        self.fleet = fleet
        self.metrics = metrics
        self.observer = observer
        self.outliers = OutlierDetector(fleet.cfg.health)
        self._counters: dict[tuple[str, Outcome], Counter] = {}  # labelled children, reused

    def record(self, endpoint: LiveEndpoint, outcome: Outcome) -> None:
        """Count the attempt's outcome; eject the endpoint after enough faults in a row."""
        counter = self._counters.get((endpoint.cfg.name, outcome))
        if counter is None:
            counter = self.metrics.attempts.labels(endpoint.cfg.name, outcome.value)
            self._counters[(endpoint.cfg.name, outcome)] = counter
        counter.inc()
        if self.observer is not None and outcome.overload:
            self.observer.on_drop(endpoint)
        fleet = self.fleet
        now = time.monotonic()
        self.outliers.settings = fleet.cfg.health  # a reload may have changed it
        others = (e.health for e in fleet.endpoints.values())
        if self.outliers.observe(endpoint.health, outcome, others, now):
            endpoint.state.healthy = False
            log.warning(
                "endpoint %s ejected for %.1fs after consecutive failures (%s)",
                endpoint.cfg.name,
                endpoint.health.seconds_until_retry(now),
                outcome.value,
            )

    def latency(self, endpoint: LiveEndpoint, seconds: float) -> None:
        """A successful attempt's time to first byte."""
        if self.observer is not None:
            self.observer.on_latency(endpoint, seconds)


class PlainAttempts:
    """Attempts without hedging, on any provider kind.

    An `openai` endpoint (`adapter.passthrough`) gets the client's bytes (or the body with its
    own model name) and its answer is relayed byte for byte; any other kind goes through its
    adapter: `build` the provider request, `response` / `stream` translate the answer back to
    OpenAI, `error` says what a failure means (`skyfleet.providers.base.UpstreamError`).
    """

    def __init__(self, session: Callable[[], aiohttp.ClientSession], recorder: AttemptRecorder):
        self._session = session
        self.recorder = recorder

    # ---- the request sent upstream ------------------------------------------------------
    @staticmethod
    def upstream_body(call: Call, endpoint: LiveEndpoint) -> bytes:
        """The client's bytes when nothing changes; else the body with the endpoint's model
        and `stream_options.include_usage` (the ledger needs the stream's usage)."""
        request = call.request
        need_usage = call.features.stream and not call.client_usage
        if request["model"] == endpoint.cfg.model and not need_usage:
            return call.body
        out = dict(request)
        out["model"] = endpoint.cfg.model
        if need_usage:
            options = dict(out.get("stream_options") or {})
            options["include_usage"] = True
            out["stream_options"] = options
        return orjson.dumps(out)

    def _request(
        self, call: Call, endpoint: LiveEndpoint
    ) -> tuple[str | yarl.URL, bytes, dict[str, str]]:
        """(url, body, headers) of the upstream request; AttemptFailed(UNSUPPORTED) when the
        provider cannot take it (nothing is sent: the proxy tries another endpoint)."""
        adapter = endpoint.adapter
        if adapter.passthrough:
            url = endpoint.cfg.url + API_PATHS[call.api]
            return url, self.upstream_body(call, endpoint), endpoint.headers
        problem = adapter.check(call.api, call.request) if adapter.supports(call.api) else None
        if not adapter.supports(call.api):
            problem = (f"the {call.api} API is not served by {adapter.kind} endpoints", "model")
        if problem is not None:
            raise AttemptFailed(Outcome.UNSUPPORTED, problem[0], status=400, param=problem[1])
        try:
            built = adapter.build(
                call.api, call.request, stream=call.features.stream, include_usage=True
            )
        except RequestRejected as e:
            raise AttemptFailed(Outcome.UNSUPPORTED, e.message, status=400, param=e.param) from None
        return _encoded_url(built.url), built.body, built.headers

    async def _send(
        self, endpoint: LiveEndpoint, request: tuple[str | yarl.URL, bytes, dict[str, str]]
    ) -> aiohttp.ClientResponse:
        """POST it: the answer's status and headers within `connect_s + ttfb_s`, a write the
        upstream stopped reading included (aiohttp's timeouts bound only reads)."""
        url, body, headers = request
        post = self._session().post(url, data=body, headers=headers, timeout=endpoint.timeout)
        if len(body) <= SOCKET_BUFFER_BYTES:  # written at once: aiohttp's read timeouts suffice
            return await post
        limits = endpoint.cfg.timeouts
        async with asyncio.timeout(limits.connect_s + limits.ttfb_s):
            return await post

    # ---- non-streaming ------------------------------------------------------------------
    async def json(self, call: Call, endpoint: LiveEndpoint) -> Answer:
        """Send, read the whole answer, pass it on (a 4xx is the client's and passes too)."""
        request = self._request(call, endpoint)
        state = endpoint.state
        state.in_flight += 1
        started = time.monotonic()
        try:
            try:
                async with await self._send(endpoint, request) as upstream:
                    data = await upstream.read()
                    status, headers = upstream.status, upstream.headers
            except TimeoutError:
                raise self._failed(endpoint, Outcome.UPSTREAM_TIMEOUT) from None
            except (aiohttp.ClientError, OSError) as e:
                raise self._failed(endpoint, Outcome.UPSTREAM_CONNECT, e) from None
            finally:
                state.in_flight -= 1
            body, usage, outcome, content_type = self._answer(call, endpoint, status, headers, data)
        except AttemptFailed as failed:
            self.recorder.record(endpoint, failed.outcome)
            raise
        record = call.record
        if outcome is Outcome.OK:
            record.prompt_tokens, record.completion_tokens, record.cached_tokens = usage
            self.recorder.latency(
                endpoint, (time.monotonic() - started) / (record.completion_tokens + 1)
            )
        self.recorder.record(endpoint, outcome)
        response = web.Response(
            status=status,
            body=body,
            headers={
                "Content-Type": content_type,
                "x-skyfleet-endpoint": endpoint.cfg.name,
                "x-skyfleet-attempts": str(record.attempts),
            },
        )
        return Answer(response, outcome, status)

    def _answer(
        self,
        call: Call,
        endpoint: LiveEndpoint,
        status: int,
        headers: Mapping[str, str],
        data: bytes,
    ) -> tuple[bytes, tuple[int, int, int], Outcome, str]:
        """(client body, usage, outcome, content type) of a whole answer; raises
        AttemptFailed for what another endpoint may do better."""
        adapter = endpoint.adapter
        if adapter.passthrough:
            self._raise_for_status(endpoint, status, data, headers)
            content_type = headers.get("Content-Type", "application/json")
            if not 200 <= status < 300:
                body, content_type = client_error(
                    endpoint.cfg.name, status, data, content_type, endpoint.secret
                )
                return body, (0, 0, 0), Outcome.UPSTREAM_CLIENT_ERROR, content_type
            parsed = json_object(data)
            problem = answer_problem(parsed)
            if parsed is None or problem is not None:
                raise AttemptFailed(
                    Outcome.UPSTREAM_GARBAGE,
                    f"endpoint {endpoint.cfg.name} returned an invalid response ({problem})",
                )
            return data, _json_usage(parsed), Outcome.OK, content_type
        if not 200 <= status < 300:
            raise self._provider_failure(endpoint, adapter.error(status, headers, data))
        try:
            body, reported = adapter.response(
                call.api, status, headers, data, model=call.features.model
            )
        except ResponseGarbage as garbage:
            raise self._provider_failure(endpoint, garbage.error) from None
        counts = (0, 0, 0) if reported is None else _counts(reported)
        return body, counts, Outcome.OK, "application/json"

    # ---- streaming ----------------------------------------------------------------------
    async def stream(self, request: web.Request, call: Call, endpoint: LiveEndpoint) -> Answer:
        """Open the stream, then relay it."""
        opened = await self.open_stream(call, endpoint)
        if isinstance(opened, Answer):
            return opened
        return await self.commit_stream(request, call, endpoint, opened)

    async def open_stream(self, call: Call, endpoint: LiveEndpoint) -> OpenedStream | Answer:
        """Send the request and wait for the first bytes; nothing reaches the client yet.

        Failures before this point raise AttemptFailed (retryable); an upstream error status
        comes back as the answer to pass on. On success the endpoint's in-flight count stays
        raised until `commit_stream` (or `discard`) ends it.
        """
        request = self._request(call, endpoint)
        adapter = endpoint.adapter
        state = endpoint.state
        state.in_flight += 1
        started = time.monotonic()
        upstream: aiohttp.ClientResponse | None = None
        opened = False
        try:
            try:
                upstream = await self._send(endpoint, request)
                if upstream.status != 200:
                    data = await upstream.read()
                    if not adapter.passthrough:
                        failure = adapter.error(upstream.status, upstream.headers, data)
                        raise self._provider_failure(endpoint, failure)
                    self._raise_for_status(endpoint, upstream.status, data, upstream.headers)
                    self.recorder.record(endpoint, Outcome.UPSTREAM_CLIENT_ERROR)
                    content_type = upstream.headers.get("Content-Type", "text/plain")
                    data, content_type = client_error(
                        endpoint.cfg.name, upstream.status, data, content_type, endpoint.secret
                    )
                    response = web.Response(
                        status=upstream.status, body=data, headers={"Content-Type": content_type}
                    )
                    return Answer(response, Outcome.UPSTREAM_CLIENT_ERROR, upstream.status)
                if adapter.passthrough:  # the first whole event, to judge it
                    first = await first_event(upstream)
                else:  # the provider's own framing (SSE or AWS event-stream)
                    first = await upstream.content.readany()
            except TimeoutError:
                raise self._failed(endpoint, Outcome.UPSTREAM_TIMEOUT) from None
            except (aiohttp.ClientError, OSError) as e:
                raise self._failed(endpoint, Outcome.UPSTREAM_CONNECT, e) from None
            if adapter.passthrough:
                relay: Relay = SSERelay(strip_usage=not call.client_usage)
                problem = stream_problem(upstream.headers.get("Content-Type", ""), first)
            else:
                relay = adapter.stream(
                    call.api, model=call.features.model, include_usage=call.client_usage
                )
                framed = bool(first) and adapter.stream_start_ok(upstream.headers, first)
                problem = None if framed else "not the provider's stream framing"
            if problem is not None:
                raise AttemptFailed(
                    Outcome.UPSTREAM_GARBAGE,
                    f"endpoint {endpoint.cfg.name} returned an invalid stream ({problem})",
                )
            opened = True
            self.recorder.latency(endpoint, time.monotonic() - started)
            return OpenedStream(upstream, first, relay)
        except AttemptFailed as failed:
            self.recorder.record(endpoint, failed.outcome)
            raise
        finally:
            if not opened:
                state.in_flight -= 1
                if upstream is not None:
                    upstream.close()

    @staticmethod
    def discard(opened: OpenedStream, endpoint: LiveEndpoint) -> None:
        """Close an opened stream that will not be relayed (a hedge that lost)."""
        endpoint.state.in_flight -= 1
        opened.upstream.close()

    async def commit_stream(
        self, request: web.Request, call: Call, endpoint: LiveEndpoint, opened: OpenedStream
    ) -> Answer:
        """Relay an opened stream to the client: from here on no retry is possible."""
        record = call.record
        clean = False
        out = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "x-request-id": record.request_id,
                "x-skyfleet-endpoint": endpoint.cfg.name,
                "x-skyfleet-attempts": str(record.attempts),
            },
        )
        try:
            call.committed = True
            await out.prepare(request)
            record.ttft_s = time.monotonic() - call.started
            outcome, clean = await self._relay(out, opened, call, endpoint)
        finally:
            endpoint.state.in_flight -= 1
            if clean:
                opened.upstream.release()
            else:
                opened.upstream.close()
        status = _STREAM_STATUS.get(outcome, 502)
        return Answer(out, outcome, status)

    async def _relay(
        self, out: web.StreamResponse, opened: OpenedStream, call: Call, endpoint: LiveEndpoint
    ) -> tuple[Outcome, bool]:
        """Relay the stream: (how it ended, whether the upstream connection may be reused)."""
        upstream, relay = opened.upstream, opened.relay
        reshape = call.reshape_stream  # the client's own dialect (e.g. Anthropic Messages)
        chunk = opened.first
        failure: str | None = None

        async def write(data: bytes) -> None:
            if reshape is not None:
                data = reshape.feed(data)
            if data:
                await out.write(data)

        try:
            while chunk:
                try:
                    data = relay.feed(chunk)
                except StreamGarbage as garbage:
                    failure = garbage.error.message
                    break
                if reshape is not None:
                    data = reshape.feed(data)
                if data:  # the hot loop writes directly; `write` serves the rare tail
                    await out.write(data)
                if relay.done:
                    break
                try:
                    chunk = await upstream.content.readany()
                except TimeoutError:
                    failure = "upstream stalled mid-stream"
                    break
                except (aiohttp.ClientError, OSError) as e:
                    failure = f"upstream connection lost mid-stream ({type(e).__name__})"
                    break
            if failure is None:  # the end of the last event (translators may finish here)
                try:
                    await write(relay.flush())
                except StreamGarbage as garbage:
                    failure = garbage.error.message
            provider_error = getattr(relay, "error", None)
            if failure is None and provider_error is not None:
                failure = provider_error.message  # its error event was relayed already
            elif failure is None and not relay.done:
                failure = "upstream closed the stream before it finished"
            if failure is not None and provider_error is None:
                await write(error_event(f"endpoint {endpoint.cfg.name}: {failure}"))
            if reshape is not None:
                tail = reshape.flush()
                if tail:
                    await out.write(tail)
        except ConnectionResetError:
            return Outcome.CLIENT_DISCONNECTED, False
        finally:
            _stream_usage(call.record, relay)
        if failure is not None:
            self.recorder.record(endpoint, Outcome.MID_STREAM)
        else:
            call.finished = True
            self.recorder.record(endpoint, Outcome.OK)
        with contextlib.suppress(ConnectionResetError):
            await out.write_eof()
        if failure is not None:
            return Outcome.MID_STREAM, False
        try:  # read the upstream's end so its connection can be reused
            await asyncio.wait_for(upstream.content.read(), 1.0)
        except (TimeoutError, aiohttp.ClientError, OSError):
            return Outcome.OK, False
        return Outcome.OK, True

    # ---- failures -----------------------------------------------------------------------
    @staticmethod
    def _failed(
        endpoint: LiveEndpoint, outcome: Outcome, error: BaseException | None = None
    ) -> AttemptFailed:
        if outcome is Outcome.UPSTREAM_TIMEOUT:
            return AttemptFailed(outcome, f"endpoint {endpoint.cfg.name} timed out", status=504)
        return AttemptFailed(
            outcome, f"endpoint {endpoint.cfg.name} failed: {type(error).__name__}"
        )

    @staticmethod
    def _provider_failure(endpoint: LiveEndpoint, error: UpstreamError) -> AttemptFailed:
        """A provider's error answer as the proxy's failure (throttled when it said so)."""
        outcome = Outcome(error.cause)
        headers = {}
        if error.retry_after_s is not None:
            if outcome in (Outcome.UPSTREAM_429, Outcome.UPSTREAM_OVERLOADED):
                endpoint.state.throttled_until = time.monotonic() + min(60.0, error.retry_after_s)
            headers["Retry-After"] = str(max(1, round(error.retry_after_s)))
        return AttemptFailed(
            outcome, error.message, status=error.status, body=error.body(), headers=headers
        )

    @staticmethod
    def _raise_for_status(
        endpoint: LiveEndpoint, status: int, data: bytes, headers: Mapping[str, str]
    ) -> None:
        """Raise for a 429/5xx answer; other statuses are the client's and pass through."""
        if status == 429:
            retry_after = headers.get("Retry-After")
            passed = {"Retry-After": retry_after} if retry_after is not None else {}
            endpoint.state.throttled_until = time.monotonic() + retry_after_s(retry_after)
            raise AttemptFailed(
                Outcome.UPSTREAM_429,
                f"endpoint {endpoint.cfg.name} is rate limiting",
                status=429,
                body=upstream_error_body(data, endpoint.secret),
                headers=passed,
            )
        if status >= 500:
            raise AttemptFailed(
                Outcome.UPSTREAM_UNAVAILABLE if status == 503 else Outcome.UPSTREAM_5XX,
                f"endpoint {endpoint.cfg.name} answered {status}",
                status=status if status in (500, 502, 503, 504) else 502,
                body=upstream_error_body(data, endpoint.secret),
            )


@functools.lru_cache(maxsize=1024)
def _encoded_url(url: str) -> yarl.URL:
    """An adapter's (already percent-encoded) URL; the same few per endpoint, parsed once."""
    return yarl.URL(url, encoded=True)


def retry_after_s(value: str | None) -> float:
    """Seconds from a Retry-After header (1 s when absent or unreadable, at most 60 s)."""
    try:
        return min(60.0, max(0.0, float(value))) if value is not None else 1.0
    except ValueError:
        return 1.0


def token_count(value: Any) -> int:
    """A usage field as a count (0 unless a non-negative integer)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _json_usage(parsed: dict[str, Any]) -> tuple[int, int, int]:
    """(prompt, completion, cached) tokens of a JSON answer (zeros without usage)."""
    usage = parsed.get("usage")
    if not isinstance(usage, dict):
        return 0, 0, 0
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return token_count(prompt), token_count(completion), _cached(usage)


def _counts(usage: Usage) -> tuple[int, int, int]:
    return usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens or 0


def _cached(usage: dict[str, Any]) -> int:
    details = usage.get("prompt_tokens_details")
    return token_count(details.get("cached_tokens")) if isinstance(details, dict) else 0


def _stream_usage(record: UsageRecord, relay: Relay) -> None:
    if relay.usage is not None:
        record.prompt_tokens = token_count(relay.usage.get("prompt_tokens"))
        record.completion_tokens = token_count(relay.usage.get("completion_tokens"))
        record.cached_tokens = _cached(relay.usage)
        record.usage_estimated = False
    else:  # partial stream: one token per content event is the estimate
        record.completion_tokens = max(0, relay.events - (1 if relay.done else 0))
        record.usage_estimated = True
