"""What every protocol front of the emulator shares (pure, except the aiohttp response types).

A front turns one provider's HTTP request into a `Job` for the engine (checking auth, paths,
model and body as that provider does) and renders the engine's tokens back in the
provider's format: whole responses, streams (`Renderer`), and errors (`error`). The engine,
its timing, metrics and fault schedule are the same for every front.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from skyfleet.emulator.api import ApiError, GenRequest
from skyfleet.emulator.tokens import CHARS_PER_TOKEN, WordStream

Finish = str  # "stop" | "length" | "tool"


@dataclass(frozen=True)
class ToolPlan:
    """The tool call the emulator answers with: arguments built from the tool's schema,
    streamed in pieces of about one token each."""

    call_id: str
    name: str
    arguments: dict[str, Any]
    pieces: tuple[str, ...]

    @property
    def json(self) -> str:
        return "".join(self.pieces)


def sample_value(schema: Any, depth: int = 0) -> Any:
    """A value that satisfies a simple JSON schema (first enum value, required keys…)."""
    if not isinstance(schema, dict) or depth > 6:
        return None
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    if t == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        keys = schema.get("required") or list(props)
        return {k: sample_value(props.get(k, {}), depth + 1) for k in keys}
    if t == "array":
        return [sample_value(schema.get("items", {}), depth + 1)]
    return {"string": "sample", "integer": 1, "number": 1.5, "boolean": True}.get(str(t))


def plan_tool(name: str, schema: Any, call_id: str) -> ToolPlan:
    args = sample_value(schema)
    if not isinstance(args, dict):
        args = {}
    text = orjson.dumps(args).decode()
    pieces = tuple(text[i : i + CHARS_PER_TOKEN] for i in range(0, len(text), CHARS_PER_TOKEN))
    return ToolPlan(call_id, name, args, pieces or ("{}",))


@dataclass
class Job:
    """One generation request, read by a front."""

    req: GenRequest
    tool: ToolPlan | None = None
    exact: bool = False  # max_tokens is the output length (vLLM ignore_eos), not a cap
    info: dict[str, Any] = field(default_factory=dict)  # front-specific (model id, n…)

    def output_tokens(self, drawn: int) -> tuple[int, Finish]:
        """(tokens to generate, finish) given the seeded draw for a text answer."""
        mt = self.req.max_tokens
        if self.tool is not None:
            n = len(self.tool.pieces)
            return (n, "tool") if mt is None or mt >= n else (mt, "length")
        if mt is not None and (self.exact or drawn >= mt):
            return mt, "length"
        return drawn, "stop"


class Renderer:
    """Turns the engine's tokens into one response in a provider's format."""

    content_type = "text/event-stream"

    def __init__(self, job: Job, words: WordStream, model: str) -> None:
        self.job = job
        self.words = words
        self.model = model

    def piece(self, i: int) -> str:
        """Token i's text (a word, or a piece of the tool call's arguments)."""
        t = self.job.tool
        return t.pieces[i] if t is not None else self.words.token(i)

    def text(self, n: int) -> str:
        t = self.job.tool
        return "".join(t.pieces[:n]) if t is not None else self.words.text(0, n)

    def head(self) -> bytes:
        """Stream bytes sent before the first token."""
        return b""

    def tokens(self, start: int, n: int) -> bytes:
        """Stream bytes for tokens start … start+n-1."""
        raise NotImplementedError

    def tail(self, sent: int, finish: Finish) -> bytes:
        """Stream bytes after the last token (finish, usage, end event)."""
        raise NotImplementedError

    def whole(self, n: int, finish: Finish) -> web.Response:
        """The non-streamed response."""
        raise NotImplementedError

    def filtered(self, stream: bool) -> tuple[int, bytes, str]:
        """(status, body, content type) when the content filter refuses the prompt."""
        raise NotImplementedError


class Front:
    """One provider's API on the emulator."""

    api = ""

    def routes(self, handler: Any) -> list[web.RouteDef]:
        """The generation routes, all served by `handler(request)`; plus auth helpers."""
        raise NotImplementedError

    def extra_routes(self) -> list[web.RouteDef]:
        """Other routes the provider needs locally (token endpoints)."""
        return []

    async def parse(self, request: web.Request) -> Job:
        """Auth, path and body → Job; ApiError as the provider would refuse."""
        raise NotImplementedError

    def renderer(self, job: Job, words: WordStream, model: str) -> Renderer:
        raise NotImplementedError

    def error(self, e: ApiError) -> web.Response:
        """An error in the provider's format."""
        raise NotImplementedError

    def not_found(self, model: str) -> ApiError:
        """The provider's answer for a model it does not serve."""
        return ApiError(404, f"model {model!r} not found", "model", "not_found")

    def context_error(
        self, limit: int, prompt: int, max_tokens: int | None, chat: bool
    ) -> ApiError:
        """The provider's answer for a prompt (+ max_tokens) beyond the context window."""
        return ApiError(
            400,
            f"prompt is too long: {prompt + (max_tokens or 0)} tokens > {limit} maximum",
            None,
            "context_length_exceeded",
        )


def json_body(raw: bytes) -> dict[str, Any]:
    """Body → JSON object, or a 400 ApiError."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ApiError(400, f"request body is not valid JSON: {e}", None, "invalid_json") from e
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object", None, "invalid_json")
    return body
