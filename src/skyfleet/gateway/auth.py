"""Who is calling: API keys → tenants, admin keys for /admin and /dashboard.

Keys are never compared or stored in the clear: the config holds SHA-256 digests, a key is
looked up by its digest, and admin digests are compared in constant time (`Fleet`).
"""

from __future__ import annotations

from aiohttp import web

from skyfleet.config import TenantConfig
from skyfleet.gateway.errors import GatewayError
from skyfleet.gateway.fleet import Fleet
from skyfleet.policy.outcome import Outcome

TENANT = web.RequestKey("skyfleet.tenant", TenantConfig)  # set on authenticated requests


def bearer_token(request: web.Request) -> str | None:
    """The key of an `Authorization: Bearer <key>` header (scheme case-insensitive)."""
    header = request.headers.get("Authorization")
    if not header or header[:7].lower() != "bearer ":
        return None
    return header[7:].strip() or None


def authenticate(
    fleet: Fleet, request: web.Request, x_api_key: bool = False
) -> TenantConfig | None:
    """The calling tenant (None when the fleet has no tenants); raises a 401 otherwise.

    `x_api_key`: also take the key from an `x-api-key` header (Anthropic's SDKs send it so).
    """
    if fleet.open_access:
        return None
    key = bearer_token(request)
    if key is None and x_api_key:
        key = request.headers.get("x-api-key", "").strip() or None
    if key is None:
        raise GatewayError(
            Outcome.AUTH,
            401,
            "missing API key: send 'Authorization: Bearer <key>'",
            code="invalid_api_key",
        )
    tenant = fleet.tenant_for(key)
    if tenant is None:
        raise GatewayError(Outcome.AUTH, 401, "invalid API key", code="invalid_api_key")
    request[TENANT] = tenant
    return tenant


def is_admin(fleet: Fleet, request: web.Request) -> bool:
    """Whether `request` carries one of the fleet's admin keys."""
    key = bearer_token(request)
    return key is not None and fleet.is_admin(key)


def require_admin(fleet: Fleet, request: web.Request) -> None:
    """Raise 403 when admin routes are off, 401 without an admin key."""
    if not fleet.admin_hashes:
        raise GatewayError(Outcome.AUTH, 403, "admin API disabled: set server.admin_api_keys")
    if not is_admin(fleet, request):
        raise GatewayError(Outcome.AUTH, 401, "admin routes need an admin API key")
