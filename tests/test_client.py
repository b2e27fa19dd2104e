"""SpotifyClient against the real simulator, in process (``httpx.ASGITransport``).

Faults the simulator has knobs for (5xx, resets, truncated bodies, quotas, revoked tokens, a token
endpoint that is down, short token lifetimes) are driven through ``/__sim/control`` and friends.
Two faults it cannot produce are made by a thin ASGI wrapper around the real simulator that
rewrites one kind of response: a 429 without ``Retry-After`` (header dropped) and a 200 whose
body does not have the documented shape; and one API version (``/items`` missing) by a wrapper
that answers 404 "Service not found" for it, as the API did before the path existed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from spotify_ingest.client import ClientStats, RetryBudget, SpotifyClient
from spotify_ingest.config import Credentials
from spotify_ingest.errors import (
    ApiError,
    BadRequestError,
    BadResponseError,
    EndpointUnavailableError,
    InvalidLimitError,
    MustWaitError,
    NotFoundError,
    ServerError,
    UsageError,
)
from spotify_ingest.models import Album, Artist, Page, SearchResult
from spotify_ingest.quota import QuotaPacer
from spotify_ingest.sim.app import ScaledClock, SimConfig, create_app

pytest.importorskip("spotify_ingest.sim.catalog")
from spotify_ingest.sim.catalog import Catalog
from spotify_ingest.sim.server import SimServer

N_ARTISTS = 2000
SECRET = "demo-client-secret"

ASGIApp = Callable[..., Any]
Rewrite = Callable[[str, int, list[tuple[bytes, bytes]], bytes], tuple[int, list[Any], bytes]]


@functools.lru_cache(maxsize=2)
def catalog(n: int = N_ARTISTS, seed: int = 0) -> Catalog:
    return Catalog(n, seed)


class RewriteResponses:
    """ASGI wrapper: ``rewrite(path, status, headers, body)`` may change any /v1 response."""

    def __init__(self, app: ASGIApp, rewrite: Rewrite) -> None:
        self.app = app
        self.rewrite = rewrite

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            status, headers, body = self.rewrite(
                scope["path"], start["status"], list(start["headers"]), b"".join(chunks)
            )
            headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)


@dataclass
class Sim:
    """One in-process simulator and the ways tests talk to it."""

    config: SimConfig
    app: ASGIApp
    transport: httpx.ASGITransport = field(init=False)

    def __post_init__(self) -> None:
        self.transport = httpx.ASGITransport(app=self.app)

    @property
    def clock(self) -> ScaledClock | None:
        return ScaledClock(self.config.time_scale) if self.config.time_scale != 1.0 else None

    def client(self, secret: str = SECRET, **kwargs: Any) -> SpotifyClient:
        kwargs.setdefault("clock", self.clock)
        return SpotifyClient(
            Credentials(client_id=self.config.client_id, client_secret=secret),  # type: ignore[arg-type]
            api_base="http://sim.test/v1",
            token_url="http://sim.test/api/token",
            transport=self.transport,
            **kwargs,
        )

    async def _hook(self, method: str, path: str, body: Any = None) -> Any:
        async with httpx.AsyncClient(transport=self.transport, base_url="http://sim.test") as h:
            response = await h.request(method, path, json=body)
            response.raise_for_status()
            return response.json()

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._hook("GET", "/__sim/stats")
        return result

    async def control(self, **knobs: Any) -> None:
        await self._hook("POST", "/__sim/control", knobs)

    async def revoke_tokens(self) -> None:
        await self._hook("POST", "/__sim/revoke-tokens")

    async def artist_ids(self, n: int = 100) -> list[str]:
        page = await self._hook("GET", f"/__sim/catalog?format=json&limit={n}")
        ids: list[str] = page["items"]
        return ids

    async def token_requests(self) -> int:
        by_endpoint = (await self.stats())["requests_by_endpoint"]
        return int(by_endpoint.get("/api/token", {}).get("total", 0))


def make_sim(rewrite: Rewrite | None = None, **config: Any) -> Sim:
    config.setdefault("artists", N_ARTISTS)
    cfg = SimConfig(**config)
    app: ASGIApp = create_app(cfg, catalog=catalog(cfg.artists, cfg.seed))
    if rewrite is not None:
        app = RewriteResponses(app, rewrite)
    return Sim(cfg, app)


# ---------------------------------------------------------------------- every method parses


async def test_every_method_parses_a_real_response() -> None:
    sim = make_sim(profile="extended", rate_limit=False)
    ids = await sim.artist_ids(50)
    async with sim.client() as sp:
        found = await sp.search("a", types=("artist", "album", "track"), limit=10)
        assert isinstance(found, SearchResult)
        assert found.artists and found.albums and found.tracks
        assert len(found.artists.items) <= 10 and found.artists.total >= len(found.artists.items)

        artist = await sp.artist(ids[0])
        assert isinstance(artist, Artist) and artist.id == ids[0] and artist.name
        batch = await sp.artists(ids[:50])
        assert [a.id for a in batch] == ids[:50]
        related = await sp.related_artists(ids[0])
        assert all(isinstance(a, Artist) for a in related)

        albums_page = await sp.artist_albums(ids[0], include_groups=("album", "single"), limit=5)
        assert isinstance(albums_page, Page) and albums_page.limit == 5
        album_ids = [a.id for a in albums_page.items]
        assert album_ids, "the most popular artist has albums"
        album = await sp.album(album_ids[0])
        assert isinstance(album, Album) and album.tracks is not None
        assert [a.id for a in await sp.albums(album_ids)] == album_ids
        tracks = await sp.album_tracks(album_ids[0], limit=5)
        assert tracks.items and all(t.artists for t in tracks.items)

        featured = await sp.featured_playlists(limit=5)
        assert featured.items and featured.items[0].owner is not None
        categories = await sp.categories(limit=5)
        assert categories.items
        cat_lists = await sp.category_playlists(categories.items[0].id, limit=5)
        assert cat_lists.total >= len(cat_lists.items)
        releases = await sp.new_releases(limit=5)
        assert releases.items
        items = await sp.playlist_items(featured.items[0].id, limit=5)
        assert items.items and items.items[0].track is not None
        assert sp.playlist_route == "items"
    assert sp.stats.calls == sp.stats.requests == 13
    assert sp.stats.by_status == {200: 13}


async def test_search_several_types_in_one_request() -> None:
    sim = make_sim(rate_limit=False)
    async with sim.client() as sp:
        found = await sp.search("b", types=("artist", "album", "track"), limit=10)
    assert found.artists is not None and found.albums is not None and found.tracks is not None
    assert sp.stats.requests == 1


# ---------------------------------------------------------------------- profiles and 4xx


async def test_dev_2026_profile_errors() -> None:
    sim = make_sim(profile="dev-2026", rate_limit=False)
    ids = await sim.artist_ids(3)
    async with sim.client() as sp:
        with pytest.raises(EndpointUnavailableError) as batch:
            await sp.artists(ids)
        assert batch.value.status == 403 and batch.value.endpoint == "/v1/artists"
        with pytest.raises(EndpointUnavailableError):
            await sp.albums(["0" * 22])
        with pytest.raises(EndpointUnavailableError):
            await sp.categories(limit=5)
        with pytest.raises(EndpointUnavailableError) as featured:
            await sp.featured_playlists(limit=5)
        assert featured.value.status == 404  # a list endpoint: 404 means "gone"
        with pytest.raises(NotFoundError):  # names an id: the probe reads it as "gone"
            await sp.related_artists(ids[0])
        with pytest.raises(InvalidLimitError) as limit:
            await sp.search("a", limit=50)
        assert limit.value.status == 400
        assert len((await sp.search("a", limit=10)).artists.items) == 10  # type: ignore[union-attr]
        with pytest.raises(InvalidLimitError):
            await sp.artist_albums(ids[0], limit=20)
        artist = await sp.artist(ids[0])
        assert artist.followers is None and artist.popularity is None
    assert sp.stats.retries == 0 and sp.stats.requests == sp.stats.calls  # 4xx never retried


async def test_unknown_and_malformed_ids() -> None:
    sim = make_sim(rate_limit=False)
    async with sim.client() as sp:
        with pytest.raises(NotFoundError) as missing:
            await sp.artist("0" * 22)
        assert missing.value.endpoint == "/v1/artists/{id}"
        with pytest.raises(BadRequestError):
            await sp.artist("not-an-id")
        with pytest.raises(ValueError):
            await sp.artists([])
        with pytest.raises(ValueError):
            await sp.search("a", types=("show",))
    assert sp.stats.by_status == {404: 1, 400: 1}


async def test_playlist_items_falls_back_to_tracks_once_and_remembers() -> None:
    def no_items_path(path: str, status: int, headers: list[Any], body: bytes) -> Any:
        if path.endswith("/items"):
            error = {"error": {"status": 404, "message": "Service not found"}}
            return 404, [(b"content-type", b"application/json")], json.dumps(error).encode()
        return status, headers, body

    sim = make_sim(rewrite=no_items_path, profile="extended", rate_limit=False)
    async with sim.client() as sp:
        playlists = await sp.featured_playlists(limit=3)
        first = await sp.playlist_items(playlists.items[0].id, limit=5)
        assert first.items and sp.playlist_route == "tracks"
        await sp.playlist_items(playlists.items[1].id, limit=5)
    assert sp.stats.by_status == {200: 3, 404: 1}  # one 404, then /tracks only


# ---------------------------------------------------------------------- 401 and tokens


async def test_revoked_token_is_renewed_once_in_process() -> None:
    sim = make_sim(rate_limit=False)
    ids = await sim.artist_ids(40)
    async with sim.client() as sp:
        await sp.artist(ids[0])
        await sim.revoke_tokens()
        results = await asyncio.gather(*(sp.artist(i) for i in ids))
    assert [a.id for a in results] == ids
    assert await sim.token_requests() == 2  # the first token, then ONE renewal
    assert sp.stats.by_status[401] >= 1 and sp.stats.auth_replays == sp.stats.by_status[401]


async def test_concurrent_401s_over_http_cause_one_renewal() -> None:
    """Over a socket all 30 requests are really in flight with the revoked token."""
    config = SimConfig(artists=N_ARTISTS, rate_limit=False)
    with SimServer(config, catalog=catalog()) as server:
        creds = Credentials(client_id=server.client_id, client_secret=server.client_secret)  # type: ignore[arg-type]
        async with (
            httpx.AsyncClient() as hooks,
            SpotifyClient(creds, api_base=server.api_base, token_url=server.token_url) as sp,
        ):
            page = await hooks.get(server.base_url + "/__sim/catalog?format=json&limit=30")
            ids: list[str] = page.json()["items"]
            await sp.artist(ids[0])
            (await hooks.post(server.base_url + "/__sim/revoke-tokens")).raise_for_status()
            results = await asyncio.gather(*(sp.artist(i) for i in ids))
            truth = (await hooks.get(server.base_url + "/__sim/stats")).json()
    assert [a.id for a in results] == ids
    assert truth["requests_by_endpoint"]["/api/token"]["total"] == 2
    assert sp.stats.by_status[401] > 1  # several 401s, still one renewal


async def test_token_expiring_mid_run_is_renewed_before_expiry() -> None:
    # 5 s tokens at 10x: renewed every 4.5 simulator seconds, 0.45 real seconds
    sim = make_sim(rate_limit=False, token_ttl=5.0, time_scale=10.0)
    ids = await sim.artist_ids(20)
    async with sim.client() as sp:
        end = time.monotonic() + 1.6
        n = 0
        while time.monotonic() < end:
            await asyncio.gather(*(sp.artist(i) for i in ids[:5]))
            n += 5
            await asyncio.sleep(0.02)
    assert 3 <= await sim.token_requests() <= 6
    assert 401 not in sp.stats.by_status  # renewed early: no request met an expired token
    assert sp.stats.by_status[200] == n


# ---------------------------------------------------------------------- 429


async def test_rate_limited_requests_are_replayed_after_retry_after() -> None:
    # 10x compressed time: window 10 s = 1 real second; Retry-After >= 1 s = 0.1 real second.
    sim = make_sim(limit=8, window=10.0, time_scale=10.0)
    ids = await sim.artist_ids(24)

    async with sim.client() as sp:

        async def worker(mine: list[str]) -> list[str]:
            return [(await sp.artist(i)).id for i in mine]

        results = await asyncio.gather(worker(ids[:12]), worker(ids[12:]))
    assert results == [ids[:12], ids[12:]]  # nothing lost
    assert sp.stats.rate_limited >= 2 and sp.stats.replays == sp.stats.rate_limited
    assert sp.stats.by_status[200] == len(ids)
    truth = await sim.stats()
    assert truth["max_retry_after"] <= 20  # no runaway penalty: nobody sent into a pause


async def test_429_without_retry_after_pauses_and_replays() -> None:
    def drop_retry_after(path: str, status: int, headers: list[Any], body: bytes) -> Any:
        return status, [(k, v) for k, v in headers if k.lower() != b"retry-after"], body

    sim = make_sim(rewrite=drop_retry_after, limit=3, window=1.0)
    ids = await sim.artist_ids(5)
    async with sim.client() as sp:
        started = time.monotonic()
        for artist_id in ids:
            assert (await sp.artist(artist_id)).id == artist_id
        elapsed = time.monotonic() - started
    assert sp.stats.rate_limited >= 1
    assert elapsed >= 0.99  # the bare client paused 1 s (the default without a header)
    assert sp.stats.waited_seconds >= 0.99


async def test_retry_after_above_max_wait_raises_must_wait() -> None:
    sim = make_sim(limit=2, window=30.0)
    ids = await sim.artist_ids(3)
    async with sim.client(max_wait=5.0) as sp:
        await sp.artist(ids[0])
        await sp.artist(ids[1])
        with pytest.raises(MustWaitError) as info:
            await sp.artist(ids[2])
        # and the next call refuses at once instead of sending into the pause
        with pytest.raises(MustWaitError):
            await sp.artist(ids[2])
    assert 25 <= info.value.wait_seconds <= 31
    assert info.value.reason != "QUOTA_EXCEEDED"
    assert sp.stats.by_status[429] == 1


async def test_quota_exceeded_raises_must_wait() -> None:
    sim = make_sim(rate_limit=True, limit=1000, quota=3, quota_period=60.0)
    ids = await sim.artist_ids(4)
    async with sim.client() as sp:
        for artist_id in ids[:3]:
            await sp.artist(artist_id)
        with pytest.raises(MustWaitError) as info:
            await sp.artist(ids[3])
    assert info.value.reason == "QUOTA_EXCEEDED"
    assert 55 <= info.value.wait_seconds <= 60
    assert "quota" in str(info.value)
    assert sp.stats.quota_exceeded == 1 and sp.stats.rate_limited == 0


async def test_wait_true_counts_down_the_quota_then_replays() -> None:
    # quota period 20 simulator seconds at 10x: 2 real seconds
    sim = make_sim(limit=1000, quota=2, quota_period=20.0, time_scale=10.0)
    ids = await sim.artist_ids(3)
    ticks: list[tuple[float, str | None]] = []
    async with sim.client(wait=True, on_wait=lambda left, why: ticks.append((left, why))) as sp:
        results = [await sp.artist(i) for i in ids]
    assert [a.id for a in results] == ids
    assert sp.stats.quota_exceeded == 1 and sp.stats.replays == 1
    assert len(ticks) >= 5 and all(why == "QUOTA_EXCEEDED" for _, why in ticks)
    lefts = [left for left, _ in ticks]
    assert lefts == sorted(lefts, reverse=True) and lefts[0] <= 20.0


# ---------------------------------------------------------------------- 5xx, resets, bodies


async def test_5xx_resets_and_truncated_bodies_are_retried_within_budget() -> None:
    sim = make_sim(rate_limit=False, fail_rate=0.04, reset_rate=0.02, truncate_rate=0.02, seed=3)
    ids = await sim.artist_ids(200)
    async with sim.client(backoff_base=0.001) as sp:
        results = [await sp.artist(i) for i in ids]
    assert [a.id for a in results] == ids
    truth = (await sim.stats())["faults"]
    stats: ClientStats = sp.stats
    assert stats.retries == truth["injected_5xx"] + truth["resets"] + truth["truncated"] > 0
    assert stats.transport_errors == truth["resets"]
    assert stats.truncated_bodies == truth["truncated"]
    assert stats.retries <= 10 + 0.1 * stats.calls


async def test_retry_budget_exhausted_raises_server_error() -> None:
    sim = make_sim(rate_limit=False, fail_rate=1.0)
    ids = await sim.artist_ids(10)
    async with sim.client(backoff_base=0.001, retry_budget=RetryBudget(initial=3)) as sp:
        with pytest.raises(ServerError) as first:
            await sp.artist(ids[0])  # 1 try + 3 retries: budget spent
        assert "budget" in str(first.value)
        for artist_id in ids[1:]:
            with pytest.raises(ServerError):
                await sp.artist(artist_id)
    assert sp.stats.retries <= 3 + 1  # + 0.1 per call: 10 calls earn one more
    assert sp.stats.requests <= 10 + 4


async def test_server_error_after_max_attempts() -> None:
    sim = make_sim(rate_limit=False, fail_rate=1.0)
    ids = await sim.artist_ids(1)
    async with sim.client(backoff_base=0.001, max_attempts=3) as sp:
        with pytest.raises(ServerError) as info:
            await sp.artist(ids[0])
    assert info.value.status in (500, 502, 503)
    assert sp.stats.requests == 3


async def test_malformed_body_is_bad_response_error() -> None:
    def wrong_shape(path: str, status: int, headers: list[Any], body: bytes) -> Any:
        if "/artists/" in path:
            return 200, headers, b'{"name": "no id here", "followers": 3}'
        if "/albums/" in path:
            return 200, headers, b"<html>not json</html>"
        return status, headers, body

    sim = make_sim(rewrite=wrong_shape, rate_limit=False)
    async with sim.client() as sp:
        with pytest.raises(BadResponseError) as shape:
            await sp.artist("0" * 22)
        with pytest.raises(BadResponseError) as not_json:
            await sp.album("0" * 22)
        token = sp.tokens.current.value  # type: ignore[union-attr]
    assert "/v1/artists/{id}" in str(shape.value) and "id" in str(shape.value)
    assert "not JSON" in str(not_json.value) and "/v1/albums/{id}" in str(not_json.value)
    assert token not in str(shape.value) and token not in str(not_json.value)
    assert sp.stats.retries == 0


# ---------------------------------------------------------------------- secrets stay secret


async def test_token_and_secret_never_in_logs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sim = make_sim(limit=3, window=1.0, fail_rate=0.2, seed=5)
    ids = await sim.artist_ids(8)
    errors: list[ApiError] = []
    async with sim.client(backoff_base=0.001) as sp:
        for artist_id in [*ids, "0" * 22, "bad-id"]:
            try:
                await sp.artist(artist_id)
            except ApiError as exc:
                errors.append(exc)
        first_token = sp.tokens.current.value  # type: ignore[union-attr]
        await sim.revoke_tokens()
        await sp.artist(ids[0])
        token = sp.tokens.current.value  # type: ignore[union-attr]
        shown = [repr(sp), repr(sp.tokens), repr(sp.tokens.current)]
    text = "\n".join([*(r.getMessage() for r in caplog.records), *map(str, errors), *shown])
    assert errors and any(r.name == "spotify_ingest.client" for r in caplog.records)
    assert token != first_token
    assert token not in text and first_token not in text and SECRET not in text


# ---------------------------------------------------------------------- with the rate controller


async def test_with_rate_controller_every_request_completes() -> None:
    ratecontrol = pytest.importorskip("spotify_ingest.ratecontrol")
    sim = make_sim(limit=10, window=10.0, time_scale=10.0)
    ids = await sim.artist_ids(40)
    clock = ScaledClock(10.0)
    rc = ratecontrol.RateController(10.0, max_concurrency=4, clock=clock)
    async with sim.client(controller=rc) as sp:
        results = await asyncio.gather(*(sp.artist(i) for i in ids))
    assert [a.id for a in results] == ids
    assert sp.stats.by_status[200] == len(ids)


async def test_quota_with_rate_controller_pauses_it_and_raises_must_wait() -> None:
    ratecontrol = pytest.importorskip("spotify_ingest.ratecontrol")
    sim = make_sim(limit=1000, quota=2, quota_period=600.0, time_scale=10.0)
    ids = await sim.artist_ids(3)
    clock = ScaledClock(10.0)
    rc = ratecontrol.RateController(30.0, max_concurrency=2, clock=clock)
    async with sim.client(controller=rc) as sp:
        await sp.artist(ids[0])
        await sp.artist(ids[1])
        with pytest.raises(MustWaitError) as info:
            await sp.artist(ids[2])
    assert info.value.reason == "QUOTA_EXCEEDED" and info.value.wait_seconds > 500
    assert rc.paused_until > clock.now() + 500
    assert rc.in_flight == 0


async def test_a_429_of_hours_is_a_quota_lockout_that_the_next_run_honours() -> None:
    answered = 0

    def two_hours_after_30(path: str, status: int, headers: list[Any], body: bytes) -> Any:
        nonlocal answered
        answered += 1
        if answered <= 30:
            return status, headers, body
        return 429, [(b"retry-after", b"7200")], b'{"error": {"status": 429}}'

    sim = make_sim(rewrite=two_hours_after_30, limit=1000)
    ids = await sim.artist_ids(40)
    pacer = QuotaPacer(bucket=1.0)
    async with sim.client(quota=pacer) as sp:
        for artist_id in ids[:30]:
            await sp.artist(artist_id)
        with pytest.raises(MustWaitError):
            await sp.artist(ids[30])
    est = pacer.estimate
    assert (est.budget, est.period, est.lockouts) == (30, 7200.0, 1)
    assert est.lockout_until == pytest.approx(time.time() + 7200, abs=5)
    # The next run, from the saved state: refuses at once, without a request.
    later = QuotaPacer(bucket=1.0)
    later.load(pacer.to_json())
    async with sim.client(quota=later) as sp:
        with pytest.raises(MustWaitError, match="locked out for 72"):
            await sp.artist(ids[31])
    assert answered == 31


def test_plain_http_to_a_remote_host_is_refused() -> None:
    creds = Credentials(client_id="abcdef", client_secret="x")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        SpotifyClient(creds, api_base="http://api.spotify.com/v1")
    with pytest.raises(UsageError):
        SpotifyClient(creds, token_url="http://accounts.spotify.com/api/token")
    SpotifyClient(creds, api_base="http://127.0.0.1:8000/v1")  # a local simulator is fine


async def test_queries_reach_the_server_alike_through_our_transport_and_httpx_own() -> None:
    """The default transport gets a URL the client encoded itself (no httpx.Request): spaces,
    accents, ``&``, ``+``, ``:`` and quotes must reach the server as httpx would send them."""
    config = SimConfig(artists=N_ARTISTS, rate_limit=False)
    queries = ["beyoncé", "a b", "ac/dc & co", "year:1990-2000 a", 'artist:"b c"', "c+d #e"]
    with SimServer(config, catalog=catalog()) as server:
        creds = Credentials(client_id=server.client_id, client_secret=server.client_secret)  # type: ignore[arg-type]
        pages: dict[str, list[list[str]]] = {}
        for name, transport in (("ours", None), ("httpx", httpx.AsyncHTTPTransport())):
            async with SpotifyClient(
                creds, api_base=server.api_base, token_url=server.token_url, transport=transport
            ) as sp:
                found = []
                for q in queries:
                    result = await sp.search(q, types=("artist", "track"), limit=10)
                    assert result.artists is not None and result.tracks is not None
                    found.append(
                        [a.id for a in result.artists.items]
                        + [str(result.artists.total), str(result.tracks.total)]
                    )
                pages[name] = found
    assert pages["ours"] == pages["httpx"]
    assert any(len(page) > 2 for page in pages["ours"])  # some query found artists
