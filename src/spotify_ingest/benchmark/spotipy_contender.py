"""The seed's algorithm driven through the real spotipy package (its README's "things to improve").

spotipy is used as a user would: ``spotipy.Spotify(client_credentials_manager=
SpotifyClientCredentials(...))`` with its default settings (``retries=3``, ``status_retries=3``,
``backoff_factor=0.3``, ``status_forcelist=(429, 500, 502, 503, 504)``, a ``requests`` session
whose urllib3 ``Retry`` sleeps through ``Retry-After`` silently, capped at 6 hours by urllib3).
Only two things are pointed elsewhere, both loopback: ``Spotify.prefix`` (the API base) and
``SpotifyClientCredentials.OAUTH_TOKEN_URL`` (a subclass attribute); the token cache is spotipy's
``MemoryCacheHandler`` so no ``.cache`` file is written.

What changes against the seed (``seed.py``): spotipy replaces its HTTP layer. A 429 is retried by
urllib3 after the Retry-After, up to 3 times; after that spotipy raises ``SpotifyException(429)``
without the header (spotipy #913), so the driver loses the unit and goes on at once (it has no
Retry-After to honour). Tokens are renewed by spotipy before they expire. The seed's
"sleep 30 s per 1,500 calls" stays (counted in calls the script makes).

Compressed time: spotipy and urllib3 read the ``time`` module for three things only: sleeping
through a Retry-After, the backoff between retries, and the token's expiry. ``use_scaled_time``
gives both modules a stand-in ``time`` whose ``sleep`` and ``time`` run at the simulator's scale,
so each of those durations keeps its meaning in simulated seconds (``scenarios.py``). Anything
else spotipy does is untouched. A sleep longer than the run's budget is cut short by the harness
(the budget watchdog ends the process), and reported.
"""

from __future__ import annotations

import threading
import time
import types
import warnings
from typing import Any

from .seed import Failed, Gone, RateLimited, TokenExpired

__all__ = ["ScaledTime", "SpotipySeedApi", "use_scaled_time"]

PACE_EVERY = 1500
PACE_SLEEP = 30.0


class ScaledTime(types.ModuleType):
    """A ``time`` module whose ``sleep``/``time`` run ``scale`` times faster than real time."""

    def __init__(self, scale: float) -> None:
        super().__init__("time")
        self.scale = scale
        self._epoch0 = time.time()
        self._mono0 = time.monotonic()
        self.sleeping_until: float | None = None  # real monotonic end of the current sleep
        self.longest_sleep = 0.0  # simulated seconds
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def time(self) -> float:
        return self._epoch0 + (time.monotonic() - self._mono0) * self.scale

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with self._lock:
            self.longest_sleep = max(self.longest_sleep, seconds)
            self.sleeping_until = time.monotonic() + seconds / self.scale
        try:
            time.sleep(seconds / self.scale)
        finally:
            self.sleeping_until = None


def use_scaled_time(scale: float) -> ScaledTime:
    """Make spotipy and urllib3's Retry see simulated time (see the module docstring)."""
    import spotipy.oauth2
    import urllib3.util.retry

    shim = ScaledTime(scale)
    urllib3.util.retry.time = shim  # type: ignore[attr-defined]
    spotipy.oauth2.time = shim
    return shim


class SpotipySeedApi:
    """The seed's calls made through spotipy (``seed.SeedApi``)."""

    def __init__(
        self,
        api_base: str,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        sleep: Any,
    ) -> None:
        import spotipy
        from spotipy.cache_handler import MemoryCacheHandler
        from spotipy.oauth2 import SpotifyClientCredentials

        warnings.simplefilter("ignore", DeprecationWarning)

        class LoopbackCredentials(SpotifyClientCredentials):  # type: ignore[misc]
            OAUTH_TOKEN_URL = token_url

        self._exc = spotipy.SpotifyException
        self.sp = spotipy.Spotify(
            client_credentials_manager=LoopbackCredentials(
                client_id, client_secret, cache_handler=MemoryCacheHandler()
            )
        )
        self.sp.prefix = api_base.rstrip("/") + "/"
        self.sleep = sleep
        self.requests_sent = 0

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.requests_sent += 1
        if self.requests_sent % PACE_EVERY == 0:
            self.sleep(PACE_SLEEP)
        try:
            return fn(*args, **kwargs)
        except self._exc as exc:
            status = int(exc.http_status)
            if status == 429:
                raw = (exc.headers or {}).get("Retry-After")
                raise RateLimited(float(raw) if raw and str(raw).isdigit() else None) from None
            if status == 401:
                raise TokenExpired() from None
            if status in (403, 404):
                raise Gone(str(exc)) from None
            raise Failed(str(exc)) from None
        except Exception as exc:  # requests' transport errors after urllib3's retries
            raise Failed(f"{type(exc).__name__}") from None

    def refresh_token(self) -> None:
        """spotipy renews its token itself."""

    def featured_playlist_ids(self) -> list[str]:
        data = self._call(self.sp.featured_playlists, limit=50)
        return [p["id"] for p in data["playlists"]["items"] if p]

    def playlist_pages(self, playlist_id: str) -> list[str]:
        ids: list[str] = []
        page = self._call(
            self.sp.playlist_items, playlist_id, limit=50, additional_types=("track",)
        )
        while page:
            for item in page["items"]:
                track = item.get("track") or {}
                ids.extend(a["id"] for a in track.get("artists", []) if a.get("id"))
            page = self._call(self.sp.next, page) if page.get("next") else None
        return ids

    def several_artists(self, ids: list[str]) -> list[dict[str, Any]]:
        data = self._call(self.sp.artists, ids)
        return [a for a in data["artists"] if a]

    def related_artists(self, artist_id: str) -> list[dict[str, Any]]:
        data = self._call(self.sp.artist_related_artists, artist_id)
        return list(data["artists"])
