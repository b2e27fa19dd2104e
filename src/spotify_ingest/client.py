"""SpotifyClient: one typed method per Web API endpoint the crawler uses, and what to do with
every answer the API can give.

One call, step by step (``_call``)::

    wait out our own Retry-After for this request (never resend early)
    ticket = await controller.acquire()          # pause, pacing, concurrency (or the bare pause)
    token  = await tokens.get()                  # cached; single-flight renewal
    send GET with "Authorization: Bearer"      # straight to the transport (``_send``)
    classify the answer:

    2xx            controller.on_success; parse into the model
                   (JSON / shape errors -> BadResponseError; a truncated body -> retried)
    429 rate       controller.on_rate_limited(ticket, retry_after): every worker pauses; then
                   replay this request after the pause (no replay cap: each one waits; a
                   guard stops a request that is refused MAX_RATE_LIMIT_REPLAYS times in a row).
                   Retry-After > max_wait -> MustWaitError (wait=True: count down, then replay)
    429 quota      (body error.reason == "QUOTA_EXCEEDED") controller.on_quota_exceeded (or
                   on_rate_limited), then MustWaitError (wait=True: count down, then replay).
                   With a ``quota`` pacer, it learns the budget and the lockout from this 429
                   (and from a rate 429 of hours), and every call first awaits ``quota.take()``.
    401            controller.on_success; tokens.invalidate(stale); replay ONCE; again -> Auth..
    403            EndpointUnavailableError
    404            NotFoundError if the endpoint names one object (``/artists/{id}``: the id does
                   not exist), EndpointUnavailableError if it does not (``/search``,
                   ``/artists?ids=``, ``/browse/...``: the endpoint is gone for this app) or if
                   the message is "Service not found" (the API's answer for a path it lacks).
                   The capabilities probe calls lookups with ids known to exist, so a
                   NotFoundError there means "endpoint removed" (related-artists answers 404 for
                   every id since 2024).
    400 "Invalid limit"   InvalidLimitError;  other 4xx -> BadRequestError (never retried)
    5xx            controller.on_success (the server saw it); retried
    transport      (timeouts, resets, refused, protocol errors) controller.on_no_response; retried
    no answer      (refused, timeouts, and nothing else heard from the API since the request left)
                   the reachability gate (reachability.py) paces the tries one at a time and
                   reports them (``on_waiting``); ApiUnreachableError (exit 69) when the silence
                   outlasts --no-answer-timeout (never answered) or --outage-timeout

Retries (5xx, transport, truncated bodies) use capped exponential backoff with full jitter:
``sleep = uniform(0, min(cap, base * 2**n))`` with ``base = min(0.5 s, window / 60)`` and
``cap = 16 * base``, where ``window`` is the controller's rolling window (30 s for Spotify: base
0.5 s, cap 8 s; a 1.2 s simulated window: base 20 ms) so that compressed-time simulations are not
slowed by real-time constants. At most ``max_attempts`` tries per request, and all retries draw
from a :class:`RetryBudget` (10 retries, plus 0.1 per request): under a sustained outage retries
stay below ~10 % of the traffic instead of multiplying it.

Without a controller (``controller=None``, the bare client) nothing is paced, and a 429 pauses
every call of this client until its Retry-After has passed (1 s, doubling, when the header is
missing).

API calls skip ``httpx.AsyncClient.send`` and go to the transport (aiohttp's wire, or the one a
caller gave, ``httpx.ASGITransport`` in tests) with the client's default headers and timeouts: its
cookie jar, auth and redirect steps do nothing for this API and cost ~0.2 ms a request. With
proxies from the environment there is no transport of ours and ``AsyncClient`` routes the calls.
Through our own transport no ``httpx.Request`` is built at all: the client encodes the query once
per call and hands the URL string and header list to :meth:`AiohttpTransport.get` (httpx parses
and re-validates every URL it is given, ~0.1 ms of a crawl's CPU per request).

Neither the access token nor the client secret ever appears in an exception, a log record or a
``repr``: messages are built from endpoint templates, ids, statuses and the API's error message.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import math
import random
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import TracebackType
from typing import Any, Final, Literal, Protocol, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import httpx
import msgspec

from .auth import TokenProvider, parse_retry_after
from .clock import Clock, MonotonicClock
from .config import ClientSettings, Credentials, check_endpoint_url
from .errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    BadResponseError,
    EndpointUnavailableError,
    InvalidLimitError,
    MustWaitError,
    NotFoundError,
    QuotaExceededError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from .models import (
    Album,
    Artist,
    Category,
    Page,
    PlaylistItem,
    SearchResult,
    SimplifiedAlbum,
    SimplifiedPlaylist,
    SimplifiedTrack,
    decoder,
    parse_playlist_items,
)
from .quota import LONG_RETRY_AFTER, QUOTA_REASON, QuotaPacer
from .reachability import Reachability, Unanswered, WaitingCallback
from .transport import AiohttpTransport

__all__ = [
    "MAX_RATE_LIMIT_REPLAYS",
    "SEARCH_TYPES",
    "ClientStats",
    "RateControllerLike",
    "RetryBudget",
    "SpotifyClient",
    "WaitCallback",
    "WaitingCallback",
]

logger = logging.getLogger("spotify_ingest.client")


def _make_missing_sniffio_fail_fast() -> None:
    """Record in ``sys.modules`` that sniffio is not installed, if it is not.

    httpcore runs ``import sniffio`` inside ``current_async_library()``, several times per
    request. When sniffio is not installed (anyio no longer requires it), every one of those
    imports searches ``sys.path`` again before failing: ~0.1 ms each, the largest client-side CPU
    cost per request that ``bench/client_overhead.py`` found. A ``None`` entry makes the import
    fail at once with the same ImportError, so httpcore takes the same path (asyncio), faster.
    Nothing changes when sniffio is installed.
    """
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


_make_missing_sniffio_fail_fast()

T = TypeVar("T")

#: Item types :meth:`SpotifyClient.search` accepts (the ones :class:`SearchResult` models).
SEARCH_TYPES: Final = frozenset({"artist", "album", "track", "playlist"})
#: A request refused by 429 this many times in a row (each after its pause) gives up.
MAX_RATE_LIMIT_REPLAYS: Final = 64
#: Wait assumed for a quota 429 that carries no Retry-After.
DEFAULT_QUOTA_WAIT: Final = 3600.0
#: Bare client, 429 without Retry-After: first pause (doubles per consecutive such 429).
BARE_PAUSE_WITHOUT_RETRY_AFTER: Final = 1.0
_USER_AGENT: Final = "spotify-ingest/0.1 (+httpx)"
_ERROR_BODY_LIMIT: Final = 64 * 1024

#: ``on_429(seconds, kind, endpoint)``: called on every 429 before anything else happens, with the
#: wait it asks for (seconds; None: the header is missing), ``"rate"`` or ``"quota"``, and the
#: endpoint's name: the crawler writes the deadline down before the pause starts.
RateLimitCallback = Callable[[float | None, str, str], None]
#: ``on_wait(seconds_left, reason)``: called about once a second while the client waits out a
#: long Retry-After or a quota with ``wait=True`` (reason is ``"QUOTA_EXCEEDED"`` or None).
WaitCallback = Callable[[float, str | None], None]


class RateControllerLike(Protocol):
    """What the client needs from :class:`spotify_ingest.ratecontrol.RateController`.

    Used when present: ``on_quota_exceeded(ticket, retry_after)`` for a quota 429 (else
    ``on_rate_limited``) and ``release(ticket)`` for a request that was never sent (else
    ``on_no_response``); ``window`` (seconds) scales the retry backoff.
    """

    async def acquire(self) -> Any: ...

    def on_success(self, ticket: Any) -> None: ...

    def on_rate_limited(self, ticket: Any, retry_after: float | None) -> None: ...

    def on_no_response(self, ticket: Any) -> None: ...


@dataclass
class ClientStats:
    """Counters of one client's traffic (cheap to update, read by the crawler's display)."""

    calls: int = 0  # method calls (logical requests), each counted once
    requests: int = 0  # HTTP requests sent to the API, retries and replays included
    by_status: Counter[int] = field(default_factory=Counter)  # responses by HTTP status
    retries: int = 0  # resends after a 5xx, a transport failure or a truncated body
    replays: int = 0  # resends after a 429 (rate kind, or a quota waited out)
    auth_replays: int = 0  # resends after a 401 with a renewed token
    rate_limited: int = 0  # 429s of the rolling-window kind
    quota_exceeded: int = 0  # 429s with reason QUOTA_EXCEEDED
    transport_errors: int = 0  # attempts that got no usable response
    truncated_bodies: int = 0  # 2xx whose body was cut short (retried)
    budget_exhausted: int = 0  # failures not retried because the retry budget was empty
    bytes_received: int = 0  # response bytes as received (before decompression)
    token_requests: int = 0  # requests to the token endpoint
    waited_seconds: float = 0.0  # time calls spent in the client's own 429 pauses (summed)

    def snapshot(self) -> ClientStats:
        """A copy that later traffic does not change."""
        copy = ClientStats(**{f.name: getattr(self, f.name) for f in fields(self)})
        copy.by_status = Counter(self.by_status)
        return copy

    def as_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["by_status"] = {str(k): v for k, v in sorted(self.by_status.items())}
        return data


class RetryBudget:
    """A token bucket that caps retries at a fraction of requests.

    Each request deposits ``ratio`` tokens (0.1), each retry spends one; the bucket starts with
    ``initial`` tokens (so the first requests may retry too) and holds at most ``capacity``.
    Over a run, retries <= initial + ratio * requests.
    """

    def __init__(self, ratio: float = 0.1, *, initial: float = 10.0, capacity: float = 100.0):
        self._ratio = ratio  # tokens earned per request
        self._capacity = capacity  # most tokens ever saved up
        self._tokens = min(initial, capacity)  # tokens available now

    @property
    def tokens(self) -> float:
        return self._tokens

    def deposit(self) -> None:
        self._tokens = min(self._capacity, self._tokens + self._ratio)

    def try_spend(self) -> bool:
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


@dataclass(frozen=True, slots=True)
class _Endpoint:
    template: str  # "/artists/{id}", relative to api_base
    names_object: bool  # the path names one object: a 404 means "no such id"
    shape: str  # what the body should be, for BadResponseError messages


_SEARCH = _Endpoint("/search", False, "search result")
_ARTIST = _Endpoint("/artists/{id}", True, "ArtistObject")
_ARTISTS = _Endpoint("/artists", False, "{artists: [ArtistObject]}")
_RELATED = _Endpoint("/artists/{id}/related-artists", True, "{artists: [ArtistObject]}")
_ARTIST_ALBUMS = _Endpoint("/artists/{id}/albums", True, "paging object of albums")
_ALBUM = _Endpoint("/albums/{id}", True, "AlbumObject")
_ALBUMS = _Endpoint("/albums", False, "{albums: [AlbumObject]}")
_ALBUM_TRACKS = _Endpoint("/albums/{id}/tracks", True, "paging object of tracks")
_FEATURED = _Endpoint("/browse/featured-playlists", False, "{playlists: paging object}")
_CATEGORIES = _Endpoint("/browse/categories", False, "{categories: paging object}")
_CATEGORY_PLAYLISTS = _Endpoint(
    "/browse/categories/{id}/playlists", True, "{playlists: paging object}"
)
_NEW_RELEASES = _Endpoint("/browse/new-releases", False, "{albums: paging object}")
_PLAYLIST_ITEMS = _Endpoint("/playlists/{id}/items", True, "paging object of playlist items")
_PLAYLIST_TRACKS = _Endpoint("/playlists/{id}/tracks", True, "paging object of playlist items")


class _ArtistList(msgspec.Struct, frozen=True):
    artists: list[Artist | None]


class _AlbumList(msgspec.Struct, frozen=True):
    albums: list[Album | None]


class _PlaylistsEnvelope(msgspec.Struct, frozen=True):
    playlists: Page[SimplifiedPlaylist]
    message: str | None = None


class _CategoriesEnvelope(msgspec.Struct, frozen=True):
    categories: Page[Category]


class _AlbumsPageEnvelope(msgspec.Struct, frozen=True):
    albums: Page[SimplifiedAlbum]


# Decoders built once (a decoder compiles its model's schema).
_DECODE_SEARCH = decoder(SearchResult).decode
_DECODE_ARTIST = decoder(Artist).decode
_DECODE_ARTIST_LIST = decoder(_ArtistList).decode
_DECODE_ALBUM_PAGE = decoder(Page[SimplifiedAlbum]).decode
_DECODE_ALBUM = decoder(Album).decode
_DECODE_ALBUM_LIST = decoder(_AlbumList).decode
_DECODE_TRACK_PAGE = decoder(Page[SimplifiedTrack]).decode
_DECODE_PLAYLISTS = decoder(_PlaylistsEnvelope).decode
_DECODE_CATEGORIES = decoder(_CategoriesEnvelope).decode
_DECODE_NEW_RELEASES = decoder(_AlbumsPageEnvelope).decode


class _Truncated(Exception):
    """A 2xx body that ended early: treated like a transport failure (retried)."""


class _BarePause:
    """The bare client's stand-in for a rate controller: no pacing, but never a burst into a 429.

    After a 429 every call waits until its Retry-After has passed (without the header: 1 s,
    doubling per such 429 in a row); then calls go one at a time, each waiting for the previous
    one's answer, until one is not a 429: a whole queue of requests released at once into a
    server that just refused us would extend the penalty. A pause longer than ``max_wait`` raises
    MustWaitError at once (unless ``wait``) rather than send into it.
    """

    def __init__(self, clock: Clock, *, max_wait: float, wait: bool, stats: ClientStats) -> None:
        self._clock = clock
        self._max_wait = max_wait
        self._wait = wait
        self._stats = stats
        self.paused_until = -math.inf  # no request leaves before this clock time
        self._recovering = False  # after a 429: one request at a time until one gets through
        self._probe = asyncio.Lock()  # held by the one request in flight while recovering
        self._missing_streak = 0  # 429s without Retry-After in a row

    async def acquire(self) -> bool:
        """Wait for the pause; the ticket says whether this request holds the probe lock."""
        while True:
            delay = self.paused_until - self._clock.now()
            if delay > 0:
                if delay > self._max_wait and not self._wait:
                    raise MustWaitError(
                        f"the API asked us to wait {delay:.0f} s (more than --max-wait "
                        f"{self._max_wait:.0f} s): try again after that",
                        wait_seconds=delay,
                    )
                self._stats.waited_seconds += delay
                await self._clock.sleep(delay)
                continue
            if not self._recovering:
                return False
            await self._probe.acquire()
            if self._recovering and self.paused_until <= self._clock.now():
                return True
            self._probe.release()  # recovered, or paused again, while we queued

    def _release(self, ticket: bool) -> None:
        if ticket:
            self._probe.release()

    def on_success(self, ticket: bool) -> None:
        self._recovering = False
        self._missing_streak = 0
        self._release(ticket)

    def on_rate_limited(self, ticket: bool, retry_after: float | None) -> None:
        if retry_after is None:
            pause = BARE_PAUSE_WITHOUT_RETRY_AFTER * 2.0 ** min(self._missing_streak, 20)
            self._missing_streak += 1
        else:
            pause = retry_after
        self.paused_until = max(self.paused_until, self._clock.now() + pause)
        self._recovering = True
        self._release(ticket)

    def on_no_response(self, ticket: bool) -> None:
        self._release(ticket)


class SpotifyClient:
    """Async Spotify Web API client for the crawler (client-credentials flow).

    Use as ``async with SpotifyClient(creds, controller=rc) as sp: ...``. ``transport`` replaces
    the network (tests pass ``httpx.ASGITransport(app)``); the token endpoint goes through it too.
    Explicit ``api_base`` / ``token_url`` / ``timeout`` win over ``settings``, which win over the
    defaults (the real API). ``http://`` URLs are refused unless the host is loopback or a
    custom ``transport`` is given; TLS verification cannot be turned off.
    """

    def __init__(
        self,
        credentials: Credentials,
        *,
        api_base: str | None = None,
        token_url: str | None = None,
        controller: RateControllerLike | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_wait: float = 900.0,
        wait: bool = False,
        on_wait: WaitCallback | None = None,
        on_429: RateLimitCallback | None = None,
        on_waiting: WaitingCallback | None = None,
        settings: ClientSettings | None = None,
        timeout: httpx.Timeout | None = None,
        clock: Clock | None = None,
        max_attempts: int = 5,
        backoff_base: float | None = None,
        retry_budget: RetryBudget | None = None,
        max_connections: int = 64,
        rng: random.Random | None = None,
        quota: QuotaPacer | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if max_wait < 0:
            raise ValueError("max_wait must be >= 0")
        settings = settings or ClientSettings.model_construct()
        in_process = transport is not None
        self._api_base = check_endpoint_url(
            api_base or settings.api_base, what="API base URL", allow_plain_http=in_process
        )
        self._token_url = check_endpoint_url(
            token_url or settings.token_url, what="token URL", allow_plain_http=in_process
        )
        self._base_path = urlsplit(self._api_base).path.rstrip("/")
        self._api_host = urlsplit(self._api_base).netloc
        self.stats = ClientStats()
        self._max_wait = float(max_wait)
        self._wait = wait
        self._on_wait = on_wait
        self.on_429 = on_429
        self.on_wire = 0  # requests sent whose answer has not arrived yet

        self._quota = quota  # paces every call under the learned quota (see quota.py)
        self._clock: Clock = clock or MonotonicClock()
        # Whether the API answers at all; shared with the token provider.
        self.reachability = Reachability(
            no_answer_timeout=settings.no_answer_timeout,
            outage_timeout=settings.outage_timeout,
            clock=self._clock,
            on_waiting=on_waiting,
        )
        self._controller: RateControllerLike = controller or _BarePause(
            self._clock, max_wait=self._max_wait, wait=wait, stats=self.stats
        )
        # Optional controller methods: a quota 429 is no evidence about the window limit, and a
        # ticket whose request never left should not count as sent.
        self._on_quota_exceeded: Callable[[Any, float | None], None] = getattr(
            self._controller, "on_quota_exceeded", self._controller.on_rate_limited
        )
        self._release: Callable[[Any], None] = getattr(
            self._controller, "release", self._controller.on_no_response
        )
        self._max_attempts = max_attempts
        self._rng = rng or random.Random()
        if backoff_base is None:
            window = getattr(controller, "window", None) if controller is not None else None
            window = float(window) if isinstance(window, int | float) and window > 0 else 30.0
            backoff_base = min(0.5, window / 60.0)
        self._backoff_base = backoff_base
        self._backoff_cap = 16.0 * backoff_base
        self._budget = retry_budget or RetryBudget()
        if transport is None and not _proxies_from_environment():
            # (with HTTP(S)_PROXY set, httpx's own transport applies the proxies)
            transport = AiohttpTransport(max_connections)
        # API calls go to the transport directly (see _send): httpx.AsyncClient's cookie jar,
        # auth and redirect machinery cost ~0.2 ms a request and do nothing for this API. Only
        # with proxies from the environment (no transport of ours) does AsyncClient route them.
        self._direct = transport
        self._timeouts = {"timeout": (timeout or settings.timeout()).as_dict()}
        self._http = httpx.AsyncClient(
            transport=transport,
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=30.0,
            ),
            timeout=timeout or settings.timeout(),
            http1=True,
            http2=False,
            follow_redirects=False,
            headers={"User-Agent": _USER_AGENT, "Accept": "application/json"},
        )
        self._headers = dict(self._http.headers)  # User-Agent, Accept, Accept-Encoding ...
        self._header_items = list(self._headers.items())
        # Our own transport takes a URL string and headers as they are (see _get_fast).
        self._fast = transport if isinstance(transport, AiohttpTransport) else None
        self.tokens = TokenProvider(
            credentials,
            http=self._http,
            token_url=self._token_url,
            clock=self._clock,
            backoff_base=backoff_base,
            backoff_cap=self._backoff_cap,
            max_wait=self._max_wait,
            rng=self._rng,
            on_token_request=self._count_token_request,
            reachability=self.reachability,
        )
        self._playlist_route: Literal["items", "tracks"] | None = None  # learned on first success

    def __repr__(self) -> str:
        return f"SpotifyClient(api_base={self._api_base!r})"

    async def __aenter__(self) -> SpotifyClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def stop_waiting(self) -> None:
        """Cancel the calls that wait for a silent API (a stop was requested)."""
        self.reachability.stop()

    async def aclose(self) -> None:
        await self.tokens.aclose()
        await self._http.aclose()

    @property
    def api_base(self) -> str:
        return self._api_base

    @property
    def retry_budget(self) -> RetryBudget:
        return self._budget

    @property
    def playlist_route(self) -> Literal["items", "tracks"] | None:
        """Which playlist-items path works here (None until one call succeeded)."""
        return self._playlist_route

    # ------------------------------------------------------------------ endpoints

    async def search(
        self,
        q: str,
        *,
        types: Sequence[str] = ("artist", "album", "track"),
        limit: int = 10,
        offset: int = 0,
        market: str | None = None,
    ) -> SearchResult:
        """``GET /search``: one page per type, all types in ONE request."""
        if not q:
            raise ValueError("search query must not be empty")
        if isinstance(types, str):
            types = tuple(t.strip() for t in types.split(","))
        unknown = [t for t in types if t not in SEARCH_TYPES]
        if not types or unknown:
            raise ValueError(f"search types must be among {sorted(SEARCH_TYPES)}, got {unknown}")
        params: dict[str, str] = {
            "q": q,
            "type": ",".join(types),
            "limit": _non_negative("limit", limit),
            "offset": _non_negative("offset", offset),
        }
        if market:
            params["market"] = market
        return await self._call(_SEARCH, "/search", params, _DECODE_SEARCH)

    async def artist(self, artist_id: str) -> Artist:
        """``GET /artists/{id}``."""
        path = f"/artists/{_path_id(artist_id)}"
        return await self._call(_ARTIST, path, None, _DECODE_ARTIST)

    async def artists(self, artist_ids: Sequence[str]) -> list[Artist]:
        """``GET /artists?ids=`` (at most 50). Unknown ids (``null`` entries) are left out."""
        ids = _id_list(artist_ids, 50)
        parsed = await self._call(_ARTISTS, "/artists", {"ids": ids}, _DECODE_ARTIST_LIST)
        return [a for a in parsed.artists if a is not None]

    async def related_artists(self, artist_id: str) -> list[Artist]:
        """``GET /artists/{id}/related-artists`` (removed for new apps since 2024: 404)."""
        path = f"/artists/{_path_id(artist_id)}/related-artists"
        parsed = await self._call(_RELATED, path, None, _DECODE_ARTIST_LIST)
        return [a for a in parsed.artists if a is not None]

    async def artist_albums(
        self,
        artist_id: str,
        *,
        include_groups: Sequence[str] = ("album", "single", "appears_on", "compilation"),
        limit: int = 10,
        offset: int = 0,
        market: str | None = None,
    ) -> Page[SimplifiedAlbum]:
        """``GET /artists/{id}/albums``."""
        path = f"/artists/{_path_id(artist_id)}/albums"
        params = {"limit": _non_negative("limit", limit), "offset": _non_negative("offset", offset)}
        if include_groups:
            params["include_groups"] = ",".join(include_groups)
        if market:
            params["market"] = market
        return await self._call(_ARTIST_ALBUMS, path, params, _DECODE_ALBUM_PAGE)

    async def album(self, album_id: str, *, market: str | None = None) -> Album:
        """``GET /albums/{id}``: the album with the first page of its tracks."""
        params = {"market": market} if market else None
        path = f"/albums/{_path_id(album_id)}"
        return await self._call(_ALBUM, path, params, _DECODE_ALBUM)

    async def albums(self, album_ids: Sequence[str], *, market: str | None = None) -> list[Album]:
        """``GET /albums?ids=`` (at most 20). Unknown ids (``null`` entries) are left out."""
        params = {"ids": _id_list(album_ids, 20)}
        if market:
            params["market"] = market
        parsed = await self._call(_ALBUMS, "/albums", params, _DECODE_ALBUM_LIST)
        return [a for a in parsed.albums if a is not None]

    async def album_tracks(
        self, album_id: str, *, limit: int = 50, offset: int = 0, market: str | None = None
    ) -> Page[SimplifiedTrack]:
        """``GET /albums/{id}/tracks``."""
        path = f"/albums/{_path_id(album_id)}/tracks"
        params = {"limit": _non_negative("limit", limit), "offset": _non_negative("offset", offset)}
        if market:
            params["market"] = market
        return await self._call(_ALBUM_TRACKS, path, params, _DECODE_TRACK_PAGE)

    async def featured_playlists(
        self, *, limit: int = 50, offset: int = 0, locale: str | None = None
    ) -> Page[SimplifiedPlaylist]:
        """``GET /browse/featured-playlists`` (removed for new apps since 2024)."""
        params = {"limit": _non_negative("limit", limit), "offset": _non_negative("offset", offset)}
        if locale:
            params["locale"] = locale
        parsed = await self._call(_FEATURED, _FEATURED.template, params, _DECODE_PLAYLISTS)
        return parsed.playlists

    async def categories(
        self, *, limit: int = 50, offset: int = 0, locale: str | None = None
    ) -> Page[Category]:
        """``GET /browse/categories`` (removed for Development Mode apps in 2026)."""
        params = {"limit": _non_negative("limit", limit), "offset": _non_negative("offset", offset)}
        if locale:
            params["locale"] = locale
        parsed = await self._call(_CATEGORIES, _CATEGORIES.template, params, _DECODE_CATEGORIES)
        return parsed.categories

    async def category_playlists(
        self, category_id: str, *, limit: int = 50, offset: int = 0
    ) -> Page[SimplifiedPlaylist]:
        """``GET /browse/categories/{id}/playlists`` (removed for new apps since 2024)."""
        path = f"/browse/categories/{_path_id(category_id)}/playlists"
        params = {"limit": _non_negative("limit", limit), "offset": _non_negative("offset", offset)}
        parsed = await self._call(_CATEGORY_PLAYLISTS, path, params, _DECODE_PLAYLISTS)
        return parsed.playlists

    async def new_releases(self, *, limit: int = 50, offset: int = 0) -> Page[SimplifiedAlbum]:
        """``GET /browse/new-releases`` (removed for Development Mode apps in 2026)."""
        params = {"limit": _non_negative("limit", limit), "offset": _non_negative("offset", offset)}
        parsed = await self._call(
            _NEW_RELEASES, _NEW_RELEASES.template, params, _DECODE_NEW_RELEASES
        )
        return parsed.albums

    async def playlist_items(
        self, playlist_id: str, *, limit: int = 50, offset: int = 0, market: str | None = None
    ) -> Page[PlaylistItem]:
        """``GET /playlists/{id}/items``, or the older ``/tracks`` where ``/items`` is missing.

        Until one call has succeeded, a 404 on ``/items`` is followed by one try of ``/tracks``;
        the path that answered is remembered (:attr:`playlist_route`) and used alone from then on.
        403 (a playlist this app may not read: Development Mode apps read only their own) raises
        EndpointUnavailableError.
        """
        pid = _path_id(playlist_id)
        params = {"limit": _non_negative("limit", limit), "offset": _non_negative("offset", offset)}
        if market:
            params["market"] = market
        parse = parse_playlist_items
        if self._playlist_route == "tracks":
            return await self._call(_PLAYLIST_TRACKS, f"/playlists/{pid}/tracks", params, parse)
        try:
            page = await self._call(_PLAYLIST_ITEMS, f"/playlists/{pid}/items", params, parse)
        except (NotFoundError, EndpointUnavailableError) as exc:
            if self._playlist_route == "items" or exc.status != 404:
                raise
            page = await self._call(_PLAYLIST_TRACKS, f"/playlists/{pid}/tracks", params, parse)
            self._playlist_route = "tracks"
            logger.debug("playlist items: /items answered 404, /tracks works; using /tracks")
            return page
        self._playlist_route = "items"
        return page

    # ------------------------------------------------------------------ the request loop

    def _count_token_request(self) -> None:
        self.stats.token_requests += 1

    async def _call(
        self,
        endpoint: _Endpoint,
        path: str,
        params: Mapping[str, str] | None,
        parse: Callable[[bytes], T],
    ) -> T:
        """Send one logical request until it has a final answer (see the module docstring)."""
        stats = self.stats
        stats.calls += 1
        self._budget.deposit()
        url = self._api_base + path
        fast = self._fast
        full_url = url + "?" + urlencode(params) if params and fast is not None else url
        controller = self._controller
        failures = 0  # 5xx / transport / truncated attempts so far
        rate_replays = 0  # consecutive 429 refusals of this request
        auth_replayed = False
        not_before = 0.0  # clock time before which this request must not be resent (Retry-After)

        while True:
            # 1. Never resend before the Retry-After this request was given; then the pauses.
            delay = not_before - self._clock.now()
            if delay > 0:
                stats.waited_seconds += delay
                await self._clock.sleep(delay)
            slot = await self._quota.take() if self._quota is not None else 0
            try:
                ticket = await controller.acquire()
            except BaseException:  # a pause beyond --max-wait, or cancelled: never sent
                self._quota_unspent(slot)
                raise

            # 2. Send.
            try:
                token = await self.tokens.get()
            except BaseException:  # no token (credentials, token endpoint down) or cancelled
                self._release(ticket)
                self._quota_unspent(slot)
                raise
            stats.requests += 1
            started = time.perf_counter()
            try:
                if fast is not None:
                    attempt = self._get_fast(fast, full_url, token)
                else:
                    attempt = self._send(
                        httpx.Request(
                            "GET",
                            url,
                            params=params,
                            headers={**self._headers, "Authorization": "Bearer " + token},
                            extensions=self._timeouts,
                        )
                    )
                response = await self.reachability.send(attempt, self._api_host)
            except Unanswered:  # the API is silent: its gate paces the next try, no retry counted
                controller.on_no_response(ticket)
                stats.transport_errors += 1
                self._log(endpoint, "no answer", started)
                continue
            except (httpx.TransportError, httpx.DecodingError) as exc:
                controller.on_no_response(ticket)
                stats.transport_errors += 1
                self._log(endpoint, "error " + type(exc).__name__, started)
                failures += 1
                error: ApiError = TransportError(
                    f"GET {self._endpoint_name(endpoint)} ({path}): no response "
                    f"({type(exc).__name__})",
                    endpoint=self._endpoint_name(endpoint),
                )
                await self._retry_or_raise(error, failures)
                continue
            except BaseException:  # cancelled in flight: the server may have seen it
                controller.on_no_response(ticket)
                raise

            # 3. Classify.
            status = response.status_code
            stats.by_status[status] += 1
            stats.bytes_received += response.num_bytes_downloaded
            if logger.isEnabledFor(logging.DEBUG):
                self._log(endpoint, str(status), started)

            if status == 429:
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                reason = _error_reason(response)
                if self.on_429 is not None:
                    kind = "quota" if reason == QUOTA_REASON else "rate"
                    self.on_429(retry_after, kind, self._endpoint_name(endpoint))
                if reason == QUOTA_REASON:
                    self._on_quota_exceeded(ticket, retry_after)
                else:
                    controller.on_rate_limited(ticket, retry_after)
                self._learn_quota(slot, retry_after, quota=reason == QUOTA_REASON)
                rate_replays += 1
                not_before = await self._on_429(endpoint, path, retry_after, reason, rate_replays)
                stats.replays += 1
                continue

            controller.on_success(ticket)  # the server saw this request

            if 200 <= status < 300:
                try:
                    return self._parse(endpoint, response, parse)
                except _Truncated:
                    stats.truncated_bodies += 1
                    failures += 1
                    await self._retry_or_raise(
                        TransportError(
                            f"GET {self._endpoint_name(endpoint)} ({path}): response body "
                            "truncated",
                            status=status,
                            endpoint=self._endpoint_name(endpoint),
                        ),
                        failures,
                    )
                    continue

            if status == 401:
                if auth_replayed:
                    raise AuthenticationError(
                        f"GET {self._endpoint_name(endpoint)}: the API refused a freshly renewed "
                        "access token (401): check the app's status in the Spotify dashboard",
                        status=401,
                        endpoint=self._endpoint_name(endpoint),
                    )
                self.tokens.invalidate(token)
                auth_replayed = True
                stats.auth_replays += 1
                continue

            if status >= 500:
                failures += 1
                server_error = ServerError(
                    f"GET {self._endpoint_name(endpoint)} ({path}): server error {status}"
                    f"{_error_message_suffix(response)}",
                    status=status,
                    endpoint=self._endpoint_name(endpoint),
                )
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                await self._retry_or_raise(server_error, failures, at_least=retry_after)
                continue

            raise self._client_error(endpoint, path, response)

    def _quota_unspent(self, slot: int) -> None:
        if self._quota is not None:
            self._quota.unspent(slot)

    def _learn_quota(self, slot: int, retry_after: float | None, *, quota: bool) -> None:
        """A 429 spent no quota; a quota 429, or a rate 429 of hours, teaches the pacer the budget
        and the lockout."""
        if self._quota is None:
            return
        self._quota.unspent(slot)
        if quota:
            self._quota.on_lockout(self._quota.epoch(), retry_after or DEFAULT_QUOTA_WAIT)
        elif retry_after is not None and retry_after >= LONG_RETRY_AFTER:
            self._quota.on_lockout(self._quota.epoch(), retry_after)

    async def _get_fast(self, fast: AiohttpTransport, url: str, token: str) -> httpx.Response:
        """One attempt through :meth:`AiohttpTransport.get`: no ``httpx.Request`` is built."""
        headers = [*self._header_items, ("Authorization", "Bearer " + token)]
        self.on_wire += 1
        try:
            return await _read_body(await fast.get(url, headers, self._timeouts["timeout"]))
        finally:
            self.on_wire -= 1

    async def _send(self, request: httpx.Request) -> httpx.Response:
        """One attempt: the response with its body read (what ``AsyncClient.send`` returns)."""
        self.on_wire += 1
        try:
            if self._direct is None:
                return await self._http.send(request)
            response = await self._direct.handle_async_request(request)
            response.request = request
            return await _read_body(response)
        finally:
            self.on_wire -= 1

    async def _on_429(
        self,
        endpoint: _Endpoint,
        path: str,
        retry_after: float | None,
        reason: str | None,
        rate_replays: int,
    ) -> float:
        """Deal with a 429 whose controller callback was made; return the replay's not_before."""
        name = self._endpoint_name(endpoint)
        quota = reason == QUOTA_REASON
        if quota:
            self.stats.quota_exceeded += 1
            wait_for = retry_after if retry_after is not None else DEFAULT_QUOTA_WAIT
            cause: RateLimitedError = QuotaExceededError(
                f"GET {name}: quota exceeded", retry_after=retry_after, reason=reason, endpoint=name
            )
        else:
            self.stats.rate_limited += 1
            wait_for = retry_after if retry_after is not None else 0.0
            cause = RateLimitedError(
                f"GET {name}: rate limited", retry_after=retry_after, reason=reason, endpoint=name
            )

        if quota or wait_for > self._max_wait:
            if not self._wait:
                what = "the API quota is spent" if quota else "the API asked us to wait"
                raise MustWaitError(
                    f"{what}: Retry-After {wait_for:.0f} s"
                    f"{'' if quota else f' is above --max-wait {self._max_wait:.0f} s'}"
                    f" (GET {name}): try again after that",
                    wait_seconds=wait_for,
                    reason=reason,
                ) from cause
            await self._count_down(wait_for, reason)
            return 0.0

        if rate_replays > MAX_RATE_LIMIT_REPLAYS:
            raise RateLimitedError(
                f"GET {name} ({path}): refused by 429 {rate_replays} times in a row although "
                "every replay waited its pause; giving up on this request",
                retry_after=retry_after,
                reason=reason,
                endpoint=name,
            )
        return self._clock.now() + (retry_after or 0.0)

    async def _count_down(self, seconds: float, reason: str | None) -> None:
        """``wait=True``: sleep ``seconds``, telling ``on_wait`` the time left every second."""
        logger.info("waiting %.0f s before resuming (%s)", seconds, reason or "Retry-After")
        end = self._clock.now() + seconds
        self.stats.waited_seconds += seconds
        while True:
            left = end - self._clock.now()
            if left <= 0:
                return
            if self._on_wait is not None:
                self._on_wait(left, reason)
            await self._clock.sleep(min(1.0, left))

    async def _retry_or_raise(
        self, error: ApiError, failures: int, *, at_least: float | None = None
    ) -> None:
        """Sleep a full-jitter backoff if a retry is allowed, else raise ``error``."""
        if failures >= self._max_attempts:
            raise error
        if not self._budget.try_spend():
            self.stats.budget_exhausted += 1
            raise type(error)(
                f"{error} (retry budget exhausted)", status=error.status, endpoint=error.endpoint
            ) from None
        delay = self._rng.uniform(
            0.0, min(self._backoff_cap, self._backoff_base * 2.0 ** (failures - 1))
        )
        if at_least is not None and at_least <= self._max_wait:
            delay = max(delay, at_least)
        self.stats.retries += 1
        await self._clock.sleep(delay)

    # ------------------------------------------------------------------ parsing and mapping

    def _parse(
        self, endpoint: _Endpoint, response: httpx.Response, parse: Callable[[bytes], T]
    ) -> T:
        body = response.content
        declared = response.headers.get("content-length")
        if (
            declared is not None
            and declared.isdigit()
            and response.num_bytes_downloaded < int(declared)
        ):
            raise _Truncated
        try:
            return parse(body)
        except msgspec.ValidationError as exc:  # JSON, but not of the shape the model needs
            message, _, where = str(exc).partition(" - at `")
            where = where.rstrip("`").removeprefix("$").removeprefix(".")
            what = f"body does not match {endpoint.shape}: {where or 'body'}: {message}"
        except msgspec.DecodeError as exc:  # not JSON at all, or cut short
            if "truncated" in str(exc):
                raise _Truncated from None
            what = f"body is not JSON ({exc})"
        raise BadResponseError(
            f"GET {self._endpoint_name(endpoint)}: {what}",
            status=response.status_code,
            endpoint=self._endpoint_name(endpoint),
        ) from None

    def _client_error(self, endpoint: _Endpoint, path: str, response: httpx.Response) -> ApiError:
        status = response.status_code
        name = self._endpoint_name(endpoint)
        message = _error_message(response)
        shown = f": {message}" if message else ""
        if status == 403:
            return EndpointUnavailableError(
                f"GET {name} is not available to this app (403{shown})",
                status=status,
                endpoint=name,
            )
        if status == 404:
            if endpoint.names_object and message.lower() != "service not found":
                return NotFoundError(
                    f"GET {path}: not found (404{shown})", status=status, endpoint=name
                )
            return EndpointUnavailableError(
                f"GET {name} is not available to this app (404{shown})",
                status=status,
                endpoint=name,
            )
        if status == 400 and "invalid limit" in message.lower():
            return InvalidLimitError(
                f"GET {name}: the limit is above this endpoint's maximum for this app (400{shown})",
                status=status,
                endpoint=name,
            )
        if 400 <= status < 500:
            return BadRequestError(f"GET {path}: {status}{shown}", status=status, endpoint=name)
        return BadResponseError(
            f"GET {name}: unexpected HTTP status {status}", status=status, endpoint=name
        )

    def _endpoint_name(self, endpoint: _Endpoint) -> str:
        return self._base_path + endpoint.template

    def _log(self, endpoint: _Endpoint, outcome: str, started: float) -> None:
        logger.debug(
            "GET %s -> %s in %.1f ms",
            self._endpoint_name(endpoint),
            outcome,
            (time.perf_counter() - started) * 1000.0,
        )


