"""Simulator test fixtures: a virtual clock, small catalogs, in-process clients, the spec."""

from __future__ import annotations

import asyncio
import copy
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from spotify_ingest.sim.app import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, SimApp, SimConfig, create_app
from spotify_ingest.sim.catalog import Catalog
from spotify_ingest.sim.profiles import PROFILES

SMALL_ARTISTS = 3000
SPEC_PATH = Path(__file__).resolve().parents[3] / "shared" / "spotify-openapi.yml"


class FakeClock:
    """Virtual time: ``sleep`` advances it at once; tests move it with ``advance``."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.t += seconds


@functools.cache
def small_catalog(n_artists: int = SMALL_ARTISTS, seed: int = 0) -> Catalog:
    """Catalogs are immutable: build each (size, seed) once per test session."""
    return Catalog(n_artists, seed)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return small_catalog()


AppFactory = Callable[..., SimApp]


@pytest.fixture
def make_app(clock: FakeClock, catalog: Catalog) -> AppFactory:
    """``make_app(**SimConfig knobs)``: an app on the virtual clock and the shared small catalog."""

    def make(**knobs: Any) -> SimApp:
        knobs.setdefault("artists", SMALL_ARTISTS)
        return create_app(SimConfig(**knobs), clock=clock, catalog=catalog)

    return make


def asgi_client(app: SimApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim.test")


async def get_token(
    client: httpx.AsyncClient, client_id: str = DEMO_CLIENT_ID, secret: str = DEMO_CLIENT_SECRET
) -> str:
    r = await client.post(
        "/api/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


@pytest.fixture
async def api(make_app: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    """An authenticated client of a default app (dev-2026, limit 1000)."""
    async with asgi_client(make_app(limit=1000)) as client:
        client.headers["Authorization"] = f"Bearer {await get_token(client)}"
        yield client


# ------------------------------------------------------------------------------------------------
# The OpenAPI description of the real API, as JSON Schema validators per profile


@functools.cache
def openapi_spec() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    with SPEC_PATH.open(encoding="utf-8") as f:
        spec: dict[str, Any] = yaml.safe_load(f)
    return spec


def _prepare(node: Any, dropped: frozenset[str]) -> None:
    """Drop ``dropped`` from ``required`` lists, and every ``discriminator``.

    The spec's discriminators (``PlaylistTrackObject.track``: TrackObject | EpisodeObject on
    ``type``) have no mapping, so the implicit one points at schemas named ``track`` and
    ``episode`` that do not exist; the ``oneOf`` alone still checks the item.
    """
    if isinstance(node, dict):
        node.pop("discriminator", None)
        req = node.get("required")
        if isinstance(req, list):
            node["required"] = [f for f in req if f not in dropped]
        for value in node.values():
            _prepare(value, dropped)
    elif isinstance(node, list):
        for value in node:
            _prepare(value, dropped)


@functools.cache
def response_validator(profile: str, component: str) -> Any:
    """Validator of the 200 body ``components/responses/<component>`` for ``profile``.

    Fields the profile removes (e.g. ``available_markets`` in dev-2026) are dropped from every
    ``required`` list of the spec's artist and album schemas.
    """
    oas = pytest.importorskip("openapi_schema_validator")
    spec = openapi_spec()
    components = copy.deepcopy(spec["components"])
    p = PROFILES[profile]
    dropped = p.album_fields_removed | p.artist_fields_removed
    for name, schema in components["schemas"].items():
        _prepare(schema, dropped if ("Album" in name or "Artist" in name) else frozenset())
    pointer = f"#/components/responses/{component}/content/application~1json/schema"
    root = {"$ref": pointer, "components": components}
    return oas.OAS30Validator(root)


def error_validator() -> Any:
    return response_validator("extended", "NotFound")


@pytest.fixture(scope="session")
def spec_paths() -> Iterator[dict[str, Any]]:
    yield openapi_spec()["paths"]
