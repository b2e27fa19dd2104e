"""Which endpoints this app may really use, found by asking: one cheap call per endpoint.

Spotify removed endpoints from Development Mode apps in 2024 and 2026 and cut page sizes, and it
may do so again; documentation lags. So at start the crawler probes: a search for ``a`` gives known
good ids, then each endpoint the planner may use is called once with those ids. 403 or 404 means
unavailable; 400 "Invalid limit" means the page size is too big, so the probe tries the sizes
Spotify has used (50, then 20, then 10) and keeps the first that works. A probe that
fails for another reason (5xx, timeout) leaves the endpoint marked unknown and it is tried again
at the next start; when no probe gets any answer at all, the API is down or unreachable and
the probe raises the last error instead of reporting an app with no endpoints. When an endpoint
that worked starts answering 403/404 mid-run, the crawler marks it unavailable and parks its
tasks (they stay pending, so a later run that has the endpoint again resumes them).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..client import SpotifyClient
from ..errors import (
    ApiError,
    EndpointUnavailableError,
    InvalidLimitError,
    MustWaitError,
    NotFoundError,
)

__all__ = ["ENDPOINTS", "Capabilities", "probe"]

# The endpoints the planner may use, and the page sizes to try (largest first).
ENDPOINTS: dict[str, tuple[int, ...]] = {
    "search": (50, 20, 10, 5),
    "artist": (),
    "artists": (),
    "related_artists": (),
    "artist_albums": (50, 20, 10, 5),
    "album": (),
    "albums": (),
    "album_tracks": (50, 20, 10),
    "featured_playlists": (50, 20, 10),
    "categories": (50, 20, 10),
    "category_playlists": (50, 20, 10),
    "new_releases": (50, 20, 10),
    "playlist_items": (50, 20, 10),
}


@dataclass
class Capabilities:
    """``available[name]``: True, False, or absent (unknown); ``limits[name]``: max page size."""

    available: dict[str, bool] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)
    probed_at: float = 0.0

    def has(self, name: str) -> bool:
        return self.available.get(name, False)

    def limit(self, name: str, default: int = 10) -> int:
        return self.limits.get(name, default)

    def mark_unavailable(self, name: str) -> None:
        self.available[name] = False

    def to_json(self) -> dict[str, Any]:
        return {"available": self.available, "limits": self.limits, "probed_at": self.probed_at}

    @classmethod
    def from_json(cls, data: Any) -> Capabilities:
        if not isinstance(data, dict):
            return cls()
        return cls(
            available={str(k): bool(v) for k, v in dict(data.get("available", {})).items()},
            limits={str(k): int(v) for k, v in dict(data.get("limits", {})).items()},
            probed_at=float(data.get("probed_at", 0.0)),
        )


async def probe(client: SpotifyClient, names: set[str] | None = None) -> Capabilities:
    """Probe every endpoint in ``names`` (default: all of :data:`ENDPOINTS`)."""
    names = set(ENDPOINTS) if names is None else names
    caps = Capabilities(probed_at=time.time())
    failures: list[ApiError] = []

    async def try_sizes(name: str, call: Callable[[int], Awaitable[Any]]) -> Any:
        sizes = ENDPOINTS[name] or (0,)
        for size in sizes:
            try:
                result = await call(size)
            except InvalidLimitError:
                continue
            except (EndpointUnavailableError, NotFoundError):
                caps.available[name] = False
                return None
            except MustWaitError:
                raise
            except ApiError as exc:
                failures.append(exc)
                return None  # unknown: try again next start
            caps.available[name] = True
            if size:
                caps.limits[name] = size
            return result
        caps.available[name] = False
        return None

    found = await try_sizes(
        "search", lambda n: client.search("a", types=("artist", "album", "track"), limit=n)
    )
    artist_id = album_id = None
    if found is not None:
        if found.artists and found.artists.items:
            artist_id = found.artists.items[0].id
        if found.albums and found.albums.items:
            album_id = found.albums.items[0].id
    if artist_id:
        if "artist" in names:
            await try_sizes("artist", lambda n: client.artist(artist_id))
        if "artists" in names:
            await try_sizes("artists", lambda n: client.artists([artist_id]))
        if "related_artists" in names:
            await try_sizes("related_artists", lambda n: client.related_artists(artist_id))
        if "artist_albums" in names:
            page = await try_sizes(
                "artist_albums", lambda n: client.artist_albums(artist_id, limit=n)
            )
            if album_id is None and page is not None and page.items:
                album_id = page.items[0].id
    if album_id:
        if "album" in names:
            await try_sizes("album", lambda n: client.album(album_id))
        if "albums" in names:
            await try_sizes("albums", lambda n: client.albums([album_id]))
        if "album_tracks" in names:
            await try_sizes("album_tracks", lambda n: client.album_tracks(album_id, limit=n))
    playlist_id = None
    if "featured_playlists" in names:
        page = await try_sizes("featured_playlists", lambda n: client.featured_playlists(limit=n))
        if page is not None and page.items:
            playlist_id = page.items[0].id
    category_id = None
    if "categories" in names:
        page = await try_sizes("categories", lambda n: client.categories(limit=n))
        if page is not None and page.items:
            category_id = page.items[0].id
    if category_id and "category_playlists" in names:
        page = await try_sizes(
            "category_playlists", lambda n: client.category_playlists(category_id, limit=n)
        )
        if playlist_id is None and page is not None and page.items:
            playlist_id = page.items[0].id
    if "new_releases" in names:
        await try_sizes("new_releases", lambda n: client.new_releases(limit=n))
    if playlist_id and "playlist_items" in names:
        await try_sizes("playlist_items", lambda n: client.playlist_items(playlist_id, limit=n))
    if failures and not caps.available:
        raise failures[-1]  # nothing answered at all: the API is down or unreachable
    return caps
