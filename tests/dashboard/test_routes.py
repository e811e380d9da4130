"""The dashboard's aiohttp routes: page, assets, auth and the sampled state."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from skyfleet.dashboard.model import EndpointState, GatewaySample
from skyfleet.dashboard.routes import add_dashboard_routes


class CountingSource:
    """A gateway stand-in whose counter grows by 10 per sample."""

    def __init__(self) -> None:
        self.n = 0

    async def sample(self) -> GatewaySample:
        self.n += 1
        ep = EndpointState("a0", "azure", capacity=4)
        return GatewaySample(
            scraped_at=1000.0 + self.n, endpoints=(ep,), requests={"a0": 10.0 * self.n}
        )


async def _client(on: list[bool]) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    add_dashboard_routes(
        app,
        CountingSource(),
        interval_s=0.05,
        authorize=lambda r: None if r.headers.get("Authorization") == "Bearer k" else "key!",
        enabled=lambda: on[0],
    )
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_page_assets_auth_and_state() -> None:
    client = await _client([True])
    try:
        r = await client.get("/dashboard", allow_redirects=False)
        assert r.status == 302 and r.headers["Location"] == "/dashboard/"
        r = await client.get("/dashboard/")
        assert r.status == 200 and "charts.js" in await r.text()
        for name in ("app.js", "charts.js", "style.css"):
            assert (await client.get(f"/dashboard/static/{name}")).status == 200
        assert (await client.get("/dashboard/static/secret.py")).status == 404
        r = await client.get("/dashboard/api/state")
        assert r.status == 401 and (await r.json())["error"]["message"] == "key!"
        await asyncio.sleep(0.4)
        r = await client.get("/dashboard/api/state", headers={"Authorization": "Bearer k"})
        st = await r.json()
        assert st["ready"] and st["providers"][0]["name"] == "azure"
        assert st["providers"][0]["rps"] > 0
    finally:
        await client.close()


async def test_nothing_is_sampled_while_disabled() -> None:
    client = await _client([False])
    try:
        await asyncio.sleep(0.3)
        r = await client.get("/dashboard/api/state", headers={"Authorization": "Bearer k"})
        assert (await r.json())["ready"] is False
    finally:
        await client.close()
