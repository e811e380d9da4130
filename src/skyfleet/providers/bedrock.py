"""`kind: bedrock` — AWS Bedrock Runtime Converse / ConverseStream, both ways.

POST {url}/model/{modelId}/converse (JSON) or /converse-stream (AWS event-stream framing),
signed with SigV4 by botocore's signer (service `bedrock`). Credentials: the endpoint's
static keys, or botocore's standard chain (environment, shared files / profile, SSO,
container and instance metadata), loaded in `start()` and refreshed in a background
thread — signing on the request path uses a frozen copy and never does I/O.

`UpstreamRequest.url` is already percent-encoded (model ids hold `:`): send it as is
(aiohttp: `yarl.URL(url, encoded=True)`), or the signature will not match.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from skyfleet.providers import eventstream
from skyfleet.providers.base import (
    RequestRejected,
    StreamGarbage,
    UpstreamError,
    UpstreamRequest,
    Usage,
    cause_of_status,
    client_status,
    header,
    make_error,
)
from skyfleet.providers.chat import Chat, Image, Message, read_chat, text
from skyfleet.providers.common import TranslatingAdapter, json_args, loads
from skyfleet.providers.openai_out import DONE, ChunkWriter, chat_completion, choice, tool_call

if TYPE_CHECKING:
    import aiohttp

    from skyfleet.config import EndpointConfig

log = logging.getLogger("skyfleet.providers")

FIELDS = frozenset(
    {
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "tools",
        "tool_choice",
        "response_format",
        "user",
    }
)
FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
    "malformed_model_output": "stop",
    "malformed_tool_use": "stop",
}
_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
CREDENTIAL_REFRESH_S = 60.0  # how often the background thread asks botocore for fresh keys


def default_url(region: str) -> str:
    return f"https://bedrock-runtime.{region}.amazonaws.com"


def _block(part: str | Image, where: str) -> dict[str, Any]:
    if isinstance(part, str):
        return {"text": part}
    if part.data is None or part.media_type not in _FORMATS:
        raise RequestRejected(
            "Bedrock endpoints take images as data: URLs of PNG, JPEG, GIF or WebP", where
        )
    return {"image": {"format": _FORMATS[part.media_type], "source": {"bytes": part.data}}}


def messages(chat_messages: list[Message]) -> list[dict[str, Any]]:
    """OpenAI turns → Converse turns (same-role turns merged: Converse wants alternation)."""
    out: list[dict[str, Any]] = []
    for i, message in enumerate(chat_messages):
        where = f"messages[{i}].content"
        if message.role == "tool":
            role = "user"
            result = [{"text": text(message.parts)}]
            blocks = [{"toolResult": {"toolUseId": message.tool_call_id, "content": result}}]
        else:
            role = message.role
            blocks = [
                _block(part, where)
                for part in message.parts
                if not (isinstance(part, str) and not part)
            ]
            for j, call in enumerate(message.tool_calls):
                args = json_args(call.arguments, f"messages[{i}].tool_calls[{j}]", "Bedrock")
                blocks.append({"toolUse": {"toolUseId": call.id, "name": call.name, "input": args}})
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


def request_body(chat: Chat) -> dict[str, Any]:
    """The Converse body for a neutral chat request (the model id goes in the URL)."""
    body: dict[str, Any] = {"messages": messages(chat.messages)}
    if chat.system:
        body["system"] = [{"text": system_text} for system_text in chat.system if system_text]
    inference_config: dict[str, Any] = {}
    if chat.max_tokens is not None:
        inference_config["maxTokens"] = chat.max_tokens
    if chat.temperature is not None:
        inference_config["temperature"] = chat.temperature
    if chat.top_p is not None:
        inference_config["topP"] = chat.top_p
    if chat.stop:
        inference_config["stopSequences"] = chat.stop
    if inference_config:
        body["inferenceConfig"] = inference_config
    if chat.tools:
        if chat.tool_choice == "none":
            raise RequestRejected(
                "tool_choice 'none' is not supported by Bedrock endpoints (leave out 'tools')",
                "tool_choice",
            )
        tools = []
        for tool in chat.tools:
            spec: dict[str, Any] = {"name": tool.name, "inputSchema": {"json": tool.parameters}}
            if tool.description:
                spec["description"] = tool.description
            tools.append({"toolSpec": spec})
        tool_config: dict[str, Any] = {"tools": tools}
        if chat.tool_choice == "auto":
            tool_config["toolChoice"] = {"auto": {}}
        elif chat.tool_choice == "required":
            tool_config["toolChoice"] = {"any": {}}
        elif chat.tool_name():
            tool_config["toolChoice"] = {"tool": {"name": chat.tool_name()}}
        body["toolConfig"] = tool_config
    response_format = chat.response_format
    if response_format is not None:
        if response_format["type"] != "json_schema":
            raise RequestRejected(
                "response_format 'json_object' is not supported by Bedrock endpoints "
                "(use json_schema)",
                "response_format",
            )
        json_schema: dict[str, Any] = {
            "schema": orjson.dumps(response_format.get("schema", {})).decode()
        }
        if response_format.get("name"):
            json_schema["name"] = response_format["name"]
        if response_format.get("description"):
            json_schema["description"] = response_format["description"]
        body["outputConfig"] = {
            "textFormat": {"type": "json_schema", "structure": {"jsonSchema": json_schema}}
        }
    if chat.user:
        body["requestMetadata"] = {"user": chat.user}
    return body


def usage(raw: Mapping[str, Any]) -> Usage:
    """Converse usage → OpenAI semantics (prompt includes cache reads and writes)."""
    read = int(raw.get("cacheReadInputTokens") or 0)
    write = int(raw.get("cacheWriteInputTokens") or 0)
    return Usage(
        int(raw.get("inputTokens") or 0) + read + write,
        int(raw.get("outputTokens") or 0),
        read if "cacheReadInputTokens" in raw else None,
    )


def completion(resp: dict[str, Any], model: str) -> tuple[bytes, Usage | None]:
    """A Converse response → chat.completion JSON."""
    msg = (resp.get("output") or {}).get("message") or {}
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in msg.get("content") or []:
        if not isinstance(block, dict):
            continue
        if "text" in block:
            text.append(str(block["text"]))
        elif isinstance(block.get("toolUse"), dict):
            tool_use = block["toolUse"]
            args = orjson.dumps(tool_use.get("input", {})).decode()
            calls.append(tool_call(str(tool_use.get("toolUseId")), str(tool_use.get("name")), args))
    raw_usage = resp.get("usage")
    use = usage(raw_usage) if isinstance(raw_usage, dict) else None
    finish = FINISH.get(str(resp.get("stopReason")), "stop")
    content = "".join(text) if text or not calls else None
    body = chat_completion(
        model=model,
        choices=[choice(0, content, calls, finish)],
        usage=use,
    )
    return body, use


ERRORS: dict[str, str] = {
    "ThrottlingException": "upstream_overloaded",
    "ServiceUnavailableException": "upstream_overloaded",
    "ModelNotReadyException": "upstream_overloaded",
    "ServiceQuotaExceededException": "upstream_429",
    "InternalServerException": "upstream_5xx",
    "ModelErrorException": "upstream_5xx",
    "ModelTimeoutException": "upstream_5xx",
    "ModelStreamErrorException": "upstream_5xx",
    "ValidationException": "upstream_bad_request",
    "ResourceNotFoundException": "upstream_not_found",
    "AccessDeniedException": "upstream_auth",
    "UnrecognizedClientException": "upstream_auth",
    "InvalidSignatureException": "upstream_auth",
    "ExpiredTokenException": "upstream_auth",
    "MissingAuthenticationTokenException": "upstream_auth",
    "IncompleteSignatureException": "upstream_auth",
}


def error_name(headers: Mapping[str, str], obj: Any) -> str:
    """The AWS error code: `x-amzn-ErrorType` header, else the body's `__type`/`code`."""
    raw = header(headers, "x-amzn-ErrorType") or ""
    if not raw and isinstance(obj, dict):
        raw = str(obj.get("__type") or obj.get("code") or "")
    raw = raw.split(":", 1)[0]
    return raw.rsplit("#", 1)[-1]


