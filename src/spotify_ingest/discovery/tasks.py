"""What each kind of task asks the API, and what its answer spawns.

==================  ========================================  =================================
kind                request                                   spawns
==================  ========================================  =================================
search              ``/search?type=artist,album,track``       pages / child queries (search.py)
artist_albums       ``/artists/{id}/albums`` (every group)    album, next page
album               ``/albums/{id}`` (first page of tracks)   album_tracks for the rest
album_tracks        ``/albums/{id}/tracks``                   next page
featured_playlists  ``/browse/featured-playlists``            playlist_items, next page
categories          ``/browse/categories``                    category_playlists, next page
category_playlists  ``/browse/categories/{id}/playlists``     playlist_items, next page
new_releases        ``/browse/new-releases``                  album, next page
playlist_items      ``/playlists/{id}/items``                 next page
related             ``/artists/{id}/related-artists``         related (breadth-first)
hydrate             ``/artists?ids=`` or ``/artists/{id}``    nothing
==================  ========================================  =================================

Every artist a response carries is stored; every artist seen also spawns its ``artist_albums`` and
``related`` tasks when those kinds are enabled (the task key makes a second spawn a no-op). Under
``--strategy auto`` those kinds are opportunistic (search reaches every artist anyway), so they
are spawned only while fewer than :data:`FOLLOW_BACKLOG` of them are pending: a new app's crawl
otherwise queues one ``artist_albums`` task per artist found (a task row, an index entry and a
known-index look-up each) for a kind the planner tries fifty times and retires. The named
strategies walk their graph in full and have no cap. The strategies (``--strategy``) are sets of
enabled kinds; see :data:`STRATEGY_KINDS`.

A search page refused with 400 at the end of the reach does not fail its task: the search plan
turns it into the node's split (``SearchPlan.refused``); any other 400 fails the task as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..auth import TOKEN_ENDPOINT
from ..client import SpotifyClient
from ..errors import BadRequestError
from ..models import Album, Artist, Page, SimplifiedAlbum, SimplifiedArtist
from ..store.base import Task, TaskOutcome, TaskSpec
from .capabilities import Capabilities
from .known import KnownNames
from .search import SEARCH_TYPES, SearchPlan

__all__ = ["ENDPOINT_OF", "FOLLOW_BACKLOG", "STRATEGY_KINDS", "STRATEGY_ORDER", "TaskRunner"]

ALL_GROUPS = ("album", "single", "compilation", "appears_on")

# Pending follow-up tasks of one opportunistic kind above which no more are spawned (auto only).
FOLLOW_BACKLOG = 2000

# Which endpoint (capability name) each task kind needs.
ENDPOINT_OF: dict[str, str] = {
    "search": "search",
    "artist_albums": "artist_albums",
    "album": "album",
    "album_tracks": "album_tracks",
    "featured_playlists": "featured_playlists",
    "categories": "categories",
    "category_playlists": "category_playlists",
    "new_releases": "new_releases",
    "playlist_items": "playlist_items",
    "related": "related_artists",
    "hydrate": "artist",
}

# The forced strategies' precedence: the first kind with pending tasks runs (see planner.py).
STRATEGY_ORDER: dict[str, tuple[str, ...]] = {
    "seed": (
        "featured_playlists", "categories", "category_playlists", "playlist_items", "hydrate",
        "related",
    ),
    "search": ("search", "hydrate"),
    "albums": ("album_tracks", "album", "artist_albums", "hydrate", "search"),
}  # fmt: skip

STRATEGY_KINDS: dict[str, frozenset[str]] = {
    # The seed's plan: featured playlists -> playlist items -> hydrate in 50s -> related BFS.
    "seed": frozenset(STRATEGY_ORDER["seed"]),
    "search": frozenset({"search", "hydrate"}),
    "albums": frozenset({"search", "artist_albums", "album", "album_tracks", "hydrate"}),
    "auto": frozenset(ENDPOINT_OF),
}


def _next_offset(page: Page[Any]) -> int | None:
    nxt = page.offset + page.limit
    return nxt if page.next is not None and nxt < page.total and page.limit > 0 else None


@dataclass
class TaskRunner:
    """Runs one task against the API and builds its :class:`TaskOutcome`."""

    client: SpotifyClient
    capabilities: Capabilities
    search: SearchPlan
    kinds: frozenset[str]
    known: KnownNames | None = None
    retired: frozenset[str] | set[str] = frozenset()  # kinds the planner gave up on: not spawned
    # Pending tasks of a kind, when follow-ups are capped at FOLLOW_BACKLOG (auto); None: no cap.
    backlog: Callable[[str], int] | None = None

    def enabled(self, kind: str) -> bool:
        return (
            kind in self.kinds
            and kind not in self.retired
            and self.capabilities.has(ENDPOINT_OF[kind])
        )

    def _wanted(self, kind: str) -> bool:
        """Follow-ups of ``kind`` are enabled and their backlog is not full."""
        if not self.enabled(kind):
            return False
        return self.backlog is None or self.backlog(kind) < FOLLOW_BACKLOG

    def _follow_artists(self, artists: Iterable[SimplifiedArtist]) -> list[TaskSpec]:
        """``artist_albums`` for artists never seen before, ``related`` for artists seen in full
        for the first time (the known index says which; without it every artist, the task key
        dropping duplicates)."""
        albums = self._wanted("artist_albums")
        related = self._wanted("related")
        if not (albums or related):
            return []
        artists = list(artists)
        new: set[str] | None = None
        first_full: set[str] | None = None
        if self.known is not None:
            new, upgraded = self.known.fresh((a.id, isinstance(a, Artist)) for a in artists)
            first_full = new | upgraded
        spawn: list[TaskSpec] = []
        for artist in artists:
            if albums and (new is None or artist.id in new):
                spawn.append(TaskSpec("artist_albums", {"artist": artist.id, "offset": 0}))
            full = isinstance(artist, Artist)
            if related and full and (first_full is None or artist.id in first_full):
                spawn.append(TaskSpec("related", {"artist": artist.id}))
        return spawn

    def _album_spawn(self, albums: Iterable[SimplifiedAlbum]) -> list[TaskSpec]:
        if not self.enabled("album"):
            return []
        return [TaskSpec("album", {"album": a.id}) for a in albums]

    async def run(self, task: Task, hydrate_ids: list[str] | None = None) -> TaskOutcome:
        """Make the request(s) of ``task``; ``hydrate_ids`` narrows a hydration batch."""
        p = task.params
        kind = task.kind
        artists: list[Artist | SimplifiedArtist] = []
        spawn: list[TaskSpec] = []
        if kind == "search":
            limit, offset = int(p["limit"]), int(p["offset"])
            query, role = str(p["q"]), str(p["role"])
            if self.known is not None and self.search.skippable(query, offset, role, self.known):
                return TaskOutcome(requests=0)
            later = self.search.defer_again(query, offset, role, bool(p.get("again", False)))
            if later is not None:
                return TaskOutcome(requests=0, spawn=[later])
            try:
                result = await self.client.search(
                    query, types=SEARCH_TYPES, limit=limit, offset=offset
                )
            except BadRequestError as exc:
                refusal = None
                if exc.status == 400 and exc.endpoint != TOKEN_ENDPOINT:
                    refusal = self.search.refused(query, offset, limit, role)
                if refusal is None:
                    raise
                return refusal
            outcome, _roots = self.search.outcome(query, offset, role, result)
            outcome.spawn = [*outcome.spawn, *self._follow_artists(outcome.artists)]
            return outcome
        if kind == "artist_albums":
            limit = self.capabilities.limit("artist_albums")
            page = await self.client.artist_albums(
                str(p["artist"]), include_groups=ALL_GROUPS, limit=limit, offset=int(p["offset"])
            )
            for album in page.items:
                artists.extend(album.artists)
            spawn.extend(self._album_spawn(page.items))
            nxt = _next_offset(page)
            if nxt is not None:
                spawn.append(TaskSpec("artist_albums", {"artist": p["artist"], "offset": nxt}))
        elif kind == "album":
            full_album: Album = await self.client.album(str(p["album"]))
            artists.extend(full_album.artists)
            if full_album.tracks is not None:
                for track in full_album.tracks.items:
                    artists.extend(track.artists)
                nxt = _next_offset(full_album.tracks)
                if nxt is not None and self.enabled("album_tracks"):
                    spawn.append(TaskSpec("album_tracks", {"album": full_album.id, "offset": nxt}))
        elif kind == "album_tracks":
            limit = self.capabilities.limit("album_tracks", 50)
            tracks = await self.client.album_tracks(
                str(p["album"]), limit=limit, offset=int(p["offset"])
            )
            for track in tracks.items:
                artists.extend(track.artists)
            nxt = _next_offset(tracks)
            if nxt is not None:
                spawn.append(TaskSpec("album_tracks", {"album": p["album"], "offset": nxt}))
        elif kind in ("featured_playlists", "category_playlists"):
            limit = self.capabilities.limit(kind, 50)
            if kind == "featured_playlists":
                lists = await self.client.featured_playlists(limit=limit, offset=int(p["offset"]))
            else:
                lists = await self.client.category_playlists(
                    str(p["category"]), limit=limit, offset=int(p["offset"])
                )
            if self.enabled("playlist_items"):
                spawn.extend(
                    TaskSpec("playlist_items", {"playlist": pl.id, "offset": 0})
                    for pl in lists.items
                )
            nxt = _next_offset(lists)
            if nxt is not None:
                spawn.append(TaskSpec(kind, {**p, "offset": nxt}))
        elif kind == "categories":
            limit = self.capabilities.limit("categories", 50)
            cats = await self.client.categories(limit=limit, offset=int(p["offset"]))
            if self.enabled("category_playlists"):
                spawn.extend(
                    TaskSpec("category_playlists", {"category": c.id, "offset": 0})
                    for c in cats.items
                )
            nxt = _next_offset(cats)
            if nxt is not None:
                spawn.append(TaskSpec("categories", {"offset": nxt}))
        elif kind == "new_releases":
            limit = self.capabilities.limit("new_releases", 50)
            releases = await self.client.new_releases(limit=limit, offset=int(p["offset"]))
            for album in releases.items:
                artists.extend(album.artists)
            spawn.extend(self._album_spawn(releases.items))
            nxt = _next_offset(releases)
            if nxt is not None:
                spawn.append(TaskSpec("new_releases", {"offset": nxt}))
        elif kind == "playlist_items":
            limit = self.capabilities.limit("playlist_items", 50)
            items = await self.client.playlist_items(
                str(p["playlist"]), limit=limit, offset=int(p["offset"])
            )
            for item in items.items:
                if item.track is not None:
                    artists.extend(item.track.artists)
            nxt = _next_offset(items)
            if nxt is not None:
                spawn.append(TaskSpec("playlist_items", {"playlist": p["playlist"], "offset": nxt}))
        elif kind == "related":
            artists.extend(await self.client.related_artists(str(p["artist"])))
        elif kind == "hydrate":
            ids = list(p["ids"]) if hydrate_ids is None else hydrate_ids
            if not ids:
                return TaskOutcome(requests=0)
            if len(ids) > 1 and self.capabilities.has("artists"):
                found = await self.client.artists(ids)
                artists.extend(a for a in found if a is not None)
            else:
                for artist_id in ids:
                    artists.append(await self.client.artist(artist_id))
                return TaskOutcome(artists=artists, requests=len(ids))
        else:  # pragma: no cover - kinds come from our own code
            raise ValueError(f"unknown task kind {kind!r}")
        spawn.extend(self._follow_artists(artists))
        return TaskOutcome(artists=artists, spawn=spawn)
