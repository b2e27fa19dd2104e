"""What each kind of Spotify app may do: one declarative table per access profile.

A profile says, per endpoint, whether it is available (or which status a removed one answers),
the maximum and default ``limit``, and which fields the API has stopped sending.

* ``extended``: Extended Quota Mode, everything available, page limits 50.
* ``dev-2024``: a Development Mode app after 2024-11-27: related artists, featured playlists,
  category playlists and Spotify-owned (editorial) playlists answer 404.
* ``dev-2026`` (default): a Development Mode app after the February 2026 changes: also the batch
  lookups (``/artists?ids``, ``/albums?ids``), new releases and categories are gone (403); search
  and artist-albums allow ``limit`` <= 10; artists lose ``followers`` and ``popularity``; albums
  lose ``label``, ``popularity``, ``available_markets`` and ``album_group``; playlist items only
  for playlists the app owns (others 403).

The endpoint table ``ENDPOINTS`` names each endpoint by a short key (used in stats, endpoint
buckets and this table), its route under ``/v1`` and the OpenAPI response component of its 200.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "DEFAULT_PROFILE",
    "ENDPOINTS",
    "PROFILES",
    "Endpoint",
    "Profile",
    "Removal",
    "get_profile",
]


@dataclass(frozen=True)
class Endpoint:
    """One GET endpoint of the Web API that the simulator serves."""

    key: str  # short name: stats, endpoint buckets, profile tables
    route: str  # Starlette route under /v1, e.g. "/artists/{id}"
    openapi_path: str  # the path in spotify-openapi.yml
    response: str  # components/responses name of the 200
    paged: bool = False  # takes limit / offset


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("search", "/search", "/search", "SearchItems", paged=True),
    Endpoint("artist", "/artists/{id}", "/artists/{id}", "OneArtist"),
    Endpoint("artists", "/artists", "/artists", "ManyArtists"),
    Endpoint(
        "related-artists",
        "/artists/{id}/related-artists",
        "/artists/{id}/related-artists",
        "ManyArtists",
    ),
    Endpoint(
        "artist-albums",
        "/artists/{id}/albums",
        "/artists/{id}/albums",
        "PagingArtistDiscographyAlbumObject",
        paged=True,
    ),
    Endpoint("album", "/albums/{id}", "/albums/{id}", "OneAlbum"),
    Endpoint("albums", "/albums", "/albums", "ManyAlbums"),
    Endpoint(
        "album-tracks",
        "/albums/{id}/tracks",
        "/albums/{id}/tracks",
        "PagingSimplifiedTrackObject",
        paged=True,
    ),
    Endpoint(
        "featured-playlists",
        "/browse/featured-playlists",
        "/browse/featured-playlists",
        "PagedFeaturedPlaylists",
        paged=True,
    ),
    Endpoint(
        "categories", "/browse/categories", "/browse/categories", "PagedCategories", paged=True
    ),
    Endpoint(
        "category-playlists",
        "/browse/categories/{category_id}/playlists",
        "/browse/categories/{category_id}/playlists",
        "PagedFeaturedPlaylists",
        paged=True,
    ),
    Endpoint(
        "new-releases", "/browse/new-releases", "/browse/new-releases", "PagedAlbums", paged=True
    ),
    Endpoint("playlist", "/playlists/{playlist_id}", "/playlists/{playlist_id}", "OnePlaylist"),
    Endpoint(
        "playlist-items",
        "/playlists/{playlist_id}/items",
        "/playlists/{playlist_id}/items",
        "PagingPlaylistTrackObject",
        paged=True,
    ),
    Endpoint(
        "playlist-tracks",
        "/playlists/{playlist_id}/tracks",
        "/playlists/{playlist_id}/tracks",
        "PagingPlaylistTrackObject",
        paged=True,
    ),
)
ENDPOINTS_BY_KEY: Mapping[str, Endpoint] = MappingProxyType({e.key: e for e in ENDPOINTS})


@dataclass(frozen=True)
class Removal:
    """How a removed endpoint answers."""

    status: int
    message: str


GONE_2024 = Removal(404, "Not found.")  # what the November 2024 removals answer
GONE_2026 = Removal(403, "Forbidden.")  # what the February 2026 removals answer

_LIMITS_50: Mapping[str, int] = MappingProxyType(
    {
        "search": 50,
        "artist-albums": 50,
        "album-tracks": 50,
        "featured-playlists": 50,
        "categories": 50,
        "category-playlists": 50,
        "new-releases": 50,
        "playlist-items": 50,
        "playlist-tracks": 100,
    }
)
_DEFAULT_LIMITS_20: Mapping[str, int] = MappingProxyType(dict.fromkeys(_LIMITS_50, 20))


@dataclass(frozen=True)
class Profile:
    """The rules of one kind of app. Everything not listed is available with limits of 50."""

    name: str
    description: str
    removed: Mapping[str, Removal] = field(default_factory=dict)  # endpoint key -> answer
    # endpoint key -> largest accepted ``limit``
    max_limit: Mapping[str, int] = field(default_factory=lambda: _LIMITS_50)
    # endpoint key -> ``limit`` when the request has none
    default_limit: Mapping[str, int] = field(default_factory=lambda: _DEFAULT_LIMITS_20)
    artist_fields_removed: frozenset[str] = frozenset()  # dropped from every full artist
    album_fields_removed: frozenset[str] = frozenset()  # dropped from every album shape
    editorial_playlists_removed: bool = False  # owner "spotify" playlists answer 404
    playlist_items_owned_only: bool = False  # items of playlists the app does not own: 403

    def is_available(self, endpoint_key: str) -> bool:
        return endpoint_key not in self.removed


_EXTENDED = Profile(
    name="extended",
    description="Extended Quota Mode: every endpoint, limits up to 50, every field",
)

_DEV_2024 = Profile(
    name="dev-2024",
    description="Development Mode after 2024-11-27: no related artists, featured or category "
    "playlists, editorial playlists",
    removed=MappingProxyType(
        {
            "related-artists": GONE_2024,
            "featured-playlists": GONE_2024,
            "category-playlists": GONE_2024,
        }
    ),
    editorial_playlists_removed=True,
)

_DEV_2026 = Profile(
    name="dev-2026",
    description="Development Mode after February 2026: also no batch lookups, new releases, "
    "categories; search and artist albums limit 10; fewer fields; own playlists only",
    removed=MappingProxyType(
        {
            "related-artists": GONE_2024,
            "featured-playlists": GONE_2024,
            "category-playlists": GONE_2024,
            "artists": GONE_2026,
            "albums": GONE_2026,
            "new-releases": GONE_2026,
            "categories": GONE_2026,
        }
    ),
    max_limit=MappingProxyType({**_LIMITS_50, "search": 10, "artist-albums": 10}),
    default_limit=MappingProxyType({**_DEFAULT_LIMITS_20, "search": 5, "artist-albums": 5}),
    artist_fields_removed=frozenset({"followers", "popularity"}),
    album_fields_removed=frozenset({"label", "popularity", "available_markets", "album_group"}),
    editorial_playlists_removed=True,
    playlist_items_owned_only=True,
)

PROFILES: Mapping[str, Profile] = MappingProxyType(
    {p.name: p for p in (_EXTENDED, _DEV_2024, _DEV_2026)}
)
DEFAULT_PROFILE = "dev-2026"


def get_profile(name: str) -> Profile:
    """The profile called ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(PROFILES)
        raise ValueError(f"unknown profile {name!r}: use one of {known}") from None
