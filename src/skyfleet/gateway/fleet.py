"""Live fleet state built from the config: endpoints with their state, models, tenants.

`Fleet.apply(cfg)` swaps in a new config without awaiting (atomic for the event loop) and keeps
the live state (in-flight counts, health) of endpoints whose URL and model did not change.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

import aiohttp

from skyfleet.config import EndpointConfig, FleetConfig, TenantConfig, hash_key
from skyfleet.policy.health import EndpointHealth
from skyfleet.policy.types import EndpointState


@dataclass(slots=True)
class LiveEndpoint:
    """One endpoint: its config, the policy-visible state and health bookkeeping."""

    cfg: EndpointConfig
    state: EndpointState
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
        st = EndpointState(
            name=cfg.name,
            provider=cfg.provider,
            tier=cfg.tier,
            capacity=cfg.capacity,
            model=cfg.model,
            region=cfg.region,
        )
        ep = cls(cfg=cfg, state=st)
        ep.configure(cfg)
        return ep

    def configure(self, cfg: EndpointConfig) -> None:
        """Apply (possibly changed) config fields to this endpoint."""
        self.cfg = cfg
        s = self.state
        s.provider, s.tier, s.capacity, s.region = cfg.provider, cfg.tier, cfg.capacity, cfg.region
        s.price_per_hour = cfg.price.per_hour
        s.price_per_1m_input = cfg.price.per_1m_input_tokens
        s.price_per_1m_output = cfg.price.per_1m_output_tokens
        self.headers = {"Content-Type": "application/json"}
        if cfg.api_key is not None:
            self.headers["Authorization"] = f"Bearer {cfg.api_key.get_secret_value()}"
        t = cfg.timeouts
        self.timeout = aiohttp.ClientTimeout(
            total=t.total_s, sock_connect=t.connect_s, sock_read=t.ttfb_s
        )

    def cost(self, prompt: int, completion: int, latency_s: float) -> float:
        """USD for one request: token prices, or its share of an instance-hour."""
        p = self.cfg.price
        if p.per_hour is not None:
            return p.per_hour / 3600.0 * latency_s / self.cfg.capacity
        return (
            prompt * (p.per_1m_input_tokens or 0.0) + completion * (p.per_1m_output_tokens or 0.0)
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
        self.apply(cfg)

    def apply(self, cfg: FleetConfig) -> None:
        """Swap in `cfg`, keeping live state of unchanged endpoints."""
        eps: dict[str, LiveEndpoint] = {}
        for ec in cfg.endpoints:
            old = self.endpoints.get(ec.name)
            if old is not None and old.cfg.url == ec.url and old.cfg.model == ec.model:
                old.configure(ec)
                eps[ec.name] = old
            else:
                eps[ec.name] = LiveEndpoint.build(ec)
        models = {m.name: [eps[n] for n in m.endpoints] for m in cfg.models}
        self.cfg = cfg
        self.endpoints = eps
        self.models = models
        self.states = {k: [e.state for e in v] for k, v in models.items()}
        self.tenants_by_hash = {k: t for t in cfg.tenants for k in t.api_keys}
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
        h = hash_key(key)
        return any([hmac.compare_digest(h, a) for a in self.admin_hashes])  # all, no early exit
