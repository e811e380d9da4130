"""AWS Bedrock Runtime Converse / ConverseStream on the emulator.

POST /model/{modelId}/converse (JSON) and /model/{modelId}/converse-stream (AWS
event-stream). Every request must carry a SigV4 signature (service `bedrock`) that
botocore's own signer reproduces with the configured secret: a wrong key id, a wrong
secret, another region or a stale `X-Amz-Date` are refused as AWS refuses them (403
UnrecognizedClientException / InvalidSignatureException). Errors carry
`x-amzn-ErrorType` and a `{"message": …}` body, as the restJson1 protocol does.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from skyfleet.emulator.api import ApiError, GenRequest
from skyfleet.emulator.fronts.base import Finish, Front, Job, Renderer, json_body, plan_tool
from skyfleet.emulator.tokens import WordStream, chat_prompt_tokens
from skyfleet.providers import eventstream

STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}
EXCEPTIONS = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    503: "ServiceUnavailableException",
}
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<akid>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;-]+), ?"
    r"Signature=(?P<sig>[0-9a-f]{64})$"
)
MAX_SKEW_S = 300.0


def _texts(blocks: Any) -> list[str]:
    out = []
    for b in blocks if isinstance(blocks, list) else []:
        if not isinstance(b, dict):
            continue
        if "text" in b:
            out.append(str(b["text"]))
        elif isinstance(b.get("toolUse"), dict):
            out.append(orjson.dumps(b["toolUse"].get("input", {})).decode())
        elif isinstance(b.get("toolResult"), dict):
            for c in b["toolResult"].get("content") or []:
                if isinstance(c, dict):
                    out.append(str(c.get("text") or orjson.dumps(c.get("json", "")).decode()))
    return out


class BedrockRenderer(Renderer):
    content_type = "application/vnd.amazon.eventstream"

    def __init__(self, job: Job, words: WordStream, model: str) -> None:
        super().__init__(job, words, model)
        self.t0 = time.monotonic()

    def _usage(self, n: int) -> dict[str, int]:
        p = self.job.req.prompt_tokens
        return {
            "inputTokens": p,
            "outputTokens": n,
            "totalTokens": p + n,
            "cacheReadInputTokens": 0,
            "cacheWriteInputTokens": 0,
        }

    def _ms(self) -> int:
        return int((time.monotonic() - self.t0) * 1000)

    def head(self) -> bytes:
        out = eventstream.event("messageStart", b'{"role":"assistant"}')
        t = self.job.tool
        if t is not None:
            start = {
                "contentBlockIndex": 0,
                "start": {"toolUse": {"toolUseId": t.call_id, "name": t.name}},
            }
            out += eventstream.event("contentBlockStart", orjson.dumps(start))
        return out

    def tokens(self, start: int, n: int) -> bytes:
        tool = self.job.tool is not None
        out = []
        for i in range(start, start + n):
            d = {"toolUse": {"input": self.piece(i)}} if tool else {"text": self.piece(i)}
            out.append(
                eventstream.event(
                    "contentBlockDelta", orjson.dumps({"contentBlockIndex": 0, "delta": d})
                )
            )
        return b"".join(out)

    def tail(self, sent: int, finish: Finish, stop: str | None = None) -> bytes:
        meta = {"usage": self._usage(sent), "metrics": {"latencyMs": self._ms()}}
        return (
            eventstream.event("contentBlockStop", b'{"contentBlockIndex":0}')
            + eventstream.event("messageStop", orjson.dumps({"stopReason": stop or STOP[finish]}))
            + eventstream.event("metadata", orjson.dumps(meta))
        )

    def _body(self, n: int, stop: str, content: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop,
            "usage": self._usage(n),
            "metrics": {"latencyMs": self._ms()},
        }

    def whole(self, n: int, finish: Finish) -> web.Response:
        t = self.job.tool
        block: dict[str, Any] = {"text": self.text(n)}
        if t is not None:
            block = {"toolUse": {"toolUseId": t.call_id, "name": t.name, "input": t.arguments}}
        return web.json_response(self._body(n, STOP[finish], [block]))

    def filtered(self, stream: bool) -> tuple[int, bytes, str]:
        msg = "Sorry, the model cannot answer this question (guardrail)."
        if not stream:
            body = self._body(0, "guardrail_intervened", [{"text": msg}])
            return 200, orjson.dumps(body), "application/json"
        delta = {"contentBlockIndex": 0, "delta": {"text": msg}}
        out = (
            eventstream.event("messageStart", b'{"role":"assistant"}')
            + eventstream.event("contentBlockDelta", orjson.dumps(delta))
            + self.tail(0, "stop", "guardrail_intervened")
        )
        return 200, out, self.content_type


class BedrockFront(Front):
    api = "bedrock"

    def __init__(self, region: str, credentials: tuple[str, str] | None) -> None:
        self.region = region
        self.credentials = credentials  # (access key id, secret); None: any signature

    def routes(self, handler: Any) -> list[web.RouteDef]:
        return [
            web.post("/model/{modelId}/converse", handler),
            web.post("/model/{modelId}/converse-stream", handler),
        ]

    def _verify(self, request: web.Request, body: bytes) -> None:
        """SigV4 check with botocore's signer (canonical request → string to sign → HMAC)."""
        auth = request.headers.get("Authorization")
        if not auth:
            raise ApiError(
                403, "Missing Authentication Token", None, "MissingAuthenticationTokenException"
            )
        m = _AUTH.match(auth)
        if m is None:
            raise ApiError(
                403,
                "Authorization header requires 'Credential', 'Signature' and "
                "'SignedHeaders' parameters.",
                None,
                "IncompleteSignatureException",
            )
        if self.credentials is None:
            return
        akid, secret = self.credentials
        if m["akid"] != akid:
            raise ApiError(
                403,
                "The security token included in the request is invalid.",
                None,
                "UnrecognizedClientException",
            )
        if m["region"] != self.region or m["service"] != "bedrock":
            raise ApiError(
                403,
                f"Credential should be scoped to a valid region and service "
                f"(expected {self.region}/bedrock).",
                None,
                "InvalidSignatureException",
            )
        amz_date = request.headers.get("X-Amz-Date", "")
        try:
            when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise ApiError(
                403, "X-Amz-Date is missing or malformed.", None, "IncompleteSignatureException"
            ) from None
        skew = abs((datetime.now(UTC) - when).total_seconds())
        if skew > MAX_SKEW_S or not amz_date.startswith(m["date"]):
            raise ApiError(
                403,
                f"Signature expired: {amz_date} is now earlier or later than "
                "the server time by more than 5 minutes.",
                None,
                "InvalidSignatureException",
            )
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        signed = m["signed"].split(";")
        headers = {h: request.headers.get(h, "") for h in signed}
        url = f"http://{request.headers.get('Host', '')}{request.raw_path}"
        req = AWSRequest(method=request.method, url=url, data=body, headers=headers)
        req.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(akid, secret), "bedrock", self.region)
        canonical = signer.canonical_request(req)
        expected = signer.signature(signer.string_to_sign(req, canonical), req)
        if not secrets.compare_digest(expected, m["sig"]):
            raise ApiError(
                403,
                "The request signature we calculated does not match the "
                "signature you provided. Check your AWS Secret Access Key and "
                "signing method. Consult the service documentation for details.",
                None,
                "InvalidSignatureException",
            )

    async def parse(self, request: web.Request) -> Job:
        raw = await request.read()
        self._verify(request, raw)
        body = json_body(raw)
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise ApiError(
                400,
                "1 validation error detected: Value null at 'messages' failed "
                "to satisfy constraint: Member must not be null",
                None,
                "ValidationException",
            )
        texts = [str(s.get("text", "")) for s in body.get("system") or [] if isinstance(s, dict)]
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
                raise ApiError(
                    400,
                    f"messages.{i}.role: must be user or assistant",
                    None,
                    "ValidationException",
                )
            texts.extend(_texts(m.get("content")))
        inf = body.get("inferenceConfig") or {}
        mt = inf.get("maxTokens")
        if mt is not None and (isinstance(mt, bool) or not isinstance(mt, int) or mt < 1):
            raise ApiError(
                400, "inferenceConfig.maxTokens must be ≥ 1", None, "ValidationException"
            )
        tcfg = body.get("toolConfig") or {}
        tools = [
            t["toolSpec"]
            for t in tcfg.get("tools") or []
            if isinstance(t, dict) and isinstance(t.get("toolSpec"), dict)
        ]
        texts.extend(orjson.dumps(t).decode() for t in tools)
        stream = request.path.endswith("/converse-stream")
        model = request.match_info["modelId"]
        req = GenRequest(
            True, model, "\n".join(texts), chat_prompt_tokens(texts), mt, stream, True, None
        )
        job = Job(req)
        choice = tcfg.get("toolChoice") or {}
        if tools and ("any" in choice or "tool" in choice):
            name = (choice.get("tool") or {}).get("name") or tools[0].get("name")
            spec = next((t for t in tools if t.get("name") == name), None)
            if spec is None:
                raise ApiError(
                    400,
                    f"toolChoice names {name!r}, which is not in tools",
                    None,
                    "ValidationException",
                )
            schema = (spec.get("inputSchema") or {}).get("json")
            job.tool = plan_tool(str(name), schema, "tooluse_" + uuid.uuid4().hex[:22])
        return job

    def not_found(self, model: str) -> ApiError:
        return ApiError(
            400, "The provided model identifier is invalid.", None, "ValidationException"
        )

    def context_error(
        self, limit: int, prompt: int, max_tokens: int | None, chat: bool
    ) -> ApiError:
        return ApiError(
            400,
            f"Input is too long for requested model ({prompt} tokens, limit {limit}).",
            None,
            "ValidationException",
        )

    def renderer(self, job: Job, words: WordStream, model: str) -> Renderer:
        return BedrockRenderer(job, words, model)

    def error(self, e: ApiError) -> web.Response:
        name = e.code if e.code and e.code.endswith("Exception") else None
        status = e.status
        if name is None:
            name = EXCEPTIONS.get(status, "InternalServerException")
            if name == "InternalServerException":
                status = 500
        headers = {
            "x-amzn-ErrorType": f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            "x-amzn-RequestId": str(uuid.uuid4()),
        }
        return web.json_response({"message": e.message}, status=status, headers=headers)
