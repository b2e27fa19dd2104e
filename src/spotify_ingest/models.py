"""Typed models of the Web API objects the crawler reads, decoded straight from the response bytes.

Parsing is strict where the crawler depends on a field (``id``, ``name``, paging fields) and lenient
elsewhere: Spotify removes fields from Development Mode apps without notice (``followers`` and
``popularity`` went in February 2026), so every descriptive field is optional and absent fields
stay ``None`` rather than failing the parse. Unknown fields are ignored.

The models are frozen :class:`msgspec.Struct` classes and :func:`decoder` gives the JSON decoder of
one. msgspec skips the fields a model does not declare without building them: an Extended-quota
search page is 176 KB, most of it ``available_markets`` lists of albums and tracks, and decoding
it into these models takes 0.32 ms where pydantic took 1.47 ms (a 34 KB dev-2026 page: 0.06 ms
against 0.29); the crawler decodes one such page per request. A model constructed by hand (tests,
stores) is not validated: only decoding validates.

A malformed body raises :class:`msgspec.DecodeError` (not JSON, or cut short) or its subclass
:class:`msgspec.ValidationError` (JSON of the wrong shape); the client turns either into
:class:`spotify_ingest.errors.BadResponseError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Generic, Optional, TypeVar, cast

import msgspec
from msgspec import Meta, Struct
from msgspec.structs import force_setattr

__all__ = [
    "Album",
    "Artist",
    "Category",
    "Followers",
    "Image",
    "Page",
    "PlaylistItem",
    "PlaylistOwner",
    "SearchResult",
    "SimplifiedAlbum",
    "SimplifiedArtist",
    "SimplifiedPlaylist",
    "SimplifiedTrack",
    "Track",
    "decoder",
    "parse_playlist_items",
]

T = TypeVar("T")
M = TypeVar("M")

# Counts the store keeps in 64-bit columns: a larger number is a malformed body, not data.
Count = Annotated[int, Meta(ge=0, le=2**63 - 1)]
Id = Annotated[str, Meta(min_length=1)]


class Image(Struct, frozen=True, kw_only=True):
    url: str
    height: Count | None = None
    width: Count | None = None


class SimplifiedArtist(Struct, frozen=True, kw_only=True):
    """An artist as embedded in albums and tracks: id and name, nothing else worth storing."""

    id: Id
    name: str
    uri: str | None = None
    href: str | None = None
    external_urls: dict[str, str] | None = None


class Followers(Struct, frozen=True, kw_only=True):
    """The API nests an artist's follower count: ``{"href": null, "total": N}``."""

    total: Count | None = None


class Artist(SimplifiedArtist, frozen=True, kw_only=True):
    """A full artist object. Fields the API no longer gives this app are ``None``.

    ``followers`` arrives as :class:`Followers` and is kept as its ``total`` (an ``int``, or
    ``None``); read it as :attr:`follower_count`.
    """

    genres: list[str] | None = None
    popularity: Count | None = None
    followers: Count | Followers | None = None
    images: list[Image] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.followers, Followers):
            force_setattr(self, "followers", self.followers.total)

    @property
    def follower_count(self) -> int | None:
        value = self.followers
        return value.total if isinstance(value, Followers) else value


class Page(Struct, Generic[T], frozen=True, kw_only=True):
    """Spotify's paging object.

    ``null`` entries in ``items`` (the API sends them for objects it cannot show, e.g. in playlist
    search results) are dropped, so ``len(items)`` may be below ``limit`` on a page that is not the
    last: page with ``offset + limit`` and ``total``/``next``, never with ``len(items)``.
    """

    if TYPE_CHECKING:
        items: list[T]
    else:  # what the decoder accepts: the nulls go in __post_init__, readers never see one
        items: list[Optional[T]]  # noqa: UP045 (a runtime annotation msgspec evaluates)
    total: Count
    limit: Count
    offset: Count
    next: str | None = None
    previous: str | None = None
    href: str | None = None

    def __post_init__(self) -> None:
        if None in self.items:
            force_setattr(self, "items", [item for item in self.items if item is not None])


