"""Live fleet state built from the config: endpoints with their state, models, tenants.

`Fleet.apply(cfg)` swaps in a new config without awaiting (atomic for the event loop) and keeps
the live state (in-flight counts, health) of endpoints whose URL and model did not change.
Each endpoint has its provider adapter (`skyfleet.providers`); adapters built or replaced by
a reload wait in `Fleet.adapters_to_start` / `adapters_to_close` until the gateway starts
(credential refresh) or closes them.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

import aiohttp

from skyfleet.config import EndpointConfig, FleetConfig, TenantConfig, hash_key
from skyfleet.policy.health import EndpointHealth
from skyfleet.policy.types import EndpointState
from skyfleet.providers import Adapter, build_adapter


@dataclass(slots=True)
class LiveEndpoint:
    """One endpoint: its config, the policy-visible state and health bookkeeping."""

    cfg: EndpointConfig
    state: EndpointState
    adapter: Adapter
    health: EndpointHealth = field(default_factory=EndpointHealth)
    headers: dict[str, str] = field(default_factory=dict)
    timeout: aiohttp.ClientTimeout = field(default_factory=aiohttp.ClientTimeout)
    next_probe: float = 0.0
    next_scrape: float = 0.0

    @property
    def secret(self) -> str | None:
        """The endpoint's API key (masked in upstream error bodies passed to clients)."""
        key = self.cfg.api_key
        return key.get_secret_value() if key is not None else None

    @classmethod
    def build(cls, cfg: EndpointConfig) -> LiveEndpoint:
        """A fresh live endpoint for `cfg`."""
        state = EndpointState(
            name=cfg.name,
            provider=cfg.provider,
            tier=cfg.tier,
            capacity=cfg.capacity,
            model=cfg.model,
            region=cfg.region,
        )
        endpoint = cls(cfg=cfg, state=state, adapter=build_adapter(cfg))
        endpoint.configure(cfg)
        return endpoint

    def configure(self, cfg: EndpointConfig) -> Adapter | None:
        """Apply (possibly changed) config fields; returns the replaced adapter, if any."""
        replaced = None
        if cfg != self.cfg:
            replaced, self.adapter = self.adapter, build_adapter(cfg)
        self.cfg = cfg
        state = self.state
        state.provider = cfg.provider
        state.tier = cfg.tier
        state.capacity = cfg.capacity
        state.region = cfg.region
        state.price_per_hour = cfg.price.per_hour
        state.price_per_1m_input = cfg.price.per_1m_input_tokens
        state.price_per_1m_output = cfg.price.per_1m_output_tokens
        self.headers = {"Content-Type": "application/json"}
        if cfg.api_key is not None:
            self.headers["Authorization"] = f"Bearer {cfg.api_key.get_secret_value()}"
        self.headers.update({name: value.get_secret_value() for name, value in cfg.headers.items()})
        timeouts = cfg.timeouts
        self.timeout = aiohttp.ClientTimeout(
            total=timeouts.total_s, sock_connect=timeouts.connect_s, sock_read=timeouts.ttfb_s
        )
        return replaced

    def cost(self, prompt: int, completion: int, latency_s: float, cached: int = 0) -> float:
        """USD for one request: token prices (cached prompt tokens at their own price, when
        the config gives one), or its share of an instance-hour."""
        price = self.cfg.price
        if price.per_hour is not None:
            return price.per_hour / 3600.0 * latency_s / self.cfg.capacity
        input_price = price.per_1m_input_tokens or 0.0
        cached_price = price.per_1m_cached_input_tokens
        cached = min(cached, prompt) if cached_price is not None else 0
        return (
            (prompt - cached) * input_price
            + cached * (cached_price or 0.0)
            + completion * (price.per_1m_output_tokens or 0.0)
        ) / 1e6


class Fleet:
    """Everything the request path looks up, rebuilt on reload."""

    def __init__(self, cfg: FleetConfig) -> None:
        self.cfg = cfg
        self.endpoints: dict[str, LiveEndpoint] = {}
        self.models: dict[str, list[LiveEndpoint]] = {}
        self.states: dict[str, list[EndpointState]] = {}
        self.tenants_by_hash: dict[str, TenantConfig] = {}
        self.admin_hashes: list[str] = []
        self.adapters_to_start: list[Adapter] = []
        self.adapters_to_close: list[Adapter] = []
        self.apply(cfg)

    def apply(self, cfg: FleetConfig) -> None:
        """Swap in `cfg`, keeping live state of unchanged endpoints."""
        endpoints: dict[str, LiveEndpoint] = {}
        for endpoint_cfg in cfg.endpoints:
            old = self.endpoints.get(endpoint_cfg.name)
            if (
                old is not None
                and old.cfg.url == endpoint_cfg.url
                and old.cfg.model == endpoint_cfg.model
            ):
                replaced = old.configure(endpoint_cfg)
                if replaced is not None:
                    self.adapters_to_close.append(replaced)
                    self.adapters_to_start.append(old.adapter)
                endpoints[endpoint_cfg.name] = old
            else:
                endpoints[endpoint_cfg.name] = LiveEndpoint.build(endpoint_cfg)
                self.adapters_to_start.append(endpoints[endpoint_cfg.name].adapter)
        for name, gone in self.endpoints.items():
            if endpoints.get(name) is not gone:
                self.adapters_to_close.append(gone.adapter)
        models = {model.name: [endpoints[name] for name in model.endpoints] for model in cfg.models}
        self.cfg = cfg
        self.endpoints = endpoints
        self.models = models
        self.states = {
            name: [endpoint.state for endpoint in members] for name, members in models.items()
        }
        self.tenants_by_hash = {
            key_hash: tenant for tenant in cfg.tenants for key_hash in tenant.api_keys
        }
        self.admin_hashes = list(cfg.server.admin_api_keys)

    @property
    def open_access(self) -> bool:
        """No tenants configured: requests need no key (tenant 'anonymous')."""
        return not self.cfg.tenants

    def tenant_for(self, key: str) -> TenantConfig | None:
        """The tenant owning `key`: looked up by its SHA-256 digest, never by the key itself."""
        return self.tenants_by_hash.get(hash_key(key))

    def is_admin(self, key: str) -> bool:
        """Whether `key` is an admin key (its digest compared with every admin digest in
        constant time: the time says nothing of which one matched, if any)."""
        digest = hash_key(key)
        # a list, not a generator: every digest is compared, no early exit
        return any([hmac.compare_digest(digest, admin_hash) for admin_hash in self.admin_hashes])
