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
        choice = self.tool_choice
        return choice[len("function:") :] if choice and choice.startswith("function:") else None


def _reject(message: str, param: str | None) -> RequestRejected:
    return RequestRejected(message, param)


def unsupported(
    obj: dict[str, Any], provider: str, fields: frozenset[str]
) -> tuple[str, str] | None:
    """The first field `provider` cannot take (non-default value), as (message, param)."""
    for key, value in obj.items():
        if key in CORE or key in fields or value is None:
            continue
        if key in _DEFAULTS and value in _DEFAULTS[key]:
            continue
        return (f"'{key}' is not supported by {provider} endpoints", key)
    return None


def _num(obj: dict[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _reject(f"'{key}' must be a number", key)
    return float(value)


def _text_of(content: Any, param: str, provider: str, images: bool) -> list[str | Image]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise _reject(f"'{param}' must be a string or a list of content parts", param)
    out: list[str | Image] = []
    for j, part in enumerate(content):
        part_param = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise _reject(f"'{part_param}' must be a content part object", part_param)
        part_type = part.get("type")
        if part_type == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise _reject(f"'{part_param}.text' must be a string", f"{part_param}.text")
            out.append(text)
        elif part_type == "image_url" and images:
            image_url = part.get("image_url")
            url = image_url.get("url") if isinstance(image_url, dict) else image_url
            if not isinstance(url, str):
                raise _reject(
                    f"'{part_param}.image_url.url' must be a string", f"{part_param}.image_url"
                )
            data_url_match = _DATA_URL.match(url)
            if data_url_match:
                try:
                    base64.b64decode(data_url_match.group(2), validate=True)
                except ValueError:
                    raise _reject(
                        f"'{part_param}.image_url.url' is not valid base64", part_param
                    ) from None
                out.append(Image(data_url_match.group(1), data_url_match.group(2), None))
            elif url.startswith(("http://", "https://", "gs://")):
                out.append(Image(None, None, url))
            else:
                raise _reject(
                    f"'{part_param}.image_url.url' must be a data: or http(s) URL", part_param
                )
        else:
            raise _reject(
                f"content part type {part_type!r} is not supported by {provider} endpoints",
                part_param,
            )
    return out


def _tool_calls(calls: Any, param: str) -> list[ToolCall]:
    if calls is None:
        return []
    if not isinstance(calls, list):
        raise _reject(f"'{param}' must be a list", param)
    out = []
    for j, call in enumerate(calls):
        call_param = f"{param}[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str):
            raise _reject(
                f"'{call_param}' must be {{id, type: function, function: {{name, arguments}}}}",
                call_param,
            )
        name, args = function.get("name"), function.get("arguments", "")
        if not isinstance(name, str) or not isinstance(args, str):
            raise _reject(f"'{call_param}.function' needs a string name and arguments", call_param)
        out.append(ToolCall(call["id"], name, args or "{}"))
    return out


def _messages(obj: dict[str, Any], provider: str, images: bool) -> tuple[list[str], list[Message]]:
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _reject("'messages' must be a non-empty list", "messages")
    system: list[str] = []
    out: list[Message] = []
    for i, message in enumerate(messages):
        message_param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _reject(f"'{message_param}' must be an object", message_param)
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            parts = _text_of(content, f"{message_param}.content", provider, images=False)
            system.append("\n".join(str(part) for part in parts))
        elif role == "user":
            out.append(
                Message("user", _text_of(content, f"{message_param}.content", provider, images))
            )
        elif role == "assistant":
            parts = _text_of(content, f"{message_param}.content", provider, images=False)
            if message.get("function_call") is not None:
                raise _reject(
                    f"'{message_param}.function_call' is not supported by {provider} endpoints "
                    "(use tool_calls)",
                    f"{message_param}.function_call",
                )
            out.append(
                Message(
                    "assistant",
                    parts,
                    _tool_calls(message.get("tool_calls"), f"{message_param}.tool_calls"),
                )
            )
        elif role == "tool":
            tool_call_id = message.get("tool_call_id")
            if not isinstance(tool_call_id, str):
                raise _reject(
                    f"'{message_param}.tool_call_id' must be a string",
                    f"{message_param}.tool_call_id",
                )
            parts = _text_of(content, f"{message_param}.content", provider, images=False)
            out.append(Message("tool", parts, tool_call_id=tool_call_id))
        else:
            raise _reject(
                f"message role {role!r} is not supported by {provider} endpoints",
                f"{message_param}.role",
            )
    return system, out


def _tools(obj: dict[str, Any], provider: str) -> list[Tool]:
    tools = obj.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _reject("'tools' must be a list", "tools")
    out = []
    for j, tool in enumerate(tools):
        tool_param = f"tools[{j}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _reject(
                f"tool type {kind!r} is not supported by {provider} endpoints", tool_param
            )
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _reject(
                f"'{tool_param}.function.name' must be a string", f"{tool_param}.function"
            )
        params = function.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            raise _reject(
                f"'{tool_param}.function.parameters' must be a JSON schema object", tool_param
            )
        description = function.get("description")
        strict = function.get("strict")
        out.append(
            Tool(
                function["name"],
                description if isinstance(description, str) else None,
                params,
                strict,
            )
        )
    return out


def _tool_choice(obj: dict[str, Any], tools: list[Tool]) -> str | None:
    choice = obj.get("tool_choice")
    if choice is None:
        return None
    if choice in ("auto", "none", "required"):
        return str(choice)
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str):
            if name not in {tool.name for tool in tools}:
                raise _reject(f"tool_choice names {name!r}, which is not in 'tools'", "tool_choice")
            return "function:" + name
    raise _reject(
        "'tool_choice' must be 'auto', 'none', 'required' or {type: function, function: {name}}",
        "tool_choice",
    )


