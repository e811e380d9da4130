"""`kind: vertex` — Google Vertex AI: Gemini generateContent / streamGenerateContent (SSE),
or Vertex's OpenAI-compatible chat endpoint (`vertex.api: openai`).

Auth: an OAuth2 access token from a service-account key file — a JWT signed with the key
(google-auth's signer) is exchanged at the key file's `token_uri` — refreshed in the
background before it expires (`skyfleet.providers.tokens`).

Usage: prompt = promptTokenCount (+ toolUsePromptTokenCount), completion =
candidatesTokenCount + thoughtsTokenCount (OpenAI counts reasoning tokens as completion),
cached = cachedContentTokenCount.
"""

from __future__ import annotations

import json
import mimetypes
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from skyfleet.providers import openai_compat
from skyfleet.providers.base import (
    RequestRejected,
    ResponseGarbage,
    StreamGarbage,
    UpstreamError,
    UpstreamRequest,
    Usage,
    cause_of_status,
    client_status,
    make_error,
)
from skyfleet.providers.chat import Chat, Image, Message, read_chat, text, tool_names
from skyfleet.providers.common import TranslatingAdapter, json_args, loads
from skyfleet.providers.openai_out import DONE, ChunkWriter, chat_completion, choice, tool_call
from skyfleet.providers.sse import SSEParser
from skyfleet.providers.tokens import TokenRefresher

if TYPE_CHECKING:
    import aiohttp

    from skyfleet.config import EndpointConfig

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FIELDS = frozenset(
    {
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "top_k",
        "stop",
        "tools",
        "tool_choice",
        "response_format",
        "n",
        "seed",
        "presence_penalty",
        "frequency_penalty",
    }
)
FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
}


def default_url(location: str) -> str:
    if location == "global":
        return "https://aiplatform.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


def _part(part: str | Image, where: str) -> dict[str, Any]:
    if isinstance(part, str):
        return {"text": part}
    if part.data is not None:
        return {"inlineData": {"mimeType": part.media_type, "data": part.data}}
    mime = mimetypes.guess_type(part.url or "")[0]
    if mime is None:
        raise RequestRejected(
            "Vertex endpoints need an image URL whose file extension gives its type "
            "(or a data: URL)",
            where,
        )
    return {"fileData": {"mimeType": mime, "fileUri": part.url}}


def _function_response(content: str) -> dict[str, Any]:
    try:
        parsed = json.loads(content)
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"content": content}


def contents(chat_messages: list[Message]) -> list[dict[str, Any]]:
    """OpenAI turns → Gemini contents (roles user/model; same-role turns merged)."""
    names = tool_names(chat_messages)
    out: list[dict[str, Any]] = []
    for i, message in enumerate(chat_messages):
        if message.role == "tool":
            role = "user"
            name = names.get(message.tool_call_id or "")
            if name is None:
                raise RequestRejected(
                    f"'messages[{i}].tool_call_id' matches no earlier tool call "
                    "(Vertex needs the function's name)",
                    f"messages[{i}].tool_call_id",
                )
            resp = _function_response(text(message.parts))
            parts = [{"functionResponse": {"name": name, "response": resp}}]
        else:
            role = "model" if message.role == "assistant" else "user"
            parts = [
                _part(part, f"messages[{i}].content")
                for part in message.parts
                if not (isinstance(part, str) and not part)
            ]
            for j, call in enumerate(message.tool_calls):
                args = json_args(call.arguments, f"messages[{i}].tool_calls[{j}]", "Vertex")
                parts.append({"functionCall": {"name": call.name, "args": args}})
        if out and out[-1]["role"] == role:
            out[-1]["parts"].extend(parts)
        else:
            out.append({"role": role, "parts": parts})
    return out


