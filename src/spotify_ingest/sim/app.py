"""The simulator's HTTP side: a Starlette app that behaves like the Spotify Web API.

``create_app(SimConfig(...))`` returns an ASGI app to use in-process (``httpx.ASGITransport``) or
to serve with uvicorn (``sim/server.py``). It serves:

* ``POST /api/token``: client-credentials tokens, like accounts.spotify.com (Basic or form creds).
* ``GET /v1/...``: the catalog endpoints of ``sim/profiles.py`` with Spotify's parameters, paging
  objects and error objects, shaped by the access profile.
* ``/__sim/...``: ground truth and test hooks, never authenticated nor rate limited:
  ``GET /__sim/stats``, ``GET /__sim/catalog`` (``?format=text`` newline-delimited ids, streamed;
  ``?format=json&offset=&limit=`` pages), ``GET /__sim/accepted`` (accepted request times),
  ``POST /__sim/revoke-tokens``, ``POST /__sim/control`` (JSON knobs, see ``SimState.control``).

Request pipeline of a ``/v1`` request: count it; authenticate the bearer token (401); ask the rate
limiter for the token's client (429 with Retry-After, penalties, quota: ``sim/ratelimit.py``);
sleep the drawn latency on the injected clock; inject a fault if one is drawn (``sim/faults.py``);
answer removed endpoints per profile (403/404); validate parameters (400); answer. Every request
that reaches the limiter with a valid token counts against the window, whatever its answer (a 400
or a 5xx reached the server); 401s and 429s do not.

Speed. Catalog objects are static, so each one's JSON encoding is cached (bounded LRU) and pages
are assembled by splicing the cached fragments between per-request links (``paging_json``);
``GET /v1`` paths are matched by segments ahead of Starlette's middleware (``_FastRoutes``).
orjson is used when installed. ``bench/sim_load.py`` measures it.

Time. Every duration in ``SimConfig`` (window, token TTL, quota period, penalties, schedule times,
latency) is in *simulator seconds*, read from the clock. With ``time_scale = k`` the app runs on
``ScaledClock(k)``, where k simulator seconds pass per real second: a 30-minute crawl takes a minute
at ``k = 30``, and every number the API sends (Retry-After, expires_in) keeps its Spotify meaning
in simulator seconds. A client in the same experiment must use a clock with the same scale
(``ScaledClock`` is clock-compatible: ``now()`` / ``async sleep()``). An injected ``clock`` wins
over ``time_scale``.

Connection resets (``reset_rate``). Under uvicorn the app aborts the TCP connection (SO_LINGER 0,
so the peer sees a reset) before any byte of the response: the client gets a transport error. In
process (no socket; ``httpx.ASGITransport``) the app raises ``httpx.ReadError`` instead, which
``ASGITransport`` passes to the caller as the same transport-level error.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import functools
import itertools
import json
import math
import random
import re
import socket
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from spotify_ingest.clock import Clock, MonotonicClock

from .catalog import Catalog, SearchQueryError
from .faults import SERVER_ERROR_MESSAGES, Fault, FaultInjector, LatencyModel
from .profiles import DEFAULT_PROFILE, ENDPOINTS, Endpoint, Profile, get_profile
from .ratelimit import (
    QUOTA_REASON,
    Algorithm,
    RateLimiter,
    ScheduleStep,
    parse_limit_schedule,
)

__all__ = [
    "DEMO_CLIENT_ID",
    "DEMO_CLIENT_SECRET",
    "OFFSET_RULES",
    "ScaledClock",
    "SimApp",
    "SimConfig",
    "SimState",
    "create_app",
    "dumps",
]

DEMO_CLIENT_ID = "demo-client-id"  # public demo credentials of the simulator (not secrets)
DEMO_CLIENT_SECRET = "demo-client-secret"

try:  # orjson is optional: ~3x faster serialisation where installed
    import orjson  # type: ignore[import-not-found, unused-ignore]

    def dumps(obj: Any) -> bytes:
        """Compact UTF-8 JSON."""
        out: bytes = orjson.dumps(obj)
        return out

except ImportError:  # pragma: no cover - depends on the environment
    _encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)

    def dumps(obj: Any) -> bytes:
        """Compact UTF-8 JSON."""
        return _encoder.encode(obj).encode()


# ------------------------------------------------------------------------------------------------
# Configuration


# Search's offset rules (SimConfig.offset_rule): the largest offset served is 1000, or 1000 - limit.
OFFSET_RULES = ("offset", "offset+limit")


@dataclass(frozen=True)
class SimConfig:
    """Every knob of the simulator (and of ``spotify-ingest sim serve``).

    * Catalog: ``artists``, ``seed`` (the seed also drives the hidden limit, tokens, faults and
      latency), ``profile`` (``extended``, ``dev-2024``, ``dev-2026``: ``sim/profiles.py``).
    * Hidden limit (``sim/ratelimit.py``): ``limit`` per ``window`` seconds per client id
      (``None``: drawn from the seed in [100, 300]); ``algorithm`` ``sliding`` / ``fixed`` /
      ``token``; ``rate_limit=False`` turns every limit off (benchmarks of the server itself);
      ``limit_schedule``: a SPEC string (``"120:half,240:double"``, ``"60:50,120:200"``; syntax
      in ``parse_limit_schedule``) or ``(t, L)`` pairs; ``penalty_cap`` and
      ``escalation_grace`` shape the doubling penalty; ``quota`` accepted requests per
      ``quota_period``; ``endpoint_limits`` extra buckets by endpoint key (``{"search": 50}``).
    * Realism: ``latency_ms`` (mean), ``fail_rate`` (500/502/503), ``reset_rate`` (connection
      reset), ``truncate_rate`` (cut JSON body), ``token_ttl``.
    * Credentials: ``client_id`` / ``client_secret`` (public demo pair by default) and
      ``extra_clients`` (more pairs, each with its own buckets).
    * ``time_scale``: simulator seconds per real second. Every duration above is in simulator
      seconds (see the module docstring), so ``time_scale=30`` runs a 30-minute crawl in a minute.
    * ``offset_rule``: which search pages are served. ``offset`` (default): any ``offset <=
      1000``, so a query shows ``1000 + limit`` results; ``offset+limit``: only pages with
      ``offset + limit <= 1000`` (400 "Invalid offset" past it), so a query shows 1000.
    """

    artists: int = 20000
    seed: int = 0
    profile: str = DEFAULT_PROFILE
    limit: int | None = None
    window: float = 30.0
    algorithm: str = "sliding"
    rate_limit: bool = True
    latency_ms: float = 0.0
    fail_rate: float = 0.0
    reset_rate: float = 0.0
    truncate_rate: float = 0.0
    token_ttl: float = 3600.0
    quota: int | None = None
    quota_period: float = 86400.0
    limit_schedule: str | Sequence[tuple[float, int]] = ""
    penalty_cap: float = 86400.0
    escalation_grace: float = 1.0  # early requests this soon after a 429 do not escalate
    endpoint_limits: Mapping[str, int] = field(default_factory=dict)
    client_id: str = DEMO_CLIENT_ID
    client_secret: str = DEMO_CLIENT_SECRET
    extra_clients: Sequence[tuple[str, str]] = ()  # more (client_id, secret) pairs, own buckets
    time_scale: float = 1.0
    offset_rule: str = "offset"

    def resolved_limit(self) -> int:
        """The hidden limit: ``limit`` or a draw from the seed in [100, 300]."""
        if self.limit is not None:
            return self.limit
        return random.Random(f"spotify-sim-limit:{self.seed}").randint(100, 300)

    def schedule_steps(self) -> tuple[ScheduleStep, ...]:
        if isinstance(self.limit_schedule, str):
            return parse_limit_schedule(self.limit_schedule)
        steps = tuple(ScheduleStep(float(t), absolute=int(n)) for t, n in self.limit_schedule)
        for a, b in itertools.pairwise(steps):
            if b.at <= a.at:
                raise ValueError("limit-schedule times must increase")
        if any(s.absolute is not None and s.absolute < 1 for s in steps):
            raise ValueError("limit-schedule limits must be >= 1")
        return steps

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line message for the first bad knob."""
        if self.artists < 1:
            raise ValueError("artists must be >= 1")
        get_profile(self.profile)
        if self.limit is not None and self.limit < 1:
            raise ValueError("limit must be >= 1")
        if not self.window > 0:
            raise ValueError("window must be > 0")
        try:
            Algorithm(self.algorithm)
        except ValueError:
            known = ", ".join(a.value for a in Algorithm)
            raise ValueError(f"unknown algorithm {self.algorithm!r}: use one of {known}") from None
        if self.latency_ms < 0:
            raise ValueError("latency-ms must be >= 0")
        for name in ("fail_rate", "reset_rate", "truncate_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name.replace('_', '-')} must be between 0 and 1")
        if self.fail_rate + self.reset_rate + self.truncate_rate > 1.0:
            raise ValueError("fail-rate + reset-rate + truncate-rate must be <= 1")
        if not self.token_ttl > 0:
            raise ValueError("token-ttl must be > 0")
        if self.quota is not None and self.quota < 1:
            raise ValueError("quota must be >= 1")
        if not self.quota_period > 0:
            raise ValueError("quota-period must be > 0")
        if not self.penalty_cap >= 1:
            raise ValueError("penalty-cap must be >= 1")
        if not self.escalation_grace >= 0:
            raise ValueError("escalation-grace must be >= 0")
        if not self.time_scale > 0 or not math.isfinite(self.time_scale):
            raise ValueError("time-scale must be > 0")
        keys = {e.key for e in ENDPOINTS}
        for key, value in self.endpoint_limits.items():
            if key not in keys:
                raise ValueError(f"unknown endpoint {key!r} in endpoint limits")
            if value < 1:
                raise ValueError(f"endpoint limit for {key!r} must be >= 1")
        if not self.client_id or not self.client_secret:
            raise ValueError("client id and secret must not be empty")
        if self.offset_rule not in OFFSET_RULES:
            known_rules = ", ".join(OFFSET_RULES)
            raise ValueError(f"unknown offset rule {self.offset_rule!r}: use one of {known_rules}")
        self.schedule_steps()


