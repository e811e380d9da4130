"""YAML loading that remembers the line of every key, so errors can name it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from skyfleet.errors import ConfigError

Loc = tuple[str | int, ...]


def _build(node: yaml.Node, path: Loc, lines: dict[Loc, int]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for k, v in node.value:
            key = yaml.safe_load(yaml.serialize(k)) if k.tag != "tag:yaml.org,2002:str" else k.value
            sub = (*path, str(key))
            lines[sub] = k.start_mark.line + 1
            out[str(key)] = _build(v, sub, lines)
            lines[sub] = k.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(v, (*path, i), lines) for i, v in enumerate(node.value)]
    return yaml.safe_load(yaml.serialize(node))


def load_with_lines(path: str | Path) -> tuple[Any, dict[Loc, int]]:
    """Parse a YAML file into plain data and a map from key path to 1-based line number."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}") from e
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    lines: dict[Loc, int] = {}
    if node is None:
        return {}, lines
    return _build(node, (), lines), lines


def line_of(lines: dict[Loc, int], loc: Loc) -> int | None:
    """The line of `loc`, or of its nearest ancestor that has one."""
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def where(path: str | Path, lines: dict[Loc, int], loc: Loc) -> str:
    """`file:line: key 'a.b.0.c'` prefix for an error message."""
    key = ".".join(str(x) for x in loc)
    ln = line_of(lines, loc)
    return f"{path}:{ln}: key '{key}'" if ln else f"{path}: key '{key}'"
