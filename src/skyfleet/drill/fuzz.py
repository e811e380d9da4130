"""Fuzz a running gateway's OpenAI API with schemathesis, driven by OpenAI's published spec
(`openai-openapi.yaml`, pruned by `drill.openapi`), and judge every answer:

- no 5xx from the gateway's own code: a 502/503/504 must name an upstream cause
  (`x-skyfleet-error-source: upstream`, or the gateway's `no_healthy_endpoint`);
- every error body is the spec's `ErrorResponse` (OpenAI's error shape);
- a 200 that claims the spec's media type follows its schema (JSON bodies; each event of a
  stream against the spec's event-stream schema where it gives one, chat's — completions'
  events must be JSON objects; `nullable: true` read as "or null").

Cases come from the spec in both of schemathesis's modes (positive: bodies the spec allows;
negative: bodies it forbids); three in four name the served model (so they reach the
upstream), one in ten carries no key or a wrong one. Needs the `fuzz` extra
(`pip install 'skyfleet[fuzz]'`: schemathesis, hypothesis).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from skyfleet.drill.openapi import OPERATIONS, load_spec

if TYPE_CHECKING:
    from collections.abc import Mapping

UPSTREAM_CAUSES = frozenset({"no_healthy_endpoint"})  # the gateway's own, caused upstream
MAX_TOKENS = 32  # generated lengths above this are lowered (the emulator would generate them)


@dataclass
class FuzzStats:
    """What a fuzz run sent and what it found."""

    cases: Counter[str] = field(default_factory=Counter)  # by operation
    statuses: Counter[str] = field(default_factory=Counter)  # "POST /models 200"
    server_errors: list[str] = field(default_factory=list)  # 5xx from the gateway's own code
    schema_violations: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.cases.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "cases": dict(self.cases),
            "total_cases": self.total,
            "statuses": dict(sorted(self.statuses.items())),
            "server_errors": len(self.server_errors),
            "schema_violations": len(self.schema_violations),
            "examples": (self.server_errors + self.schema_violations)[:20],
        }


def nullable(node: Any) -> Any:
    """The schema with OpenAPI 3.0's `nullable: true` as JSON Schema's "or null": OpenAI's
    spec says `openapi: 3.1.0` (where the keyword means nothing) but still uses it."""
    if isinstance(node, list):
        return [nullable(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: nullable(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is not True:
        return out
    if isinstance(out.get("type"), str) and "$ref" not in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        return out
    return {"anyOf": [out, {"type": "null"}]}


class Conformance:
    """The spec's response schemas as validators, and the judgement of one answer."""

    def __init__(self, spec: dict[str, Any] | None = None) -> None:
        import jsonschema_rs

        self.spec = spec or load_spec()
        components = nullable(self.spec["components"])

        def validator(ref: str) -> Any:
            return jsonschema_rs.validator_for({"$ref": ref, "components": components})

        self.error = validator("#/components/schemas/ErrorResponse")
        self.json: dict[str, Any] = {}
        self.stream: dict[str, Any] = {}  # where the spec gives its event-stream schema
        for path, method in OPERATIONS:
            content = self.spec["paths"][path][method]["responses"]["200"]["content"]
            self.json[path] = validator(content["application/json"]["schema"]["$ref"])
            if "text/event-stream" in content:
                self.stream[path] = validator(content["text/event-stream"]["schema"]["$ref"])

    def problems(
        self,
        path: str,
        request: Any,
        status: int,
        headers: Mapping[str, str],
        content: bytes,
        cut_short: bool = False,
        schemas: bool = True,
    ) -> list[str]:
        """What is wrong with one answer (empty: nothing). `cut_short`: the client stopped
        reading the stream (its events so far are judged, not its end); `schemas=False`:
        judge only 5xx and error bodies (an upstream that does not follow the spec)."""
        out: list[str] = []
        ctype = headers.get("content-type", "")
        if status >= 500:
            source = headers.get("x-skyfleet-error-source", "")
            code = _error_code(content)
            upstream = source == "upstream" or code in UPSTREAM_CAUSES
            if status not in (502, 503, 504) or not upstream:
                out.append(f"5xx from the gateway itself: {status} {content[:200]!r}")
        if status >= 400:
            body = _json(content)
            if body is None or not self.error.is_valid(body):
                out.append(f"error not in OpenAI's shape: {status} {content[:200]!r}")
        elif not schemas:
            pass
        elif status == 200 and ctype.startswith("text/event-stream"):
            out += self._stream(path, content, cut_short)
        elif status == 200:
            body = _json(content)
            if path == "/embeddings" and isinstance(request, dict):
                body = _decoded_embeddings(body, request)
            errors = [] if body is None else list(self.json[path].iter_errors(body))
            if body is None or errors:
                why = str(errors[0]).split("\n")[0] if errors else "not JSON"
                out.append(f"200 violates the spec's {path} schema: {why}: {content[:200]!r}")
        return out

    def _stream(self, path: str, content: bytes, cut_short: bool) -> list[str]:
        validator = self.stream.get(path)
        events = [e for e in content.replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]
        if not cut_short:
            if not events or events[-1].strip() != b"data: [DONE]":
                return [f"stream does not end with data: [DONE]: {content[-200:]!r}"]
            events.pop()
        for event in events:
            data = b"".join(
                line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")
            )
            body = _json(data)
            if not isinstance(body, dict):
                return [f"stream event not a JSON object: {data[:200]!r}"]
            if validator is not None and not validator.is_valid(body):
                return [f"stream event violates the spec's {path} chunk schema: {data[:200]!r}"]
        return []


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None


