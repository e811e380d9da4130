"""Security checks of the gateway app (in process, the production request path and server
limits): every route outside a short public list refuses without the admin key (the app's
router enumerated, not a hand-kept list), keys are compared by digest in constant time,
keys and provider secrets appear in no answer, metric, dashboard, ledger or log, bodies past
the size limit are refused, and the static routes serve nothing outside their fixed set."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from skyfleet.config import hash_key
from skyfleet.gateway import fleet as fleet_module

from .harness import ADMIN, AUTH, KEY, FakeUpstream, Reply, chat, chunks, serving

PROVIDER = "sk-provider-secret-9f8e7d6c"
SECRETS = (KEY, ADMIN, PROVIDER)
# Routes anyone may call, and why: no data behind them that needs a key.
PUBLIC = {
    "/health": "load balancers' health check",
    "/metrics": "Prometheus scrape (no keys or secrets in it: checked below)",
    "/dashboard": "redirect to the page",
    "/dashboard/": "the page shell: no data; its state API needs the admin key",
    "/dashboard/static/{name}": "the page's fixed assets",
}


def route_table(app: web.Application) -> list[tuple[str, str]]:
    return sorted({(r.method, r.resource.canonical) for r in app.router.routes() if r.resource})


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


async def test_every_route_outside_the_public_list_needs_the_admin_key(tmp_path: Path) -> None:
    async with serving([FakeUpstream()], tmp_path) as (client, _):
        table = route_table(client.server.app)
        assert {("GET", "/admin/endpoints"), ("POST", "/admin/reload")} <= set(table)
        assert ("GET", "/dashboard/api/state") in table
        guarded = [(m, p) for m, p in table if p not in PUBLIC and not p.startswith("/v1/")]
        wrong = [
            {},
            {"Authorization": "Bearer sk-wrong"},
            AUTH,  # a tenant's key is not an admin key
            {"Authorization": f"Basic {ADMIN}"},
            {"Authorization": f"Bearer {hash_key(ADMIN)}"},  # the stored digest is no key
            {"Authorization": ADMIN},
        ]
        for method, path in guarded:
            for headers in wrong:
                resp = await client.request(method, concrete(path), headers=headers)
                assert resp.status in (401, 403), (method, path, headers, resp.status)
            resp = await client.request(
                method, concrete(path), headers={"Authorization": f"Bearer {ADMIN}"}
            )
            assert resp.status not in (401, 403), (method, path)  # the route is real
        for method, path in table:
            if path.startswith("/v1/"):
                resp = await client.request(method, path, json=chat())
                assert resp.status == 401, (method, path)
                if path == "/v1/messages":  # Anthropic's API answers in Anthropic's shape
                    assert (await resp.json())["error"]["type"] == "authentication_error"
                elif method != "HEAD":
                    assert (await resp.json())["error"]["code"] == "invalid_api_key"


async def test_with_no_admin_keys_the_admin_routes_are_off(tmp_path: Path) -> None:
    async with serving([FakeUpstream()], tmp_path, server={"admin_api_keys": []}) as (client, _):
        for method, path in route_table(client.server.app):
            if path in PUBLIC or path.startswith("/v1/"):
                continue
            headers = {"Authorization": f"Bearer {ADMIN}"}
            resp = await client.request(method, concrete(path), headers=headers)
            assert resp.status in (401, 403), (method, path)


async def test_keys_are_compared_by_digest_in_constant_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Trap(str):
        """A key whose characters must never be compared or hashed into a lookup."""

        __slots__ = ()

        def __eq__(self, other: object) -> bool:
            raise AssertionError("the raw key was compared")

        def __ne__(self, other: object) -> bool:
            raise AssertionError("the raw key was compared")

        def __hash__(self) -> int:
            raise AssertionError("the raw key was hashed into a lookup")

    compared: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(fleet_module.hmac, "compare_digest", spy)
    async with serving(
        [FakeUpstream()], tmp_path, server={"admin_api_keys": [hash_key("other"), hash_key(ADMIN)]}
    ) as (_, gateway):
        fleet = gateway.fleet
        tenant = fleet.tenant_for(Trap(KEY))
        assert tenant is not None and tenant.name == "t"
        assert fleet.tenant_for(Trap(KEY[:-1] + "x")) is None
        assert all(k.startswith("sha256:") for k in fleet.tenants_by_hash)  # no key kept
        for key, admin in ((ADMIN, True), ("sk-wrong", False), (ADMIN[:-1], False)):
            compared.clear()
            assert fleet.is_admin(Trap(key)) is admin
            # every admin digest is compared, matched or not (no early exit), digest to digest
            assert len(compared) == 2
            assert all(a.startswith("sha256:") and len(a) == len(b) == 71 for a, b in compared)


async def test_no_key_or_secret_in_answers_metrics_dashboard_ledger_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    echo = {"error": {"message": f"Incorrect API key provided: {PROVIDER}", "type": "x"}}
    up = FakeUpstream(
        Reply(status=401, body=echo),
        Reply(status=429, body=echo),
        Reply(status=500, body=echo),
        Reply(body=None, stream=chunks(["fine"])),
        api_key="${SECURITY_PROVIDER_KEY}",
    )
    texts: list[str] = []
    caplog.set_level(logging.DEBUG)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SECURITY_PROVIDER_KEY", PROVIDER)
        async with serving([up], tmp_path, health={"consecutive_failures": 100}) as (
            client,
            gateway,
        ):
            assert gateway.fleet.endpoints["e0"].secret == PROVIDER
            near = KEY[:-1] + "Z"
            for headers in (AUTH, AUTH, AUTH, AUTH, AUTH, {"Authorization": f"Bearer {near}"}):
                for stream in (False, True):
                    resp = await client.post(
                        "/v1/chat/completions", json=chat(stream=stream), headers=headers
                    )
                    texts += [await resp.text(), json.dumps(dict(resp.headers))]
            await asyncio.sleep(1.2)  # one dashboard sample
            admin = {"Authorization": f"Bearer {ADMIN}"}
            for path in ("/metrics", "/admin/endpoints", "/dashboard/api/state", "/dashboard/"):
                texts.append(await (await client.get(path, headers=admin)).text())
            for asset in ("app.js", "charts.js", "style.css", "index.html"):
                texts.append(await (await client.get(f"/dashboard/static/{asset}")).text())
    conn = sqlite3.connect(tmp_path / "usage.sqlite")
    texts += [repr(row) for row in conn.execute("SELECT * FROM usage")]
    conn.close()
    texts += [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    assert any("Incorrect API key provided: ***" in t for t in texts), "the echo was masked"
    assert len(texts) > 30
    leaks = [(s, t[:120]) for t in texts for s in SECRETS if s in t]
    assert not leaks, leaks


@pytest.mark.parametrize("chunked", [False, True])
async def test_bodies_past_the_limit_get_413(tmp_path: Path, chunked: bool) -> None:
    async with serving([FakeUpstream()], tmp_path, server={"max_body_bytes": 2000}) as (client, _):
        big = json.dumps(chat(user="x" * 3000)).encode()

        async def parts() -> Any:
            for i in range(0, len(big), 500):
                yield big[i : i + 500]

        resp = await client.post(
            "/v1/chat/completions", data=parts() if chunked else big, headers=AUTH
        )
        assert resp.status == 413
        assert "exceeds the limit of 2000 bytes" in (await resp.json())["error"]["message"]
        small = await client.post("/v1/chat/completions", json=chat(), headers=AUTH)
        assert small.status == 200


TRAVERSALS = [
    "../routes.py",
    "..%2froutes.py",
    "%2e%2e%2froutes.py",
    "%252e%252e%252froutes.py",
    "..%5croutes.py",
    "....//routes.py",
    "../../config.py",
    "..%2f..%2fconfig.py",
    "%2fetc%2fpasswd",
    "/etc/passwd",
    "app.js%00.py",
    "app.js/../../routes.py",
    ".",
    "..",
    "%00",
]
CANARIES = (b"def add_dashboard_routes", b"class ServerConfig", b"root:x:0:0")


async def test_static_routes_serve_nothing_outside_their_fixed_set(tmp_path: Path) -> None:
    async with serving([FakeUpstream()], tmp_path) as (client, _):
        app = client.server.app
        assert not [r for r in app.router.resources() if isinstance(r, web.StaticResource)]
        dynamic = [p for _, p in route_table(app) if "{" in p]
        assert "/dashboard/static/{name}" in dynamic
        port = client.server.port
        assert port is not None
        for path in dynamic:
            for payload in TRAVERSALS:
                target = re.sub(r"\{[^}]+\}", payload, path)
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(
                    f"GET {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".encode()
                )
                answer = await asyncio.wait_for(reader.read(), 5)
                writer.close()
                status = int(answer.split(b" ", 2)[1])
                assert status in (400, 404), (target, answer[:200])
                assert not any(c in answer for c in CANARIES), target
