"""`kind: openai` — any OpenAI-compatible server (vLLM, SGLang, llama.cpp, OpenAI itself).

The gateway keeps its own byte-for-byte path for these (`passthrough = True`); the
methods here describe that same behaviour for code that goes through the interface.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from skyfleet.providers import openai_compat
from skyfleet.providers.base import UpstreamError, UpstreamRequest, Usage
from skyfleet.providers.common import TranslatingAdapter

if TYPE_CHECKING:
    from skyfleet.config import EndpointConfig

PATHS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings"}


class OpenAIAdapter(TranslatingAdapter):
    kind = "openai"
    provider = "OpenAI-compatible"
    passthrough = True

    def __init__(self, cfg: EndpointConfig) -> None:
        super().__init__(cfg)
        self.headers = {"Content-Type": "application/json", **self.extra_headers}
        if cfg.api_key is not None:
            self.headers["Authorization"] = f"Bearer {cfg.api_key.get_secret_value()}"
        self.root = cfg.url.rstrip("/")

    def supports(self, api: str) -> bool:
        return api in PATHS

    def check(self, api: str, obj: dict[str, Any]) -> tuple[str, str] | None:
        return None if api in PATHS else (f"the {api} API is not supported", "model")

    def build(
        self, api: str, obj: dict[str, Any], *, stream: bool, include_usage: bool
    ) -> UpstreamRequest:
        body = openai_compat.with_model(obj, self.cfg.model, stream, include_usage)
        return UpstreamRequest(self.root + PATHS[api], dict(self.headers), body)

    def response(
        self, api: str, status: int, headers: Mapping[str, str], body: bytes, *, model: str
    ) -> tuple[bytes, Usage | None]:
        return openai_compat.response(self.what(), body)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        return openai_compat.error(self.what(), "upstream", status, headers, body)

    def stream(self, api: str, *, model: str, include_usage: bool) -> openai_compat.OpenAIStream:
        return openai_compat.OpenAIStream(include_usage)

    def probe(self) -> UpstreamRequest | None:
        """GET <server root>/health (the gateway's health.probe_path may override the path)."""
        return UpstreamRequest(self.cfg.base_url + "/health", {}, b"")
