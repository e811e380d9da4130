"""Checks of the few request fields the gateway needs; everything else passes through."""

from __future__ import annotations

from typing import Any

Problem = tuple[str, str]  # (message, param)


def _int_ok(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _tokens_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(token, int) and not isinstance(token, bool) for token in value
    )


def validate(kind: str, obj: dict[str, Any]) -> Problem | None:
    """The first problem in a chat/completions/embeddings body, or None."""
    model = obj.get("model")
    if not isinstance(model, str) or not model:
        return "'model' is required and must be a non-empty string", "model"
    if kind != "embeddings":
        if "stream" in obj and obj["stream"] is not None and not isinstance(obj["stream"], bool):
            return "'stream' must be a boolean", "stream"
        stream_options = obj.get("stream_options")
        if stream_options is not None:
            if not isinstance(stream_options, dict):
                return "'stream_options' must be an object", "stream_options"
            include_usage = stream_options.get("include_usage")
            if include_usage is not None and not isinstance(include_usage, bool):
                return "'stream_options.include_usage' must be a boolean", "stream_options"
        for field in ("max_tokens", "max_completion_tokens"):
            value = obj.get(field)
            if value is not None and not _int_ok(value):
                return f"'{field}' must be an integer ≥ 1", field
    if kind == "chat":
        messages = obj.get("messages")
        if not isinstance(messages, list) or not messages:
            return "'messages' is required and must be a non-empty array", "messages"
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict):
                return f"'messages[{i}]' must be an object", f"messages[{i}]"
            if not isinstance(msg.get("role"), str):
                return f"'messages[{i}].role' must be a string", f"messages[{i}].role"
            content = msg.get("content")
            if content is not None and not isinstance(content, str | list):
                return (
                    f"'messages[{i}].content' must be a string or an array",
                    f"messages[{i}].content",
                )
    elif kind == "completions":
        prompt = obj.get("prompt")
        ok = isinstance(prompt, str) or (
            isinstance(prompt, list)
            and bool(prompt)
            and (
                all(isinstance(piece, str) for piece in prompt)
                or _tokens_list(prompt)
                or all(map(_tokens_list, prompt))
            )
        )
        if not ok:
            return "'prompt' must be a string, an array of strings or of token ids", "prompt"
    elif kind == "embeddings":
        embed_input = obj.get("input")
        ok = isinstance(embed_input, str) or (
            isinstance(embed_input, list)
            and bool(embed_input)
            and (
                all(isinstance(piece, str) for piece in embed_input)
                or _tokens_list(embed_input)
                or all(map(_tokens_list, embed_input))
            )
        )
        if not ok:
            return "'input' must be a string, an array of strings or of token ids", "input"
    return None


def prompt_text(kind: str, obj: dict[str, Any], limit: int) -> str:
    """The first `limit` characters of the prompt (for prefix affinity)."""
    if kind == "chat":
        out = []
        for msg in obj.get("messages", ()):
            content = msg.get("content")
            if isinstance(content, str):
                out.append(content)
            if sum(map(len, out)) >= limit:
                break
        return "\n".join(out)[:limit]
    prompt = obj.get("prompt") if kind == "completions" else obj.get("input")
    if isinstance(prompt, list):
        prompt = prompt[0] if prompt else ""
    return str(prompt)[:limit]
