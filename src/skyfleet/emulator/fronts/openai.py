"""OpenAI chat/completions (the emulator's native API) and Azure OpenAI on top of it.

Azure paths: POST /openai/deployments/{deployment}/chat/completions?api-version=… (and
/completions), or the v1 base POST /openai/v1/chat/completions (deployment in `model`).
Auth: the `api-key` header, or `Authorization: Bearer` with an Entra ID token issued by this
server's token endpoint (POST /{tenant}/oauth2/v2.0/token, client-credentials grant); the
v1 base also takes the API key as a bearer token, as Azure does.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from typing import Any

from aiohttp import web

from skyfleet.emulator.api import ApiError, context_error, parse_generation, parse_json, usage
from skyfleet.emulator.fronts.base import (
    Finish,
    Front,
    Job,
    Renderer,
    ToolPlan,
    json_body,
    plan_tool,
)
from skyfleet.emulator.tokens import WordStream

FINISH = {"stop": "stop", "length": "length", "tool": "tool_calls"}


def tool_plan(body: dict[str, Any]) -> ToolPlan | None:
    """The forced tool call of a chat request (tool_choice required or a named function)."""
    fns = [t.get("function") for t in body.get("tools") or [] if isinstance(t, dict)]
    tools: list[dict[str, Any]] = [
        t for t in fns if isinstance(t, dict) and isinstance(t.get("name"), str)
    ]
    tc = body.get("tool_choice")
    if not tools or tc in (None, "auto", "none"):
        return None
    name = tc.get("function", {}).get("name") if isinstance(tc, dict) else tools[0]["name"]
    fn = next((t for t in tools if t["name"] == name), tools[0])
    return plan_tool(fn["name"], fn.get("parameters"), "call_" + uuid.uuid4().hex[:24])


class OpenAIRenderer(Renderer):
    def __init__(self, job: Job, words: WordStream, model: str, rid: str) -> None:
        super().__init__(job, words, model)
        self.rid = rid
        self.created = int(time.time())
        obj = "chat.completion.chunk" if job.req.chat else "text_completion"
        self.obj = obj
        self._head = (
            f'data: {{"id":"{rid}","object":"{obj}","created":{self.created},'
            f'"model":{json.dumps(model)},"choices":[{{"index":0,'
        )

    def tokens(self, start: int, n: int) -> bytes:
        head, chat, t = self._head, self.job.req.chat, self.job.tool
        parts = []
        for i in range(start, start + n):
            if t is not None:
                args = json.dumps(t.pieces[i])
                call = f'"index":0,"function":{{"arguments":{args}}}'
                if i == 0:
                    call = (
                        f'"index":0,"id":"{t.call_id}","type":"function",'
                        f'"function":{{"name":{json.dumps(t.name)},"arguments":{args}}}'
                    )
                    d = f'"role":"assistant","content":null,"tool_calls":[{{{call}}}]'
                else:
                    d = f'"tool_calls":[{{{call}}}]'
                parts.append(f'{head}"delta":{{{d}}},"logprobs":null,')
            elif chat:
                w = json.dumps(self.words.token(i))
                role = '"role":"assistant",' if i == 0 else ""
                parts.append(f'{head}"delta":{{{role}"content":{w}}},"logprobs":null,')
            else:
                parts.append(f'{head}"text":{json.dumps(self.words.token(i))},"logprobs":null,')
            parts.append('"finish_reason":null}]}\n\n')
        return "".join(parts).encode()

    def tail(self, sent: int, finish: Finish) -> bytes:
        req = self.job.req
        delta = '"delta":{},' if req.chat else '"text":"",'
        fin = FINISH[finish]
        out = [f'{self._head}{delta}"logprobs":null,"finish_reason":"{fin}"}}]}}\n\n']
        if req.include_usage:
            u = json.dumps(usage(req.prompt_tokens, sent))
            out.append(
                f'data: {{"id":"{self.rid}","object":"{self.obj}","created":{self.created},'
                f'"model":{json.dumps(self.model)},"choices":[],"usage":{u}}}\n\n'
            )
        out.append("data: [DONE]\n\n")
        return "".join(out).encode()

    def _choice(self, n: int, finish: Finish) -> dict[str, Any]:
        fin = FINISH[finish]
        if not self.job.req.chat:
            return {"index": 0, "text": self.text(n), "logprobs": None, "finish_reason": fin}
        msg: dict[str, Any] = {"role": "assistant", "content": self.text(n), "refusal": None}
        t = self.job.tool
        if t is not None:
            fn = {"name": t.name, "arguments": self.text(n)}
            msg = {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [{"id": t.call_id, "type": "function", "function": fn}],
            }
        return {"index": 0, "message": msg, "logprobs": None, "finish_reason": fin}

    def whole(self, n: int, finish: Finish) -> web.Response:
        return web.json_response(self.body(n, finish))

    def body(self, n: int, finish: Finish) -> dict[str, Any]:
        """The chat.completion / text_completion object."""
        return {
            "id": self.rid,
            "object": "chat.completion" if self.job.req.chat else "text_completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [self._choice(n, finish)],
            "usage": usage(self.job.req.prompt_tokens, n),
        }

    def filtered(self, stream: bool) -> tuple[int, bytes, str]:
        if stream:
            return (
                200,
                self.tail(0, "stop").replace(b'"stop"', b'"content_filter"', 1),
                self.content_type,
            )
        body = self.body(0, "stop")
        body["choices"][0]["finish_reason"] = "content_filter"
        return 200, json.dumps(body).encode(), "application/json"


class OpenAIFront(Front):
    """vLLM-style OpenAI API: `max_tokens` is the exact output length (ignore_eos)."""

    api = "openai"

    def routes(self, handler: Any) -> list[web.RouteDef]:
        return [web.post("/v1/chat/completions", handler), web.post("/v1/completions", handler)]

    async def parse(self, request: web.Request) -> Job:
        body = parse_json(await request.read())  # the emulator's own messages, as before
        chat = request.path.endswith("/chat/completions")
        req = parse_generation(body, chat)
        return Job(req, tool_plan(body) if chat else None, exact=True)

    def context_error(
        self, limit: int, prompt: int, max_tokens: int | None, chat: bool
    ) -> ApiError:
        return context_error(limit, prompt, max_tokens, chat)

    def not_found(self, model: str) -> ApiError:
        return ApiError(
            404, f"The model `{model}` does not exist.", "model", "model_not_found", "NotFoundError"
        )

    def renderer(self, job: Job, words: WordStream, model: str) -> Renderer:
        return OpenAIRenderer(job, words, model, _rid(job))

    def error(self, e: ApiError) -> web.Response:
        return web.json_response(e.body(), status=e.status, headers=e.headers)


def _rid(job: Job) -> str:
    return ("chatcmpl-" if job.req.chat else "cmpl-") + uuid.uuid4().hex[:24]


FILTERS = {
    k: {"filtered": False, "severity": "safe"} for k in ("hate", "self_harm", "sexual", "violence")
}


class AzureRenderer(OpenAIRenderer):
    """Azure's chunks: a first `choices: []` chunk with prompt_filter_results."""

    def head(self) -> bytes:
        first = {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": FILTERS}],
        }
        return b"data: " + json.dumps(first).encode() + b"\n\n"

    def body(self, n: int, finish: Finish) -> dict[str, Any]:
        body = super().body(n, finish)
        body["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": FILTERS}]
        body["choices"][0]["content_filter_results"] = FILTERS
        return body

    def filtered(self, stream: bool) -> tuple[int, bytes, str]:
        filt = dict(FILTERS)
        filt["violence"] = {"filtered": True, "severity": "high"}
        err = {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's "
            "content management policy. Please modify your prompt and retry.",
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": filt,
            },
        }
        return 400, json.dumps({"error": err}).encode(), "application/json"


