"""Deterministic token counting and generated text (no tokenizer needed).

- A text costs ceil(len(text) / 4) tokens (about 4 characters per token for English).
- A chat prompt costs 3 tokens plus, per message, 4 tokens of framing plus its text
  (string content, or the `text` of each content part).
- A completions prompt given as a list of token ids costs one token per id.
- Generated text is one word per token, from a fixed vocabulary, picked by a seeded hash,
  so the same request (and seed) always yields the same words.
- Output length is `max_tokens` when the request sets it; otherwise a draw from a
  log-normal (median 200 tokens, σ = 0.6, mean ≈ 240) seeded by (server seed, request seed,
  prompt text), capped at what the context window leaves (and at 2048).
"""

from __future__ import annotations

import hashlib
import math
import random

CHARS_PER_TOKEN = 4
CHAT_PROMPT_OVERHEAD = 3
CHAT_MESSAGE_OVERHEAD = 4
OUTPUT_MEDIAN = 200.0
OUTPUT_SIGMA = 0.6
OUTPUT_CAP = 2048

WORDS = [
    "the",
    "cloud",
    "fleet",
    "serves",
    "tokens",
    "fast",
    "and",
    "cheap",
    "while",
    "every",
    "provider",
    "stays",
    "up",
    "model",
    "engine",
    "batch",
    "cache",
    "prefill",
    "decode",
    "request",
    "stream",
    "route",
    "plan",
    "region",
    "spot",
    "reserved",
    "price",
    "latency",
    "budget",
    "replica",
    "offering",
    "tenant",
    "quota",
    "failover",
    "health",
    "signal",
    "queue",
    "capacity",
    "window",
    "steady",
    "rate",
    "bound",
    "time",
    "token",
    "scale",
    "seed",
    "sky",
    "blue",
    "river",
    "stone",
    "light",
    "over",
    "under",
    "across",
    "through",
    "quiet",
    "bright",
    "simple",
    "careful",
    "good",
]


def text_tokens(text: str) -> int:
    """Tokens for a piece of text: ceil(characters / 4)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def chat_prompt_tokens(contents: list[str]) -> int:
    """Tokens for a chat prompt given each message's text."""
    return CHAT_PROMPT_OVERHEAD + sum(CHAT_MESSAGE_OVERHEAD + text_tokens(c) for c in contents)


def _digest(*parts: object) -> int:
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "big")


def draw_output_tokens(seed: int, request_seed: int | None, prompt: str, limit: int) -> int:
    """Seeded output length for a request without `max_tokens` (see module doc)."""
    rng = random.Random(_digest(seed, request_seed, prompt))
    n = round(rng.lognormvariate(math.log(OUTPUT_MEDIAN), OUTPUT_SIGMA))
    return max(1, min(n, limit, OUTPUT_CAP))


class WordStream:
    """The words of one response: token i is a word with a leading space (none for i = 0)."""

    __slots__ = ("_offset",)

    def __init__(self, seed: int, request_seed: int | None, prompt: str) -> None:
        self._offset = _digest("words", seed, request_seed, prompt) % len(WORDS)

    def token(self, i: int) -> str:
        w = WORDS[(self._offset + i * 7 + i // len(WORDS)) % len(WORDS)]
        return w if i == 0 else " " + w

    def text(self, start: int, stop: int) -> str:
        return "".join(self.token(i) for i in range(start, stop))
