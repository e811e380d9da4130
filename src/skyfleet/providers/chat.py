"""An OpenAI chat-completions request, read into one neutral form the translators share.

`read_chat(obj, provider, fields)` checks every top-level field against what the provider
can take (`fields`: supported names; any other field with a non-default value is refused
naming field and provider — nothing is dropped silently) and the shape of messages, tools,
tool_choice and response_format. It returns a `Chat` or raises RequestRejected. Pure.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

from skyfleet.providers.base import RequestRejected

# Fields every translator handles itself (the gateway/transport ones among them).
CORE = frozenset({"model", "messages", "stream", "stream_options"})
# A field holding one of these values asks for nothing, so any provider takes it.
_DEFAULTS: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "logprobs": (False,),
    "parallel_tool_calls": (True,),
    "store": (False,),
    "service_tier": ("auto", "default"),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "ignore_eos": (False,),
    "metadata": ({},),
    "logit_bias": ({},),
    "modalities": (["text"],),
}
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+);base64,(.*)$", re.S)


@dataclass(slots=True)
class Image:
    """An image part: either inline bytes (base64 text) or a URL."""

    media_type: str | None
    data: str | None  # base64, for data: URLs
    url: str | None  # http(s)/gs URL otherwise


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI carries it


@dataclass(slots=True)
class Message:
    """user / assistant / tool turn. `parts`: str or Image; tool turns carry `tool_call_id`."""

    role: str
    parts: list[str | Image] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None


@dataclass(slots=True)
class Tool:
    name: str
    description: str | None
    parameters: dict[str, Any]
    strict: bool | None = None


@dataclass(slots=True)
class Chat:
    """The request in neutral form. System/developer messages are collected in `system`."""

    system: list[str]
    messages: list[Message]
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    stop: list[str]
    tools: list[Tool]
    tool_choice: str | None  # None (unset) | auto | none | required | "function:<name>"
    parallel_tool_calls: bool | None
    response_format: dict[str, Any] | None  # {"type": json_object} / {"type": json_schema, ..}
    user: str | None
    seed: int | None
    n: int
    presence_penalty: float | None
    frequency_penalty: float | None
    extra: dict[str, Any]  # supported provider-specific fields, as given

    def tool_name(self) -> str | None:
        """The forced tool's name for tool_choice {"type":"function",...}."""
        tc = self.tool_choice
        return tc[len("function:") :] if tc and tc.startswith("function:") else None


def _reject(message: str, param: str | None) -> RequestRejected:
    return RequestRejected(message, param)


def unsupported(
    obj: dict[str, Any], provider: str, fields: frozenset[str]
) -> tuple[str, str] | None:
    """The first field `provider` cannot take (non-default value), as (message, param)."""
    for k, v in obj.items():
        if k in CORE or k in fields or v is None:
            continue
        if k in _DEFAULTS and v in _DEFAULTS[k]:
            continue
        return (f"'{k}' is not supported by {provider} endpoints", k)
    return None


def _num(obj: dict[str, Any], key: str) -> float | None:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _reject(f"'{key}' must be a number", key)
    return float(v)


def _text_of(content: Any, param: str, provider: str, images: bool) -> list[str | Image]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise _reject(f"'{param}' must be a string or a list of content parts", param)
    out: list[str | Image] = []
    for j, part in enumerate(content):
        p = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise _reject(f"'{p}' must be a content part object", p)
        t = part.get("type")
        if t == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise _reject(f"'{p}.text' must be a string", f"{p}.text")
            out.append(text)
        elif t == "image_url" and images:
            iu = part.get("image_url")
            url = iu.get("url") if isinstance(iu, dict) else iu
            if not isinstance(url, str):
                raise _reject(f"'{p}.image_url.url' must be a string", f"{p}.image_url")
            m = _DATA_URL.match(url)
            if m:
                try:
                    base64.b64decode(m.group(2), validate=True)
                except ValueError:
                    raise _reject(f"'{p}.image_url.url' is not valid base64", p) from None
                out.append(Image(m.group(1), m.group(2), None))
            elif url.startswith(("http://", "https://", "gs://")):
                out.append(Image(None, None, url))
            else:
                raise _reject(f"'{p}.image_url.url' must be a data: or http(s) URL", p)
        else:
            raise _reject(f"content part type {t!r} is not supported by {provider} endpoints", p)
    return out


def _tool_calls(v: Any, param: str) -> list[ToolCall]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise _reject(f"'{param}' must be a list", param)
    out = []
    for j, tc in enumerate(v):
        p = f"{param}[{j}]"
        fn = tc.get("function") if isinstance(tc, dict) else None
        if not isinstance(fn, dict) or not isinstance(tc.get("id"), str):
            raise _reject(f"'{p}' must be {{id, type: function, function: {{name, arguments}}}}", p)
        name, args = fn.get("name"), fn.get("arguments", "")
        if not isinstance(name, str) or not isinstance(args, str):
            raise _reject(f"'{p}.function' needs a string name and arguments", p)
        out.append(ToolCall(tc["id"], name, args or "{}"))
    return out


