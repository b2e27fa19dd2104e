"""The simulator app in process (httpx.ASGITransport) on a virtual clock: tokens, rate limiting,
penalties, quota, schedules, paging links, stats, faults, test hooks and determinism."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from spotify_ingest.sim.app import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    ScaledClock,
    SimConfig,
    create_app,
)
from spotify_ingest.sim.catalog import Catalog

from .conftest import AppFactory, FakeClock, asgi_client, get_token

GROUPS = frozenset({"album", "single", "appears_on", "compilation"})


def artist_path(cat: Catalog, i: int = 0) -> str:
    return f"/v1/artists/{cat.artist_id(i)}"


# ------------------------------------------------------------------------------------------------
# Token endpoint


async def test_token_with_basic_credentials(make_app: AppFactory) -> None:
    async with asgi_client(make_app()) as client:
        r = await client.post(
            "/api/token",
            data={"grant_type": "client_credentials"},
            auth=(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET),
        )
        assert r.status_code == 200
        body = r.json()
        assert set(body) == {"access_token", "token_type", "expires_in"}
        assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
        assert len(body["access_token"]) > 40


async def test_token_with_form_credentials(make_app: AppFactory) -> None:
    async with asgi_client(make_app()) as client:
        r = await client.post(
            "/api/token",
            data={
                "grant_type": "client_credentials",
                "client_id": DEMO_CLIENT_ID,
                "client_secret": DEMO_CLIENT_SECRET,
            },
        )
        assert r.status_code == 200 and r.json()["token_type"] == "Bearer"


def basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


GRANT = {"grant_type": "client_credentials"}


@pytest.mark.parametrize(
    ("data", "headers", "error", "description"),
    [
        (GRANT, {}, "invalid_client", "Invalid client"),
        ({**GRANT, "client_id": "nobody", "client_secret": "x"}, {}, "invalid_client",
         "Invalid client"),
        (GRANT, basic("nobody", "x"), "invalid_client", "Invalid client"),
        (GRANT, basic(DEMO_CLIENT_ID, "wrong"), "invalid_client", "Invalid client secret"),
        (GRANT, {"Authorization": "Basic !!!"}, "invalid_client", "Invalid client"),
        ({"grant_type": "password"}, basic(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET),
         "unsupported_grant_type", None),
        ({}, basic(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET), "unsupported_grant_type", None),
    ],
)  # fmt: skip
async def test_token_errors(
    make_app: AppFactory,
    data: dict[str, str],
    headers: dict[str, str],
    error: str,
    description: str | None,
) -> None:
    async with asgi_client(make_app()) as client:
        r = await client.post("/api/token", data=data, headers=headers)
        assert r.status_code == 400
        body = r.json()
        assert body["error"] == error and body["error_description"]
        if description is not None:
            assert body["error_description"] == description


async def test_missing_or_unknown_token_is_401(make_app: AppFactory, catalog: Catalog) -> None:
    async with asgi_client(make_app()) as client:
        r = await client.get(artist_path(catalog))
        assert r.status_code == 401 and r.json()["error"]["status"] == 401
        r = await client.get(artist_path(catalog), headers={"Authorization": "Bearer nope"})
        assert r.json() == {"error": {"status": 401, "message": "Invalid access token"}}


async def test_token_expires_after_ttl(
    make_app: AppFactory, clock: FakeClock, catalog: Catalog
) -> None:
    async with asgi_client(make_app(token_ttl=100, limit=1000)) as client:
        r = await client.post(
            "/api/token",
            data={"grant_type": "client_credentials"},
            auth=(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET),
        )
        assert r.json()["expires_in"] == 100
        client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        clock.advance(99.9)
        assert (await client.get(artist_path(catalog))).status_code == 200
        clock.advance(0.1)
        r = await client.get(artist_path(catalog))
        assert r.status_code == 401
        assert r.json() == {"error": {"status": 401, "message": "Invalid access token"}}
        client.headers["Authorization"] = f"Bearer {await get_token(client)}"
        assert (await client.get(artist_path(catalog))).status_code == 200


async def test_revoke_tokens_hook(make_app: AppFactory, catalog: Catalog) -> None:
    async with asgi_client(make_app()) as client:
        client.headers["Authorization"] = f"Bearer {await get_token(client)}"
        assert (await client.get(artist_path(catalog))).status_code == 200
        r = await client.post("/__sim/revoke-tokens")
        assert r.json() == {"revoked": 1}
        assert (await client.get(artist_path(catalog))).status_code == 401


async def test_token_endpoint_down_for_a_while(make_app: AppFactory, clock: FakeClock) -> None:
    async with asgi_client(make_app()) as client:
        r = await client.post("/__sim/control", json={"token_down_for": 60})
        assert r.status_code == 200 and r.json()["token_down_for"] == 60
        creds = {"grant_type": "client_credentials"}
        r = await client.post("/api/token", data=creds, auth=(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET))
        assert r.status_code == 503
        clock.advance(60)
        r = await client.post("/api/token", data=creds, auth=(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET))
        assert r.status_code == 200


# ------------------------------------------------------------------------------------------------
# Rate limiting over HTTP


async def test_429_retry_after_and_escalation(
    make_app: AppFactory, clock: FakeClock, catalog: Catalog
) -> None:
    app = make_app(limit=3, window=30.0, penalty_cap=1000)
    async with asgi_client(app) as client:
        client.headers["Authorization"] = f"Bearer {await get_token(client)}"
        for _ in range(3):
            assert (await client.get(artist_path(catalog))).status_code == 200
            clock.advance(1.0)
        # Sent at 0, 1, 2; now 3: the first leaves the window (0, 30] at 30 -> 27 s.
        r = await client.get(artist_path(catalog))
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "27"
        assert r.json() == {"error": {"status": 429, "message": "API rate limit exceeded"}}
        clock.advance(5)  # too early: doubled from 27
        r = await client.get(artist_path(catalog))
        assert r.headers["Retry-After"] == "54"
        clock.advance(1)
        assert (await client.get(artist_path(catalog))).headers["Retry-After"] == "108"
        clock.advance(108)
        assert (await client.get(artist_path(catalog))).status_code == 200
        stats = (await client.get("/__sim/stats")).json()
    assert stats["accepted"] == 4 and stats["rejected_429"] == 3 and stats["escalations"] == 2
    assert stats["max_retry_after"] == 108
    assert stats["max_accepted_in_any_window"] == 3
    assert stats["limit"] == 3 and stats["window"] == 30


async def test_quota_429_has_reason(
    make_app: AppFactory, clock: FakeClock, catalog: Catalog
) -> None:
    async with asgi_client(make_app(limit=1000, quota=2, quota_period=3600)) as client:
        client.headers["Authorization"] = f"Bearer {await get_token(client)}"
        for _ in range(2):
            assert (await client.get(artist_path(catalog))).status_code == 200
        clock.advance(600)
        r = await client.get(artist_path(catalog))
        assert r.status_code == 429 and r.headers["Retry-After"] == "3000"
        assert r.json()["error"]["reason"] == "QUOTA_EXCEEDED"
        stats = (await client.get("/__sim/stats")).json()
        assert stats["quota_used"] == {DEMO_CLIENT_ID: 2} and stats["rejected_quota"] == 1


async def test_limit_schedule_and_control_limit(
    make_app: AppFactory, clock: FakeClock, catalog: Catalog
) -> None:
    async with asgi_client(make_app(limit=4, limit_schedule="100:half")) as client:
        client.headers["Authorization"] = f"Bearer {await get_token(client)}"
        assert (await client.get("/__sim/stats")).json()["limit"] == 4
        clock.advance(100)
        assert (await client.get("/__sim/stats")).json()["limit"] == 2
        for _ in range(2):
            assert (await client.get(artist_path(catalog))).status_code == 200
        assert (await client.get(artist_path(catalog))).status_code == 429
        r = await client.post("/__sim/control", json={"limit": 10, "clear_penalties": True})
        assert r.json()["limit"] == 10
        assert (await client.get(artist_path(catalog))).status_code == 200


async def test_limit_is_drawn_from_seed_when_absent() -> None:
    limits = {SimConfig(seed=s).resolved_limit() for s in range(20)}
    assert all(100 <= x <= 300 for x in limits) and len(limits) > 5
    assert SimConfig(seed=3).resolved_limit() == SimConfig(seed=3).resolved_limit()


async def test_endpoint_bucket(make_app: AppFactory, catalog: Catalog) -> None:
    async with asgi_client(make_app(limit=100, endpoint_limits={"search": 1})) as client:
        client.headers["Authorization"] = f"Bearer {await get_token(client)}"
        assert (await client.get("/v1/search?q=a&type=artist")).status_code == 200
        assert (await client.get("/v1/search?q=a&type=artist")).status_code == 429
        assert (await client.get(artist_path(catalog))).status_code == 200


async def test_clients_are_limited_separately(make_app: AppFactory, catalog: Catalog) -> None:
    app = make_app(limit=1, extra_clients=[("second-id", "second-secret")])
    async with asgi_client(app) as one, asgi_client(app) as two:
        one.headers["Authorization"] = f"Bearer {await get_token(one)}"
        two.headers["Authorization"] = (
            f"Bearer {await get_token(two, 'second-id', 'second-secret')}"
        )
        assert (await one.get(artist_path(catalog))).status_code == 200
        assert (await one.get(artist_path(catalog))).status_code == 429
        assert (await two.get(artist_path(catalog))).status_code == 200
        stats = (await one.get("/__sim/stats")).json()
        assert stats["max_accepted_in_any_window_by_client"] == {DEMO_CLIENT_ID: 1, "second-id": 1}
        assert stats["max_accepted_in_any_window"] == 2


async def test_accepted_times_ground_truth(
    make_app: AppFactory, clock: FakeClock, catalog: Catalog
) -> None:
    async with asgi_client(make_app(limit=2, window=10.0)) as client:
        client.headers["Authorization"] = f"Bearer {await get_token(client)}"
        for _ in range(5):
            r = await client.get(artist_path(catalog))
            clock.advance(float(r.headers.get("Retry-After", 3)))
        body = (await client.get("/__sim/accepted")).json()
        assert body["times"] == [0.0, 3.0, 10.0, 13.0]  # 6 was refused, Retry-After 4
        assert body["max_in_any_window"] == 2 and body["window"] == 10.0
        mine = (await client.get(f"/__sim/accepted?client_id={DEMO_CLIENT_ID}")).json()
        assert mine["count"] == 4 and not mine["truncated"]


async def test_sim_endpoints_are_never_limited(make_app: AppFactory) -> None:
    async with asgi_client(make_app(limit=1)) as client:
        for _ in range(5):
            assert (await client.get("/__sim/stats")).status_code == 200
            assert (await client.get("/__sim/catalog?format=json&limit=2")).status_code == 200


async def test_rate_limit_off(make_app: AppFactory, catalog: Catalog) -> None:
    async with asgi_client(make_app(limit=1, rate_limit=False)) as client:
        client.headers["Authorization"] = f"Bearer {await get_token(client)}"
        for _ in range(5):
            assert (await client.get(artist_path(catalog))).status_code == 200


# ------------------------------------------------------------------------------------------------
# Endpoints, paging, validation


async def test_paging_links_walk_the_whole_list(api: httpx.AsyncClient, catalog: Catalog) -> None:
    artist = next(i for i in range(catalog.n_artists) if len(catalog.artist_albums(i, GROUPS)) > 12)
    expected = catalog.artist_albums(artist, GROUPS)
    url: str | None = f"{artist_path(catalog, artist)}/albums?limit=5"
    seen: list[str] = []
    previous = None
    while url:
        r = await api.get(url)
        assert r.status_code == 200
        page = r.json()
        assert page["href"].startswith("http://sim.test/v1/artists/")
        assert page["previous"] == previous
        assert page["total"] == len(expected)
        seen += [a["id"] for a in page["items"]]
        previous = page["href"]
        url = page["next"]
    assert seen == [catalog.album_id(j) for j, _ in expected]
    assert len(seen) == len(expected)


async def test_artist_albums_include_groups(api: httpx.AsyncClient, catalog: Catalog) -> None:
    artist = next(i for i in range(catalog.n_artists) if len(catalog.artist_albums(i, GROUPS)) > 12)
    singles = catalog.artist_albums(artist, frozenset({"single"}))
    r = await api.get(f"{artist_path(catalog, artist)}/albums?include_groups=single&limit=10")
    page = r.json()
    assert page["total"] == len(singles)
    assert "include_groups=single" in page["href"]
    r = await api.get(f"{artist_path(catalog, artist)}/albums?include_groups=bogus")
    assert r.status_code == 400


async def test_search_paging_and_validation(api: httpx.AsyncClient, catalog: Catalog) -> None:
    r = await api.get("/v1/search?q=a&type=artist,track&limit=10&offset=10")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"artists", "tracks"}
    artists = body["artists"]
    query = parse_qs(urlsplit(artists["next"]).query)
    assert query["offset"] == ["20"] and query["limit"] == ["10"] and query["type"] == ["artist"]
    assert parse_qs(urlsplit(artists["previous"]).query)["offset"] == ["0"]
    # The next link works as it is (it uses ``query=``, like Spotify's).
    r2 = await api.get(artists["next"])
    assert r2.status_code == 200 and r2.json()["artists"]["offset"] == 20
    expected = catalog.search("a", ["artist"], 20, 10)["artist"]
    assert [a["id"] for a in r2.json()["artists"]["items"]] == [
        catalog.artist_id(i) for i in expected[1]
    ]
    assert (await api.get("/v1/search?type=artist")).status_code == 400
    assert (await api.get("/v1/search?q=a")).status_code == 400
    assert (await api.get("/v1/search?q=a&type=bogus")).status_code == 400
    assert (await api.get("/v1/search?q=a&type=artist&offset=1001")).status_code == 400
    assert (await api.get("/v1/search?q=a&type=artist&offset=1000")).status_code == 200
    r = await api.get("/v1/search?q=a&type=artist&offset=995&limit=10")
    assert r.json()["artists"]["next"] is None or r.json()["artists"]["total"] <= 1005


async def test_search_offset_plus_limit_rule(make_app: AppFactory) -> None:
    """``offset_rule="offset+limit"``: a page is served only when offset + limit <= 1000."""
    async with asgi_client(make_app(limit=1000, offset_rule="offset+limit")) as client:
        client.headers["Authorization"] = f"Bearer {await get_token(client)}"
        ok = await client.get("/v1/search?q=a&type=artist&offset=990&limit=10")
        assert ok.status_code == 200
        assert ok.json()["artists"]["next"] is None
        for url in ("offset=991&limit=10", "offset=1000&limit=10", "offset=996&limit=5"):
            r = await client.get(f"/v1/search?q=a&type=artist&{url}")
            assert r.status_code == 400 and r.json()["error"]["message"] == "Invalid offset"
        assert (
            await client.get("/v1/search?q=a&type=artist&offset=995&limit=5")
        ).status_code == 200
    with pytest.raises(ValueError, match="offset rule"):
        SimConfig(offset_rule="limit").validate()


async def test_ids_and_unknown_ids(api: httpx.AsyncClient, catalog: Catalog) -> None:
    assert (await api.get("/v1/artists/not-an-id")).status_code == 400
    r = await api.get(f"/v1/artists/{catalog.album_id(0)}")
    assert r.status_code == 404 and r.json()["error"]["status"] == 404
    r = await api.get("/v1/unknown/endpoint")
    assert r.json() == {"error": {"status": 404, "message": "Service not found"}}
    r = await api.get(artist_path(catalog, 5))
    assert r.json()["id"] == catalog.artist_id(5)


async def test_batch_endpoints_extended(make_app: AppFactory, catalog: Catalog) -> None:
    async with asgi_client(make_app(profile="extended", limit=1000)) as client:
        client.headers["Authorization"] = f"Bearer {await get_token(client)}"
        ids = ",".join(catalog.artist_id(i) for i in range(50))
        r = await client.get(f"/v1/artists?ids={ids}")
        assert [a["id"] for a in r.json()["artists"]] == ids.split(",")
        too_many = ",".join(catalog.artist_id(i) for i in range(51))
        assert (await client.get(f"/v1/artists?ids={too_many}")).status_code == 400
        albums = ",".join(catalog.album_id(j) for j in range(21))
        assert (await client.get(f"/v1/albums?ids={albums}")).status_code == 400
        r = await client.get(f"/v1/albums?ids={albums.rsplit(',', 1)[0]}")
        assert len(r.json()["albums"]) == 20
        r = await client.get(artist_path(catalog))
        assert "followers" in r.json() and "popularity" in r.json()


async def test_album_has_first_tracks_page(api: httpx.AsyncClient, catalog: Catalog) -> None:
    j = next(j for j in range(catalog.n_albums) if len(catalog.album_tracks(j)) > 3)
    body = (await api.get(f"/v1/albums/{catalog.album_id(j)}")).json()
    tracks = body["tracks"]
    assert tracks["total"] == len(catalog.album_tracks(j)) and tracks["limit"] == 50
    assert [t["id"] for t in tracks["items"]] == [
        catalog.track_id(k) for k in catalog.album_tracks(j)[:50]
    ]
    assert "label" not in body and "available_markets" not in body  # dev-2026


# ------------------------------------------------------------------------------------------------
# Stats, catalog dump, determinism


async def test_stats_counts(make_app: AppFactory, catalog: Catalog) -> None:
    async with asgi_client(make_app(limit=3)) as client:
        client.headers["Authorization"] = f"Bearer {await get_token(client)}"
        await client.get(artist_path(catalog))
        await client.get("/v1/artists/bad")  # counts against the limit: it reached the server
        await client.get(artist_path(catalog))
        await client.get("/v1/search?q=a&type=artist")
        stats = (await client.get("/__sim/stats")).json()
    # The token request is counted too (not the /__sim ones).
    assert stats["requests_by_status"] == {"200": 3, "400": 1, "429": 1}
    assert stats["requests_total"] == 5
    assert stats["requests_by_endpoint"]["/v1/artists/{id}"]["total"] == 3
    assert stats["requests_by_endpoint"]["/v1/search"]["by_status"] == {"429": 1}
    assert stats["requests_by_endpoint"]["/api/token"]["total"] == 1
    assert stats["accepted"] == 3 and stats["rejected_429"] == 1
    assert stats["profile"] == "dev-2026" and stats["n_artists"] == catalog.n_artists
    assert stats["started_at"] and len(stats["penalties"]) == 1


async def test_catalog_dump_both_formats(make_app: AppFactory, catalog: Catalog) -> None:
    async with asgi_client(make_app()) as client:
        text = (await client.get("/__sim/catalog")).text
        ids = text.split()
        assert ids == list(catalog.iter_artist_ids())
        assert len(ids) == catalog.n_artists
        r = await client.get("/__sim/catalog?format=json&offset=10&limit=5")
        page = r.json()
        assert page["items"] == ids[10:15] and page["total"] == len(ids)
        assert page["next_offset"] == 15
        assert (await client.get("/__sim/catalog?format=xml")).status_code == 400


async def test_same_seed_same_responses(catalog: Catalog) -> None:
    async def transcript(seed: int) -> list[str]:
        app = create_app(
            SimConfig(artists=catalog.n_artists, seed=seed, latency_ms=5, fail_rate=0.2),
            clock=FakeClock(),
            catalog=catalog,
        )
        out = []
        async with asgi_client(app) as client:
            token = await get_token(client)
            out.append(token)
            client.headers["Authorization"] = f"Bearer {token}"
            for i in range(15):
                r = await client.get(artist_path(catalog, i))
                out.append(f"{r.status_code} {r.text}")
            r = await client.get("/v1/search?q=b&type=artist,album,track")
            out.append(r.text)
        return out

    assert await transcript(1) == await transcript(1)
    assert await transcript(1) != await transcript(2)


# ------------------------------------------------------------------------------------------------
# Faults, latency, control, clocks


async def test_fail_rate_gives_5xx(make_app: AppFactory, catalog: Catalog) -> None:
    async with asgi_client(make_app(limit=1000, fail_rate=1.0)) as client:
        client.headers["Authorization"] = f"Bearer {await get_token(client)}"
        statuses = {(await client.get(artist_path(catalog))).status_code for _ in range(30)}
        assert statuses <= {500, 502, 503} and len(statuses) >= 2
        r = await client.get(artist_path(catalog))
        assert r.json()["error"]["status"] == r.status_code


async def test_reset_rate_is_a_transport_error_in_process(
    make_app: AppFactory, catalog: Catalog
) -> None:
    async with asgi_client(make_app(limit=1000, reset_rate=1.0)) as client:
        client.headers["Authorization"] = f"Bearer {await get_token(client)}"
        with pytest.raises(httpx.TransportError):
            await client.get(artist_path(catalog))
        assert (await client.get("/__sim/stats")).json()["faults"]["resets"] == 1


async def test_truncate_rate_cuts_the_json(make_app: AppFactory, catalog: Catalog) -> None:
    async with asgi_client(make_app(limit=1000, truncate_rate=1.0)) as client:
        client.headers["Authorization"] = f"Bearer {await get_token(client)}"
        r = await client.get(artist_path(catalog))
        assert r.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(r.content)


async def test_latency_sleeps_on_the_injected_clock(
    make_app: AppFactory, clock: FakeClock, catalog: Catalog
) -> None:
    async with asgi_client(make_app(limit=1000, latency_ms=200)) as client:
        client.headers["Authorization"] = f"Bearer {await get_token(client)}"
        t0 = clock.now()
        for _ in range(50):
            await client.get(artist_path(catalog))
        mean = (clock.now() - t0) / 50
        assert 0.1 < mean < 0.5


async def test_control_rejects_unknown_knobs(make_app: AppFactory) -> None:
    async with asgi_client(make_app()) as client:
        r = await client.post("/__sim/control", json={"warp_speed": 9})
        assert r.status_code == 400 and "warp_speed" in r.json()["error"]["message"]
        r = await client.post("/__sim/control", json={"fail_rate": 0.5, "latency_ms": 3})
        assert r.json()["fail_rate"] == 0.5 and r.json()["latency_ms"] == 3


def test_time_scale_uses_a_scaled_clock(catalog: Catalog) -> None:
    app = create_app(SimConfig(time_scale=30.0), catalog=catalog)
    assert isinstance(app.sim.clock, ScaledClock) and app.sim.clock.scale == 30.0
    injected = FakeClock()
    assert (
        create_app(SimConfig(time_scale=30.0), clock=injected, catalog=catalog).sim.clock
        is injected
    )


@pytest.mark.parametrize(
    "knobs",
    [
        {"profile": "nope"},
        {"limit": 0},
        {"window": 0},
        {"algorithm": "leaky"},
        {"fail_rate": 1.5},
        {"fail_rate": 0.6, "reset_rate": 0.6},
        {"limit_schedule": "10:x"},
        {"endpoint_limits": {"nope": 3}},
        {"time_scale": 0},
    ],
)
def test_bad_config_is_rejected(knobs: dict[str, object], catalog: Catalog) -> None:
    with pytest.raises(ValueError):
        create_app(SimConfig(**knobs), catalog=catalog)  # type: ignore[arg-type]