def request_body(chat: Chat) -> dict[str, Any]:
    """The generateContent body for a neutral chat request (the model goes in the URL)."""
    body: dict[str, Any] = {"contents": contents(chat.messages)}
    if chat.system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(chat.system)}]}
    generation_config: dict[str, Any] = {}
    for key, value in (
        ("maxOutputTokens", chat.max_tokens),
        ("temperature", chat.temperature),
        ("topP", chat.top_p),
        ("seed", chat.seed),
        ("presencePenalty", chat.presence_penalty),
        ("frequencyPenalty", chat.frequency_penalty),
    ):
        if value is not None:
            generation_config[key] = value
    if "top_k" in chat.extra:
        generation_config["topK"] = chat.extra["top_k"]
    if chat.stop:
        generation_config["stopSequences"] = chat.stop
    if chat.n != 1:
        generation_config["candidateCount"] = chat.n
    response_format = chat.response_format
    if response_format is not None:
        generation_config["responseMimeType"] = "application/json"
        if response_format["type"] == "json_schema":
            generation_config["responseJsonSchema"] = response_format.get("schema", {})
    if generation_config:
        body["generationConfig"] = generation_config
    if chat.tools:
        declarations = []
        for tool in chat.tools:
            declaration: dict[str, Any] = {
                "name": tool.name,
                "parametersJsonSchema": tool.parameters,
            }
            if tool.description:
                declaration["description"] = tool.description
            declarations.append(declaration)
        body["tools"] = [{"functionDeclarations": declarations}]
    mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}.get(chat.tool_choice or "")
    calling_config: dict[str, Any] | None = {"mode": mode} if mode else None
    if chat.tool_name():
        calling_config = {"mode": "ANY", "allowedFunctionNames": [chat.tool_name()]}
    if calling_config is not None:
        body["toolConfig"] = {"functionCallingConfig": calling_config}
    return body


def usage(raw: Mapping[str, Any]) -> Usage:
    """usageMetadata → OpenAI semantics."""
    cached = raw.get("cachedContentTokenCount")
    return Usage(
        int(raw.get("promptTokenCount") or 0) + int(raw.get("toolUsePromptTokenCount") or 0),
        int(raw.get("candidatesTokenCount") or 0) + int(raw.get("thoughtsTokenCount") or 0),
        int(cached) if cached is not None else None,
    )