def _messages(obj: dict[str, Any], provider: str, images: bool) -> tuple[list[str], list[Message]]:
    msgs = obj.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise _reject("'messages' must be a non-empty list", "messages")
    system: list[str] = []
    out: list[Message] = []
    for i, m in enumerate(msgs):
        p = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _reject(f"'{p}' must be an object", p)
        role = m.get("role")
        content = m.get("content")
        if role in ("system", "developer"):
            parts = _text_of(content, f"{p}.content", provider, images=False)
            system.append("\n".join(str(x) for x in parts))
        elif role == "user":
            out.append(Message("user", _text_of(content, f"{p}.content", provider, images)))
        elif role == "assistant":
            parts = _text_of(content, f"{p}.content", provider, images=False)
            if m.get("function_call") is not None:
                raise _reject(
                    f"'{p}.function_call' is not supported by {provider} endpoints "
                    "(use tool_calls)",
                    f"{p}.function_call",
                )
            out.append(
                Message("assistant", parts, _tool_calls(m.get("tool_calls"), f"{p}.tool_calls"))
            )
        elif role == "tool":
            tid = m.get("tool_call_id")
            if not isinstance(tid, str):
                raise _reject(f"'{p}.tool_call_id' must be a string", f"{p}.tool_call_id")
            parts = _text_of(content, f"{p}.content", provider, images=False)
            out.append(Message("tool", parts, tool_call_id=tid))
        else:
            raise _reject(
                f"message role {role!r} is not supported by {provider} endpoints", f"{p}.role"
            )
    return system, out


def _tools(obj: dict[str, Any], provider: str) -> list[Tool]:
    v = obj.get("tools")
    if v is None:
        return []
    if not isinstance(v, list):
        raise _reject("'tools' must be a list", "tools")
    out = []
    for j, t in enumerate(v):
        p = f"tools[{j}]"
        if not isinstance(t, dict) or t.get("type") != "function":
            kind = t.get("type") if isinstance(t, dict) else None
            raise _reject(f"tool type {kind!r} is not supported by {provider} endpoints", p)
        fn = t.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _reject(f"'{p}.function.name' must be a string", f"{p}.function")
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            raise _reject(f"'{p}.function.parameters' must be a JSON schema object", p)
        desc = fn.get("description")
        strict = fn.get("strict")
        out.append(Tool(fn["name"], desc if isinstance(desc, str) else None, params, strict))
    return out


def _tool_choice(obj: dict[str, Any], tools: list[Tool]) -> str | None:
    tc = obj.get("tool_choice")
    if tc is None:
        return None
    if tc in ("auto", "none", "required"):
        return str(tc)
    if isinstance(tc, dict) and tc.get("type") == "function":
        fn = tc.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if isinstance(name, str):
            if name not in {t.name for t in tools}:
                raise _reject(f"tool_choice names {name!r}, which is not in 'tools'", "tool_choice")
            return "function:" + name
    raise _reject(
        "'tool_choice' must be 'auto', 'none', 'required' or {type: function, function: {name}}",
        "tool_choice",
    )


def _response_format(obj: dict[str, Any]) -> dict[str, Any] | None:
    rf = obj.get("response_format")
    if rf is None:
        return None
    t = rf.get("type") if isinstance(rf, dict) else None
    if t == "text":
        return None
    if t == "json_object":
        return {"type": "json_object"}
    if t == "json_schema":
        js = rf.get("json_schema")
        if not isinstance(js, dict) or not isinstance(js.get("schema", {}), dict):
            raise _reject("'response_format.json_schema' must be {name, schema}", "response_format")
        return {"type": "json_schema", **js}
    raise _reject(
        "'response_format.type' must be text, json_object or json_schema", "response_format"
    )


def read_chat(
    obj: dict[str, Any], provider: str, fields: frozenset[str], *, images: bool = True
) -> Chat:
    """`obj` in neutral form, or RequestRejected naming field and provider."""
    bad = unsupported(obj, provider, fields)
    if bad is not None:
        raise _reject(*bad)
    system, msgs = _messages(obj, provider, images)
    mt_key = (
        "max_completion_tokens" if obj.get("max_completion_tokens") is not None else "max_tokens"
    )
    mt = obj.get(mt_key)
    if mt is not None and (isinstance(mt, bool) or not isinstance(mt, int) or mt < 1):
        raise _reject(f"'{mt_key}' must be an integer ≥ 1", mt_key)
    stop = obj.get("stop")
    if isinstance(stop, str):
        stops = [stop]
    elif stop is None:
        stops = []
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = list(stop)
    else:
        raise _reject("'stop' must be a string or a list of strings", "stop")
    tools = _tools(obj, provider)
    user = obj.get("user")
    if user is not None and not isinstance(user, str):
        raise _reject("'user' must be a string", "user")
    seed = obj.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _reject("'seed' must be an integer", "seed")
    n = obj.get("n") or 1
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise _reject("'n' must be an integer ≥ 1", "n")
    ptc = obj.get("parallel_tool_calls")
    return Chat(
        system=system,
        messages=msgs,
        max_tokens=mt,
        temperature=_num(obj, "temperature"),
        top_p=_num(obj, "top_p"),
        stop=stops,
        tools=tools,
        tool_choice=_tool_choice(obj, tools),
        parallel_tool_calls=ptc if isinstance(ptc, bool) else None,
        response_format=_response_format(obj),
        user=user,
        seed=seed,
        n=n,
        presence_penalty=_num(obj, "presence_penalty"),
        frequency_penalty=_num(obj, "frequency_penalty"),
        extra={k: obj[k] for k in fields if k in obj and obj[k] is not None},
    )


def tool_names(messages: list[Message]) -> dict[str, str]:
    """tool_call_id → function name, from the assistant turns (for providers keyed by name)."""
    return {tc.id: tc.name for m in messages for tc in m.tool_calls}


def text(parts: list[str | Image]) -> str:
    """The text parts joined (for providers whose turn needs one string)."""
    return "".join(p for p in parts if isinstance(p, str))
