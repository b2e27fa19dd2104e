"""Simulator test fixtures: a virtual clock, small catalogs, in-process clients, the spec."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]
from jsonschema import Draft7Validator  # type: ignore[import-untyped, unused-ignore]

from spotify_ingest.sim.app import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, SimApp, SimConfig, create_app
from spotify_ingest.sim.catalog import Catalog
from spotify_ingest.sim.profiles import PROFILES

SMALL_ARTISTS = 3000
DEFAULT_SPEC_PATH = Path(__file__).resolve().parents[3] / "shared" / "spotify-openapi.yml"


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


def spec_path() -> Path:
    """``shared/spotify-openapi.yml`` beside the repository, or ``$SPOTIFY_OPENAPI_SPEC``."""
    return Path(os.environ.get("SPOTIFY_OPENAPI_SPEC", DEFAULT_SPEC_PATH))


@functools.cache
def openapi_spec() -> dict[str, Any]:
    path = spec_path()
    if not path.is_file():
        pytest.skip(f"OpenAPI description not found at {path} (set SPOTIFY_OPENAPI_SPEC)")
    with path.open(encoding="utf-8") as f:
        spec: dict[str, Any] = yaml.safe_load(f)
    return spec


def _to_json_schema(node: Any, dropped: frozenset[str]) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema (draft 7), minus the ``dropped`` required fields.

    * ``nullable: true`` becomes "or null" (OpenAPI 3.0 has no ``null`` type);
    * ``discriminator`` is dropped: the spec's ones (``PlaylistTrackObject.track``: TrackObject
      | EpisodeObject on ``type``) have no mapping, so the implicit one would name schemas
      ``track`` and ``episode`` that do not exist; the ``oneOf`` alone still checks the item;
    * ``required`` loses the fields the profile removes (e.g. ``available_markets``).
    """
    if isinstance(node, list):
        return [_to_json_schema(value, dropped) for value in node]
    if not isinstance(node, dict):
        return node
    out = {
        key: _to_json_schema(value, dropped)
        for key, value in node.items()
        if key not in ("discriminator", "nullable", "example", "deprecated")
    }
    if isinstance(out.get("required"), list):
        out["required"] = [f for f in out["required"] if f not in dropped]
    if node.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


@functools.cache
def response_validator(profile: str, component: str) -> Draft7Validator:
    """Validator of the 200 body ``components/responses/<component>`` for ``profile``.

    Fields the profile removes (e.g. ``available_markets`` in dev-2026) are dropped from every
    ``required`` list of the spec's artist and album schemas.
    """
    spec = openapi_spec()
    p = PROFILES[profile]
    dropped = p.album_fields_removed | p.artist_fields_removed
    schemas = {
        name: _to_json_schema(
            schema, dropped if ("Album" in name or "Artist" in name) else frozenset()
        )
        for name, schema in spec["components"]["schemas"].items()
    }
    responses = _to_json_schema(spec["components"]["responses"], frozenset())
    pointer = f"#/components/responses/{component}/content/application~1json/schema"
    root = {"$ref": pointer, "components": {"schemas": schemas, "responses": responses}}
    Draft7Validator.check_schema(root)
    return Draft7Validator(root)


def error_validator() -> Draft7Validator:
    return response_validator("extended", "NotFound")


@pytest.fixture(scope="session")
def spec_paths() -> Iterator[dict[str, Any]]:
    yield openapi_spec()["paths"]
