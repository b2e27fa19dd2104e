"""The simulator catalog: determinism, ids, schema conformance, relationships, catalog shape."""

from __future__ import annotations

import copy
import datetime as dt
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from spotify_ingest.sim.catalog import MAX_SAME_NAME, Catalog, SearchQueryError
from spotify_ingest.sim.search_index import tokenize

OPENAPI_PATH = Path(__file__).resolve().parents[3] / "shared" / "spotify-openapi.yml"
ALL_GROUPS = frozenset({"album", "single", "compilation", "appears_on"})
GROUP_ORDER = {"album": 0, "single": 1, "compilation": 2, "appears_on": 3}
_CATALOGS: dict[tuple[int, int], Catalog] = {}


def get_catalog(n_artists: int, seed: int) -> Catalog:
    """Catalogs are immutable: build each (size, seed) once per session."""
    if (n_artists, seed) not in _CATALOGS:
        _CATALOGS[(n_artists, seed)] = Catalog(n_artists, seed)
    return _CATALOGS[(n_artists, seed)]


@pytest.fixture(scope="module")
def small() -> Catalog:
    return get_catalog(2000, 11)


@pytest.fixture(scope="module")
def medium() -> Catalog:
    return get_catalog(20000, 5)


# --------------------------------------------------------------------------------------------------
# OpenAPI schemas


