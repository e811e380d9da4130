"""What each request asks for: prompt lengths, output lengths, datasets, header mixes.

Prompts are sized with the emulator's token approximation (about 4 characters per
token, see docs/emulator.md); the server's reported `usage` is what the metrics use when
present. Every request asks for exactly its output length with `max_tokens` plus
`ignore_eos` (vLLM, SGLang, llama.cpp's server, the emulator) and `min_tokens` (vLLM,
llama-cpp-python's server, which ignores `ignore_eos`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from skyfleet.errors import ConfigError, SkyfleetError

CHARS_PER_TOKEN = 4
_WORD_TEXT = (
    "the of and to in is that for it as with was on be by at this are from or an have not "
    "which but all they were can there one has their more will about would so been if into "
    "time only new some could these two may first then do any like other how its our out "
    "over well also back after use work where most must through year even way down should "
    "because each just those people state such good very make world still own see men long"
)
_WORDS = _WORD_TEXT.split()


@dataclass(frozen=True)
class LengthDist:
    """Token lengths: fixed, uniform `LO-HI`, `normal:MEAN,STD` or `lognormal:MEAN,STD`."""

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, spec: str | int) -> LengthDist:
        s = str(spec).strip().replace(" ", "")
        try:
            if re.fullmatch(r"\d+", s):
                return cls._ok(cls("fixed", float(s)))
            if m := re.fullmatch(r"(\d+)-(\d+)", s):
                return cls._ok(cls("uniform", float(m[1]), float(m[2])))
            if m := re.fullmatch(r"(normal|lognormal):([\d.]+),([\d.]+)", s):
                return cls._ok(cls(m[1], float(m[2]), float(m[3])))
        except ValueError:
            pass
        raise SkyfleetError(
            f"length {spec!r} is not N, LO-HI, normal:MEAN,STD or lognormal:MEAN,STD "
            "(tokens, e.g. 512, 256-1024, normal:512,128)"
        )

    @staticmethod
    def _ok(d: LengthDist) -> LengthDist:
        if d.a < 1 or (d.kind == "uniform" and d.b < d.a):
            raise ValueError(d)
        return d

    @property
    def mean(self) -> float:
        return (self.a + self.b) / 2 if self.kind == "uniform" else self.a

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` integer lengths ≥ 1."""
        if self.kind == "fixed":
            x = np.full(n, self.a)
        elif self.kind == "uniform":
            x = rng.integers(int(self.a), int(self.b) + 1, size=n).astype(float)
        elif self.kind == "normal":
            x = rng.normal(self.a, self.b, size=n)
        else:  # lognormal with the given mean and std
            var = np.log1p((self.b / self.a) ** 2)
            x = rng.lognormal(np.log(self.a) - var / 2, np.sqrt(var), size=n)
        out: np.ndarray = np.maximum(1, np.rint(x)).astype(int)
        return out

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"{self.a:g}"
        if self.kind == "uniform":
            return f"{self.a:g}-{self.b:g}"
        return f"{self.kind}:{self.a:g},{self.b:g}"


@dataclass(frozen=True)
class HeaderVariant:
    """One class of traffic: extra headers (priority, API key…) and its share of requests."""

    weight: float
    headers: Mapping[str, str]
    label: str = ""


@dataclass(slots=True)
class RequestSpec:
    """One request to send: either a prompt or chat messages, and the tokens to ask for."""

    input_tokens: int
    output_tokens: int | None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    headers: Mapping[str, str] | None = None
    label: str = ""


class RequestSource(Protocol):
    """Anything that yields the i-th request to send."""

    def get(self, i: int) -> RequestSpec: ...

    @property
    def description(self) -> dict[str, Any]: ...


