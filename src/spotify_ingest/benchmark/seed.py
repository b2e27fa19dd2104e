"""The seed script's algorithm, re-implemented from its README, and its own HTTP layer.

What the seed does (``seed/seed-README.md``), and how each point is reproduced here:

* **State in memory**: ``requests_sent`` (int), ``artists`` (dict id -> data) and
  ``artist_ids_to_visit`` (set). Nothing is persisted.
* **Start**: ``get_featured_playlists`` (one call, the first page of up to 50 playlists), then
  ``get_artist_ids_from_playlists``: every track of every playlist (pages of 100 following
  ``next``), keeping the unique artist ids; these ids are the first ``artist_ids_to_visit``.
  ``get_several_artists`` fetches their details 50 ids per call into ``artists``.
* **Breadth-first search**: while ``artist_ids_to_visit`` is not empty, pop an id and call
  ``get_related_artists``: each of the (up to 20) related artists not yet in ``artists`` is stored
  and added to ``artist_ids_to_visit``.
* **Pacing**: after every 1,500 requests, sleep 30 seconds (simulated seconds: see
  ``scenarios.py``; the count is not scaled).
* **429**: the exception leaves the function that made the call; the main loop sleeps the
  Retry-After and goes on with the next unit. The unit in progress is lost: the popped artist is
  never explored, a batch of 50 is never detailed, the rest of a playlist is never read (the
  README's flow; reproduced on purpose). The first call (featured playlists) is repeated instead,
  as without it the script has nothing to do.
* **401**: a new token is fetched; the unit in progress is lost the same way.
* **Other failures**: "Retries on failure": up to 3 attempts one (simulated) second apart for
  5xx and transport errors; then the unit is dropped (the README does not say; dropping is the
  kindest reading, as an uncaught exception would end the script).
* A removed endpoint (403/404 on featured playlists: every Development Mode app since 2024) ends
  the run with nothing found, as the script would.

Requests are sequential and blocking (``httpx.Client``, like ``requests`` in the seed).

``SeedPlan`` holds the algorithm and talks to a ``SeedApi``; ``HttpSeedApi`` is the seed's own
HTTP layer and ``spotipy_contender.SpotipySeedApi`` drives the same plan through spotipy.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any, Protocol

import httpx

__all__ = [
    "Failed",
    "Gone",
    "HttpSeedApi",
    "RateLimited",
    "SeedApi",
    "SeedPlan",
    "TokenExpired",
]

PACE_EVERY = 1500  # requests
PACE_SLEEP = 30.0  # simulated seconds
ATTEMPTS = 3
RETRY_DELAY = 1.0  # simulated seconds


class RateLimited(Exception):
    def __init__(self, retry_after: float | None) -> None:
        super().__init__(f"rate limited (Retry-After {retry_after})")
        self.retry_after = retry_after


class TokenExpired(Exception):
    pass


class Gone(Exception):
    """The endpoint answered 403/404: not available to this app."""


class Failed(Exception):
    """Any other failure, after the retries."""


class SeedApi(Protocol):
    """The calls the seed makes; each raises the exceptions above."""

    requests_sent: int

    def featured_playlist_ids(self) -> list[str]: ...

    def playlist_pages(self, playlist_id: str) -> list[str]: ...

    def several_artists(self, ids: list[str]) -> list[dict[str, Any]]: ...

    def related_artists(self, artist_id: str) -> list[dict[str, Any]]: ...

    def refresh_token(self) -> None: ...


class SeedPlan:
    """The seed's crawl over a :class:`SeedApi` (see the module docstring)."""

    def __init__(
        self,
        api: SeedApi,
        *,
        sleep: Callable[[float], None],
        should_stop: Callable[[int], str | None],
        on_progress: Callable[[int], None],
    ) -> None:
        self.api = api
        self.sleep = sleep  # simulated seconds
        self.should_stop = should_stop  # artists held -> why to stop now, or None
        self.on_progress = on_progress
        self.artists: dict[str, dict[str, Any]] = {}
        self.artist_ids_to_visit: set[str] = set()
        self.lost_units = 0
        self.rate_limited = 0
        self.token_refreshes = 0

    def _handle(self, exc: Exception) -> None:
        """What the seed's main loop does with an exception from a unit of work."""
        self.lost_units += 1
        if isinstance(exc, RateLimited):
            self.rate_limited += 1
            self.sleep(exc.retry_after if exc.retry_after is not None else 0.0)
        elif isinstance(exc, TokenExpired):
            self.token_refreshes += 1
            self.api.refresh_token()

    def run(self) -> str:
        """Crawl until done, the stop condition, or a removed endpoint; return why it ended."""
        playlists: list[str] | None = None
        while playlists is None:
            if (reason := self.should_stop(len(self.artists))) is not None:
                return reason
            try:
                playlists = self.api.featured_playlist_ids()
            except Gone:
                return "endpoint-unavailable"
            except (RateLimited, TokenExpired, Failed) as exc:
                self._handle(exc)

        start_ids: list[str] = []
        seen: set[str] = set()
        for pid in playlists:
            if (reason := self.should_stop(len(self.artists))) is not None:
                return reason
            try:
                for aid in self.api.playlist_pages(pid):
                    if aid not in seen:
                        seen.add(aid)
                        start_ids.append(aid)
            except Gone:
                continue
            except (RateLimited, TokenExpired, Failed) as exc:
                self._handle(exc)

        for i in range(0, len(start_ids), 50):
            if (reason := self.should_stop(len(self.artists))) is not None:
                return reason
            try:
                for artist in self.api.several_artists(start_ids[i : i + 50]):
                    self.artists.setdefault(artist["id"], artist)
            except Gone:
                break
            except (RateLimited, TokenExpired, Failed) as exc:
                self._handle(exc)
            self.on_progress(len(self.artists))
        self.artist_ids_to_visit.update(start_ids)

        while self.artist_ids_to_visit:
            if (reason := self.should_stop(len(self.artists))) is not None:
                return reason
            artist_id = self.artist_ids_to_visit.pop()
            try:
                for artist in self.api.related_artists(artist_id):
                    rid = artist["id"]
                    if rid not in self.artists:
                        self.artists[rid] = artist
                        self.artist_ids_to_visit.add(rid)
            except Gone:
                return "endpoint-unavailable"
            except (RateLimited, TokenExpired, Failed) as exc:
                self._handle(exc)  # artist_id is lost, as in the seed
            self.on_progress(len(self.artists))
        return "done"