class SimplifiedTrack(Struct, frozen=True, kw_only=True):
    id: str | None = None
    name: str = ""
    artists: list[SimplifiedArtist] = []


class SimplifiedAlbum(Struct, frozen=True, kw_only=True):
    id: Id
    name: str = ""
    album_type: str | None = None
    album_group: str | None = None
    release_date: str | None = None
    total_tracks: Count | None = None
    artists: list[SimplifiedArtist] = []


class Track(SimplifiedTrack, frozen=True, kw_only=True):
    album: SimplifiedAlbum | None = None


class Album(SimplifiedAlbum, frozen=True, kw_only=True):
    tracks: Page[SimplifiedTrack] | None = None
    genres: list[str] | None = None
    label: str | None = None
    popularity: Count | None = None


class PlaylistOwner(Struct, frozen=True, kw_only=True):
    """The owner of a playlist: ``spotify`` for editorial playlists."""

    id: str | None = None
    display_name: str | None = None


class SimplifiedPlaylist(Struct, frozen=True, kw_only=True):
    id: Id
    name: str = ""
    owner: PlaylistOwner | None = None
    collaborative: bool | None = None
    public: bool | None = None
    snapshot_id: str | None = None


class PlaylistItem(Struct, frozen=True, kw_only=True):
    """One entry of a playlist.

    The API moved the entry from ``track`` to ``item`` in 2026 and still sends both for a while;
    whichever is present becomes ``track``. Local files (``is_local``, with null ids) and podcast
    episodes carry no catalog artists and become ``track=None`` instead of failing the page.
    Decode a page of them with :func:`parse_playlist_items`.
    """

    track: Track | None = None
    added_at: str | None = None
    is_local: bool = False


class Category(Struct, frozen=True, kw_only=True):
    id: Id
    name: str = ""


class SearchResult(Struct, frozen=True, kw_only=True):
    """One search call: a page per type asked for (absent types stay ``None``)."""

    artists: Page[Artist] | None = None
    albums: Page[SimplifiedAlbum] | None = None
    tracks: Page[Track] | None = None
    playlists: Page[SimplifiedPlaylist] | None = None


_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}


def decoder(model: type[M]) -> msgspec.json.Decoder[M]:
    """The JSON decoder of ``model`` (a model class or ``Page[X]``), built once and kept."""
    found = _DECODERS.get(model)
    if found is None:
        found = _DECODERS[model] = msgspec.json.Decoder(model)
    return cast("msgspec.json.Decoder[M]", found)


# -- playlist entries: their shape is known only after a look at each -----------------------------

_NULL = msgspec.Raw(b"null")


class _WireEntry(Struct):
    """A playlist entry as sent: the track (or episode, or local file) still undecoded."""

    item: msgspec.Raw = _NULL
    track: msgspec.Raw = _NULL
    added_at: str | None = None
    is_local: bool | None = False


class _EntryKind(Struct):
    type: str | None = None


def _playlist_item(entry: _WireEntry) -> PlaylistItem:
    raw = entry.item if bytes(entry.item) != b"null" else entry.track
    track = None
    is_object = bytes(raw)[:1] == b"{"
    if is_object and not entry.is_local and decoder(_EntryKind).decode(raw).type != "episode":
        track = decoder(Track).decode(raw)
    return PlaylistItem(track=track, added_at=entry.added_at, is_local=bool(entry.is_local))


def parse_playlist_items(body: bytes) -> Page[PlaylistItem]:
    """Decode a page of playlist entries (see :class:`PlaylistItem`)."""
    page = decoder(Page[_WireEntry]).decode(body)
    items = [_playlist_item(entry) for entry in page.items]
    return cast("Page[PlaylistItem]", msgspec.structs.replace(page, items=items))
