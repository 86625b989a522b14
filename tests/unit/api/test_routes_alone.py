"""One router on an app of its own: the site and pool handlers imported from their module and
exercised alone, on a real SQLite store, with the app's shared `Platform` as their dependency."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from suanli.api import errors
from suanli.api.app import Platform
from suanli.api.routes import sites
from suanli.api.schemas import SiteCreate
from suanli.config import Settings
from suanli.services.core import Role
from suanli.services.db import open_store
from tests.money import principal_token


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'alone.db'}")
    store = open_store(settings.url)
    yield Platform(settings, store.sessions, store.readers, store.serialise_writes)
    store.dispose()


def token(platform: Platform, role: Role) -> str:
    with platform.unit_of_work() as session:
        return principal_token(session, role, role.value)[1]  # a consumer is funded


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_the_sites_router_serves_sites_and_pools_on_an_app_of_its_own(platform: Platform) -> None:
    app = FastAPI()
    errors.install(app)
    app.state.platform = platform
    app.include_router(sites.router)
    provider, consumer = token(platform, Role.PROVIDER), token(platform, Role.CONSUMER)
    with TestClient(app) as client:
        made = client.post(
            "/v1/sites", json={"name": "idc", "cluster": "HORINGER"}, headers=bearer(provider)
        )
        assert made.status_code == 201, made.text
        site = made.json()
        assert site["name"] == "idc" and site["cluster"] == "HORINGER"

        pool = client.post(
            "/v1/pools",
            json={
                "site_id": site["id"],
                "device": "A100",
                "count": 8,
                "price_fen_per_device_hour": 900,
            },
            headers=bearer(provider),
        )
        assert pool.status_code == 201, pool.text
        assert pool.json()["free"] == 8 and pool.json()["site_id"] == site["id"]
        assert platform.capacity_grew.is_set() and platform.wake.is_set()  # the pass is told

        listed = client.get("/v1/sites", headers=bearer(consumer)).json()
        assert [s["id"] for s in listed] == [site["id"]]

        refused = client.post(
            "/v1/sites", json={"name": "x", "province": "北京"}, headers=bearer(consumer)
        )
        assert refused.status_code == 403  # a consumer registers no site
        assert client.get("/v1/sites").status_code == 401  # no token
        bad = client.post(
            "/v1/pools",
            json={
                "site_id": site["id"],
                "device": "A100",
                "count": 0,
                "price_fen_per_device_hour": 1,
            },
            headers=bearer(provider),
        )
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "body.count"
        assert client.get("/v1/tasks", headers=bearer(provider)).status_code == 404  # not here


def test_a_handler_is_a_plain_function_called_with_its_platform(platform: Platform) -> None:
    provider = token(platform, Role.PROVIDER)
    site = asyncio.run(sites.add_site(SiteCreate(name="dc", province="贵州"), provider, platform))
    assert site.province == "贵州" and site.owner != ""
    pools = asyncio.run(sites.pools(provider, platform))
    assert pools == []
    assert [s.id for s in asyncio.run(sites.sites(provider, platform))] == [site.id]