class HttpSeedApi:
    """The seed's HTTP layer: blocking GETs, a request counter, the 1,500-request sleep."""

    def __init__(
        self,
        api_base: str,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        sleep: Callable[[float], None],
    ) -> None:
        self.api_base = api_base.rstrip("/")
        self.token_url = token_url
        self._basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self.sleep = sleep
        self.requests_sent = 0
        self.http = httpx.Client(timeout=30.0)
        self._token = ""
        self.refresh_token()

    def close(self) -> None:
        self.http.close()

    def refresh_token(self) -> None:
        """``get_auth_token``: client credentials; retries on failure."""
        for attempt in range(ATTEMPTS):
            try:
                r = self.http.post(
                    self.token_url,
                    data={"grant_type": "client_credentials"},
                    headers={"Authorization": "Basic " + self._basic},
                )
                if r.status_code == 200:
                    self._token = str(r.json()["access_token"])
                    return
            except httpx.TransportError:
                pass
            if attempt + 1 < ATTEMPTS:
                self.sleep(RETRY_DELAY)
        raise Failed("no token")

    def _get(self, url: str, params: dict[str, str | int] | None = None) -> dict[str, Any]:
        """``get_data_from_spotify_api``."""
        for attempt in range(ATTEMPTS):
            try:
                r = self.http.get(
                    url, params=params, headers={"Authorization": "Bearer " + self._token}
                )
            except httpx.TransportError:
                r = None
            self.requests_sent += 1
            if self.requests_sent % PACE_EVERY == 0:
                self.sleep(PACE_SLEEP)
            if r is not None:
                status = r.status_code
                if status == 429:
                    raw = r.headers.get("retry-after")
                    raise RateLimited(float(raw) if raw and raw.isdigit() else None)
                if status == 401:
                    raise TokenExpired()
                if status in (403, 404):
                    raise Gone(url)
                if 200 <= status < 300:
                    try:
                        data: dict[str, Any] = r.json()
                        return data
                    except ValueError:
                        pass
                elif status < 500:
                    raise Failed(f"{status} {url}")
            if attempt + 1 < ATTEMPTS:
                self.sleep(RETRY_DELAY)
        raise Failed(url)

    def featured_playlist_ids(self) -> list[str]:
        data = self._get(self.api_base + "/browse/featured-playlists", {"limit": 50})
        return [p["id"] for p in data["playlists"]["items"] if p]

    def playlist_pages(self, playlist_id: str) -> list[str]:
        ids: list[str] = []
        url: str | None = self.api_base + f"/playlists/{playlist_id}/tracks?limit=100"
        while url:
            page = self._get(url)
            for item in page["items"]:
                track = item.get("track") or {}
                ids.extend(a["id"] for a in track.get("artists", []) if a.get("id"))
            url = page.get("next")
        return ids

    def several_artists(self, ids: list[str]) -> list[dict[str, Any]]:
        data = self._get(self.api_base + "/artists", {"ids": ",".join(ids)})
        return [a for a in data["artists"] if a]

    def related_artists(self, artist_id: str) -> list[dict[str, Any]]:
        data = self._get(self.api_base + f"/artists/{artist_id}/related-artists")
        return list(data["artists"])


def scaled_sleep(time_scale: float) -> Callable[[float], None]:
    """``sleep(simulated seconds)`` in real time."""

    def sleep(seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds / time_scale)

    return sleep
