"""Typed models of the Web API objects the crawler reads.

Parsing is strict where the crawler depends on a field (``id``, ``name``, paging fields) and lenient
elsewhere: Spotify removes fields from Development Mode apps without notice (``followers`` and
``popularity`` went in February 2026), so every descriptive field is optional and absent fields
stay ``None`` rather than failing the parse. Unknown fields are ignored.

A malformed body raises :class:`pydantic.ValidationError`; the client turns it into
:class:`spotify_ingest.errors.BadResponseError`.
"""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "Album",
    "Artist",
    "Category",
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
]

T = TypeVar("T")

# Counts the store keeps in 64-bit columns: a larger number is a malformed body, not data.
Count = Annotated[int, Field(ge=0, lt=2**63)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Image(_Model):
    url: str
    height: Count | None = None
    width: Count | None = None


class SimplifiedArtist(_Model):
    """An artist as embedded in albums and tracks: id and name, nothing else worth storing."""

    id: str = Field(min_length=1)
    name: str
    uri: str | None = None
    href: str | None = None
    external_urls: dict[str, str] | None = None


class Artist(SimplifiedArtist):
    """A full artist object. Fields the API no longer gives this app are ``None``."""

    genres: list[str] | None = None
    popularity: Count | None = None
    followers: Count | None = None
    images: list[Image] | None = None

    @field_validator("followers", mode="before")
    @classmethod
    def _followers_total(cls, value: object) -> object:
        """The API nests the count: ``{"href": null, "total": N}``."""
        if isinstance(value, dict):
            return value.get("total")
        return value


class Page(_Model, Generic[T]):
    """Spotify's paging object.

    ``null`` entries in ``items`` (the API sends them for objects it cannot show, e.g. in playlist
    search results) are dropped, so ``len(items)`` may be below ``limit`` on a page that is not the
    last: page with ``offset + limit`` and ``total``/``next``, never with ``len(items)``.
    """

    items: list[T]
    total: Count
    limit: Count
    offset: Count
    next: str | None = None
    previous: str | None = None
    href: str | None = None

    @field_validator("items", mode="before")
    @classmethod
    def _drop_null_items(cls, value: object) -> object:
        if isinstance(value, list) and None in value:
            return [item for item in value if item is not None]
        return value


class SimplifiedTrack(_Model):
    id: str | None = None
    name: str = ""
    artists: list[SimplifiedArtist] = Field(default_factory=list)


class SimplifiedAlbum(_Model):
    id: str = Field(min_length=1)
    name: str = ""
    album_type: str | None = None
    album_group: str | None = None
    release_date: str | None = None
    total_tracks: Count | None = None
    artists: list[SimplifiedArtist] = Field(default_factory=list)


class Track(SimplifiedTrack):
    album: SimplifiedAlbum | None = None


class Album(SimplifiedAlbum):
    tracks: Page[SimplifiedTrack] | None = None
    genres: list[str] | None = None
    label: str | None = None
    popularity: Count | None = None


class PlaylistOwner(_Model):
    """The owner of a playlist: ``spotify`` for editorial playlists."""

    id: str | None = None
    display_name: str | None = None


class SimplifiedPlaylist(_Model):
    id: str = Field(min_length=1)
    name: str = ""
    owner: PlaylistOwner | None = None
    collaborative: bool | None = None
    public: bool | None = None
    snapshot_id: str | None = None


class PlaylistItem(_Model):
    """One entry of a playlist.

    The API moved the entry from ``track`` to ``item`` in 2026 and still sends both for a while;
    whichever is present becomes ``track``. Local files (``is_local``, with null ids) and podcast
    episodes carry no catalog artists and become ``track=None`` instead of failing the page.
    """

    track: Track | None = None
    added_at: str | None = None
    is_local: bool = False

    @model_validator(mode="before")
    @classmethod
    def _entry(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        entry = data.get("item") if data.get("item") is not None else data.get("track")
        if data.get("is_local") or not isinstance(entry, dict) or entry.get("type") == "episode":
            entry = None
        return {
            "track": entry,
            "added_at": data.get("added_at"),
            "is_local": bool(data.get("is_local")),
        }


class Category(_Model):
    id: str = Field(min_length=1)
    name: str = ""


class SearchResult(_Model):
    """One search call: a page per type asked for (absent types stay ``None``)."""

    artists: Page[Artist] | None = None
    albums: Page[SimplifiedAlbum] | None = None
    tracks: Page[Track] | None = None
    playlists: Page[SimplifiedPlaylist] | None = None