# ---------------------------------------------------------------------- helpers


def _proxies_from_environment() -> bool:
    """True if HTTP_PROXY / HTTPS_PROXY / ALL_PROXY (any case) is set."""
    return any(k in ("http", "https", "all") for k in urllib.request.getproxies())


def _non_negative(name: str, value: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return str(value)


def _path_id(value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"an id must be a non-empty string, got {value!r}")
    return quote(value, safe="")


def _id_list(ids: Sequence[str], maximum: int) -> str:
    if isinstance(ids, str):
        raise ValueError("pass a sequence of ids, not one string")
    if not 1 <= len(ids) <= maximum:
        raise ValueError(f"between 1 and {maximum} ids per request, got {len(ids)}")
    for one in ids:
        if not isinstance(one, str) or not one or "," in one:
            raise ValueError(f"invalid id {one!r}")
    return ",".join(ids)


def _error_object(response: httpx.Response) -> dict[str, Any]:
    """The API's ``{"error": {...}}`` object, or {} when the body is something else."""
    content = response.content
    if not content or len(content) > _ERROR_BODY_LIMIT:
        return {}
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _error_reason(response: httpx.Response) -> str | None:
    reason = _error_object(response).get("reason")
    return reason if isinstance(reason, str) and reason else None


async def _read_body(response: httpx.Response) -> httpx.Response:
    """The response with its body read (``aread`` closes the stream when done; on failure it is
    closed here)."""
    try:
        await response.aread()
    except BaseException:
        await response.aclose()
        raise
    return response


def _error_message(response: httpx.Response) -> str:
    """The API's error message, on one line and at most 200 characters ('' if none)."""
    message = _error_object(response).get("message")
    if not isinstance(message, str):
        return ""
    return " ".join(message.split())[:200]


def _error_message_suffix(response: httpx.Response) -> str:
    message = _error_message(response)
    return f": {message}" if message else ""
