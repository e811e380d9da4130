"""Checks of the few request fields the gateway needs; everything else passes through."""

from __future__ import annotations

from typing import Any

Problem = tuple[str, str]  # (message, param)


def _int_ok(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _tokens_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)


def validate(kind: str, obj: dict[str, Any]) -> Problem | None:
    """The first problem in a chat/completions/embeddings body, or None."""
    m = obj.get("model")
    if not isinstance(m, str) or not m:
        return "'model' is required and must be a non-empty string", "model"
    if kind != "embeddings":
        if "stream" in obj and obj["stream"] is not None and not isinstance(obj["stream"], bool):
            return "'stream' must be a boolean", "stream"
        so = obj.get("stream_options")
        if so is not None:
            if not isinstance(so, dict):
                return "'stream_options' must be an object", "stream_options"
            iu = so.get("include_usage")
            if iu is not None and not isinstance(iu, bool):
                return "'stream_options.include_usage' must be a boolean", "stream_options"
        for f in ("max_tokens", "max_completion_tokens"):
            v = obj.get(f)
            if v is not None and not _int_ok(v):
                return f"'{f}' must be an integer ≥ 1", f
    if kind == "chat":
        msgs = obj.get("messages")
        if not isinstance(msgs, list) or not msgs:
            return "'messages' is required and must be a non-empty array", "messages"
        for i, msg in enumerate(msgs):
            if not isinstance(msg, dict):
                return f"'messages[{i}]' must be an object", f"messages[{i}]"
            if not isinstance(msg.get("role"), str):
                return f"'messages[{i}].role' must be a string", f"messages[{i}].role"
            c = msg.get("content")
            if c is not None and not isinstance(c, str | list):
                return (
                    f"'messages[{i}].content' must be a string or an array",
                    f"messages[{i}].content",
                )
    elif kind == "completions":
        p = obj.get("prompt")
        ok = isinstance(p, str) or (
            isinstance(p, list)
            and bool(p)
            and (all(isinstance(x, str) for x in p) or _tokens_list(p) or all(map(_tokens_list, p)))
        )
        if not ok:
            return "'prompt' must be a string, an array of strings or of token ids", "prompt"
    elif kind == "embeddings":
        x = obj.get("input")
        ok = isinstance(x, str) or (
            isinstance(x, list)
            and bool(x)
            and (all(isinstance(v, str) for v in x) or _tokens_list(x) or all(map(_tokens_list, x)))
        )
        if not ok:
            return "'input' must be a string, an array of strings or of token ids", "input"
    return None


def prompt_text(kind: str, obj: dict[str, Any], limit: int) -> str:
    """The first `limit` characters of the prompt (for prefix affinity)."""
    if kind == "chat":
        out = []
        for msg in obj.get("messages", ()):
            c = msg.get("content")
            if isinstance(c, str):
                out.append(c)
            if sum(map(len, out)) >= limit:
                break
        return "\n".join(out)[:limit]
    p = obj.get("prompt") if kind == "completions" else obj.get("input")
    if isinstance(p, list):
        p = p[0] if p else ""
    return str(p)[:limit]