class AzureFront(OpenAIFront):
    """Azure OpenAI: deployment paths, api-version, api-key or Entra ID bearer tokens."""

    api = "azure_openai"

    def __init__(
        self,
        deployment: str,
        api_key: str | None,
        entra: tuple[str, str] | None,
        token_ttl_s: float,
    ) -> None:
        self.deployment = deployment
        self.api_key = api_key
        self.entra = entra  # (client_id, client_secret)
        self.token_ttl_s = token_ttl_s
        self.tokens: dict[str, float] = {}  # issued Entra token → expiry (monotonic)

    def routes(self, handler: Any) -> list[web.RouteDef]:
        return [
            web.post("/openai/deployments/{deployment}/chat/completions", handler),
            web.post("/openai/deployments/{deployment}/completions", handler),
            web.post("/openai/v1/chat/completions", handler),
            web.post("/openai/v1/completions", handler),
        ]

    def extra_routes(self) -> list[web.RouteDef]:
        return [web.post("/{tenant}/oauth2/v2.0/token", self._token)]

    async def _token(self, request: web.Request) -> web.Response:
        """Entra ID client-credentials grant (AADSTS error bodies on failure)."""
        form = await request.post()
        ok = (
            self.entra is not None
            and form.get("grant_type") == "client_credentials"
            and (form.get("client_id"), form.get("client_secret")) == self.entra
            and str(form.get("scope", "")).endswith("/.default")
        )
        if not ok:
            return web.json_response(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                    "error_codes": [7000215],
                },
                status=401,
            )
        tok = "eyJ0eXAiOiJKV1QiLCJlbnRyYSI6MX0." + secrets.token_urlsafe(24)
        self.tokens[tok] = time.monotonic() + self.token_ttl_s
        ttl = int(self.token_ttl_s)
        return web.json_response(
            {"token_type": "Bearer", "expires_in": ttl, "ext_expires_in": ttl, "access_token": tok}
        )

    def _authorised(self, request: web.Request, v1: bool) -> bool:
        key = request.headers.get("api-key")
        if key is not None:
            return self.api_key is not None and secrets.compare_digest(key, self.api_key)
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return False
        tok = auth[7:]
        if v1 and self.api_key is not None and secrets.compare_digest(tok, self.api_key):
            return True
        exp = self.tokens.get(tok)
        return exp is not None and time.monotonic() < exp

    async def parse(self, request: web.Request) -> Job:
        v1 = request.path.startswith("/openai/v1/")
        if not self._authorised(request, v1):
            raise ApiError(
                401,
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure "
                "to provide a valid key for an active subscription and use a correct regional "
                "API endpoint for your resource.",
                None,
                "401",
            )
        if not v1 and "api-version" not in request.query:
            raise ApiError(404, "Resource not found", None, "404")
        body = json_body(await request.read())
        chat = request.path.endswith("/chat/completions")
        if v1:
            name = body.get("model")
        else:
            name = request.match_info.get("deployment")
            body["model"] = name
        if name != self.deployment:
            raise ApiError(
                404,
                "The API deployment for this resource does not exist. If you created the "
                "deployment within the last 5 minutes, please wait a moment and try again.",
                None,
                "DeploymentNotFound",
            )
        req = parse_generation(body, chat)
        return Job(req, tool_plan(body) if chat else None, exact=bool(body.get("ignore_eos")))

    def renderer(self, job: Job, words: WordStream, model: str) -> Renderer:
        return AzureRenderer(job, words, model, _rid(job))

    def error(self, e: ApiError) -> web.Response:
        err: dict[str, Any] = {"code": e.code or str(e.status), "message": e.message}
        h = dict(e.headers)
        if e.status == 429:
            ra = h.get("Retry-After", "1")
            err = {
                "code": "429",
                "message": "Requests to the ChatCompletions_Create Operation "
                "under Azure OpenAI API version have exceeded token rate limit of your "
                f"current AIServices S0 pricing tier. Please retry after {ra} second.",
            }
            h["retry-after-ms"] = str(int(float(ra) * 1000))
        elif e.status == 400:
            err = {
                "message": e.message,
                "type": "invalid_request_error",
                "param": e.param,
                "code": e.code,
            }
        return web.json_response({"error": err}, status=e.status, headers=h)