class _Text:
    """A seeded pool of words to cut prompts from (cheap: slices, no per-request joins)."""

    def __init__(self, rng: np.random.Generator, chars: int = 1 << 18) -> None:
        words = rng.choice(np.array(_WORDS), size=chars // 4)
        self.pool = " ".join(words.tolist())
        self.rng = rng

    def prompt(self, tokens: int, i: int) -> str:
        """About `tokens` tokens of text (≈ 4 chars each), unique per request index."""
        n = max(1, tokens) * CHARS_PER_TOKEN
        head = f"{i} "
        body_len = max(0, n - len(head))
        if body_len >= len(self.pool):
            reps = body_len // len(self.pool) + 1
            return (head + self.pool * reps)[:n]
        start = int(self.rng.integers(0, len(self.pool) - body_len + 1))
        return head + self.pool[start : start + body_len]


class _Mix:
    def __init__(self, variants: Sequence[HeaderVariant], rng: np.random.Generator) -> None:
        self.variants = list(variants)
        w = np.array([v.weight for v in self.variants], dtype=float)
        if len(w) and (w < 0).any() | (w.sum() <= 0):
            raise SkyfleetError("header mix weights must be ≥ 0 and not all 0")
        self.p = w / w.sum() if len(w) else w
        self.rng = rng

    def pick(self) -> HeaderVariant | None:
        if not self.variants:
            return None
        if len(self.variants) == 1:
            return self.variants[0]
        return self.variants[int(self.rng.choice(len(self.variants), p=self.p))]


class SyntheticRequests:
    """Random prompts with input/output lengths drawn from `LengthDist`s (seeded)."""

    def __init__(
        self,
        input_len: LengthDist | str | int = 256,
        output_len: LengthDist | str | int = 128,
        *,
        seed: int = 0,
        mix: Sequence[HeaderVariant] = (),
        block: int = 1024,
    ) -> None:
        self.input_len = (
            input_len if isinstance(input_len, LengthDist) else LengthDist.parse(input_len)
        )
        self.output_len = (
            output_len if isinstance(output_len, LengthDist) else LengthDist.parse(output_len)
        )
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._text = _Text(np.random.default_rng(seed + 1))
        self._mix = _Mix(mix, np.random.default_rng(seed + 2))
        self._block = block
        self._ins: np.ndarray = np.empty(0, dtype=int)
        self._outs: np.ndarray = np.empty(0, dtype=int)

    def get(self, i: int) -> RequestSpec:
        if i >= len(self._ins):
            n = max(self._block, i + 1 - len(self._ins))
            self._ins = np.concatenate([self._ins, self.input_len.sample(self._rng, n)])
            self._outs = np.concatenate([self._outs, self.output_len.sample(self._rng, n)])
        n_in, n_out = int(self._ins[i]), int(self._outs[i])
        v = self._mix.pick()
        return RequestSpec(
            n_in,
            n_out,
            prompt=self._text.prompt(n_in, i),
            headers=v.headers if v else None,
            label=v.label if v else "",
        )

    @property
    def description(self) -> dict[str, Any]:
        return {
            "kind": "synthetic",
            "input_tokens": str(self.input_len),
            "output_tokens": str(self.output_len),
            "mean_input_tokens": self.input_len.mean,
            "mean_output_tokens": self.output_len.mean,
            "seed": self.seed,
        }


def sample_dataset_path() -> Path:
    """The small JSONL sample shipped with skyfleet (made by scripts/make_bench_dataset.py)."""
    return Path(str(resources.files("skyfleet.bench") / "data" / "sample.jsonl"))


class DatasetRequests:
    """Requests read from a JSONL file, cycled in a seeded shuffled order.

    Each line is an object with one of: `prompt` (text), `messages` (chat messages), or
    `input_tokens` (a length: a synthetic prompt of that size is made); plus optional
    `output_tokens` (default: `output_len`, or the server's choice when that is None too).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        seed: int = 0,
        output_len: LengthDist | str | int | None = None,
        mix: Sequence[HeaderVariant] = (),
    ) -> None:
        self.path = Path(path)
        self.seed = seed
        self.rows = _load_jsonl(self.path)
        self.order = np.random.default_rng(seed).permutation(len(self.rows))
        self._text = _Text(np.random.default_rng(seed + 1))
        self._mix = _Mix(mix, np.random.default_rng(seed + 2))
        self._out = (
            None
            if output_len is None
            else (
                output_len if isinstance(output_len, LengthDist) else LengthDist.parse(output_len)
            )
        )
        self._out_rng = np.random.default_rng(seed + 3)

    def get(self, i: int) -> RequestSpec:
        row = self.rows[int(self.order[i % len(self.rows)])]
        out = row.get("output_tokens")
        if out is None and self._out is not None:
            out = int(self._out.sample(self._out_rng, 1)[0])
        v = self._mix.pick()
        hdr, label = (v.headers, v.label) if v else (None, "")
        if "messages" in row:
            chars = sum(len(str(m.get("content", ""))) for m in row["messages"])
            return RequestSpec(
                max(1, chars // CHARS_PER_TOKEN),
                out,
                messages=row["messages"],
                headers=hdr,
                label=label,
            )
        if "prompt" in row:
            p = str(row["prompt"])
            return RequestSpec(
                max(1, len(p) // CHARS_PER_TOKEN), out, prompt=p, headers=hdr, label=label
            )
        n = int(row["input_tokens"])
        return RequestSpec(n, out, prompt=self._text.prompt(n, i), headers=hdr, label=label)

    @property
    def description(self) -> dict[str, Any]:
        ins = [self.get(i).input_tokens for i in range(min(len(self.rows), 2000))]
        outs = [r.get("output_tokens") for r in self.rows]
        known = [o for o in outs if o is not None]
        return {
            "kind": "dataset",
            "path": str(self.path),
            "rows": len(self.rows),
            "mean_input_tokens": float(np.mean(ins)),
            "mean_output_tokens": float(np.mean(known))
            if known
            else (self._out.mean if self._out else None),
            "seed": self.seed,
        }


def _load_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read dataset: {e.strerror}") from e
    rows: list[dict[str, Any]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{n}: not valid JSON: {e.msg}") from e
        if not isinstance(row, dict) or not ({"prompt", "messages", "input_tokens"} & row.keys()):
            raise ConfigError(
                f"{path}:{n}: each line needs a 'prompt', 'messages' or 'input_tokens' key"
            )
        for key in ("input_tokens", "output_tokens"):
            v = row.get(key)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ConfigError(f"{path}:{n}: key '{key}' must be a positive integer, got {v!r}")
        if "messages" in row and not isinstance(row["messages"], list):
            raise ConfigError(f"{path}:{n}: key 'messages' must be a list of chat messages")
        rows.append(row)
    if not rows:
        raise ConfigError(f"{path}: the dataset has no requests")
    return rows


def exact_length(tokens: int) -> dict[str, Any]:
    """The fields that make an engine generate exactly `tokens` (no early end of sequence)."""
    return {"ignore_eos": True, "min_tokens": tokens}


def build_body(
    spec: RequestSpec, *, model: str, api: str, stream: bool, ignore_eos: bool = True
) -> dict[str, Any]:
    """The OpenAI request body for `spec` on the chat or completions API."""
    body: dict[str, Any] = {"model": model}
    if api == "chat":
        body["messages"] = spec.messages or [{"role": "user", "content": spec.prompt or ""}]
    else:
        if spec.prompt is None and spec.messages:
            body["prompt"] = "\n".join(str(m.get("content", "")) for m in spec.messages)
        else:
            body["prompt"] = spec.prompt or ""
    if spec.output_tokens is not None:
        body["max_tokens"] = int(spec.output_tokens)
        if ignore_eos:
            body.update(exact_length(int(spec.output_tokens)))
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def parse_mix(items: Sequence[str]) -> list[HeaderVariant]:
    """`WEIGHT:LABEL:Key=Value;Key2=Value2` items → header variants (for --mix)."""
    out = []
    for it in items:
        parts = it.split(":", 2)
        if len(parts) != 3:
            raise SkyfleetError(f"--mix {it!r} is not WEIGHT:LABEL:Header=Value[;Header=Value]")
        try:
            w = float(parts[0])
        except ValueError as e:
            raise SkyfleetError(f"--mix {it!r}: weight {parts[0]!r} is not a number") from e
        headers: dict[str, str] = {}
        for kv in filter(None, parts[2].split(";")):
            k, sep, v = kv.partition("=")
            if not sep:
                raise SkyfleetError(f"--mix {it!r}: {kv!r} is not Header=Value")
            headers[k.strip()] = v.strip()
        out.append(HeaderVariant(w, headers, parts[1]))
    return out


def parse_headers(items: Sequence[str]) -> dict[str, str]:
    """`Key:Value` items (for --header) → a dict."""
    out: dict[str, str] = {}
    for it in items:
        k, sep, v = it.partition(":")
        if not sep or not k.strip():
            raise SkyfleetError(f"--header {it!r} is not KEY:VALUE")
        out[k.strip()] = v.strip()
    return out
