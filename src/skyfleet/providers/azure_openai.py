"""`kind: azure_openai` — Azure OpenAI / Azure AI Foundry deployments (OpenAI wire format).

Paths: `{url}/openai/deployments/{deployment}/{chat/completions|completions|embeddings}
?api-version=…`, or the newer `{url}/openai/v1/…` base (`azure.api: v1`, the deployment
goes in the body's `model`). Auth: the endpoint's `api_key` as the `api-key` header, or an
Entra ID (Azure AD) bearer token from a client-credentials app registration
(`azure.entra`), refreshed in the background before it expires. Bodies and streams pass
through byte for byte; Azure's content-filter refusals map to `content_filter`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from skyfleet.providers import openai_compat
from skyfleet.providers.base import UpstreamError, UpstreamRequest, Usage
from skyfleet.providers.common import TranslatingAdapter, loads
from skyfleet.providers.tokens import TokenRefresher

if TYPE_CHECKING:
    import aiohttp

    from skyfleet.config import EndpointConfig

PATHS = {"chat": "chat/completions", "completions": "completions", "embeddings": "embeddings"}
DEFAULT_API_VERSION = "2024-10-21"


class AzureOpenAIAdapter(TranslatingAdapter):
    kind = "azure_openai"
    provider = "Azure OpenAI"

    def __init__(self, cfg: EndpointConfig) -> None:
        super().__init__(cfg)
        opts = cfg.azure
        assert opts is not None, "kind azure_openai needs an azure: block (config validates it)"
        self.opts = opts
        root = cfg.url.rstrip("/")
        if opts.api == "v1":
            query = f"?api-version={opts.api_version}" if opts.api_version else ""
            self.urls = {api: f"{root}/openai/v1/{path}{query}" for api, path in PATHS.items()}
        else:
            ver = opts.api_version or DEFAULT_API_VERSION
            base = f"{root}/openai/deployments/{opts.deployment}"
            self.urls = {api: f"{base}/{path}?api-version={ver}" for api, path in PATHS.items()}
        self.base_headers = {"Content-Type": "application/json", **self.extra_headers}
        if cfg.api_key is not None and opts.entra is None:
            self.base_headers["api-key"] = cfg.api_key.get_secret_value()
        self.tokens: TokenRefresher | None = None

    def supports(self, api: str) -> bool:
        return api in PATHS

    def check(self, api: str, obj: dict[str, Any]) -> tuple[str, str] | None:
        return None if api in PATHS else (f"the {api} API is not supported by Azure", "model")

    def headers(self) -> dict[str, str]:
        headers = dict(self.base_headers)
        token = self.tokens.valid() if self.tokens else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def build(
        self, api: str, obj: dict[str, Any], *, stream: bool, include_usage: bool
    ) -> UpstreamRequest:
        body = openai_compat.with_model(obj, self.opts.deployment, stream, include_usage)
        return UpstreamRequest(self.urls[api], self.headers(), body)

    def response(
        self, api: str, status: int, headers: Mapping[str, str], body: bytes, *, model: str
    ) -> tuple[bytes, Usage | None]:
        return openai_compat.response(self.what(), body)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        return openai_compat.error(self.what(), "Azure OpenAI", status, headers, body)

    def stream(self, api: str, *, model: str, include_usage: bool) -> openai_compat.OpenAIStream:
        return openai_compat.OpenAIStream(include_usage)

    async def start(self, session: aiohttp.ClientSession) -> None:
        entra = self.opts.entra
        if entra is None:
            return
        url = f"{entra.authority_host.rstrip('/')}/{entra.tenant_id}/oauth2/v2.0/token"
        form = {
            "grant_type": "client_credentials",
            "client_id": entra.client_id,
            "client_secret": entra.client_secret.get_secret_value(),
            "scope": entra.scope,
        }

        async def fetch() -> tuple[str, float]:
            async with session.post(url, data=form) as answer:
                body = loads(await answer.read())
                if answer.status != 200 or not isinstance(body, dict) or "access_token" not in body:
                    why = body.get("error") if isinstance(body, dict) else None
                    raise RuntimeError(f"Entra ID answered {answer.status} ({why or 'no token'})")
            return str(body["access_token"]), float(body.get("expires_in") or 3600)

        what = f"endpoint {self.name} (Azure OpenAI, Entra ID app {entra.client_id})"
        self.tokens = TokenRefresher(what, fetch)
        await self.tokens.start()

    async def close(self) -> None:
        if self.tokens is not None:
            await self.tokens.close()