def error(name: str, status: int, code: str, message: str) -> UpstreamError:
    """A Bedrock error (HTTP answer or stream exception) → UpstreamError."""
    # stream exception types are camelCase (throttlingException): normalise
    code = code[:1].upper() + code[1:] if code else code
    cause = ERRORS.get(code)
    if cause is None:
        cause = cause_of_status(status, throttled="upstream_overloaded")
    where = f"endpoint {name} (Bedrock)"
    label = code or str(status)
    if cause == "upstream_overloaded":
        client_http_status = 503 if code == "ServiceUnavailableException" else 429
        return make_error(
            cause,
            f"{where} is throttling ({label}): {message}",
            status=client_http_status,
            retry_after_s=1.0,
            code=code or None,
        )
    if cause == "upstream_429":
        return make_error(cause, f"{where}: quota exceeded ({label}): {message}", code=code or None)
    if cause == "upstream_auth":
        return make_error(
            cause, f"{where} rejected the gateway's AWS credentials ({label})", code=code or None
        )
    if cause == "upstream_not_found":
        return make_error(
            cause, f"{where}: {message or 'model not found'} ({label})", code=code or None
        )
    if cause == "upstream_5xx":
        client_http_status = 504 if code == "ModelTimeoutException" else client_status(status)
        return make_error(
            cause,
            f"{where} failed ({label}): {message}",
            status=client_http_status,
            code=code or None,
        )
    return make_error(cause, f"Bedrock: {message or label}", code=code or None)