class ScaledClock:
    """A clock on which ``scale`` seconds pass per real second (``now()`` scaled monotonic time)."""

    def __init__(self, scale: float) -> None:
        if not scale > 0:
            raise ValueError("scale must be > 0")
        self.scale = scale

    def now(self) -> float:
        return time.monotonic() * self.scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.scale)


# ------------------------------------------------------------------------------------------------
# Errors and small helpers

_JSON = "application/json; charset=utf-8"
_ID_RE = re.compile(r"^[0-9A-Za-z]{22}$")
_SEARCH_TYPES = ("album", "artist", "playlist", "track", "show", "episode", "audiobook")
_CATALOG_SEARCH_TYPES = frozenset({"album", "artist", "playlist", "track"})
_INCLUDE_GROUPS = ("album", "single", "appears_on", "compilation")
_SEARCH_MAX_OFFSET = 1000
_ALBUM_TRACKS_IN_ALBUM = 50  # tracks paging embedded in an album object
_PLAYLIST_ITEMS_IN_PLAYLIST = 100  # items paging embedded in a playlist object
_APP_OWNER = "app-owner"  # catalog owner id of the playlists the app owns


class ApiProblem(Exception):
    """An error answer of the Web API: ``{"error": {"status": N, "message": "..."}}``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def error_body(status: int, message: str, **extra: str) -> bytes:
    return dumps({"error": {"status": status, "message": message, **extra}})


def _json_response(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> Response:
    return Response(body, status_code=status, headers=headers, media_type=_JSON)


def _int_param(params: Mapping[str, str], name: str, default: int, message: str) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ApiProblem(400, message) from None


@functools.lru_cache(maxsize=4096)
def _query_part(params: tuple[tuple[str, str], ...]) -> str:
    """``k=v&k=v`` percent-encoded (commas and colons kept, as in Spotify's links)."""
    return "&".join(f"{k}={quote(v, safe=',:')}" for k, v in params)


def paging(
    base: str,
    items: list[Any],
    *,
    offset: int,
    limit: int,
    total: int,
    lead: Sequence[tuple[str, str]] = (),
    tail: Sequence[tuple[str, str]] = (),
    max_offset: int | None = None,
) -> dict[str, Any]:
    """A Spotify paging object whose links repeat the request's other parameters."""

    # Built with f-strings around cached encoded parts: urlencode per link costs more than the
    # JSON encoding of a whole search page.
    head = f"{base}?{_query_part(tuple(lead))}&" if lead else f"{base}?"
    rest = f"&{_query_part(tuple(tail))}" if tail else ""

    def url(off: int) -> str:
        return f"{head}offset={off}&limit={limit}{rest}"

    after = offset + limit
    has_next = after < total and (max_offset is None or after <= max_offset)
    return {
        "href": url(offset),
        "items": items,
        "limit": limit,
        "next": url(after) if has_next else None,
        "offset": offset,
        "previous": url(max(0, offset - limit)) if offset > 0 else None,
        "total": total,
    }


_PLAIN_JSON_STRING = re.compile(r'[^"\\\x00-\x1f\x7f-\U0010ffff]*')


def _json_string(value: str | None) -> bytes:
    """JSON for a string or null; plain ASCII text (every link we build) needs no escaping."""
    if value is None:
        return b"null"
    if _PLAIN_JSON_STRING.fullmatch(value):
        return b'"' + value.encode() + b'"'
    return dumps(value)


def paging_json(base: str, fragments: Sequence[bytes], **kwargs: Any) -> bytes:
    """``paging(...)`` as JSON, with items given as already-encoded JSON fragments.

    Catalog objects are static, so their encodings are cached; only the links are encoded per
    request and the cached fragments are spliced in (same key order as ``paging``).
    """
    page = paging(base, [], **kwargs)
    return b"".join(
        (
            b'{"href":',
            _json_string(page["href"]),
            b',"items":[',
            b",".join(fragments),
            b'],"limit":%d,"next":' % page["limit"],
            _json_string(page["next"]),
            b',"offset":%d,"previous":' % page["offset"],
            _json_string(page["previous"]),
            b',"total":%d}' % page["total"],
        )
    )


def _drop(obj: dict[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    if not fields:
        return obj
    return {k: v for k, v in obj.items() if k not in fields}


# ------------------------------------------------------------------------------------------------
# Tokens


@dataclass
class _Token:
    client_id: str
    expires_at: float


class TokenStore:
    """Issued access tokens (seeded random strings), their client and expiry."""

    def __init__(self, clients: Mapping[str, str], seed: int) -> None:
        self.clients = dict(clients)  # client id -> secret
        self._rng = random.Random(f"spotify-sim-tokens:{seed}")
        self._tokens: dict[str, _Token] = {}
        self._purge_at = 10_000  # forget expired tokens when this many are stored
        self.issued = 0
        self.revoked = 0

    _ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

    def issue(self, client_id: str, now: float, ttl: float) -> str:
        if len(self._tokens) >= self._purge_at:  # forget expired tokens now and then
            self._tokens = {k: v for k, v in self._tokens.items() if v.expires_at > now}
            self._purge_at = max(10_000, 2 * len(self._tokens))
        token = "BQ" + "".join(self._rng.choices(self._ALPHABET, k=113))
        self._tokens[token] = _Token(client_id, now + ttl)
        self.issued += 1
        return token

    def client_for(self, token: str, now: float) -> str | None:
        entry = self._tokens.get(token)
        if entry is None or now >= entry.expires_at:
            return None
        return entry.client_id

    def revoke(self, client_id: str | None = None) -> int:
        doomed = [
            k for k, v in self._tokens.items() if client_id is None or v.client_id == client_id
        ]
        for k in doomed:
            del self._tokens[k]
        self.revoked += len(doomed)
        return len(doomed)

    def active(self, now: float) -> int:
        return sum(1 for v in self._tokens.values() if v.expires_at > now)


# ------------------------------------------------------------------------------------------------
# Statistics


class Stats:
    """Request counters for ``/__sim/stats``."""

    def __init__(self) -> None:
        self.total = 0
        self.by_status: Counter[int] = Counter()
        self.by_endpoint: dict[str, Counter[int]] = {}
        self.faults: Counter[str] = Counter()

    def record(self, template: str, status: int) -> None:
        self.total += 1
        self.by_status[status] += 1
        counter = self.by_endpoint.get(template)
        if counter is None:
            counter = self.by_endpoint[template] = Counter()
        counter[status] += 1


# ------------------------------------------------------------------------------------------------
# The state behind one app

Handler = Callable[[Request, str], bytes]  # (request, api base) -> 200 body, or raise ApiProblem


class SimState:
    """Everything one simulator instance knows: config, clock, catalog, limiter, tokens, stats."""

    def __init__(self, config: SimConfig, clock: Clock, catalog: Catalog) -> None:
        config.validate()
        self.config = config
        self.clock = clock
        self.catalog = catalog
        self.profile: Profile = get_profile(config.profile)
        self.origin = clock.now()
        self.started_at = dt.datetime.now(dt.UTC)
        self.limiter = RateLimiter(
            limit=config.resolved_limit(),
            window=config.window,
            origin=self.origin,
            algorithm=Algorithm(config.algorithm),
            schedule=config.schedule_steps(),
            penalty_cap=config.penalty_cap,
            escalation_grace=config.escalation_grace,
            quota=config.quota,
            quota_period=config.quota_period,
            endpoint_limits=config.endpoint_limits,
            enabled=config.rate_limit,
        )
        clients = {config.client_id: config.client_secret, **dict(config.extra_clients)}
        self.tokens = TokenStore(clients, config.seed)
        self.token_ttl = config.token_ttl
        self.token_down_until = -math.inf
        fault_rng = random.Random(f"spotify-sim-faults:{config.seed}")
        self.faults = FaultInjector(
            fail_rate=config.fail_rate,
            reset_rate=config.reset_rate,
            truncate_rate=config.truncate_rate,
            rng=fault_rng,
        )
        self.latency = LatencyModel(
            config.latency_ms, random.Random(f"spotify-sim-latency:{config.seed}")
        )
        self.stats = Stats()
        self._shapes = _Shapes(catalog, self.profile)

    # -- ground truth ----------------------------------------------------------------------

    def elapsed(self) -> float:
        return self.clock.now() - self.origin

    def stats_snapshot(self) -> dict[str, Any]:
        now = self.clock.now()
        lim = self.limiter
        by_endpoint = {
            template: {"total": sum(c.values()), "by_status": {str(k): v for k, v in c.items()}}
            for template, c in sorted(self.stats.by_endpoint.items())
        }
        return {
            "profile": self.profile.name,
            "n_artists": self.catalog.n_artists,
            "seed": self.config.seed,
            "started_at": self.started_at.isoformat(),
            "uptime_s": round(now - self.origin, 3),
            "time_scale": self.config.time_scale,
            "requests_total": self.stats.total,
            "requests_by_status": {str(k): v for k, v in sorted(self.stats.by_status.items())},
            "requests_by_endpoint": by_endpoint,
            "accepted": lim.accepted,
            "rejected_429": lim.rejected,
            "rejected_quota": lim.rejected_quota,
            "escalations": lim.escalations,
            "blocked_arrivals": [
                {"at_s": round(t, 3), "into_block_s": round(into, 3), "escalated": esc}
                for t, into, esc in lim.blocked_arrivals
            ],
            "max_retry_after": lim.max_retry_after,
            "rate_limit": lim.enabled,
            "limit": lim.limit_at(now),
            "window": lim.window,
            "algorithm": lim.algorithm.value,
            "limit_schedule": [asdict(s) for s in lim.schedule.steps],
            "endpoint_limits": dict(lim.endpoint_limits),
            "quota": lim.quota,
            "quota_period": lim.quota_period,
            "quota_used": {c: lim.quota_used(c, now) for c in lim.truth_by_client},
            "max_accepted_in_any_window": lim.truth.max_in_window,
            "max_accepted_in_any_window_by_client": {
                c: t.max_in_window for c, t in lim.truth_by_client.items()
            },
            "penalties": lim.penalties(now),
            "tokens": {
                "issued": self.tokens.issued,
                "active": self.tokens.active(now),
                "revoked": self.tokens.revoked,
                "ttl": self.token_ttl,
                "endpoint_down_for": max(0.0, round(self.token_down_until - now, 3)),
            },
            "faults": {
                "fail_rate": self.faults.fail_rate,
                "reset_rate": self.faults.reset_rate,
                "truncate_rate": self.faults.truncate_rate,
                "latency_ms": self.latency.mean_ms,
                **dict(self.stats.faults),
            },
        }

    def control(self, knobs: Mapping[str, Any]) -> dict[str, Any]:
        """Apply test-hook knobs; ``ValueError`` for an unknown knob or a bad value.

        ``token_down_for`` (s): the token endpoint answers 503 for that long from now (0 ends it);
        ``limit`` (int): the global limit from now on; ``rate_limit`` (bool); ``fail_rate``,
        ``reset_rate``, ``truncate_rate`` (0..1); ``latency_ms``; ``token_ttl`` (s, for tokens
        issued from now); ``clear_penalties`` (bool): forget every running Retry-After.
        """
        now = self.clock.now()
        for key, value in knobs.items():
            if key == "token_down_for":
                self.token_down_until = now + float(value)
            elif key == "limit":
                self.limiter.set_limit(int(value))
            elif key == "rate_limit":
                self.limiter.enabled = bool(value)
            elif key in ("fail_rate", "reset_rate", "truncate_rate"):
                rate = float(value)
                if not 0.0 <= rate <= 1.0:
                    raise ValueError(f"{key} must be between 0 and 1")
                setattr(self.faults, key, rate)
            elif key == "latency_ms":
                self.latency = LatencyModel(float(value), random.Random(f"latency:{now}"))
            elif key == "token_ttl":
                if not float(value) > 0:
                    raise ValueError("token_ttl must be > 0")
                self.token_ttl = float(value)
            elif key == "clear_penalties":
                if value:
                    self.limiter.clear_penalties()
            else:
                raise ValueError(f"unknown knob {key!r}")
        return {
            "limit": self.limiter.limit_at(now),
            "rate_limit": self.limiter.enabled,
            "token_down_for": max(0.0, self.token_down_until - now),
            "fail_rate": self.faults.fail_rate,
            "reset_rate": self.faults.reset_rate,
            "truncate_rate": self.faults.truncate_rate,
            "latency_ms": self.latency.mean_ms,
            "token_ttl": self.token_ttl,
        }


# ------------------------------------------------------------------------------------------------
# Shaping catalog objects per profile (cached: the catalog is immutable)


class _Shapes:
    """Catalog objects with the profile's removed fields dropped; static ones cached."""

    def __init__(self, catalog: Catalog, profile: Profile) -> None:
        self.catalog = catalog
        self.profile = profile
        self.artist_drop = profile.artist_fields_removed
        self.album_drop = profile.album_fields_removed
        # Encoded objects are what requests need most; ~0.5-2 KB each, so these bounds keep the
        # caches under ~150 MB whatever the catalog size. Dicts are cached only where reused.
        self.artist = functools.lru_cache(maxsize=8192)(self._artist)
        self.artist_bytes = functools.lru_cache(maxsize=65536)(self._artist_bytes)
        self.simplified_album_bytes = functools.lru_cache(maxsize=32768)(
            self._simplified_album_bytes
        )
        self.track_bytes = functools.lru_cache(maxsize=32768)(self._track_bytes)
        self.simplified_track_bytes = functools.lru_cache(maxsize=32768)(
            self._simplified_track_bytes
        )
        self.album_base_bytes = functools.lru_cache(maxsize=16384)(self._album_base_bytes)
        self.artist_albums = functools.lru_cache(maxsize=4096)(self._artist_albums)

    def _artist(self, i: int) -> dict[str, Any]:
        return _drop(self.catalog.artist_object(i), self.artist_drop)

    def _artist_bytes(self, i: int) -> bytes:
        return dumps(self.artist(i))

    def simplified_album(self, j: int, group: str | None = None) -> dict[str, Any]:
        return _drop(self.catalog.simplified_album(j, album_group=group), self.album_drop)

    def _simplified_album_bytes(self, j: int, group: str | None = None) -> bytes:
        return dumps(self.simplified_album(j, group))

    def _track_bytes(self, k: int) -> bytes:
        return dumps(self.track(k))

    def _simplified_track_bytes(self, k: int) -> bytes:
        return dumps(self.simplified_track(k))

    def track(self, k: int) -> dict[str, Any]:
        obj = self.catalog.track_object(k)
        if self.album_drop and isinstance(obj.get("album"), dict):
            obj = {**obj, "album": _drop(obj["album"], self.album_drop)}
        return obj

    def simplified_track(self, k: int) -> dict[str, Any]:
        return self.catalog.simplified_track(k)

    def album_base(self, j: int) -> dict[str, Any]:
        obj = dict(self.catalog.album_object(j))
        obj.pop("tracks", None)
        return _drop(obj, self.album_drop)

    def _album_base_bytes(self, j: int) -> bytes:
        return dumps(self.album_base(j))

    def _artist_albums(self, i: int, groups: frozenset[str]) -> list[tuple[int, str]]:
        return list(self.catalog.artist_albums(i, groups))

    def _album_tracks_page(self, j: int, api: str) -> bytes:
        tracks = self.catalog.album_tracks(j)
        limit = _ALBUM_TRACKS_IN_ALBUM
        return paging_json(
            f"{api}/albums/{self.catalog.album_id(j)}/tracks",
            [self.simplified_track_bytes(k) for k in tracks[:limit]],
            offset=0,
            limit=limit,
            total=len(tracks),
        )

    def album_bytes(self, j: int, api: str) -> bytes:
        """Full album with the first page of its tracks, as JSON (``tracks`` last)."""
        base = self.album_base_bytes(j)
        return base[:-1] + b',"tracks":' + self._album_tracks_page(j, api) + b"}"

    def simplified_playlist(self, p: int, api: str) -> dict[str, Any]:
        obj = dict(self.catalog.playlist_object(p))
        obj.pop("followers", None)
        pid = obj.get("id") or self.catalog.playlist_id(p)
        total = len(self.catalog.playlist_tracks(p))
        obj["tracks"] = {"href": f"{api}/playlists/{pid}/tracks", "total": total}
        obj["items"] = {"href": f"{api}/playlists/{pid}/items", "total": total}
        return obj

    def playlist_item(self, p: int, position: int, k: int) -> bytes:
        """PlaylistTrackObject JSON: who added track ``k`` at ``position`` when, and the track."""
        owner = self.catalog.playlist_owner(p)
        added = dt.date(2020, 1, 1) + dt.timedelta(days=(p * 7919 + position * 31) % 1800)
        head = {
            "added_at": f"{added.isoformat()}T00:00:00Z",
            "added_by": {
                "external_urls": {"spotify": f"https://open.spotify.com/user/{owner}"},
                "href": f"https://api.spotify.com/v1/users/{owner}",
                "id": owner,
                "type": "user",
                "uri": f"spotify:user:{owner}",
            },
            "is_local": False,
        }
        track = self.track_bytes(k)
        return dumps(head)[:-1] + b',"item":' + track + b',"track":' + track + b"}"


# ------------------------------------------------------------------------------------------------
# The endpoints: (request, api base) -> JSON body of the 200, or ApiProblem


def _params(request: Request) -> dict[str, str]:
    return dict(
        parse_qsl(request.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    )


class _Api:
    """The ``/v1`` handlers of one app."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        self.catalog = state.catalog
        self.profile = state.profile
        self.shapes = state._shapes
        self.offset_plus_limit = state.config.offset_rule == "offset+limit"

    # -- parameter helpers ------------------------------------------------------------------

    def _limit(self, key: str, params: Mapping[str, str]) -> int:
        default = self.profile.default_limit.get(key, 20)
        limit = _int_param(params, "limit", default, "Invalid limit")
        if limit < 1 or limit > self.profile.max_limit.get(key, 50):
            raise ApiProblem(400, "Invalid limit")
        return limit

    @staticmethod
    def _offset(params: Mapping[str, str], max_offset: int | None = None) -> int:
        offset = _int_param(params, "offset", 0, "Invalid offset")
        if offset < 0 or (max_offset is not None and offset > max_offset):
            raise ApiProblem(400, "Invalid offset")
        return offset

    @staticmethod
    def _check_id(sid: str, index: int | None) -> int:
        if index is not None:
            return index
        if not _ID_RE.match(sid):
            raise ApiProblem(400, "Invalid base62 id")
        raise ApiProblem(404, "Resource not found")

    def _ids(self, params: Mapping[str, str], maximum: int) -> list[str]:
        raw = params.get("ids", "")
        ids = [s for s in raw.split(",") if s] if raw else []
        if not ids:
            raise ApiProblem(400, "Missing required parameter: ids")
        if len(ids) > maximum:
            raise ApiProblem(400, "Too many ids requested")
        for sid in ids:
            if not _ID_RE.match(sid):
                raise ApiProblem(400, "Invalid base62 id")
        return ids

    # -- artists ----------------------------------------------------------------------------

    def artist(self, request: Request, api: str) -> bytes:
        sid: str = request.path_params["id"]
        i = self._check_id(sid, self.catalog.artist_index(sid))
        return self.shapes.artist_bytes(i)

    def artists(self, request: Request, api: str) -> bytes:
        ids = self._ids(_params(request), 50)
        out: list[dict[str, Any] | None] = []
        for sid in ids:
            i = self.catalog.artist_index(sid)
            out.append(None if i is None else self.shapes.artist(i))
        return dumps({"artists": out})

    def related_artists(self, request: Request, api: str) -> bytes:
        sid: str = request.path_params["id"]
        i = self._check_id(sid, self.catalog.artist_index(sid))
        return dumps({"artists": [self.shapes.artist(r) for r in self.catalog.related_artists(i)]})

    def artist_albums(self, request: Request, api: str) -> bytes:
        sid: str = request.path_params["id"]
        i = self._check_id(sid, self.catalog.artist_index(sid))
        params = _params(request)
        raw_groups = params.get("include_groups", "")
        groups = [g.strip() for g in raw_groups.split(",") if g.strip()]
        for g in groups:
            if g not in _INCLUDE_GROUPS:
                raise ApiProblem(400, "Invalid include_groups")
        group_set = frozenset(groups or _INCLUDE_GROUPS)
        limit = self._limit("artist-albums", params)
        offset = self._offset(params)
        albums = self.shapes.artist_albums(i, group_set)
        page = albums[offset : offset + limit]
        fragments = [self.shapes.simplified_album_bytes(j, g) for j, g in page]
        tail = [("include_groups", ",".join(groups))] if groups else []
        return paging_json(
            f"{api}/artists/{sid}/albums",
            fragments,
            offset=offset,
            limit=limit,
            total=len(albums),
            tail=tail,
        )

    # -- albums -----------------------------------------------------------------------------

    def album(self, request: Request, api: str) -> bytes:
        sid: str = request.path_params["id"]
        j = self._check_id(sid, self.catalog.album_index(sid))
        return self.shapes.album_bytes(j, api)

    def albums(self, request: Request, api: str) -> bytes:
        ids = self._ids(_params(request), 20)
        out: list[bytes] = []
        for sid in ids:
            j = self.catalog.album_index(sid)
            out.append(b"null" if j is None else self.shapes.album_bytes(j, api))
        return b'{"albums":[' + b",".join(out) + b"]}"

    def album_tracks(self, request: Request, api: str) -> bytes:
        sid: str = request.path_params["id"]
        j = self._check_id(sid, self.catalog.album_index(sid))
        params = _params(request)
        limit = self._limit("album-tracks", params)
        offset = self._offset(params)
        tracks = self.catalog.album_tracks(j)
        fragments = [self.shapes.simplified_track_bytes(k) for k in tracks[offset : offset + limit]]
        return paging_json(
            f"{api}/albums/{sid}/tracks", fragments, offset=offset, limit=limit, total=len(tracks)
        )

    # -- search -----------------------------------------------------------------------------

    def search(self, request: Request, api: str) -> bytes:
        params = _params(request)
        q = params.get("q", params.get("query", ""))
        if not q.strip():
            raise ApiProblem(400, "No search query")
        raw_types = params.get("type", "")
        if not raw_types:
            raise ApiProblem(400, "Missing parameter type")
        types: list[str] = []
        for t in raw_types.split(","):
            t = t.strip()
            if t not in _SEARCH_TYPES:
                raise ApiProblem(400, "Bad search type field")
            if t not in types:
                types.append(t)
        limit = self._limit("search", params)
        max_offset = _SEARCH_MAX_OFFSET
        if self.offset_plus_limit:
            max_offset = _SEARCH_MAX_OFFSET - limit
        offset = self._offset(params, max_offset)
        wanted = [t for t in types if t in _CATALOG_SEARCH_TYPES]
        try:
            found = self.catalog.search(q, wanted, offset, limit) if wanted else {}
        except SearchQueryError as exc:
            raise ApiProblem(400, str(exc) or "Invalid query") from None
        parts: list[bytes] = []
        shapes = self.shapes
        for t in types:
            total, indices = found.get(t, (0, []))
            fragments: list[bytes]
            if t == "artist":
                fragments = [shapes.artist_bytes(i) for i in indices]
            elif t == "album":
                fragments = [shapes.simplified_album_bytes(j, None) for j in indices]
            elif t == "track":
                fragments = [shapes.track_bytes(k) for k in indices]
            elif t == "playlist":
                fragments = [dumps(shapes.simplified_playlist(p, api)) for p in indices]
            else:
                fragments = []
            page = paging_json(
                f"{api}/search",
                fragments,
                offset=offset,
                limit=limit,
                total=total,
                lead=[("query", q), ("type", t)],
                max_offset=max_offset,
            )
            parts.append(b'"' + t.encode() + b's":' + page)
        return b"{" + b",".join(parts) + b"}"

    # -- browse -----------------------------------------------------------------------------

    def _playlist_page(
        self, playlists: Sequence[int], params: Mapping[str, str], key: str, base: str, api: str
    ) -> dict[str, Any]:
        limit = self._limit(key, params)
        offset = self._offset(params)
        items = [
            self.shapes.simplified_playlist(p, api) for p in playlists[offset : offset + limit]
        ]
        return paging(base, items, offset=offset, limit=limit, total=len(playlists))

    def featured_playlists(self, request: Request, api: str) -> bytes:
        page = self._playlist_page(
            self.catalog.featured_playlists(),
            _params(request),
            "featured-playlists",
            f"{api}/browse/featured-playlists",
            api,
        )
        return dumps({"message": "Popular Playlists", "playlists": page})

    def categories(self, request: Request, api: str) -> bytes:
        params = _params(request)
        limit = self._limit("categories", params)
        offset = self._offset(params)
        cats = self.catalog.categories()
        items = [
            {
                "href": f"{api}/browse/categories/{cid}",
                "icons": [
                    {"url": f"https://t.scdn.co/images/{cid}.jpg", "height": 274, "width": 274}
                ],
                "id": cid,
                "name": name,
            }
            for cid, name in cats[offset : offset + limit]
        ]
        return dumps(
            {
                "categories": paging(
                    f"{api}/browse/categories", items, offset=offset, limit=limit, total=len(cats)
                )
            }
        )

    def category_playlists(self, request: Request, api: str) -> bytes:
        cid: str = request.path_params["category_id"]
        playlists = self.catalog.category_playlists(cid)
        if playlists is None:
            raise ApiProblem(404, "Specified id doesn't exist")
        names = dict(self.catalog.categories())
        page = self._playlist_page(
            playlists,
            _params(request),
            "category-playlists",
            f"{api}/browse/categories/{cid}/playlists",
            api,
        )
        return dumps({"message": names.get(cid, cid), "playlists": page})

    def new_releases(self, request: Request, api: str) -> bytes:
        params = _params(request)
        limit = self._limit("new-releases", params)
        offset = self._offset(params)
        albums = self.catalog.new_releases()
        fragments = [
            self.shapes.simplified_album_bytes(j, None) for j in albums[offset : offset + limit]
        ]
        page = paging_json(
            f"{api}/browse/new-releases",
            fragments,
            offset=offset,
            limit=limit,
            total=len(albums),
        )
        return b'{"albums":' + page + b"}"

    # -- playlists --------------------------------------------------------------------------

    def _playlist_index(self, sid: str, *, items: bool) -> int:
        p = self._check_id(sid, self.catalog.playlist_index(sid))
        owner = self.catalog.playlist_owner(p)
        if self.profile.editorial_playlists_removed and owner == "spotify":
            raise ApiProblem(404, "Resource not found")
        if items and self.profile.playlist_items_owned_only and owner != _APP_OWNER:
            raise ApiProblem(403, "Forbidden.")
        return p

    def _items_page(self, p: int, base: str, offset: int, limit: int) -> bytes:
        tracks = self.catalog.playlist_tracks(p)
        fragments = [
            self.shapes.playlist_item(p, pos, tracks[pos])
            for pos in range(offset, min(len(tracks), offset + limit))
        ]
        return paging_json(base, fragments, offset=offset, limit=limit, total=len(tracks))

    def playlist(self, request: Request, api: str) -> bytes:
        sid: str = request.path_params["playlist_id"]
        p = self._playlist_index(sid, items=False)
        obj = dict(self.catalog.playlist_object(p))
        obj.pop("tracks", None)
        obj.pop("items", None)
        owned = self.catalog.playlist_owner(p) == _APP_OWNER
        if self.profile.playlist_items_owned_only and not owned:
            return dumps(obj)
        page = self._items_page(p, f"{api}/playlists/{sid}/tracks", 0, _PLAYLIST_ITEMS_IN_PLAYLIST)
        return dumps(obj)[:-1] + b',"tracks":' + page + b',"items":' + page + b"}"

    def playlist_items(self, request: Request, api: str) -> bytes:
        return self._playlist_items(request, api, "playlist-items", "items")

    def playlist_tracks(self, request: Request, api: str) -> bytes:
        return self._playlist_items(request, api, "playlist-tracks", "tracks")

    def _playlist_items(self, request: Request, api: str, key: str, leaf: str) -> bytes:
        sid: str = request.path_params["playlist_id"]
        p = self._playlist_index(sid, items=True)
        params = _params(request)
        limit = self._limit(key, params)
        offset = self._offset(params)
        return self._items_page(p, f"{api}/playlists/{sid}/{leaf}", offset, limit)

    def handlers(self) -> dict[str, Handler]:
        return {
            "search": self.search,
            "artist": self.artist,
            "artists": self.artists,
            "related-artists": self.related_artists,
            "artist-albums": self.artist_albums,
            "album": self.album,
            "albums": self.albums,
            "album-tracks": self.album_tracks,
            "featured-playlists": self.featured_playlists,
            "categories": self.categories,
            "category-playlists": self.category_playlists,
            "new-releases": self.new_releases,
            "playlist": self.playlist,
            "playlist-items": self.playlist_items,
            "playlist-tracks": self.playlist_tracks,
        }


# ------------------------------------------------------------------------------------------------
# The pipeline around every /v1 handler


def _api_base(scope: Scope) -> str:
    host = "localhost"
    for name, value in scope["headers"]:
        if name == b"host":
            host = value.decode("latin-1")
            break
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}/v1"


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else ""
    return None


def _reset_connection(scope: Scope) -> bool:
    """Abort the client's TCP connection under uvicorn (RST, no response); False if no socket."""
    raw_send = scope.get("sim.raw_send")
    cycle: Any = getattr(raw_send, "__self__", None)  # uvicorn's RequestResponseCycle
    transport = getattr(cycle, "transport", None)
    if cycle is None or transport is None or not hasattr(cycle, "disconnected"):
        return False
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError, TypeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    cycle.disconnected = True  # uvicorn then sends nothing more for this request
    cycle.keep_alive = False
    transport.abort()
    return True


def _api_endpoint(
    state: SimState, endpoint: Endpoint, handler: Handler
) -> Callable[[Request], Awaitable[Response]]:
    template = "/v1" + endpoint.route
    key = endpoint.key
    removal = state.profile.removed.get(key)
    clock = state.clock
    limiter = state.limiter
    tokens = state.tokens
    faults = state.faults
    stats = state.stats

    async def endpoint_fn(request: Request) -> Response:
        scope = request.scope
        now = clock.now()
        token = _bearer(scope)
        if not token:
            message = (
                "No token provided"
                if token is None
                else "Only valid bearer authentication supported"
            )
            stats.record(template, 401)
            return _json_response(401, error_body(401, message))
        client = tokens.client_for(token, now)
        if client is None:
            stats.record(template, 401)
            return _json_response(401, error_body(401, "Invalid access token"))
        decision = limiter.check(client, key, now)
        delay = state.latency.draw()
        if delay > 0:
            await clock.sleep(delay)
        if not decision.allowed:
            stats.record(template, 429)
            headers = {"Retry-After": str(decision.retry_after)}
            if decision.reason == QUOTA_REASON:
                body = error_body(429, "Too many requests", reason=QUOTA_REASON)
            else:
                body = error_body(429, "API rate limit exceeded")
            return _json_response(429, body, headers)
        fault = faults.draw()
        if fault is not None and fault is not Fault.TRUNCATE:
            if fault is Fault.RESET:
                stats.faults["resets"] += 1
                stats.record(template, 0)
                if _reset_connection(scope):
                    return Response(b"", status_code=500)  # never sent: the connection is gone
                raise httpx.ReadError("Connection reset by peer (simulated)")
            status = int(fault.value)
            stats.faults["injected_5xx"] += 1
            stats.record(template, status)
            return _json_response(status, error_body(status, SERVER_ERROR_MESSAGES[status]))
        if removal is not None:
            stats.record(template, removal.status)
            return _json_response(removal.status, error_body(removal.status, removal.message))
        try:
            body = handler(request, _api_base(scope))
        except ApiProblem as problem:
            stats.record(template, problem.status)
            return _json_response(
                problem.status, error_body(problem.status, problem.message), problem.headers
            )
        if fault is Fault.TRUNCATE:
            stats.faults["truncated"] += 1
            body = body[: faults.truncation_point(len(body))]
        stats.record(template, 200)
        return _json_response(200, body)

    return endpoint_fn


# ------------------------------------------------------------------------------------------------
# Token endpoint


def _token_error(status: int, error: str, description: str) -> Response:
    return _json_response(status, dumps({"error": error, "error_description": description}))


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, payload = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(payload.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep else None


def _token_endpoint(state: SimState) -> Callable[[Request], Awaitable[Response]]:
    template = "/api/token"

    async def token_fn(request: Request) -> Response:
        response = await _token_answer(request)
        state.stats.record(template, response.status_code)
        return response

    async def _token_answer(request: Request) -> Response:
        now = state.clock.now()
        if now < state.token_down_until:
            return _token_error(503, "server_error", "Service temporarily unavailable")
        body = (await request.body()).decode("utf-8", errors="replace")
        form = dict(parse_qsl(body, keep_blank_values=True))
        auth = request.headers.get("authorization")
        creds: tuple[str, str] | None
        if auth is not None:
            creds = _basic_credentials(auth)
            if creds is None:
                return _token_error(400, "invalid_client", "Invalid client")
        elif "client_id" in form:
            creds = (form["client_id"], form.get("client_secret", ""))
        else:
            return _token_error(400, "invalid_client", "Invalid client")
        client_id, secret = creds
        expected = state.tokens.clients.get(client_id)
        if expected is None:
            return _token_error(400, "invalid_client", "Invalid client")
        if secret != expected:
            return _token_error(400, "invalid_client", "Invalid client secret")
        grant = form.get("grant_type")
        if grant is None:
            return _token_error(400, "unsupported_grant_type", "grant_type parameter is missing")
        if grant != "client_credentials":
            return _token_error(
                400,
                "unsupported_grant_type",
                "grant_type must be client_credentials, authorization_code or refresh_token",
            )
        token = state.tokens.issue(client_id, now, state.token_ttl)
        return _json_response(
            200,
            dumps(
                {
                    "access_token": token,
                    "token_type": "Bearer",
                    "expires_in": math.ceil(state.token_ttl),
                }
            ),
            {"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    return token_fn


# ------------------------------------------------------------------------------------------------
# Ground-truth and control endpoints


def _sim_endpoints(state: SimState) -> list[BaseRoute]:
    async def stats(request: Request) -> Response:
        return _json_response(200, dumps(state.stats_snapshot()))

    async def catalog_ids(request: Request) -> Response:
        params = _params(request)
        fmt = params.get("format", "text")
        n = state.catalog.n_artists
        if fmt == "text":

            async def lines() -> AsyncIterator[bytes]:
                chunk: list[str] = []
                for sid in state.catalog.iter_artist_ids():
                    chunk.append(sid)
                    if len(chunk) >= 8192:
                        yield ("\n".join(chunk) + "\n").encode()
                        chunk = []
                        await asyncio.sleep(0)
                if chunk:
                    yield ("\n".join(chunk) + "\n").encode()

            return StreamingResponse(
                lines(), media_type="text/plain; charset=utf-8", headers={"X-Total-Count": str(n)}
            )
        if fmt != "json":
            return _json_response(400, error_body(400, "format must be text or json"))
        try:
            offset = max(0, int(params.get("offset", "0")))
            limit = min(100_000, max(1, int(params.get("limit", "1000"))))
        except ValueError:
            return _json_response(400, error_body(400, "offset and limit must be integers"))
        ids = [state.catalog.artist_id(i) for i in range(offset, min(n, offset + limit))]
        nxt = offset + limit if offset + limit < n else None
        return _json_response(
            200,
            dumps({"total": n, "offset": offset, "limit": limit, "next_offset": nxt, "items": ids}),
        )

    async def accepted(request: Request) -> Response:
        params = _params(request)
        lim = state.limiter
        client = params.get("client_id")
        truth = lim.truth if client is None else lim.truth_by_client.get(client)
        times = [] if truth is None else [round(t - state.origin, 6) for t in truth.times]
        truncated = truth is not None and truth.truncated
        return _json_response(
            200,
            dumps(
                {
                    "window": lim.window,
                    "client_id": client,
                    "count": len(times),
                    "truncated": truncated,
                    "max_in_any_window": (truth.max_in_window if truth is not None else 0),
                    "times": times,
                }
            ),
        )

    async def revoke(request: Request) -> Response:
        client = None
        body = await request.body()
        if body:
            try:
                data = json.loads(body)
            except ValueError:
                return _json_response(400, error_body(400, "body must be JSON"))
            if isinstance(data, dict) and data.get("client_id") is not None:
                client = str(data["client_id"])
        return _json_response(200, dumps({"revoked": state.tokens.revoke(client)}))

    async def control(request: Request) -> Response:
        try:
            data = json.loads(await request.body() or b"{}")
            if not isinstance(data, dict):
                raise ValueError("body must be a JSON object")
            result = state.control(data)
        except (ValueError, TypeError) as exc:
            return _json_response(
                400,
                error_body(400, str(exc).splitlines()[0] if str(exc) else "bad control request"),
            )
        return _json_response(200, dumps(result))

    return [
        Route("/__sim/stats", stats, methods=["GET"]),
        Route("/__sim/catalog", catalog_ids, methods=["GET"]),
        Route("/__sim/accepted", accepted, methods=["GET"]),
        Route("/__sim/revoke-tokens", revoke, methods=["POST"]),
        Route("/__sim/control", control, methods=["POST"]),
    ]


# ------------------------------------------------------------------------------------------------
# The app


EndpointFn = Callable[[Request], Awaitable[Response]]


class _FastRoutes:
    """Path-segment matching of the ``GET /v1`` routes, ahead of Starlette's middleware and router.

    Starlette's stack (error middleware, exception middleware, a regex per route) costs about as
    much as the simulator's own work on a cached artist. The ``/v1`` templates are plain segments
    and ``{param}`` segments, so they are matched by splitting the path; anything else (other
    methods, unknown paths, ``/api/token``, ``/__sim``) goes through Starlette as usual.
    """

    def __init__(self) -> None:
        # number of segments -> [(segments, parameter names by position, endpoint)]
        self._by_length: dict[int, list[tuple[tuple[str, ...], dict[int, str], EndpointFn]]] = {}

    def add(self, template: str, fn: EndpointFn) -> None:
        segments = tuple(template.strip("/").split("/"))
        params = {
            n: seg[1:-1]
            for n, seg in enumerate(segments)
            if seg.startswith("{") and seg.endswith("}")
        }
        self._by_length.setdefault(len(segments), []).append((segments, params, fn))

    def match(self, path: str) -> tuple[EndpointFn, dict[str, str]] | None:
        parts = path.strip("/").split("/")
        for segments, params, fn in self._by_length.get(len(parts), ()):
            for n, (want, got) in enumerate(zip(segments, parts, strict=True)):
                if n in params:
                    if not got:
                        break
                elif want != got:
                    break
            else:
                return fn, {name: parts[n] for n, name in params.items()}
        return None


class SimApp(Starlette):
    """The Starlette app of one simulator; ``.sim`` is its ``SimState``."""

    sim: SimState
    fast_routes: _FastRoutes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["sim.raw_send"] = send  # lets a simulated reset reach the server's transport
        if (
            self.fast_routes is not None
            and scope["type"] == "http"
            and scope["method"] == "GET"
            and scope["path"].startswith("/v1/")
        ):
            hit = self.fast_routes.match(scope["path"])
            if hit is not None:
                fn, params = hit
                scope["app"] = self
                scope["path_params"] = params
                response = await fn(Request(scope, receive))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _not_found_handler(state: SimState) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handler(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = {404: "Service not found", 405: "Method not allowed"}.get(status, "Error")
        state.stats.record("(unmatched)", status)
        return _json_response(status, error_body(status, message))

    return handler


def create_app(
    config: SimConfig, *, clock: Clock | None = None, catalog: Catalog | None = None
) -> SimApp:
    """A Spotify Web API simulator for ``config`` (see the module docstring)."""
    config.validate()
    if clock is None:
        clock = ScaledClock(config.time_scale) if config.time_scale != 1.0 else MonotonicClock()
    if catalog is None:
        catalog = Catalog(config.artists, config.seed)
    state = SimState(config, clock, catalog)
    handlers = _Api(state).handlers()
    routes: list[BaseRoute] = [
        Route("/api/token", _token_endpoint(state), methods=["POST"]),
        *_sim_endpoints(state),
    ]
    fast_routes = _FastRoutes()
    for endpoint in ENDPOINTS:
        fn = _api_endpoint(state, endpoint, handlers[endpoint.key])
        routes.append(Route("/v1" + endpoint.route, fn, methods=["GET"]))
        fast_routes.add("/v1" + endpoint.route, fn)
    not_found = _not_found_handler(state)
    app = SimApp(routes=routes, exception_handlers={404: not_found, 405: not_found})
    app.fast_routes = fast_routes
    app.sim = state
    app.state.sim = state
    return app
