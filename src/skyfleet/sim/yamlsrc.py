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
        for key_node, value_node in node.value:
            key = (
                yaml.safe_load(yaml.serialize(key_node))
                if key_node.tag != "tag:yaml.org,2002:str"
                else key_node.value
            )
            sub = (*path, str(key))
            out[str(key)] = _build(value_node, sub, lines)
            lines[sub] = key_node.start_mark.line + 1  # the key's line, not its value's
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, index), lines) for index, item in enumerate(node.value)]
    return yaml.safe_load(yaml.serialize(node))


def load_with_lines(path: str | Path) -> tuple[Any, dict[Loc, int]]:
    """Parse a YAML file into plain data and a map from key path to 1-based line number."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as e:
        raise ConfigError(f"{file}: cannot read: {e.strerror}") from e
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{file}: not valid YAML: {e}") from e
    lines: dict[Loc, int] = {}
    if node is None:
        return {}, lines
    return _build(node, (), lines), lines


def line_of(lines: dict[Loc, int], loc: Loc) -> int | None:
    """The line of `loc`, or of its nearest ancestor that has one."""
    for depth in range(len(loc), -1, -1):
        if loc[:depth] in lines:
            return lines[loc[:depth]]
    return None


def where(path: str | Path, lines: dict[Loc, int], loc: Loc) -> str:
    """`file:line: key 'a.b.0.c'` prefix for an error message."""
    key = ".".join(str(part) for part in loc)
    line = line_of(lines, loc)
    return f"{path}:{line}: key '{key}'" if line else f"{path}: key '{key}'"
