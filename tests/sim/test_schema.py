"""Every endpoint in every profile: 200 bodies validate against the OpenAPI spec of the real API,
removed endpoints answer the documented error, limits are enforced per profile."""

from __future__ import annotations

import re
from typing import Any

import pytest

from spotify_ingest.sim.catalog import Catalog
from spotify_ingest.sim.profiles import ENDPOINTS, PROFILES

from .conftest import AppFactory, asgi_client, error_validator, get_token, response_validator

# What the brief and Spotify's announcements say each profile loses (endpoint key -> statuses).
REMOVED: dict[str, dict[str, tuple[int, ...]]] = {
    "extended": {},
    "dev-2024": {
        "related-artists": (404,),
        "featured-playlists": (404,),
        "category-playlists": (404,),
    },
    "dev-2026": {
        "related-artists": (404,),
        "featured-playlists": (404,),
        "category-playlists": (404,),
        "artists": (403, 404),
        "albums": (403, 404),
        "new-releases": (403, 404),
        "categories": (403, 404),
    },
}
MAX_LIMIT = {
    "extended": {"search": 50, "artist-albums": 50},
    "dev-2024": {"search": 50, "artist-albums": 50},
    "dev-2026": {"search": 10, "artist-albums": 10},
}
REMOVED_FIELDS = {
    "extended": (frozenset(), frozenset()),
    "dev-2024": (frozenset(), frozenset()),
    "dev-2026": (
        frozenset({"followers", "popularity"}),
        frozenset({"label", "popularity", "available_markets", "album_group"}),
    ),
}


def owned_playlist(cat: Catalog, owned: bool = True) -> int:
    for p in range(cat.n_playlists):
        if (cat.playlist_owner(p) == "app-owner") == owned:
            return p
    raise AssertionError("catalog has no such playlist")


def editorial_playlist(cat: Catalog) -> int:
    for p in range(cat.n_playlists):
        if cat.playlist_owner(p) == "spotify":
            return p
    raise AssertionError("catalog has no editorial playlist")


def artist_with_albums(cat: Catalog) -> int:
    groups = frozenset({"album", "single", "appears_on", "compilation"})
    for i in range(cat.n_artists):
        if len(cat.artist_albums(i, groups)) > 12:
            return i
    raise AssertionError("no artist with more than 12 albums")


def search_word(cat: Catalog) -> str:
    name: str = cat.artist_object(0)["name"]
    first = re.search(r"\w+", name)
    assert first is not None
    return first.group(0).lower()


def request_path(key: str, cat: Catalog) -> str:
    """A request to endpoint ``key`` that has results in the catalog."""
    a = cat.artist_id(artist_with_albums(cat))
    al = cat.album_id(0)
    pl = cat.playlist_id(owned_playlist(cat))
    category = cat.categories()[0][0]
    return {
        "search": f"/v1/search?q={search_word(cat)}&type=artist,album,track,playlist&limit=5",
        "artist": f"/v1/artists/{a}",
        "artists": f"/v1/artists?ids={cat.artist_id(0)},{cat.artist_id(1)},{a}",
        "related-artists": f"/v1/artists/{a}/related-artists",
        "artist-albums": f"/v1/artists/{a}/albums?limit=5",
        "album": f"/v1/albums/{al}",
        "albums": f"/v1/albums?ids={al},{cat.album_id(1)}",
        "album-tracks": f"/v1/albums/{al}/tracks",
        "featured-playlists": "/v1/browse/featured-playlists?limit=5",
        "categories": "/v1/browse/categories",
        "category-playlists": f"/v1/browse/categories/{category}/playlists",
        "new-releases": "/v1/browse/new-releases?limit=5",
        "playlist": f"/v1/playlists/{pl}",
        "playlist-items": f"/v1/playlists/{pl}/items?limit=5",
        "playlist-tracks": f"/v1/playlists/{pl}/tracks?limit=5",
    }[key]


def paging_of(key: str, body: dict[str, Any]) -> dict[str, Any]:
    """The (first) paging object of a paged endpoint's body."""
    wrapper = {
        "search": "artists",
        "categories": "categories",
        "featured-playlists": "playlists",
        "category-playlists": "playlists",
        "new-releases": "albums",
    }.get(key)
    return body[wrapper] if wrapper else body


def walk(node: Any) -> Any:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def assert_fields_removed(profile: str, body: Any) -> None:
    artist_gone, album_gone = REMOVED_FIELDS[profile]
    for obj in walk(body):
        kind = obj.get("type")
        if kind == "artist":
            assert not artist_gone & obj.keys(), obj.keys()
        elif kind == "album":
            assert not album_gone & obj.keys(), obj.keys()


def assert_valid(validator: Any, body: Any) -> None:
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]


def test_removed_table_matches_profiles() -> None:
    for name, profile in PROFILES.items():
        assert set(profile.removed) == set(REMOVED[name])


