"""Protocol fronts: the provider APIs the emulator can speak (`skyfleet emulate --api`)."""

from __future__ import annotations

from dataclasses import dataclass

from skyfleet.emulator.fronts.base import Front

APIS = ("openai", "azure_openai", "anthropic", "bedrock", "vertex")


@dataclass(frozen=True)
class FrontOptions:
    """What the fronts check (keys, credentials, where the resource lives)."""

    api_key: str | None = None  # anthropic x-api-key, azure api-key
    aws_credentials: tuple[str, str] | None = None  # bedrock (access key id, secret)
    region: str = "us-east-1"  # bedrock signing region
    project: str = "emulator-project"  # vertex
    location: str = "us-central1"  # vertex
    service_account: str | None = None  # vertex: key file whose JWTs the token endpoint takes
    entra: tuple[str, str] | None = None  # azure: Entra ID (client id, client secret)
    token_ttl_s: float = 3600.0  # lifetime of issued access tokens (vertex, azure)
    served_model: str = ""  # azure: the deployment name


def make_front(api: str, opts: FrontOptions) -> Front:
    """The front for `api` (one of APIS)."""
    if api == "openai":
        from skyfleet.emulator.fronts.openai import OpenAIFront

        return OpenAIFront()
    if api == "azure_openai":
        from skyfleet.emulator.fronts.openai import AzureFront

        return AzureFront(opts.served_model, opts.api_key, opts.entra, opts.token_ttl_s)
    if api == "anthropic":
        from skyfleet.emulator.fronts.anthropic import AnthropicFront

        return AnthropicFront(opts.api_key)
    if api == "bedrock":
        from skyfleet.emulator.fronts.bedrock import BedrockFront

        return BedrockFront(opts.region, opts.aws_credentials)
    if api == "vertex":
        from skyfleet.emulator.fronts.vertex import VertexFront

        return VertexFront(opts.project, opts.location, opts.service_account, opts.token_ttl_s)
    raise ValueError(f"unknown api {api!r}; expected one of {', '.join(APIS)}")
