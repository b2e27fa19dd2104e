"""Typed models of the Web API objects the crawler reads.

Parsing is strict where the crawler depends on a field (``id``, ``name``, paging fields) and lenient
elsewhere: Spotify removes fields from Development Mode apps without notice (``followers`` and
``popularity`` went in February 2026), so every descriptive field is optional and absent fields
stay ``None`` rather than failing the parse. Unknown fields are ignored.

A malformed body raises :class:`pydantic.ValidationError`; the client turns it into
:class:`spotify_ingest.errors.BadResponseError`.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "Album",
    "Artist",
    "Category",
    "Image",
    "Page",
    "PlaylistItem",
    "SearchResult",
    "SimplifiedAlbum",
    "SimplifiedArtist",
    "SimplifiedPlaylist",
    "SimplifiedTrack",
    "Track",
]

T = TypeVar("T")


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Image(_Model):
    url: str
    height: int | None = None
    width: int | None = None


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
    popularity: int | None = None
    followers: int | None = None
    images: list[Image] | None = None

    @field_validator("followers", mode="before")
    @classmethod
    def _followers_total(cls, value: object) -> object:
        """The API nests the count: ``{"href": null, "total": N}``."""
        if isinstance(value, dict):
            return value.get("total")
        return value


class Page(_Model, Generic[T]):
    """Spotify's paging object."""

    items: list[T]
    total: int = Field(ge=0)
    limit: int = Field(ge=0)
    offset: int = Field(ge=0)
    next: str | None = None
    previous: str | None = None
    href: str | None = None


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
    total_tracks: int | None = None
    artists: list[SimplifiedArtist] = Field(default_factory=list)


class Track(SimplifiedTrack):
    album: SimplifiedAlbum | None = None


class Album(SimplifiedAlbum):
    tracks: Page[SimplifiedTrack] | None = None
    genres: list[str] | None = None
    label: str | None = None
    popularity: int | None = None


class SimplifiedPlaylist(_Model):
    id: str = Field(min_length=1)
    name: str = ""


class PlaylistItem(_Model):
    track: Track | None = None


class Category(_Model):
    id: str = Field(min_length=1)
    name: str = ""


class SearchResult(_Model):
    """One search call: a page per type asked for (absent types stay ``None``)."""

    artists: Page[Artist] | None = None
    albums: Page[SimplifiedAlbum] | None = None
    tracks: Page[Track] | None = None