def _error_code(content: bytes) -> str | None:
    body = _json(content)
    err = body.get("error") if isinstance(body, dict) else None
    code = err.get("code") if isinstance(err, dict) else None
    return code if isinstance(code, str) else None


def _decoded_embeddings(body: Any, request: dict[str, Any]) -> Any:
    """A base64 answer with its vectors as the spec's float lists (the spec lists only
    those; OpenAI's API and SDK send base64 strings when asked)."""
    if request.get("encoding_format") != "base64" or not isinstance(body, dict):
        return body
    data = body.get("data")
    if isinstance(data, list):
        for item in data:
            if isinstance(item, dict) and isinstance(item.get("embedding"), str):
                item["embedding"] = [0.0]
    return body


def adjust(body: Any, served_model: str, serve: bool) -> Any:
    """A generated body aimed at the served model (when `serve`) with short generations."""
    if not isinstance(body, dict):
        return body
    if serve:
        body["model"] = served_model
    for key in ("max_tokens", "max_completion_tokens"):
        v = body.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > MAX_TOKENS:
            body[key] = MAX_TOKENS
    return body


def fuzz(
    base_url: str,
    api_key: str,
    *,
    examples: int,
    served_model: str = "chat",
    seed: int | None = 0,
    stats: FuzzStats | None = None,
) -> FuzzStats:
    """`examples` cases per operation and generation mode against `base_url` (…/v1)."""
    import requests
    import schemathesis
    from schemathesis import GenerationMode

    stats = stats or FuzzStats()
    spec = load_spec()
    schema = schemathesis.openapi.from_dict(spec)
    run = _Run(base_url, api_key, served_model, Conformance(spec), requests.Session(), stats)
    for path, method in OPERATIONS:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run.operation(schema[path][method.upper()], path, mode, examples, seed)
    return stats


@dataclass
class _Run:
    base_url: str
    api_key: str
    served_model: str
    judge: Conformance
    session: Any
    stats: FuzzStats

    def operation(self, op: Any, path: str, mode: Any, examples: int, seed: int | None) -> None:
        """`examples` hypothesis cases of one operation in one generation mode."""
        from hypothesis import HealthCheck, given, settings
        from hypothesis import seed as hseed
        from hypothesis import strategies as st

        keys = [{"Authorization": f"Bearer {self.api_key}"}] * 18
        keys += [{}, {"Authorization": "Bearer sk-not-a-key"}]

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            derandomize=seed is not None,
        )
        @given(
            case=op.as_strategy(generation_mode=mode),
            serve=st.integers(0, 3),
            key=st.sampled_from(keys),
        )
        def one(case: Any, serve: int, key: dict[str, str]) -> None:
            self.case(case, path, mode.value, serve > 0, key)

        (hseed(seed)(one) if seed is not None else one)()

    def case(self, case: Any, path: str, mode: str, serve: bool, key: dict[str, str]) -> None:
        """Send one case and judge the answer."""
        case.body = adjust(case.body, self.served_model, serve)
        r = case.call(base_url=self.base_url, headers=key, session=self.session, timeout=30)
        label = f"{case.method} {path}"
        self.stats.cases[label] += 1
        self.stats.statuses[f"{label} {r.status_code}"] += 1
        headers = {k.lower(): v[0] for k, v in r.headers.items() if v}
        body = json.dumps(case.body, default=str)[:300]
        cut = r.stream_cut_short
        for problem in self.judge.problems(path, case.body, r.status_code, headers, r.content, cut):
            found = f"{problem} ← {label} ({mode}) body={body}"
            if problem.startswith("5xx"):
                self.stats.server_errors.append(found)
            else:
                self.stats.schema_violations.append(found)