@pytest.mark.parametrize("profile", list(PROFILES))
async def test_every_endpoint_validates_or_is_removed(
    profile: str, make_app: AppFactory, catalog: Catalog
) -> None:
    async with asgi_client(make_app(profile=profile, limit=10_000)) as client:
        client.headers["Authorization"] = f"Bearer {await get_token(client)}"
        for endpoint in ENDPOINTS:
            r = await client.get(request_path(endpoint.key, catalog))
            body = r.json()
            if endpoint.key in REMOVED[profile]:
                assert r.status_code in REMOVED[profile][endpoint.key], (endpoint.key, r.text)
                assert_valid(error_validator(), body)
                assert body["error"]["status"] == r.status_code
                continue
            assert r.status_code == 200, (profile, endpoint.key, r.text[:300])
            assert_valid(response_validator(profile, endpoint.response), body)
            assert_fields_removed(profile, body)
            # Not vacuous: something came back.
            assert any(isinstance(v, list) and v for v in walk_lists(body)) or "id" in body


def walk_lists(body: Any) -> Any:
    for obj in walk(body):
        for value in obj.values():
            if isinstance(value, list):
                yield value


@pytest.mark.parametrize("profile", list(PROFILES))
async def test_page_limits_per_profile(
    profile: str, make_app: AppFactory, catalog: Catalog
) -> None:
    prof = PROFILES[profile]
    async with asgi_client(make_app(profile=profile, limit=10_000)) as client:
        client.headers["Authorization"] = f"Bearer {await get_token(client)}"
        for key, expected in MAX_LIMIT[profile].items():
            assert prof.max_limit[key] == expected
        for endpoint in ENDPOINTS:
            if not endpoint.paged or endpoint.key in REMOVED[profile]:
                continue
            path = re.sub(r"[?&]limit=\d+", "", request_path(endpoint.key, catalog))
            sep = "&" if "?" in path else "?"
            top = prof.max_limit[endpoint.key]
            ok = await client.get(f"{path}{sep}limit={top}")
            assert ok.status_code == 200, (endpoint.key, ok.text[:200])
            for bad in (top + 1, 0, -1, "ten"):
                r = await client.get(f"{path}{sep}limit={bad}")
                assert r.status_code == 400, (endpoint.key, bad)
                assert r.json() == {"error": {"status": 400, "message": "Invalid limit"}}
            default = await client.get(path)
            assert default.status_code == 200
            assert (
                paging_of(endpoint.key, default.json())["limit"] == prof.default_limit[endpoint.key]
            )


@pytest.mark.parametrize("profile", list(PROFILES))
async def test_playlist_access_per_profile(
    profile: str, make_app: AppFactory, catalog: Catalog
) -> None:
    editorial = catalog.playlist_id(editorial_playlist(catalog))
    other = catalog.playlist_id(owned_playlist(catalog, owned=False))
    owned = catalog.playlist_id(owned_playlist(catalog))
    async with asgi_client(make_app(profile=profile, limit=10_000)) as client:
        client.headers["Authorization"] = f"Bearer {await get_token(client)}"
        editorial_status = (await client.get(f"/v1/playlists/{editorial}")).status_code
        assert editorial_status == (200 if profile == "extended" else 404)
        for leaf in ("items", "tracks"):
            r = await client.get(f"/v1/playlists/{other}/{leaf}")
            if profile == "extended":
                assert r.status_code == 200
            elif profile == "dev-2026":
                assert r.status_code in (403, 404)
                assert_valid(error_validator(), r.json())
            assert (await client.get(f"/v1/playlists/{owned}/{leaf}")).status_code == 200


async def test_error_bodies_validate(make_app: AppFactory, catalog: Catalog) -> None:
    artist = f"/v1/artists/{catalog.artist_id(0)}"
    async with asgi_client(make_app(limit=1)) as client:
        r = await client.get(artist)
        assert r.status_code == 401
        assert_valid(response_validator("extended", "Unauthorized"), r.json())
        client.headers["Authorization"] = f"Bearer {await get_token(client)}"
        assert (await client.get(artist)).status_code == 200
        r = await client.get(artist)
        assert r.status_code == 429
        assert_valid(response_validator("extended", "TooManyRequests"), r.json())
    async with asgi_client(make_app(limit=1000)) as client:
        client.headers["Authorization"] = f"Bearer {await get_token(client)}"
        cases = {
            "/v1/artists/nope": 400,
            f"/v1/albums/{catalog.artist_id(0)}": 404,
            "/v1/nothing": 404,
            "/v1/search?type=artist": 400,
        }
        for path, status in cases.items():
            r = await client.get(path)
            assert r.status_code == status, path
            assert_valid(error_validator(), r.json())


def test_spec_has_every_endpoint(spec_paths: dict[str, Any]) -> None:
    for endpoint in ENDPOINTS:
        assert "get" in spec_paths[endpoint.openapi_path], endpoint.key
        ref = spec_paths[endpoint.openapi_path]["get"]["responses"]["200"]["$ref"]
        assert ref == f"#/components/responses/{endpoint.response}"
