"""Google Vertex AI on the emulator: Gemini generateContent / streamGenerateContent and the
OpenAI-compatible chat endpoint, behind OAuth2 bearer tokens issued by a local token
endpoint.

- POST /{v1|v1beta1}/projects/{project}/locations/{location}/publishers/{publisher}/models/
  {model}:generateContent | :streamGenerateContent (`?alt=sse`: SSE; otherwise a JSON array
  streamed element by element, as Google's REST streams are)
- POST /{version}/projects/{project}/locations/{location}/endpoints/{endpoint}/chat/completions
  (OpenAI format)
- POST /token: the service-account JWT-bearer grant (RFC 7523). The JWT must be RS256-signed
  by the key of the configured service-account file, for its client_email, with the
  cloud-platform scope and this endpoint as audience; it is answered with an access token
  valid for `--token-ttl` seconds, the only bearer tokens the generation routes accept.

Errors are google.rpc.Status JSON: `{"error": {"code", "message", "status"}}`.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from skyfleet.emulator.api import ApiError, GenRequest, parse_generation
from skyfleet.emulator.fronts.base import Finish, Front, Job, Renderer, json_body, plan_tool
from skyfleet.emulator.fronts.openai import OpenAIRenderer, tool_plan
from skyfleet.emulator.tokens import WordStream, chat_prompt_tokens

FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool": "STOP"}
STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
SCOPE = "https://www.googleapis.com/auth/cloud-platform"


def _g(d: Any, camel: str) -> Any:
    """Field `camel` of a request object; proto3 JSON also accepts the snake_case name."""
    if not isinstance(d, dict):
        return None
    if camel in d:
        return d[camel]
    return d.get(re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel))


def _texts(contents: Any) -> list[str]:
    out = []
    for c in contents if isinstance(contents, list) else []:
        for p in (c.get("parts") if isinstance(c, dict) else None) or []:
            if not isinstance(p, dict):
                continue
            if "text" in p:
                out.append(str(p["text"]))
            for k in ("functionCall", "functionResponse"):
                if _g(p, k) is not None:
                    out.append(orjson.dumps(_g(p, k)).decode())
    return out


class GeminiRenderer(Renderer):
    def __init__(self, job: Job, words: WordStream, model: str) -> None:
        super().__init__(job, words, model)
        self.rid = uuid.uuid4().hex[:22]
        self.created = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        self.sse = bool(job.info.get("sse", True))
        self.content_type = "text/event-stream" if self.sse else "application/json"
        self._first = True

    def _usage(self, n: int | None) -> dict[str, Any]:
        p = self.job.req.prompt_tokens
        u: dict[str, Any] = {
            "promptTokenCount": p,
            "trafficType": "ON_DEMAND",
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": p}],
        }
        if n is not None:
            u.update(
                {
                    "candidatesTokenCount": n,
                    "totalTokenCount": p + n,
                    "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": n}],
                }
            )
        return u

    def _response(
        self, parts: list[dict[str, Any]], finish: str | None, n: int | None
    ) -> dict[str, Any]:
        cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
        if finish is not None:
            cand["finishReason"] = finish
        return {
            "candidates": [cand],
            "usageMetadata": self._usage(n),
            "modelVersion": self.model,
            "createTime": self.created,
            "responseId": self.rid,
        }

    def _chunk(self, obj: dict[str, Any]) -> bytes:
        data = orjson.dumps(obj)
        if self.sse:
            return b"data: " + data + b"\r\n\r\n"
        sep = b"[" if self._first else b",\r\n"
        self._first = False
        return sep + data

    def tokens(self, start: int, n: int) -> bytes:
        if self.job.tool is not None:
            return b""  # Gemini sends a function call whole, in the last chunk
        return b"".join(
            self._chunk(self._response([{"text": self.piece(i)}], None, None))
            for i in range(start, start + n)
        )

    def _final_parts(self, n: int) -> list[dict[str, Any]]:
        t = self.job.tool
        if t is not None:
            return [{"functionCall": {"name": t.name, "args": t.arguments}}]
        return [{"text": ""}]

    def tail(self, sent: int, finish: Finish) -> bytes:
        out = self._chunk(self._response(self._final_parts(sent), FINISH[finish], sent))
        return out if self.sse else out + b"]"

    def whole(self, n: int, finish: Finish) -> web.Response:
        parts = [{"text": self.text(n)}] if self.job.tool is None else self._final_parts(n)
        return web.json_response(self._response(parts, FINISH[finish], n))

    def filtered(self, stream: bool) -> tuple[int, bytes, str]:
        body = {
            "promptFeedback": {
                "blockReason": "SAFETY",
                "blockReasonMessage": "The prompt was blocked (safety).",
            },
            "usageMetadata": self._usage(None),
            "modelVersion": self.model,
            "createTime": self.created,
            "responseId": self.rid,
        }
        if not stream:
            return 200, orjson.dumps(body), "application/json"
        out = self._chunk(body)
        return 200, out if self.sse else out + b"]", self.content_type


class VertexFront(Front):
    api = "vertex"

    def __init__(
        self, project: str, location: str, service_account: str | None, token_ttl_s: float
    ) -> None:
        self.project = project
        self.location = location
        self.token_ttl_s = token_ttl_s
        self.tokens: dict[str, float] = {}  # issued access token → expiry (monotonic)
        self.email: str | None = None
        self.public_key: bytes | None = None
        if service_account is not None:
            from cryptography.hazmat.primitives import serialization

            with open(service_account) as f:
                info = json.load(f)
            self.email = str(info["client_email"])
            key = serialization.load_pem_private_key(info["private_key"].encode(), None)
            self.public_key = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )

    def routes(self, handler: Any) -> list[web.RouteDef]:
        base = "/{version}/projects/{project}/locations/{location}"
        return [
            web.post(base + "/publishers/{publisher}/models/{model_action}", handler),
            web.post(base + "/endpoints/{endpoint}/chat/completions", handler),
        ]

    def extra_routes(self) -> list[web.RouteDef]:
        return [web.post("/token", self._token)]

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return web.json_response(
                {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"},
                status=400,
            )
        why = self._check_assertion(str(form.get("assertion", "")), str(request.url))
        if why is not None:
            return web.json_response(
                {"error": "invalid_grant", "error_description": why}, status=400
            )
        tok = "ya29.emu-" + secrets.token_urlsafe(32)
        self.tokens[tok] = time.monotonic() + self.token_ttl_s
        return web.json_response(
            {"access_token": tok, "expires_in": int(self.token_ttl_s), "token_type": "Bearer"}
        )

    def _check_assertion(self, assertion: str, url: str) -> str | None:
        """Why the JWT is refused (None: accepted). Without a key file: any well-formed JWT."""
        from google.auth import exceptions, jwt

        try:
            if self.public_key is None:
                claims = jwt.decode(assertion, verify=False)  # type: ignore[no-untyped-call]
            else:
                claims = jwt.decode(assertion, certs=self.public_key.decode(), verify=True)  # type: ignore[no-untyped-call]
        except (ValueError, exceptions.GoogleAuthError) as e:
            return f"Invalid JWT Signature. ({e})"
        if self.email is not None and claims.get("iss") != self.email:
            return "Invalid JWT: iss is not the service account's client_email."
        if SCOPE not in str(claims.get("scope", "")).split():
            return f"Invalid JWT: scope must include {SCOPE}."
        if not str(claims.get("aud", "")).endswith("/token"):
            return "Invalid JWT: aud must be the token endpoint."
        return None

    def _authorised(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return False
        if self.public_key is None:
            return True
        exp = self.tokens.get(auth[7:])
        return exp is not None and time.monotonic() < exp

    async def parse(self, request: web.Request) -> Job:
        if not self._authorised(request):
            raise ApiError(
                401,
                "Request had invalid authentication credentials. Expected OAuth "
                "2 access token, login cookie or other valid authentication "
                "credential. See https://developers.google.com/identity/sign-in/web/"
                "devconsole-project.",
            )
        mi = request.match_info
        if mi["version"] not in ("v1", "v1beta1"):
            raise ApiError(404, f"API version {mi['version']} not found")
        if mi["project"] != self.project or mi["location"] != self.location:
            raise ApiError(
                403,
                f"Permission denied on resource project {mi['project']} in "
                f"location {mi['location']} (or it may not exist).",
            )
        body = json_body(await request.read())
        if "endpoint" in mi:  # the OpenAI-compatible endpoint
            req = parse_generation(body, True)
            return Job(req, tool_plan(body), info={"openai": True})
        model, _, action = mi["model_action"].partition(":")
        if action not in ("generateContent", "streamGenerateContent"):
            raise ApiError(404, f"method {action!r} not found")
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise ApiError(
                400,
                "Unable to submit request because it must include at least one "
                "parts field, which describes the prompt input.",
            )
        texts = _texts([body.get("systemInstruction")]) if body.get("systemInstruction") else []
        texts += _texts(contents)
        decls = [
            d
            for t in body.get("tools") or []
            if isinstance(t, dict)
            for d in t.get("functionDeclarations") or []
            if isinstance(d, dict)
        ]
        texts.extend(orjson.dumps(d).decode() for d in decls)
        gc = _g(body, "generationConfig") or {}
        mt = _g(gc, "maxOutputTokens")
        if mt is not None and (isinstance(mt, bool) or not isinstance(mt, int) or mt < 1):
            raise ApiError(400, "generationConfig.maxOutputTokens must be a positive integer")
        stream = action == "streamGenerateContent"
        req = GenRequest(
            True,
            model,
            "\n".join(texts),
            chat_prompt_tokens(texts),
            mt,
            stream,
            True,
            gc.get("seed"),
        )
        job = Job(req, info={"sse": request.query.get("alt") == "sse"})
        fcc = _g(_g(body, "toolConfig"), "functionCallingConfig") or {}
        if decls and fcc.get("mode") == "ANY":
            allowed = _g(fcc, "allowedFunctionNames") or [decls[0].get("name")]
            d = next((x for x in decls if x.get("name") == allowed[0]), decls[0])
            schema = _g(d, "parametersJsonSchema") or d.get("parameters")
            job.tool = plan_tool(str(d.get("name")), schema, "")
        return job

    def not_found(self, model: str) -> ApiError:
        return ApiError(
            404,
            f"Publisher Model `projects/{self.project}/locations/"
            f"{self.location}/publishers/google/models/{model}` was not found or "
            "your project does not have access to it.",
        )

    def context_error(
        self, limit: int, prompt: int, max_tokens: int | None, chat: bool
    ) -> ApiError:
        return ApiError(
            400,
            f"The input token count ({prompt}) exceeds the maximum number of "
            f"tokens allowed ({limit}).",
        )

    def renderer(self, job: Job, words: WordStream, model: str) -> Renderer:
        if job.info.get("openai"):
            return OpenAIRenderer(job, words, model, "chatcmpl-" + uuid.uuid4().hex[:24])
        return GeminiRenderer(job, words, model)

    def error(self, e: ApiError) -> web.Response:
        status = e.status if e.status in STATUSES else 500
        body = {"error": {"code": status, "message": e.message, "status": STATUSES[status]}}
        return web.json_response(body, status=status)