def _parts_out(cand: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """(text, [(name, args JSON)]) of one candidate; thought parts are left out."""
    text: list[str] = []
    calls: list[tuple[str, str]] = []
    for part in (cand.get("content") or {}).get("parts") or []:
        if not isinstance(part, dict) or part.get("thought"):
            continue
        if "text" in part:
            text.append(str(part["text"]))
        call = part.get("functionCall")
        if isinstance(call, dict):
            calls.append((str(call.get("name")), orjson.dumps(call.get("args", {})).decode()))
    return "".join(text), calls


def _finish(reason: Any, has_calls: bool) -> str:
    if has_calls and reason in (None, "STOP"):
        return "tool_calls"
    return FINISH.get(str(reason), "stop")


def completion(resp: dict[str, Any], model: str) -> tuple[bytes, Usage | None]:
    """A GenerateContentResponse → chat.completion JSON (one choice per candidate)."""
    raw_usage = resp.get("usageMetadata")
    use = usage(raw_usage) if isinstance(raw_usage, dict) else None
    cands = resp.get("candidates") or []
    if not cands:  # the prompt was blocked: promptFeedback.blockReason
        return chat_completion(
            model=model, choices=[choice(0, "", [], "content_filter")], usage=use
        ), use
    choices = []
    for i, candidate in enumerate(cands):
        text, calls = _parts_out(candidate)
        idx = int(candidate.get("index", i))
        tool_calls = [
            tool_call(f"call_{idx}_{call_index}", call_name, call_args)
            for call_index, (call_name, call_args) in enumerate(calls)
        ]
        fin = _finish(candidate.get("finishReason"), bool(tool_calls))
        choices.append(choice(idx, text if text or not tool_calls else None, tool_calls, fin))
    rid = resp.get("responseId")
    rid = f"chatcmpl-{rid}" if isinstance(rid, str) else None
    return chat_completion(model=model, choices=choices, usage=use, rid=rid), use


STATUSES: dict[str, str] = {
    "RESOURCE_EXHAUSTED": "upstream_overloaded",
    "UNAVAILABLE": "upstream_overloaded",
    "INTERNAL": "upstream_5xx",
    "DEADLINE_EXCEEDED": "upstream_5xx",
    "UNKNOWN": "upstream_5xx",
    "UNAUTHENTICATED": "upstream_auth",
    "PERMISSION_DENIED": "upstream_auth",
    "NOT_FOUND": "upstream_not_found",
    "INVALID_ARGUMENT": "upstream_bad_request",
    "FAILED_PRECONDITION": "upstream_bad_request",
    "OUT_OF_RANGE": "upstream_bad_request",
}


def error(name: str, status: int, body: bytes) -> UpstreamError:
    """A google.rpc.Status error answer → UpstreamError."""
    obj = loads(body)
    if isinstance(obj, list) and obj:  # non-SSE streams wrap it in a list
        obj = obj[0]
    err = obj.get("error") if isinstance(obj, dict) else None
    rpc_status = str(err.get("status", "")) if isinstance(err, dict) else ""
    msg = str(err.get("message", "")) if isinstance(err, dict) else ""
    cause = STATUSES.get(rpc_status)
    if cause is None:
        cause = cause_of_status(status, throttled="upstream_overloaded")
    where = f"endpoint {name} (Vertex AI)"
    label = rpc_status or str(status)
    if cause == "upstream_overloaded":
        return make_error(
            cause,
            f"{where} is out of capacity ({label}): {msg}",
            status=503 if rpc_status == "UNAVAILABLE" else 429,
            retry_after_s=1.0,
            code=label,
        )
    if cause == "upstream_auth":
        return make_error(
            cause, f"{where} rejected the gateway's credentials ({label})", code=label
        )
    if cause == "upstream_not_found":
        return make_error(cause, f"{where}: {msg or 'model not found'} ({label})", code=label)
    if cause == "upstream_5xx":
        return make_error(
            cause,
            f"{where} failed ({label}): {msg}",
            status=504 if rpc_status == "DEADLINE_EXCEEDED" else client_status(status),
            code=label,
        )
    return make_error(cause, f"Vertex AI: {msg or label}", code=label)


class VertexStream:
    """streamGenerateContent?alt=sse → OpenAI chunks. Gemini has no end event: the chunk
    carrying `finishReason` ends the stream (usage comes with it)."""

    __slots__ = (
        "_calls",
        "_finish",
        "_name",
        "_raw_usage",
        "_sse",
        "_started",
        "_writer",
        "done",
        "error",
        "usage",
    )

    def __init__(self, name: str, model: str, include_usage: bool) -> None:
        self._name = name
        self._sse = SSEParser(f"endpoint {name} (Vertex AI)")
        self._writer = ChunkWriter(model, include_usage)
        self._started: set[int] = set()
        self._calls: dict[int, int] = {}  # candidate → tool calls so far
        self._finish: dict[int, str] = {}
        self._raw_usage: dict[str, Any] | None = None
        self.done = False
        self.usage: dict[str, Any] | None = None
        self.error: UpstreamError | None = None

    @property
    def events(self) -> int:
        return self._writer.events

    def _event(self, data: bytes) -> bytes:
        if self.done:
            return b""
        obj = loads(data)
        if not isinstance(obj, dict):
            raise StreamGarbage(
                make_error("upstream_garbage", f"endpoint {self._name} (Vertex AI): bad event")
            )
        writer = self._writer
        if "error" in obj:
            self.error = error(self._name, int((obj["error"] or {}).get("code") or 500), data)
            return writer.error(self.error.message, self.error.error_type, self.error.code)
        if isinstance(obj.get("responseId"), str) and not self._started:
            writer.set_id("chatcmpl-" + obj["responseId"])
        if isinstance(obj.get("usageMetadata"), dict):
            self._raw_usage = obj["usageMetadata"]
        out: list[bytes] = []
        cands = obj.get("candidates") or []
        for i, candidate in enumerate(cands):
            idx = int(candidate.get("index", i))
            if idx not in self._started:
                self._started.add(idx)
                out.append(writer.role(idx))
            text, calls = _parts_out(candidate)
            if text:
                out.append(writer.content(text, idx))
            for name, args in calls:
                slot = self._calls.get(idx, 0)
                self._calls[idx] = slot + 1
                out.append(writer.tool_start(slot, f"call_{idx}_{slot}", name, idx))
                out.append(writer.tool_args(slot, args, idx))
            if candidate.get("finishReason"):
                self._finish[idx] = _finish(candidate["finishReason"], self._calls.get(idx, 0) > 0)
        if not cands and (obj.get("promptFeedback") or {}).get("blockReason"):
            out.append(writer.role(0))
            self._finish[0] = "content_filter"
        if self._finish and len(self._finish) >= max(len(self._started), 1):
            out.append(self._end())
        return b"".join(out)

    def _end(self) -> bytes:
        self.done = True
        writer = self._writer
        out = [writer.finish(reason, index) for index, reason in sorted(self._finish.items())]
        if self._raw_usage is not None:
            self.usage = usage(self._raw_usage).as_openai()
            out.append(writer.usage_chunk(self.usage))
        out.append(DONE)
        return b"".join(out)

    def feed(self, chunk: bytes) -> bytes:
        return b"".join(self._event(data) for _, data in self._sse.feed(chunk))

    def flush(self) -> bytes:
        return b"".join(self._event(data) for _, data in self._sse.flush())


class ServiceAccount:
    """A service-account key file's identity and signer; `fetch` gets an access token."""

    def __init__(self, path: str) -> None:
        from google.auth import crypt

        with open(path) as key_file:
            info = json.load(key_file)
        self.email = str(info["client_email"])
        self.token_uri = str(info.get("token_uri") or "https://oauth2.googleapis.com/token")
        self.signer = crypt.RSASigner.from_service_account_info(info)  # type: ignore[no-untyped-call]

    def assertion(self, now: int | None = None) -> str:
        """The signed JWT exchanged for an access token (RFC 7523)."""
        from google.auth import jwt

        iat = int(time.time()) if now is None else now
        claims = {
            "iss": self.email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": iat,
            "exp": iat + 3600,
        }
        token: bytes = jwt.encode(self.signer, claims)  # type: ignore[no-untyped-call]
        return token.decode()

    async def fetch(self, session: aiohttp.ClientSession) -> tuple[str, float]:
        form = {"grant_type": JWT_GRANT, "assertion": self.assertion()}
        async with session.post(self.token_uri, data=form) as answer:
            body = loads(await answer.read())
            if answer.status != 200 or not isinstance(body, dict) or "access_token" not in body:
                why = body.get("error") if isinstance(body, dict) else None
                raise RuntimeError(f"token endpoint answered {answer.status} ({why or 'no token'})")
        return str(body["access_token"]), float(body.get("expires_in") or 3600)


class VertexAdapter(TranslatingAdapter):
    kind = "vertex"
    provider = "Vertex AI"
    fields = FIELDS

    def __init__(self, cfg: EndpointConfig) -> None:
        super().__init__(cfg)
        opts = cfg.vertex
        assert opts is not None, "kind vertex needs a vertex: block (config validates it)"
        self.opts = opts
        base = f"{cfg.url.rstrip('/')}/v1/projects/{opts.project}/locations/{opts.location}"
        self.openai = opts.api == "openai"
        if self.openai:
            self.fields = frozenset()
            self.urls = (f"{base}/endpoints/{opts.openai_endpoint}/chat/completions",) * 2
        else:
            model_url = f"{base}/publishers/{opts.publisher}/models/{cfg.model}"
            self.urls = (
                f"{model_url}:generateContent",
                f"{model_url}:streamGenerateContent?alt=sse",
            )
        self.tokens: TokenRefresher | None = None

    def translate(self, obj: dict[str, Any]) -> dict[str, Any]:
        return request_body(read_chat(obj, "Vertex AI", FIELDS))

    def check(self, api: str, obj: dict[str, Any]) -> tuple[str, str] | None:
        if self.openai:
            return None if api == "chat" else (f"the {api} API is not supported here", "model")
        return super().check(api, obj)

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **self.extra_headers}
        token = self.tokens.valid() if self.tokens else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def build(
        self, api: str, obj: dict[str, Any], *, stream: bool, include_usage: bool
    ) -> UpstreamRequest:
        if self.openai:
            body = openai_compat.with_model(obj, self.cfg.model, stream, include_usage)
        else:
            body = orjson.dumps(self.translated(obj))
        return UpstreamRequest(self.urls[1 if stream else 0], self.headers(), body)

    def response(
        self, api: str, status: int, headers: Mapping[str, str], body: bytes, *, model: str
    ) -> tuple[bytes, Usage | None]:
        if self.openai:
            return openai_compat.response(self.what(), body)
        resp = self.parse_ok(body)
        if "error" in resp and "candidates" not in resp:
            raise ResponseGarbage(error(self.name, 500, body))
        return completion(resp, model)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        if self.openai and not (b'"status"' in body and b'"code"' in body):
            return openai_compat.error(self.what(), "Vertex AI", status, headers, body)
        return error(self.name, status, body)

    def stream(
        self, api: str, *, model: str, include_usage: bool
    ) -> VertexStream | openai_compat.OpenAIStream:
        if self.openai:
            return openai_compat.OpenAIStream(include_usage)
        return VertexStream(self.name, model, include_usage)

    async def start(self, session: aiohttp.ClientSession) -> None:
        import asyncio

        account = await asyncio.to_thread(ServiceAccount, self.opts.credentials_file)
        what = f"endpoint {self.name} (Vertex AI, service account {account.email})"
        self.tokens = TokenRefresher(what, lambda: account.fetch(session))
        await self.tokens.start()

    async def close(self) -> None:
        if self.tokens is not None:
            await self.tokens.close()