def error_from_http(
    name: str, status: int, headers: Mapping[str, str], body: bytes
) -> UpstreamError:
    obj = loads(body)
    msg = ""
    if isinstance(obj, dict):
        msg = str(obj.get("message") or obj.get("Message") or "")
    return error(name, status, error_name(headers, obj), msg)


class BedrockStream:
    """ConverseStream event-stream → OpenAI chunks."""

    __slots__ = (
        "_blocks",
        "_decoder",
        "_finish",
        "_name",
        "_stopped",
        "_writer",
        "done",
        "error",
        "usage",
    )

    def __init__(self, name: str, model: str, include_usage: bool) -> None:
        self._name = name
        self._decoder = eventstream.Decoder(f"endpoint {name} (Bedrock)")
        self._writer = ChunkWriter(model, include_usage)
        self._blocks: dict[int, int] = {}  # contentBlockIndex → tool call slot
        self._finish = "stop"
        self._stopped = False
        self.done = False
        self.usage: dict[str, Any] | None = None
        self.error: UpstreamError | None = None

    @property
    def events(self) -> int:
        return self._writer.events

    def _garbage(self, why: str) -> StreamGarbage:
        return StreamGarbage(
            make_error("upstream_garbage", f"endpoint {self._name} (Bedrock): {why}")
        )

    def _message(self, message: eventstream.Message) -> bytes:
        if self.done:
            return b""
        mtype = message.header(":message-type")
        writer = self._writer
        if mtype == "exception":
            obj = loads(message.payload)
            error_message = str(obj.get("message", "")) if isinstance(obj, dict) else ""
            self.error = error(self._name, 500, message.header(":exception-type"), error_message)
            return writer.error(self.error.message, self.error.error_type, self.error.code)
        if mtype == "error":
            self.error = error(
                self._name, 500, message.header(":error-code"), message.header(":error-message")
            )
            return writer.error(self.error.message, self.error.error_type, self.error.code)
        if mtype != "event":
            raise self._garbage(f"unknown event-stream message type {mtype!r}")
        event = loads(message.payload)
        if not isinstance(event, dict):
            raise self._garbage("event payload is not JSON")
        event_type = message.header(":event-type")
        if event_type == "contentBlockDelta":
            delta = event.get("delta") or {}
            if "text" in delta:
                return writer.content(str(delta["text"]))
            tool_use = delta.get("toolUse")
            if isinstance(tool_use, dict):
                slot = self._blocks.get(int(event.get("contentBlockIndex", 0)))
                if slot is not None:
                    return writer.tool_args(slot, str(tool_use.get("input", "")))
            return b""  # reasoning / citation deltas: no OpenAI equivalent
        if event_type == "messageStart":
            return writer.role()
        if event_type == "contentBlockStart":
            tool_use = (event.get("start") or {}).get("toolUse")
            if isinstance(tool_use, dict):
                slot = len(self._blocks)
                self._blocks[int(event.get("contentBlockIndex", 0))] = slot
                return writer.tool_start(
                    slot, str(tool_use.get("toolUseId")), str(tool_use.get("name"))
                )
            return b""
        if event_type == "messageStop":
            self._finish = FINISH.get(str(event.get("stopReason")), "stop")
            self._stopped = True
            return writer.finish(self._finish)
        if event_type == "metadata":
            raw_usage = event.get("usage")
            if isinstance(raw_usage, dict):
                self.usage = usage(raw_usage).as_openai()
            return self._end()
        return b""  # contentBlockStop and future event types

    def _end(self) -> bytes:
        self.done = True
        use = self.usage
        return (self._writer.usage_chunk(use) if use else b"") + DONE

    def feed(self, chunk: bytes) -> bytes:
        return b"".join(self._message(message) for message in self._decoder.feed(chunk))

    def flush(self) -> bytes:
        if self._decoder.pending:
            raise self._garbage("stream ended inside an event-stream message")
        if self._stopped and not self.done and self.error is None:
            return self._end()  # messageStop seen, metadata never came
        return b""


