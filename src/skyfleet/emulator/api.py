"""OpenAI request validation and response objects (pure; no I/O).

Only the fields the emulator uses are checked strictly; other OpenAI fields are accepted
if their JSON type is right, and otherwise ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from skyfleet.emulator.tokens import chat_prompt_tokens, text_tokens


class ApiError(Exception):
    """An OpenAI-shaped error: status, message, type, param, code."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type_: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = (
            status,
            message,
            param,
            code,
            type_,
        )
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass(frozen=True)
class GenRequest:
    """A validated generation request."""

    chat: bool
    model: str
    prompt_text: str
    prompt_tokens: int
    max_tokens: int | None
    stream: bool
    include_usage: bool
    seed: int | None


def _bad(param: str, expect: str) -> ApiError:
    return ApiError(400, f"'{param}' must be {expect}", param, "invalid_type")


def _opt(body: dict[str, Any], key: str, types: tuple[type, ...], expect: str) -> Any:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
        raise _bad(key, expect)
    return v


_NUMBER = (int, float)
_TYPED_OPTIONAL: dict[str, tuple[tuple[type, ...], str]] = {
    "temperature": (_NUMBER, "a number"),
    "top_p": (_NUMBER, "a number"),
    "presence_penalty": (_NUMBER, "a number"),
    "frequency_penalty": (_NUMBER, "a number"),
    "user": ((str,), "a string"),
    "stop": ((str, list), "a string or a list of strings"),
}


def parse_json(raw: bytes) -> dict[str, Any]:
    """Body → JSON object, or a 400 naming the problem."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"request body is not valid JSON: {e}", None, "invalid_json") from e
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object", None, "invalid_json")
    return body


def _content_text(content: Any, i: int) -> str:
    param = f"messages[{i}].content"
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict):
                raise _bad(param, "a string or a list of content parts")
            text = part.get("text")
            if text is not None and not isinstance(text, str):
                raise _bad(f"{param}.text", "a string")
            parts.append(text or "")
        return "\n".join(parts)
    raise _bad(param, "a string or a list of content parts")


def parse_generation(body: dict[str, Any], chat: bool) -> GenRequest:
    """Validate a chat or completions body (types, n, max_tokens ≥ 1)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required and must be a string", "model", "invalid_type")
    for key, (types, expect) in _TYPED_OPTIONAL.items():
        _opt(body, key, types, expect)
    n = _opt(body, "n", (int,), "an integer")
    if n is not None and n != 1:
        raise ApiError(400, "only n=1 is supported", "n", "unsupported_value")
    max_key = "max_tokens"
    max_tokens = _opt(body, "max_tokens", (int,), "an integer")
    if chat and body.get("max_completion_tokens") is not None:
        max_key = "max_completion_tokens"
        max_tokens = _opt(body, max_key, (int,), "an integer")
    if max_tokens is not None and max_tokens < 1:
        raise ApiError(400, f"'{max_key}' must be at least 1", max_key, "invalid_value")
    stream = _opt(body, "stream", (bool,), "a boolean") or False
    so = _opt(body, "stream_options", (dict,), "an object")
    include_usage = False
    if so is not None:
        iu = so.get("include_usage")
        if iu is not None and not isinstance(iu, bool):
            raise _bad("stream_options.include_usage", "a boolean")
        include_usage = bool(iu)
    seed = _opt(body, "seed", (int,), "an integer")
    if chat:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise _bad("messages", "a non-empty list of messages")
        texts = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise _bad(f"messages[{i}]", "an object with a string 'role'")
            texts.append(_content_text(m.get("content"), i))
        prompt_text = "\n".join(texts)
        prompt_tokens = chat_prompt_tokens(texts)
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if isinstance(prompt, str):
            prompt_text, prompt_tokens = prompt, max(1, text_tokens(prompt))
        elif (
            isinstance(prompt, list)
            and prompt
            and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
        ):
            prompt_text, prompt_tokens = " ".join(map(str, prompt)), len(prompt)
        else:
            raise _bad("prompt", "a string, a list of one string, or a list of token ids")
        if max_tokens is None:
            max_tokens = 16  # OpenAI's and vLLM's default for /v1/completions
    return GenRequest(
        chat, model, prompt_text, prompt_tokens, max_tokens, stream, include_usage, seed
    )


@dataclass(frozen=True)
class EmbedRequest:
    """A validated embeddings request."""

    model: str
    inputs: list[str]  # one text (or token list, joined) per vector
    prompt_tokens: int
    dimensions: int
    base64: bool  # encoding_format "base64": float32 little-endian, base64 (the SDK's default)


MAX_DIMENSIONS = 4096


def _token_list(v: Any) -> bool:
    return (
        isinstance(v, list)
        and bool(v)
        and all(isinstance(t, int) and not isinstance(t, bool) for t in v)
    )


def parse_embeddings(body: dict[str, Any], default_dimensions: int = 64) -> EmbedRequest:
    """Validate an embeddings body: `input` a string, strings, token ids or lists of them."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required and must be a string", "model", "invalid_type")
    x: Any = body.get("input")
    if isinstance(x, str):
        inputs = [x]
    elif _token_list(x):
        inputs = [" ".join(str(t) for t in x)]
    elif isinstance(x, list) and x and all(isinstance(v, str) for v in x):
        inputs = list(x)
    elif isinstance(x, list) and x and all(_token_list(v) for v in x):
        inputs = [" ".join(map(str, v)) for v in x]
    else:
        raise _bad("input", "a string, a list of strings, or token ids (a list or lists)")
    dims = _opt(body, "dimensions", (int,), "an integer")
    if dims is not None and not 1 <= dims <= MAX_DIMENSIONS:
        raise ApiError(
            400,
            f"'dimensions' must be between 1 and {MAX_DIMENSIONS}",
            "dimensions",
            "invalid_value",
        )
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise _bad("encoding_format", "'float' or 'base64'")
    _opt(body, "user", (str,), "a string")
    tokens = sum(max(1, text_tokens(t)) for t in inputs)
    return EmbedRequest(model, inputs, tokens, dims or default_dimensions, fmt == "base64")


def context_error(limit: int, prompt: int, max_tokens: int | None, chat: bool) -> ApiError:
    """vLLM-style 400 for a prompt (+ max_tokens) beyond the context window."""
    where = "messages" if chat else "prompt"
    if max_tokens is None or prompt >= limit:
        return ApiError(
            400,
            f"This model's maximum context length is {limit} tokens. However, your "
            f"{where} resulted in {prompt} tokens.",
            where,
            "context_length_exceeded",
        )
    return ApiError(
        400,
        f"This model's maximum context length is {limit} tokens. However, you requested "
        f"{prompt + max_tokens} tokens ({prompt} in the {where}, {max_tokens} in the "
        "completion). Please reduce the length of the messages or completion.",
        "max_tokens",
        "context_length_exceeded",
    )


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