def _response_format(obj: dict[str, Any]) -> dict[str, Any] | None:
    response_format = obj.get("response_format")
    if response_format is None:
        return None
    format_type = response_format.get("type") if isinstance(response_format, dict) else None
    if format_type == "text":
        return None
    if format_type == "json_object":
        return {"type": "json_object"}
    if format_type == "json_schema":
        json_schema = response_format.get("json_schema")
        if not isinstance(json_schema, dict) or not isinstance(json_schema.get("schema", {}), dict):
            raise _reject("'response_format.json_schema' must be {name, schema}", "response_format")
        return {"type": "json_schema", **json_schema}
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
    system, messages = _messages(obj, provider, images)
    max_tokens_key = (
        "max_completion_tokens" if obj.get("max_completion_tokens") is not None else "max_tokens"
    )
    max_tokens = obj.get(max_tokens_key)
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise _reject(f"'{max_tokens_key}' must be an integer ≥ 1", max_tokens_key)
    stop = obj.get("stop")
    if isinstance(stop, str):
        stops = [stop]
    elif stop is None:
        stops = []
    elif isinstance(stop, list) and all(isinstance(entry, str) for entry in stop):
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
    choice_count = obj.get("n") or 1
    if isinstance(choice_count, bool) or not isinstance(choice_count, int) or choice_count < 1:
        raise _reject("'n' must be an integer ≥ 1", "n")
    parallel_tool_calls = obj.get("parallel_tool_calls")
    return Chat(
        system=system,
        messages=messages,
        max_tokens=max_tokens,
        temperature=_num(obj, "temperature"),
        top_p=_num(obj, "top_p"),
        stop=stops,
        tools=tools,
        tool_choice=_tool_choice(obj, tools),
        parallel_tool_calls=parallel_tool_calls if isinstance(parallel_tool_calls, bool) else None,
        response_format=_response_format(obj),
        user=user,
        seed=seed,
        n=choice_count,
        presence_penalty=_num(obj, "presence_penalty"),
        frequency_penalty=_num(obj, "frequency_penalty"),
        extra={key: obj[key] for key in fields if key in obj and obj[key] is not None},
    )


def tool_names(messages: list[Message]) -> dict[str, str]:
    """tool_call_id → function name, from the assistant turns (for providers keyed by name)."""
    return {call.id: call.name for message in messages for call in message.tool_calls}


def text(parts: list[str | Image]) -> str:
    """The text parts joined (for providers whose turn needs one string)."""
    return "".join(part for part in parts if isinstance(part, str))
