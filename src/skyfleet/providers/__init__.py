"""Upstream adapters: one module per provider kind behind one interface (`base.Adapter`).

    adapter = build_adapter(endpoint_cfg)   # by endpoint_cfg.kind
    await adapter.start(session)            # credentials, background refresh
    ...                                     # see skyfleet.providers.base for the call order
    await adapter.close()

Each kind's module is imported on first use, so botocore and google-auth load only for
fleets that have Bedrock or Vertex endpoints.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from skyfleet.providers.base import (
    CAUSES,
    KINDS,
    Adapter,
    RequestRejected,
    ResponseGarbage,
    StreamGarbage,
    StreamTranslator,
    UpstreamError,
    UpstreamRequest,
    Usage,
)

if TYPE_CHECKING:
    from skyfleet.config import EndpointConfig

__all__ = [
    "CAUSES",
    "KINDS",
    "Adapter",
    "RequestRejected",
    "ResponseGarbage",
    "StreamGarbage",
    "StreamTranslator",
    "UpstreamError",
    "UpstreamRequest",
    "Usage",
    "build_adapter",
]

_CLASSES = {
    "openai": ("skyfleet.providers.openai", "OpenAIAdapter"),
    "azure_openai": ("skyfleet.providers.azure_openai", "AzureOpenAIAdapter"),
    "vertex": ("skyfleet.providers.vertex", "VertexAdapter"),
    "bedrock": ("skyfleet.providers.bedrock", "BedrockAdapter"),
    "anthropic": ("skyfleet.providers.anthropic", "AnthropicAdapter"),
}


def build_adapter(cfg: EndpointConfig) -> Adapter:
    """The adapter for one endpoint, by `cfg.kind` (pure: credentials load in `start`)."""
    mod, cls = _CLASSES[cfg.kind]
    adapter: Adapter = getattr(import_module(mod), cls)(cfg)
    return adapter
