"""Fleet config (YAML) → validated pydantic models, with `${ENV_VAR}` secrets.

`load_config(path)` is the one entry point. Every error is a `ConfigError` whose message
names the file, the key path (`endpoints[2].capacity`) and what was expected.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from skyfleet.errors import ConfigError
from skyfleet.vocab import Priority, RouteTier, parse_priority

PriorityName = Annotated[
    Priority, BeforeValidator(parse_priority), PlainSerializer(lambda p: p.label, return_type=str)
]
"""A `Priority` written by its name in YAML (`critical`, `standard`, `sheddable`)."""

_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"
_URL_RE = r"^https?://[^\s]+$"


def hash_key(key: str) -> str:
    """The stored form of an API key: `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_hashes(keys: Iterable[str]) -> None:
    for k in keys:
        if not _HASH_RE.match(k):
            raise ValueError(
                "expected 'sha256:<64 lowercase hex>' (make one with `skyfleet keys hash KEY`), "
                f"got {k[:12]!r}…"
            )


class ServerConfig(_Strict):
    """Where and how the gateway listens."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    admin_api_keys: list[str] = Field(default_factory=list)
    drain_timeout_s: float = Field(default=30.0, ge=0, description="graceful shutdown wait")
    watch_config: bool = Field(default=True, description="reload when the file changes")
    redis_url: str | None = Field(
        default=None,
        description="share tenant limits and fleet state across workers/replicas through Redis",
    )
    redis_required: bool = Field(
        default=True,
        description="with redis_url: refuse to start when Redis does not answer (false: start "
        "with per-process state, logged, and join when it answers)",
    )
    shared_state_interval_s: float = Field(
        default=0.25,
        gt=0,
        le=10,
        description="with redis_url: how often fleet state (health, load, retry budget) is "
        "exchanged; at most half of health.probe_interval_s is used",
    )
    # client connection limits (gateway/connections.py), per worker process
    max_connections: int = Field(default=4096, ge=1, description="open client connections")
    header_timeout_s: float = Field(default=10.0, gt=0, description="head's first byte → its end")
    body_timeout_s: float = Field(default=30.0, gt=0, description="end of headers → end of body")
    keepalive_timeout_s: float = Field(default=75.0, gt=0, description="idle connection closed")
    max_header_bytes: int = Field(default=8190, ge=256, description="request line / header line")
    max_headers: int = Field(default=128, ge=8, description="header fields per request")

    @model_validator(mode="after")
    def _keys(self) -> ServerConfig:
        _check_hashes(self.admin_api_keys)
        return self

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not re.match(r"^(rediss?|unix)://\S+$", v):
            raise ValueError(
                "expected a Redis URL such as redis://127.0.0.1:6379/0 "
                "(schemes redis://, rediss://, unix://), or null for per-process state"
            )
        parts = urlsplit(v)
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError("expected unix:///path/to/redis.sock (the socket's path)")
            return v
        try:
            port = parts.port
        except ValueError:
            raise ValueError("expected a port number from 1 to 65535 after the host") from None
        if not parts.hostname or port == 0:
            raise ValueError("expected redis://host:port/db with a host and a port from 1 to 65535")
        if parts.path.strip("/") and not parts.path.strip("/").isdigit():
            raise ValueError("expected the database number after the host (redis://host:6379/0)")
        return v


class LedgerConfig(_Strict):
    """Usage ledger written in batches off the hot path: a SQLite (WAL) file (`path`) or a
    database URL (`url`: postgresql://… shared by every replica, or sqlite:///file)."""

    path: str = "skyfleet-usage.sqlite"
    url: str | None = Field(default=None, description="postgresql://user:pw@host:5432/db")
    flush_interval_s: float = Field(default=0.5, gt=0)
    max_batch: int = Field(default=5000, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^(postgres(ql)?://\S+|sqlite:///\S+)$", v):
            raise ValueError(
                "expected postgresql://user:password@host:5432/dbname or sqlite:///path/file, "
                "or null to use ledger.path"
            )
        return v

    @model_validator(mode="after")
    def _one_location(self) -> LedgerConfig:
        if self.url is not None and "path" in self.model_fields_set:
            raise ValueError("expected either ledger.path or ledger.url, not both")
        return self

    @property
    def target(self) -> str:
        """Where the ledger lives: the URL when set, else the SQLite path."""
        return self.url if self.url is not None else self.path

    @property
    def sqlite_path(self) -> str | None:
        """The SQLite file, or None when the ledger is PostgreSQL."""
        from skyfleet.gateway.ledger.target import parse_target

        t = parse_target(self.target)
        return t.location if t.kind == "sqlite" else None


class RoutingConfig(_Strict):
    """Parameters of the pure routing policy and the retry budget."""

    saturation_threshold: float = Field(default=1.0, gt=0, description="× capacity in flight")
    queue_threshold: int | None = Field(
        default=None, ge=0, description="scraped vllm:num_requests_waiting ≥ this → saturated"
    )
    kv_cache_threshold: float | None = Field(
        default=None, gt=0, le=1, description="scraped vllm:kv_cache_usage_perc ≥ this → saturated"
    )
    prefix_affinity: bool = False
    prefix_chars: int = Field(default=256, gt=0, description="prompt chars hashed for affinity")
    affinity_max_imbalance: float = Field(
        default=0.5, ge=0, description="load/capacity gap at which affinity yields"
    )
    retry_budget_ratio: float = Field(default=0.2, ge=0, le=1)
    retry_budget_min: int = Field(default=10, ge=0, description="retries always allowed per window")
    retry_budget_window_s: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=10)
    scrape_interval_s: float = Field(default=2.0, ge=0, description="0 disables /metrics scraping")
    metrics_stale_s: float = Field(default=6.0, gt=0)


class HealthConfig(_Strict):
    """Passive outlier ejection (Envoy-style) and active /health probes."""

    consecutive_failures: int = Field(default=5, ge=1)
    base_ejection_s: float = Field(default=30.0, gt=0)
    max_ejection_s: float = Field(default=300.0, gt=0)
    max_ejection_percent: float = Field(default=100.0, ge=0, le=100)
    probe_interval_s: float = Field(default=5.0, gt=0)
    probe_timeout_s: float = Field(default=2.0, gt=0)
    probe_path: str = "/health"
    unhealthy_after_probe_failures: int = Field(default=2, ge=1)


class ProviderConfig(_Strict):
    """A failure domain (cloud, neocloud, on-prem, external API)."""

    name: str = Field(pattern=_NAME_RE)


class Price(_Strict):
    """Either an hourly price of the serving instance or per-1M-token prices."""

    per_hour: float | None = Field(default=None, ge=0)
    per_1m_input_tokens: float | None = Field(default=None, ge=0)
    per_1m_output_tokens: float | None = Field(default=None, ge=0)
    per_1m_cached_input_tokens: float | None = Field(
        default=None, ge=0, description="prompt tokens read from the provider's cache"
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Price:
        tokens = (
            self.per_1m_input_tokens is not None
            or self.per_1m_output_tokens is not None
            or self.per_1m_cached_input_tokens is not None
        )
        if self.per_hour is not None and tokens:
            raise ValueError("expected either per_hour or per_1m_*_tokens, not both")
        return self


class Timeouts(_Strict):
    """Upstream timeouts in seconds. ttfb_s bounds the wait for the first byte (and any gap)."""

    connect_s: float = Field(default=2.0, gt=0)
    ttfb_s: float = Field(default=30.0, gt=0)
    total_s: float = Field(default=600.0, gt=0)


Kind = Literal["openai", "azure_openai", "vertex", "bedrock", "anthropic"]
KIND_BLOCKS: dict[str, str] = {  # kind → the block of keys only it takes
    "azure_openai": "azure",
    "vertex": "vertex",
    "bedrock": "bedrock",
    "anthropic": "anthropic",
}


class EntraConfig(_Strict):
    """An Entra ID (Azure AD) app registration: client-credentials flow → bearer tokens."""

    tenant_id: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    authority_host: str = Field(default="https://login.microsoftonline.com", pattern=_URL_RE)
    scope: str = "https://cognitiveservices.azure.com/.default"


class AzureConfig(_Strict):
    """`kind: azure_openai`: which deployment, API flavour and auth."""

    deployment: str = Field(min_length=1, pattern=_NAME_RE)
    api: Literal["deployments", "v1"] = Field(
        default="deployments", description="/openai/deployments/{d}/… or the /openai/v1/ base"
    )
    api_version: str | None = Field(default=None, description="default 2024-10-21 (deployments)")
    entra: EntraConfig | None = None


class VertexConfig(_Strict):
    """`kind: vertex`: Google Cloud project, location, service-account key file."""

    project: str = Field(min_length=1, pattern=_NAME_RE)
    location: str = Field(min_length=1, pattern=r"^[a-z0-9-]+$")
    credentials_file: str = Field(min_length=1)
    api: Literal["gemini", "openai"] = "gemini"
    publisher: str = Field(default="google", pattern=_NAME_RE)
    openai_endpoint: str = Field(default="openapi", pattern=_NAME_RE)


class BedrockConfig(_Strict):
    """`kind: bedrock`: AWS region and (optionally) explicit credentials or a profile."""

    region: str = Field(min_length=1, pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$")
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    profile: str | None = None

    @field_validator(
        "access_key_id", "secret_access_key", "session_token", "profile", mode="before"
    )
    @classmethod
    def _empty(cls, v: object) -> object:
        return None if v == "" else v  # `${AWS_SESSION_TOKEN:-}` unset: none

    @model_validator(mode="after")
    def _pair(self) -> BedrockConfig:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError(
                "expected access_key_id and secret_access_key together (or neither, for the "
                "standard AWS credential chain)"
            )
        if self.profile is not None and self.access_key_id is not None:
            raise ValueError("expected either profile or access_key_id, not both")
        return self


class AnthropicConfig(_Strict):
    """`kind: anthropic`: API version header, default max_tokens, beta flags."""

    version: str = "2023-06-01"
    default_max_tokens: int = Field(default=4096, ge=1, description="when a request has none")
    beta: list[str] = Field(default_factory=list, description="anthropic-beta header values")


class EndpointConfig(_Strict):
    """One concrete serving URL the gateway can send to."""

    name: str = Field(pattern=_NAME_RE)
    provider: str
    kind: Kind = "openai"
    region: str = ""
    url: str = Field(pattern=_URL_RE)
    model: str = Field(min_length=1, description="model name sent upstream")
    api_key: SecretStr | None = None
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="extra upstream headers (values kept secret)"
    )
    tier: RouteTier = "primary"
    capacity: int = Field(default=32, ge=1)
    accelerator: str | None = None
    price: Price = Field(default_factory=Price)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    azure: AzureConfig | None = None
    vertex: VertexConfig | None = None
    bedrock: BedrockConfig | None = None
    anthropic: AnthropicConfig | None = None

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key(cls, v: object) -> object:
        return None if v == "" else v  # `${KEY:-}` with KEY unset: no key

    @model_validator(mode="before")
    @classmethod
    def _kind_defaults(cls, data: Any) -> Any:
        """Fill what each kind implies: its default URL, model and region."""
        if not isinstance(data, dict):
            return data
        kind = data.get("kind", "openai")
        block = data.get(KIND_BLOCKS.get(kind, ""))
        if kind in ("azure_openai", "vertex", "bedrock") and block is None:
            need = KIND_BLOCKS[kind]
            raise ValueError(f"kind {kind} needs the '{need}' block (see docs/config.md)")
        d = dict(data)
        b: dict[str, Any] = block if isinstance(block, dict) else {}
        url = None
        if kind == "bedrock" and isinstance(b.get("region"), str):
            url = f"https://bedrock-runtime.{b['region']}.amazonaws.com"
            d.setdefault("region", b["region"])
        elif kind == "vertex" and isinstance(b.get("location"), str):
            loc, host = b["location"], "aiplatform.googleapis.com"
            url = f"https://{host}" if loc == "global" else f"https://{loc}-{host}"
            d.setdefault("region", loc)
        elif kind == "azure_openai" and isinstance(b.get("deployment"), str):
            d.setdefault("model", b["deployment"])
        if kind in ("vertex", "bedrock"):
            # without a region the block's own error is the one to report, not `url`
            d.setdefault("url", url or "https://region-missing.invalid")
        if kind == "anthropic":
            d.setdefault("url", "https://api.anthropic.com")
        return d

    @model_validator(mode="after")
    def _kind_keys(self) -> EndpointConfig:
        need = KIND_BLOCKS.get(self.kind)
        for kind, block in KIND_BLOCKS.items():
            if block != need and getattr(self, block) is not None:
                raise ValueError(f"key '{block}' applies to kind {kind} only (this is {self.kind})")
        if self.kind == "anthropic" and self.api_key is None:
            raise ValueError("kind anthropic needs api_key (sent as x-api-key)")
        if self.kind == "azure_openai":
            assert self.azure is not None
            if self.azure.entra is None and self.api_key is None:
                raise ValueError(
                    "kind azure_openai needs api_key (sent as the api-key header) or azure.entra"
                )
            if self.azure.entra is not None and self.api_key is not None:
                raise ValueError("expected either api_key or azure.entra, not both")
        if self.kind in ("vertex", "bedrock") and self.api_key is not None:
            raise ValueError(f"kind {self.kind} does not take api_key (see docs/config.md)")
        return self

    @property
    def base_url(self) -> str:
        """The server root (url without a trailing /v1): where /health and /metrics live."""
        u = self.url.rstrip("/")
        return u[: -len("/v1")] if u.endswith("/v1") else u


class ModelConfig(_Strict):
    """A public model name and the endpoints that serve it."""

    name: str = Field(min_length=1)
    endpoints: list[str] = Field(min_length=1)


class Limits(_Strict):
    """Per-tenant limits (enforced by the admission policy; null = unlimited)."""

    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    max_concurrency: int | None = Field(default=None, ge=1)
    daily_budget_usd: float | None = Field(default=None, ge=0)


class TenantConfig(_Strict):
    """An API key owner."""

    name: str = Field(pattern=_NAME_RE)
    api_keys: list[str] = Field(min_length=1)
    priority: PriorityName = Priority.STANDARD
    allow_priority_header: bool = False
    limits: Limits = Field(default_factory=Limits)

    @model_validator(mode="after")
    def _keys(self) -> TenantConfig:
        _check_hashes(self.api_keys)
        return self


class HedgingConfig(_Strict):
    """Hedged requests (off by default): a second attempt once TTFT passes a percentile."""

    enabled: bool = False
    percentile: float = Field(default=95.0, gt=0, lt=100, description="of recent TTFTs")
    budget_percent: float = Field(default=5.0, ge=0, le=100, description="max extra load")
    min_samples: int = Field(default=20, ge=1, description="TTFTs seen before hedging")
    min_delay_s: float = Field(default=0.0, ge=0)


class OverloadConfig(_Strict):
    """Overload control (docs/overload.md): queue, shedding, adaptive concurrency, hedging.

    Tenant limits apply whenever configured; `enabled` turns on the fleet-level part.
    """

    enabled: bool = True
    queue_size: int = Field(default=256, ge=0, description="waiting requests per model")
    critical_deadline_s: float = Field(default=10.0, ge=0)
    standard_deadline_s: float = Field(default=5.0, ge=0)
    sheddable_deadline_s: float = Field(default=2.0, ge=0)
    standard_share: float = Field(default=0.9, gt=0, le=1, description="of fleet concurrency")
    sheddable_share: float = Field(default=0.75, gt=0, le=1, description="of fleet concurrency")
    shed_status: Literal[429, 503] = 503
    adaptive_concurrency: bool = True
    min_limit: int = Field(default=2, ge=1, description="adaptive limit floor per endpoint")
    limit_window_s: float = Field(default=0.0, ge=0, description="min adaptive-limit period")
    limit_tolerance: float = Field(default=1.5, ge=1, description="latency inflation allowed")
    rate_limit_burst_s: float = Field(default=3.0, gt=0, description="bucket depth in seconds")
    default_max_tokens: int = Field(default=256, ge=0, description="charged when unset")
    hedging: HedgingConfig = Field(default_factory=HedgingConfig)

    @model_validator(mode="after")
    def _shares(self) -> OverloadConfig:
        if self.sheddable_share > self.standard_share:
            raise ValueError("expected sheddable_share <= standard_share")
        return self


class FleetConfig(_Strict):
    """The whole fleet config file."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    providers: list[ProviderConfig] = Field(min_length=1)
    endpoints: list[EndpointConfig] = Field(min_length=1)
    models: list[ModelConfig] = Field(min_length=1)
    tenants: list[TenantConfig] = Field(default_factory=list)
    overload: OverloadConfig = Field(default_factory=OverloadConfig)

    def endpoint(self, name: str) -> EndpointConfig:
        """The endpoint called `name`."""
        for e in self.endpoints:
            if e.name == name:
                return e
        raise KeyError(name)


def _cross_check(cfg: FleetConfig) -> list[tuple[str, str]]:
    """Reference and uniqueness errors as (key path, message)."""
    errs: list[tuple[str, str]] = []

    def dupes(items: list[str], path: str, what: str) -> None:
        seen: set[str] = set()
        for i, n in enumerate(items):
            if n in seen:
                errs.append((f"{path}[{i}].name", f"duplicate {what} name {n!r}"))
            seen.add(n)

    dupes([p.name for p in cfg.providers], "providers", "provider")
    dupes([e.name for e in cfg.endpoints], "endpoints", "endpoint")
    dupes([m.name for m in cfg.models], "models", "model")
    dupes([t.name for t in cfg.tenants], "tenants", "tenant")
    providers = {p.name for p in cfg.providers}
    for i, e in enumerate(cfg.endpoints):
        if e.provider not in providers:
            errs.append(
                (
                    f"endpoints[{i}].provider",
                    f"expected one of the providers ({', '.join(sorted(providers))}), "
                    f"got {e.provider!r}",
                )
            )
    names = {e.name for e in cfg.endpoints}
    for i, m in enumerate(cfg.models):
        for j, n in enumerate(m.endpoints):
            if n not in names:
                errs.append(
                    (f"models[{i}].endpoints[{j}]", f"expected an endpoint name, got {n!r}")
                )
    owner: dict[str, str] = {}
    for i, t in enumerate(cfg.tenants):
        for j, k in enumerate(t.api_keys):
            if k in owner and owner[k] != t.name:
                errs.append(
                    (f"tenants[{i}].api_keys[{j}]", f"key already belongs to tenant {owner[k]!r}")
                )
            owner[k] = t.name
    return errs


SERVICE_ACCOUNT_KEYS = ("client_email", "private_key", "token_uri")


def _service_account_problem(path: Path) -> str | None:
    """Why `path` is not a readable service-account key file (None when it is)."""
    expect = "expected a service-account key file (JSON with type service_account, " + ", ".join(
        SERVICE_ACCOUNT_KEYS
    )
    try:
        info = json.loads(path.read_text())
    except OSError as e:
        return f"cannot read {str(path)!r} ({e.strerror}); {expect})"
    except ValueError:
        return f"{str(path)!r} is not JSON; {expect})"
    if not isinstance(info, dict) or info.get("type") != "service_account":
        return f"{str(path)!r} is not a service-account key; {expect})"
    missing = [k for k in SERVICE_ACCOUNT_KEYS if not isinstance(info.get(k), str)]
    if missing:
        return f"{str(path)!r} lacks {', '.join(missing)}; {expect})"
    return None


def _check_files(cfg: FleetConfig, src: str) -> tuple[FleetConfig, list[tuple[str, str]]]:
    """Resolve credential files against the config's folder and check they can be used."""
    base = Path(src).parent if not src.startswith("<") else Path.cwd()
    errs: list[tuple[str, str]] = []
    eps = list(cfg.endpoints)
    for i, e in enumerate(eps):
        lib = {"bedrock": "botocore", "vertex": "google.auth"}.get(e.kind)
        if lib is not None and importlib.util.find_spec(lib.split(".")[0]) is None:
            errs.append(
                (
                    f"endpoints[{i}].kind",
                    f"kind {e.kind} needs {lib}: pip install 'skyfleet[providers]'",
                )
            )
        if e.vertex is None:
            continue
        path = Path(e.vertex.credentials_file).expanduser()
        if not path.is_absolute():
            path = (base / path).resolve()
        why = _service_account_problem(path)
        if why:
            errs.append((f"endpoints[{i}].vertex.credentials_file", why))
        vx = e.vertex.model_copy(update={"credentials_file": str(path)})
        eps[i] = e.model_copy(update={"vertex": vx})
    return cfg.model_copy(update={"endpoints": eps}), errs


def _substitute(node: Any, path: str, src: str) -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string; a missing VAR is an error."""
    if isinstance(node, dict):
        return {k: _substitute(v, _join(path, str(k)), src) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, f"{path}[{i}]", src) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:

        def repl(m: re.Match[str]) -> str:
            val = os.environ.get(m.group(1))
            if val is None:
                if m.group(2) is not None:
                    return m.group(2)
                raise ConfigError(
                    f"{src}: {path}: environment variable {m.group(1)} is not set "
                    f"(expected it to hold the value, or write ${{{m.group(1)}:-default}})"
                )
            return val

        return _ENV_RE.sub(repl, node)
    return node


_SECRET_KEYS = ("api_key", "redis_url", "secret", "session_token", "headers", "'ledger', 'url'")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = _join(out, str(part))
    return out or "(top level)"


def _format_validation(e: ValidationError, src: str) -> str:
    lines = []
    for err in e.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check spelling; see docs/config.md)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        got = err.get("input")
        show = err["type"] not in ("missing", "extra_forbidden") and not isinstance(got, dict)
        if any(k in str(loc) for k in _SECRET_KEYS):
            show = False  # never echo secrets
        lines.append(f"{_loc(loc)}: {msg}" + (f" (got {got!r})" if show else ""))
    head = f"{src}: " if len(lines) == 1 else f"{src}: {len(lines)} errors:\n  "
    return head + "\n  ".join(lines)


def parse_config(data: Any, src: str = "<config>") -> FleetConfig:
    """Validate an already-parsed YAML document (env substitution included)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{src}: (top level): expected a mapping of sections, got {data!r:.60}")
    data = _substitute(data, "", src)
    try:
        cfg = FleetConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation(e, src)) from None
    cfg, file_errs = _check_files(cfg, src)
    errs = _cross_check(cfg) + file_errs
    if errs:
        body = "\n  ".join(f"{p}: {m}" for p, m in errs)
        raise ConfigError(f"{src}: {body}" if len(errs) == 1 else f"{src}: errors:\n  {body}")
    return cfg


def load_config(path: str | Path) -> FleetConfig:
    """Read, substitute and validate a fleet config file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config file ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}: invalid YAML{where}: {getattr(e, 'problem', e)}") from None
    return parse_config(data, str(p))