class BedrockAdapter(TranslatingAdapter):
    kind = "bedrock"
    provider = "Bedrock"
    fields = FIELDS

    def __init__(self, cfg: EndpointConfig) -> None:
        super().__init__(cfg)
        opts = cfg.bedrock
        assert opts is not None, "kind bedrock needs a bedrock: block (config validates it)"
        self.region = opts.region
        model_id = quote(cfg.model, safe="")
        base = cfg.url.rstrip("/")
        self.urls = (
            f"{base}/model/{model_id}/converse",
            f"{base}/model/{model_id}/converse-stream",
        )
        self._creds: Any = None  # botocore ReadOnlyCredentials (frozen)
        self._source: Any = None  # botocore Credentials (may refresh itself)
        self._task: asyncio.Task[None] | None = None
        if opts.access_key_id and opts.secret_access_key is not None:
            from botocore.credentials import ReadOnlyCredentials

            token = opts.session_token.get_secret_value() if opts.session_token else None
            self._creds = ReadOnlyCredentials(
                opts.access_key_id, opts.secret_access_key.get_secret_value(), token
            )
        from botocore.auth import SigV4Auth

        self._signer_cls = SigV4Auth

    def translate(self, obj: dict[str, Any]) -> dict[str, Any]:
        return request_body(read_chat(obj, "Bedrock", FIELDS))

    def sign(self, url: str, headers: dict[str, str], body: bytes) -> dict[str, str]:
        """SigV4 headers (Authorization, X-Amz-Date, X-Amz-Security-Token) for one request."""
        if self._creds is None:
            return headers  # no credentials yet: the provider will answer 403 (upstream_auth)
        from botocore.awsrequest import AWSRequest

        req = AWSRequest(method="POST", url=url, data=body, headers=headers)
        self._signer_cls(self._creds, "bedrock", self.region).add_auth(req)
        return dict(req.headers.items())

    def build(
        self, api: str, obj: dict[str, Any], *, stream: bool, include_usage: bool
    ) -> UpstreamRequest:
        body = orjson.dumps(self.translated(obj))
        url = self.urls[1 if stream else 0]
        accept = "application/vnd.amazon.eventstream" if stream else "application/json"
        headers = {"Content-Type": "application/json", "Accept": accept, **self.extra_headers}
        return UpstreamRequest(url, self.sign(url, headers, body), body)

    def response(
        self, api: str, status: int, headers: Mapping[str, str], body: bytes, *, model: str
    ) -> tuple[bytes, Usage | None]:
        return completion(self.parse_ok(body), model)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        return error_from_http(self.name, status, headers, body)

    def stream_start_ok(self, headers: Mapping[str, str], first: bytes) -> bool:
        content_type = header(headers, "Content-Type") or ""
        if "application/vnd.amazon.eventstream" not in content_type or not first:
            return False
        if len(first) < eventstream.PRELUDE:
            return True
        return zlib.crc32(first[:8]) == int.from_bytes(first[8:12], "big")

    def stream(self, api: str, *, model: str, include_usage: bool) -> BedrockStream:
        return BedrockStream(self.name, model, include_usage)

    # -- credentials ------------------------------------------------------------------------
    def _load(self) -> Any:
        """Blocking: botocore's credential chain (run in a thread)."""
        import botocore.session

        opts = self.cfg.bedrock
        sess = botocore.session.Session(profile=opts.profile if opts else None)
        creds = sess.get_credentials()
        if creds is None:
            raise RuntimeError("no AWS credentials found by botocore's credential chain")
        return creds

    def _refresh(self) -> None:
        """Blocking: refresh (when botocore deems it due) and freeze the credentials."""
        if self._source is None:
            self._source = self._load()
        self._creds = self._source.get_frozen_credentials()

    async def start(self, session: aiohttp.ClientSession) -> None:
        if self._creds is not None and self._source is None:
            return  # static keys from the config
        try:
            await asyncio.to_thread(self._refresh)
        except Exception as e:
            log.warning("endpoint %s (Bedrock): cannot load AWS credentials: %s", self.name, e)
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(CREDENTIAL_REFRESH_S)
            try:
                await asyncio.to_thread(self._refresh)
            except Exception as e:
                log.warning("endpoint %s (Bedrock): credential refresh failed: %s", self.name, e)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