def _to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 -> JSON Schema 2020-12: ``nullable: true`` adds ``null`` to the type."""
    if isinstance(node, dict):
        out = {
            k: _to_json_schema(v) for k, v in node.items() if k not in ("discriminator", "example")
        }
        if out.pop("nullable", False):
            if "type" in out:
                out["type"] = [out["type"], "null"]
            else:
                out = {"anyOf": [out, {"type": "null"}]}
        return out
    if isinstance(node, list):
        return [_to_json_schema(v) for v in node]
    return node


@pytest.fixture(scope="module")
def schemas() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    if not OPENAPI_PATH.exists():
        pytest.skip(f"{OPENAPI_PATH} not available")
    components: dict[str, Any] = yaml.safe_load(OPENAPI_PATH.read_text())["components"]["schemas"]
    return components


@pytest.fixture(scope="module")
def validate(schemas: dict[str, Any]) -> Callable[[str, Any], None]:
    """``validate(component, obj)``: raises ``jsonschema.ValidationError`` on a mismatch."""
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    from referencing.jsonschema import DRAFT202012

    document = {"components": {"schemas": _to_json_schema(copy.deepcopy(schemas))}}
    registry = referencing.Registry().with_resource(
        "urn:spotify-openapi", DRAFT202012.create_resource(document)
    )
    validators: dict[str, Any] = {}

    def check(component: str, obj: Any) -> None:
        if component not in validators:
            ref = {"$ref": f"urn:spotify-openapi#/components/schemas/{component}"}
            validators[component] = jsonschema.Draft202012Validator(ref, registry=registry)
        validators[component].validate(obj)

    return check


def properties_of(schemas: dict[str, Any], component: str) -> set[str]:
    """Every property name of a component, following ``$ref`` and ``allOf``."""
    found: set[str] = set()

    def walk(node: dict[str, Any]) -> None:
        if "$ref" in node:
            walk(schemas[node["$ref"].rsplit("/", 1)[1]])
        found.update(node.get("properties", {}))
        for part in node.get("allOf", []):
            walk(part)

    walk(schemas[component])
    return found


def paging(items: list[dict[str, Any]], total: int) -> dict[str, Any]:
    return {
        "href": "https://api.spotify.com/v1/x",
        "items": items,
        "limit": 50,
        "next": None,
        "offset": 0,
        "previous": None,
        "total": total,
    }


def sample(limit: int, count: int, seed: int = 1) -> list[int]:
    rng = random.Random(seed)
    picks = {0, limit - 1, *(rng.randrange(limit) for _ in range(count))}
    return sorted(picks)


# --------------------------------------------------------------------------------------------------
# determinism


def test_same_seed_same_catalog() -> None:
    a, b = Catalog(1500, 42), Catalog(1500, 42)
    assert (a.n_albums, a.n_tracks, a.n_playlists) == (b.n_albums, b.n_tracks, b.n_playlists)
    for i in sample(a.n_artists, 40):
        assert a.artist_object(i) == b.artist_object(i)
        assert a.related_artists(i) == b.related_artists(i)
        assert a.artist_albums(i, ALL_GROUPS) == b.artist_albums(i, ALL_GROUPS)
    for j in sample(a.n_albums, 40):
        assert a.album_object(j) == b.album_object(j)
    for k in sample(a.n_tracks, 40):
        assert a.track_object(k) == b.track_object(k)
    for p in range(a.n_playlists):
        assert a.playlist_object(p) == b.playlist_object(p)
        assert list(a.playlist_tracks(p)) == list(b.playlist_tracks(p))
    assert a.new_releases() == b.new_releases()
    for q in ("a", "the", "genre:pop", "year:2020-2024", "tag:new", "m artist:b"):
        assert a.search(q, ["artist", "album", "track"], 0, 50) == b.search(
            q, ["artist", "album", "track"], 0, 50
        )
    assert list(a.iter_artist_ids()) == list(b.iter_artist_ids())


def test_different_seed_different_catalog() -> None:
    a, b = Catalog(1500, 1), Catalog(1500, 2)
    names_a = [a.artist_name(i) for i in range(200)]
    names_b = [b.artist_name(i) for i in range(200)]
    assert sum(x != y for x, y in zip(names_a, names_b, strict=True)) > 150
    assert a.artist_id(0) != b.artist_id(0)
    assert a.artist_index(b.artist_id(0)) is None
    assert a.search("a", ["artist"], 0, 20) != b.search("a", ["artist"], 0, 20)


# --------------------------------------------------------------------------------------------------
# ids


def test_ids_round_trip(small: Catalog) -> None:
    kinds = (
        (small.artist_id, small.artist_index, small.n_artists),
        (small.album_id, small.album_index, small.n_albums),
        (small.track_id, small.track_index, small.n_tracks),
        (small.playlist_id, small.playlist_index, small.n_playlists),
    )
    seen: set[str] = set()
    for to_id, to_index, n in kinds:
        for i in sample(n, 300):
            sid = to_id(i)
            assert len(sid) == 22 and sid.isalnum() and sid.isascii()
            assert sid[0] in "01234567"  # a 128-bit number, like real Spotify ids
            assert to_index(sid) == i
            seen.add(sid)
    assert len(seen) == sum(len(sample(n, 300)) for _, _, n in kinds)  # no clash across kinds
    assert small.resolve_id(small.album_id(7)) == ("album", 7)
    assert small.resolve_id(small.playlist_id(3)) == ("playlist", 3)
    assert small.resolve_id("0" * 22) is None


def test_iter_artist_ids_matches_artist_id(small: Catalog) -> None:
    ids = list(small.iter_artist_ids())
    assert len(ids) == small.n_artists == len(set(ids))
    for i in sample(small.n_artists, 100):
        assert ids[i] == small.artist_id(i)


def test_foreign_and_malformed_ids_rejected(small: Catalog) -> None:
    other = Catalog(2000, 12)
    good = small.artist_id(5)
    garbage: list[Any] = [
        "",
        "abc",
        good[:-1],
        good + "0",
        good[:-1] + ("A" if good[-1] != "A" else "B"),
        "0" * 22,
        "z" * 22,
        "!" * 22,
        "4iV5W9uYEdYUVa79Axb7R_",
        other.artist_id(5),
        small.album_id(5),
        small.track_id(5),
        small.playlist_id(5),
        None,
        12345,
        "4iV5W9uYEdYUVa79Axb7Rh",  # a real Spotify id
    ]
    for sid in garbage:
        assert small.artist_index(sid) is None, sid
    assert small.album_index(small.artist_id(3)) is None
    with pytest.raises(IndexError):
        small.artist_id(small.n_artists)
    with pytest.raises(IndexError):
        small.album_object(-1)


def test_index_beyond_catalog_is_rejected() -> None:
    """An id of index 1500 from a bigger catalog with the same seed is not ours."""
    big, little = Catalog(3000, 9), Catalog(1000, 9)
    assert little.artist_index(big.artist_id(1500)) is None
    assert little.artist_index(big.artist_id(10)) == 10


# --------------------------------------------------------------------------------------------------
# schema conformance


def test_objects_validate_against_openapi(
    small: Catalog, validate: Callable[[str, Any], None], schemas: dict[str, Any]
) -> None:
    optional = {"restrictions", "linked_from", "is_playable"}
    for i in sample(small.n_artists, 30):
        obj = small.artist_object(i)
        validate("ArtistObject", obj)
        assert set(obj) >= properties_of(schemas, "ArtistObject")
        validate("SimplifiedArtistObject", small.simplified_artist(i))
        assert set(small.simplified_artist(i)) >= properties_of(schemas, "SimplifiedArtistObject")
        for j, group in small.artist_albums(i, ALL_GROUPS)[:3]:
            validate("ArtistDiscographyAlbumObject", small.simplified_album(j, album_group=group))
    for j in sample(small.n_albums, 30):
        album = small.album_object(j)
        assert "tracks" not in album
        tracks = [small.simplified_track(k) for k in small.album_tracks(j)]
        full = {**album, "tracks": paging(tracks, len(tracks))}
        validate("AlbumObject", full)
        assert set(full) >= properties_of(schemas, "AlbumObject") - optional
        validate("SimplifiedAlbumObject", small.simplified_album(j))
        for t in tracks:
            validate("SimplifiedTrackObject", t)
            assert set(t) >= properties_of(schemas, "SimplifiedTrackObject") - optional
    for k in sample(small.n_tracks, 30):
        track = small.track_object(k)
        validate("TrackObject", track)
        assert set(track) >= properties_of(schemas, "TrackObject") - optional
        assert track["is_local"] is False and track["preview_url"] is None
        assert track["external_ids"]["isrc"] and len(track["external_ids"]["isrc"]) == 12
    for p in sorted(
        {*small.featured_playlists()[:3], *small.owned_playlists()[:2], small.n_playlists // 2}
    ):
        items = [small.playlist_item(p, pos) for pos in range(3)]
        for item in items:
            validate("PlaylistTrackObject", item)
        full = {**small.playlist_object(p), "tracks": paging(items, 3), "items": paging(items, 3)}
        validate("PlaylistObject", full)
        assert set(full) >= properties_of(schemas, "PlaylistObject")
        simple = small.simplified_playlist(p)
        validate("SimplifiedPlaylistObject", simple)
        assert set(simple) >= properties_of(schemas, "SimplifiedPlaylistObject")
    for cid, name in small.categories():
        obj = small.category_object(cid)
        assert obj is not None and obj["name"] == name
        validate("CategoryObject", obj)
    assert small.category_object("no-such-category") is None


def test_object_details(small: Catalog) -> None:
    for i in sample(small.n_artists, 50):
        obj = small.artist_object(i)
        assert len(obj["images"]) in (0, 3)
        if obj["images"]:
            assert [im["width"] for im in obj["images"]] == [640, 300, 64]
            assert all(im["url"].startswith("https://i.scdn.co/image/") for im in obj["images"])
        assert 0 <= obj["popularity"] <= 100 and len(obj["genres"]) <= 3
        assert obj["uri"] == f"spotify:artist:{obj['id']}"
    for j in sample(small.n_albums, 50):
        album = small.album_object(j)
        assert album["album_type"] in ("album", "single", "compilation")
        assert album["total_tracks"] == len(small.album_tracks(j)) >= 1
        precision = album["release_date_precision"]
        fmt = {"day": "%Y-%m-%d", "month": "%Y-%m", "year": "%Y"}[precision]
        assert dt.datetime.strptime(album["release_date"], fmt).date() <= small.today
        assert album["available_markets"] and album["label"] and len(album["copyrights"]) == 2
        assert album["external_ids"]["upc"].isdigit()
    for k in sample(small.n_tracks, 50):
        track = small.track_object(k)
        album = small.track_album(k)
        assert k in small.album_tracks(album)
        assert track["album"]["id"] == small.album_id(album)
        assert (
            track["duration_ms"] > 60_000
            and track["disc_number"] >= 1
            and track["track_number"] >= 1
        )


# --------------------------------------------------------------------------------------------------
# relationships


def test_albums_and_discographies_consistent(small: Catalog) -> None:
    credits: dict[int, set[int]] = {}  # artist -> albums where the artist is on a track
    for j in range(small.n_albums):
        for k in small.album_tracks(j):
            assert small.track_album(k) == j
            for a in small.track_artists(k):
                credits.setdefault(a, set()).add(j)
    total_tracks = sum(len(small.album_tracks(j)) for j in range(small.n_albums))
    assert total_tracks == small.n_tracks
    for i in range(small.n_artists):
        entries = small.artist_albums(i, ALL_GROUPS)
        assert entries, f"artist {i} has no release"
        keys = [(GROUP_ORDER[g], -small.album_release(j).toordinal()) for j, g in entries]
        assert keys == sorted(keys), "Spotify order: groups, newest first"
        assert len({j for j, _ in entries}) == len(entries)
        for j, group in entries:
            album_artists = small.album_artists(j)
            if group == "appears_on":
                assert i not in album_artists
                assert any(i in small.track_artists(k) for k in small.album_tracks(j))
            else:
                assert i in album_artists
                assert small.album_object(j)["album_type"] == group
        appears = {j for j, g in entries if g == "appears_on"}
        own = {j for j, g in entries if g != "appears_on"}
        assert credits.get(i, set()) - own == appears
        only = small.artist_albums(i, frozenset({"single"}))
        assert only == [(j, g) for j, g in entries if g == "single"]
    for j in range(small.n_albums):
        main = small.album_artists(j)[0]
        assert (j, small.album_object(j)["album_type"]) in small.artist_albums(main, ALL_GROUPS)
        assert small.album_object(j)["artists"][0]["id"] == small.artist_id(main)


def test_collaborations_and_various_artists_compilations(small: Catalog) -> None:
    featured = [k for k in range(small.n_tracks) if len(small.track_artists(k)) > 1]
    assert len(featured) > 50
    multi = [j for j in range(small.n_albums) if len(small.album_artists(j)) > 1]
    assert multi, "some multi-artist compilations"
    for j in multi:
        assert small.album_object(j)["album_type"] == "compilation"
        leads = {small.track_artists(k)[0] for k in small.album_tracks(j)}
        assert len(leads) > 1
        assert set(small.album_artists(j)[1:]) <= leads
    # collaborators prefer similar genres
    same_genre = sum(
        bool(
            set(small.artist_genres(small.track_artists(k)[0]))
            & set(small.artist_genres(small.track_artists(k)[1]))
        )
        for k in featured
        if small.artist_genres(small.track_artists(k)[0])
    )
    assert same_genre > 0.6 * sum(
        1 for k in featured if small.artist_genres(small.track_artists(k)[0])
    )


def test_related_artists(medium: Catalog) -> None:
    nonempty = 0
    for i in sample(medium.n_artists, 300):
        related = medium.related_artists(i)
        assert related == medium.related_artists(i)
        assert len(related) <= 20 and i not in related and len(set(related)) == len(related)
        assert all(0 <= r < 0.4 * medium.n_artists + 1 for r in related), (
            "no in-links to the long tail"
        )
        if related:
            nonempty += 1
            genres = set(medium.artist_genres(i))
            if genres:
                assert set(medium.artist_genres(related[0])) & genres
    top = [medium.related_artists(i) for i in range(50)]
    assert all(len(r) == 20 for r in top)
    assert nonempty > 100


def test_playlists_browse_and_new_releases(medium: Catalog) -> None:
    featured = medium.featured_playlists()
    assert 20 <= len(featured) <= 50
    categories = medium.categories()
    assert 15 <= len(categories) <= 25
    assert len({cid for cid, _ in categories}) == len(categories)
    for cid, _ in categories:
        lists = medium.category_playlists(cid)
        assert lists is not None and 5 <= len(lists) <= 15
    assert medium.category_playlists("nope") is None
    owned = medium.owned_playlists()
    assert 3 <= len(owned) <= 10
    for p in range(medium.n_playlists):
        tracks = medium.playlist_tracks(p)
        assert 20 <= len(tracks) <= 100 and len(set(tracks)) == len(tracks)
        assert all(0 <= k < medium.n_tracks for k in tracks)
        expected = "app-owner" if p in owned else "spotify"
        assert medium.playlist_owner(p) == expected
        assert medium.playlist_object(p)["owner"]["id"] == expected
    editorial = [p for p in range(medium.n_playlists) if p not in owned]
    leads = [medium.track_artists(k)[0] for p in editorial for k in medium.playlist_tracks(p)]
    assert sum(a < 0.1 * medium.n_artists for a in leads) > 0.8 * len(leads), (
        "mostly popular artists"
    )
    releases = medium.new_releases()
    assert 10 <= len(releases) <= 100
    pops = [medium.album_popularity(j) for j in releases]
    assert pops == sorted(pops, reverse=True)
    for j in releases:
        assert (medium.today - medium.album_release(j)).days <= 13
        assert medium.album_object(j)["album_type"] != "compilation"


# --------------------------------------------------------------------------------------------------
# shape of the catalog


def test_popularity_power_law_and_long_tail(medium: Catalog) -> None:
    n = medium.n_artists
    pops = [medium.artist_popularity(i) for i in range(n)]
    assert pops == sorted(pops, reverse=True), "index = popularity rank"
    assert pops[0] >= 95 and pops[n // 2] <= 20 and pops[-1] <= 5
    followers = [medium.artist_object(i)["followers"]["total"] for i in (0, 1, 2, n // 2, n - 1)]
    assert followers[0] > 1000 * max(followers[3], 1)
    releases = [
        len(medium.artist_albums(i, frozenset({"album", "single", "compilation"})))
        for i in range(n)
    ]
    assert releases[0] >= 30
    tail = range(n // 2, n)
    assert all(1 <= releases[i] <= 2 for i in tail)
    for i in range(n // 2, n, 97):
        own = medium.artist_albums(i, frozenset({"album", "single", "compilation"}))
        assert sum(len(medium.album_tracks(j)) for j, _ in own) < 10
    # a large fraction of artists has no collaboration and no playlist appearance
    linked: set[int] = set()
    for k in range(medium.n_tracks):
        artists = medium.track_artists(k)
        if len(artists) > 1:
            linked.update(artists)
    for j in range(medium.n_albums):
        if len(medium.album_artists(j)) > 1:
            linked.update(medium.album_artists(j))
    for p in range(medium.n_playlists):
        for k in medium.playlist_tracks(p):
            linked.update(medium.track_artists(k))
    isolated = n - len(linked)
    assert isolated > 0.6 * n
    assert sum(1 for i in tail if i not in linked) > 0.85 * len(tail)
    no_genre_tail = sum(1 for i in tail if not medium.artist_genres(i))
    assert no_genre_tail > 0.5 * len(tail)
    assert sum(1 for i in range(100) if medium.artist_genres(i)) > 70


def test_years_active_span_releases(small: Catalog) -> None:
    for i in sample(small.n_artists, 100):
        first, last = small.artist_years(i)
        own = [j for j, g in small.artist_albums(i, ALL_GROUPS) if small.album_artists(j)[0] == i]
        years = [small.album_release(j).year for j in own]
        assert (first, last) == (min(years), max(years))
        assert 1950 <= first <= last <= small.today.year


def test_names_of_every_shape(medium: Catalog) -> None:
    names = [medium.artist_name(i) for i in range(medium.n_artists)]
    joined = "\n".join(names)
    words = [len(tokenize(name)) for name in names]
    single = sum(1 for w in words if w == 1) / len(names)
    assert 0.38 <= single <= 0.52
    assert sum(1 for w in words if w == 2) > 0.2 * len(names)
    assert sum(1 for w in words if w >= 3) > 0.03 * len(names)

    def has(predicate: Callable[[str], bool], at_least: int = 3) -> bool:
        return sum(1 for name in names if predicate(name)) >= at_least

    assert has(lambda s: any(c in s for c in "éáóúíñüöø"))  # accents
    assert has(lambda s: any("\u4e00" <= c <= "\u9fff" for c in s))  # Han
    assert has(
        lambda s: any("\u30a0" <= c <= "\u30ff" or "\u3040" <= c <= "\u309f" for c in s)
    )  # kana
    assert has(lambda s: any("\uac00" <= c <= "\ud7a3" for c in s))  # Hangul
    assert has(lambda s: any("\u0400" <= c <= "\u04ff" for c in s))  # Cyrillic
    assert has(lambda s: any("\u0600" <= c <= "\u06ff" for c in s))  # Arabic
    assert has(lambda s: s.startswith("The "))
    assert has(lambda s: s.startswith("DJ "))
    assert has(lambda s: " & the " in s or " and the " in s)
    assert has(lambda s: any(c.isdigit() for c in s))
    assert has(lambda s: "/" in s) and has(lambda s: "!" in s) and has(lambda s: "'" in s)
    assert has(lambda s: "-" in s) and has(lambda s: "$" in s)
    assert has(lambda s: len(s) == 1)
    assert "feat." not in joined.lower()
    counts = Counter(" ".join(tokenize(name)) for name in names)
    assert max(counts.values()) <= MAX_SAME_NAME
    assert sum(1 for c in counts.values() if c >= 2) > 100, "shared names exist"


def test_track_and_album_names_in_scripts(small: Catalog) -> None:
    cyrillic_artists = [
        i
        for i in range(small.n_artists)
        if any("\u0400" <= c <= "\u04ff" for c in small.artist_name(i))
    ]
    assert cyrillic_artists
    i = cyrillic_artists[0]
    j = small.artist_albums(i, frozenset({"album", "single"}))[0][0]
    assert any("\u0400" <= c <= "\u04ff" for c in small.album_name(j))


def test_construction_errors() -> None:
    with pytest.raises(ValueError):
        Catalog(0, 1)
    assert issubclass(SearchQueryError, ValueError)
    tiny = Catalog(1, 3)
    assert tiny.n_artists == 1 and tiny.related_artists(0) == []
    assert tiny.search("a", ["artist"], 0, 10)["artist"][0] in (0, 1)


def test_name_keys_are_hashes_of_normalised_words(small: Catalog) -> None:
    """The vectorised per-part hashes equal the reference hash of the part's word ids, so equal
    name keys mean equal normalised names (used to cap identical names)."""
    from spotify_ingest.sim.names import hash_tokens

    vocab = small._vocab
    for part in sample(len(vocab.parts), 300):
        ids = [vocab.words.id_of(w) for w in tokenize(vocab.parts[part])]
        assert None not in ids
        assert int(vocab.part_hash[part]) == hash_tokens([i for i in ids if i is not None])
    by_key: dict[int, set[str]] = {}
    keys = vocab.name_keys(small._name_tpl, small._name_parts)
    for i in range(small.n_artists):
        by_key.setdefault(int(keys[i]), set()).add(" ".join(tokenize(small.artist_name(i))))
    assert all(len(names) == 1 for names in by_key.values())
