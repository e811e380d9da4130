"""Prune OpenAI's published OpenAPI spec to the operations the gateway serves.

`python -m skyfleet.drill.openapi openapi.yaml OUT.yaml --commit SHA --date YYYY-MM-DD` keeps
`POST /chat/completions`, `POST /completions`, `POST /embeddings` and `GET /models` with every
component they reference (transitively), and writes the source and date at the top. The
fuzz tests (tests/drill/test_fuzz_openapi.py) read the result, `openai-openapi.yaml`.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

SOURCE = "https://github.com/openai/openai-openapi/blob/{commit}/openapi.yaml"
OPERATIONS = (
    ("/chat/completions", "post"),
    ("/completions", "post"),
    ("/embeddings", "post"),
    ("/models", "get"),
)
SPEC_FILE = "openai-openapi.yaml"


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def prune(
    spec: dict[str, Any], operations: tuple[tuple[str, str], ...] = OPERATIONS
) -> dict[str, Any]:
    """The spec with only `operations` and the components they reference."""
    paths: dict[str, Any] = {}
    for path, method in operations:
        paths.setdefault(path, {})[method] = spec["paths"][path][method]
    components = spec.get("components", {})
    keep: dict[str, dict[str, Any]] = {}
    todo = list(_refs(paths))
    while todo:
        ref = todo.pop()
        if not ref.startswith("#/components/"):
            raise ValueError(f"unsupported $ref {ref!r}")
        section, name = ref[len("#/components/") :].split("/", 1)
        if name in keep.get(section, {}):
            continue
        node = components[section][name]
        keep.setdefault(section, {})[name] = node
        todo.extend(_refs(node))
    keep["securitySchemes"] = components.get("securitySchemes", {})
    out: dict[str, Any] = {
        k: spec[k] for k in ("openapi", "info", "servers", "security") if k in spec
    }
    out["paths"] = paths
    out["components"] = {s: dict(sorted(v.items())) for s, v in sorted(keep.items())}
    return out


def load_spec() -> dict[str, Any]:
    """The pruned spec shipped with skyfleet."""
    text = resources.files("skyfleet.drill").joinpath(SPEC_FILE).read_text()
    spec: dict[str, Any] = yaml.safe_load(text)
    return spec


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m skyfleet.drill.openapi")
    ap.add_argument("source", help="openapi.yaml from github.com/openai/openai-openapi")
    ap.add_argument("out")
    ap.add_argument("--commit", required=True, help="the commit the source file is from")
    ap.add_argument("--date", required=True, help="the commit's date (YYYY-MM-DD)")
    a = ap.parse_args(argv)
    spec = yaml.safe_load(Path(a.source).read_text())
    head = (
        "# OpenAI's published OpenAPI spec, pruned to the operations skyfleet's gateway serves\n"
        "# (POST /chat/completions, /completions, /embeddings; GET /models) and the components\n"
        "# they reference, by `python -m skyfleet.drill.openapi`.\n"
        f"# Source: {SOURCE.format(commit=a.commit)}\n"
        f"# Commit date: {a.date}\n"
    )
    body = yaml.safe_dump(prune(spec), sort_keys=False, allow_unicode=True, width=100)
    Path(a.out).write_text(head + body)


if __name__ == "__main__":
    main()
