"""Search over the simulated catalog: semantics checked against brute force, and completeness."""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence

import pytest

from spotify_ingest.sim.catalog import Catalog, SearchQueryError
from spotify_ingest.sim.search_index import normalize, parse_query, tokenize

MAX_OFFSET = 1000
_CATALOGS: dict[tuple[int, int], Catalog] = {}


def get_catalog(n_artists: int, seed: int) -> Catalog:
    if (n_artists, seed) not in _CATALOGS:
        _CATALOGS[(n_artists, seed)] = Catalog(n_artists, seed)
    return _CATALOGS[(n_artists, seed)]


@pytest.fixture(scope="module")
def small() -> Catalog:
    return get_catalog(2000, 11)


@pytest.fixture(scope="module")
def medium() -> Catalog:
    return get_catalog(20000, 5)


def everything(cat: Catalog, q: str, kind: str) -> tuple[int, list[int]]:
    """All results of a query (no offset cap: the catalog only slices)."""
    total, items = cat.search(q, [kind], 0, 10**9)[kind]
    assert total == len(items)
    return total, items


# --------------------------------------------------------------------------------------------------
# brute force reference


def words_match(name: str, words: Sequence[str]) -> bool:
    tokens = tokenize(name)
    return all(any(t.startswith(w) for t in tokens) for w in words)


def ranked(items: list[int], popularity: Callable[[int], int]) -> list[int]:
    return sorted(items, key=lambda x: (-popularity(x), x))


def brute_artists(cat: Catalog, keep: Callable[[int], bool]) -> list[int]:
    return ranked([i for i in range(cat.n_artists) if keep(i)], cat.artist_popularity)


def brute_albums(cat: Catalog, keep: Callable[[int], bool]) -> list[int]:
    return ranked([j for j in range(cat.n_albums) if keep(j)], cat.album_popularity)


def brute_tracks(cat: Catalog, keep: Callable[[int], bool]) -> list[int]:
    return ranked([k for k in range(cat.n_tracks) if keep(k)], cat.track_popularity)


# --------------------------------------------------------------------------------------------------
# normalisation and parsing


def test_normalisation_and_words() -> None:
    assert normalize("Beyoncé") == "beyonce" == normalize("BEYONCE")
    assert tokenize("Sigur Rós") == ["sigur", "ros"]
    assert tokenize("AC/DC") == ["ac", "dc"]
    assert tokenize("Guns N' Roses") == ["guns", "n", "roses"]
    assert tokenize("P!nk") == ["p", "nk"]
    assert tokenize("blink-182") == ["blink", "182"]
    assert tokenize("2Pac") == ["2pac"]
    assert tokenize("周杰伦") == ["周杰伦"]
    assert tokenize("Мумий Тролль") == ["мумии", "тролль"]  # й is и + combining breve
    assert tokenize("فَيروز") == ["فيروز"]  # the vowel mark goes
    assert tokenize("ガガ") == tokenize("カカ")  # dakuten is a combining mark
    assert tokenize("Straße") == ["strasse"]


def test_parse_query() -> None:
    parsed = parse_query('Foo  artist:"The Bar" genre:"indie rock" year:2010-2000 tag:NEW b')
    assert parsed.words == ("b", "foo")
    assert parsed.artist == (("bar", "the"),)
    assert parsed.genre == (("indie", "rock"),)
    assert parsed.years == ((2000, 2010),)
    assert parsed.tags == ("new",)
    assert parse_query("ab a abc").words == ("abc",), "a word implied by a longer one goes"
    assert parse_query("foo:bar").words == ("bar", "foo"), "unknown fields are text"
    assert parse_query("Beyoncé") == parse_query("beyonce")
    for bad in ("", "   ", "!!!", "year:abc", "year:20x", "tag:cool", "artist:", 'genre:""'):
        with pytest.raises(SearchQueryError):
            parse_query(bad)


def test_errors_and_types(small: Catalog) -> None:
    with pytest.raises(SearchQueryError):
        small.search("", ["artist"], 0, 10)
    with pytest.raises(SearchQueryError):
        small.search("a", ["bogus"], 0, 10)
    result = small.search("a", ["show", "episode", "artist"], 0, 10)
    assert result["show"] == (0, []) and result["episode"] == (0, [])
    assert set(small.search("a", ["artist", "album"], 0, 10)) == {"artist", "album"}


# --------------------------------------------------------------------------------------------------
# free words


@pytest.mark.parametrize(
    "q", ["a", "s", "mo", "the", "lo", "b a", "ro the", "e i o", "zzzzq", "1", "dj"]
)
def test_free_words_exact_against_brute_force(small: Catalog, q: str) -> None:
    words = tokenize(q)
    for kind, name_of, brute in (
        ("artist", small.artist_name, brute_artists),
        ("album", small.album_name, brute_albums),
        ("track", small.track_name, brute_tracks),
    ):
        expected = exact_first(
            brute(small, lambda x, name_of=name_of: words_match(name_of(x), words)), name_of, words
        )
        assert everything(small, q, kind)[1] == expected, kind


def exact_first(
    ranked_items: list[int], name_of: Callable[[int], str], words: Sequence[str]
) -> list[int]:
    """Relevance: items having every query word as a whole name word come first, stably."""
    whole = [x for x in ranked_items if set(words) <= set(tokenize(name_of(x)))]
    return whole + [x for x in ranked_items if x not in set(whole)]


def test_whole_word_matches_rank_first(small: Catalog) -> None:
    _, items = everything(small, "the", "artist")
    flags = ["the" in tokenize(small.artist_name(i)) for i in items]
    assert any(flags) and not all(flags), "both kinds of match exist"
    first_partial = flags.index(False)
    assert all(flags[:first_partial]) and not any(flags[first_partial:])


def test_playlist_search(small: Catalog) -> None:
    total, found = everything(small, "hits", "playlist")
    expected = [
        p for p in range(small.n_playlists) if words_match(small.playlist_name(p), ["hits"])
    ]
    assert total > 0 and found == expected


def test_prefix_case_and_accent_insensitive(small: Catalog) -> None:
    accented = next(
        i for i in range(small.n_artists) if any(c in small.artist_name(i) for c in "éáóúíñü")
    )
    name = small.artist_name(accented)
    plain = normalize(name)
    for q in (name, name.upper(), plain, plain.upper(), " ".join(w[:3] for w in tokenize(name))):
        _, found = everything(small, q, "artist")
        assert accented in found, q
    assert everything(small, name, "artist") == everything(small, plain.upper(), "artist")


def test_every_artist_found_by_its_own_name(small: Catalog) -> None:
    for i in range(0, small.n_artists, 7):
        name = small.artist_name(i)
        if not tokenize(name):
            continue
        _, found = everything(small, name, "artist")
        assert i in found, name


@pytest.mark.parametrize("script", ["han", "kana", "hangul", "cyrillic", "arabic"])
def test_non_latin_prefixes(small: Catalog, script: str) -> None:
    ranges = {
        "han": ("\u4e00", "\u9fff"),
        "kana": ("\u3040", "\u30ff"),
        "hangul": ("\uac00", "\ud7a3"),
        "cyrillic": ("\u0400", "\u04ff"),
        "arabic": ("\u0600", "\u06ff"),
    }
    lo, hi = ranges[script]
    i = next(i for i in range(small.n_artists) if any(lo <= c <= hi for c in small.artist_name(i)))
    word = tokenize(small.artist_name(i))[0]
    original_word = next(w for w in small.artist_name(i).split() if tokenize(w) == [word])
    for q in (original_word, original_word[:2], original_word[:1], original_word.upper()):
        _, found = everything(small, q, "artist")
        assert i in found, (script, q)
        assert found == brute_artists(
            small, lambda a, q=q: words_match(small.artist_name(a), tokenize(q))
        )


# --------------------------------------------------------------------------------------------------
# filters


def test_artist_filter(small: Catalog) -> None:
    for phrase in ("a", "the", "mo", "ro s"):
        words = tokenize(phrase)
        q = f'artist:"{phrase}"'

        def artist_ok(a: int, words: list[str] = words) -> bool:
            return words_match(small.artist_name(a), words)

        assert everything(small, q, "artist")[1] == brute_artists(small, artist_ok)
        assert everything(small, q, "album")[1] == brute_albums(
            small, lambda j: any(artist_ok(a) for a in small.album_artists(j))
        )
        assert everything(small, q, "track")[1] == brute_tracks(
            small, lambda k: any(artist_ok(a) for a in small.track_artists(k))
        )
    # quoted words must match the same artist; free words combine with the filter
    q = "l artist:b"
    expected = brute_tracks(
        small,
        lambda k: (
            words_match(small.track_name(k), ["l"])
            and any(words_match(small.artist_name(a), ["b"]) for a in small.track_artists(k))
        ),
    )
    assert everything(small, q, "track")[1] == expected


def test_artist_filter_finds_collaborations(small: Catalog) -> None:
    k = next(k for k in range(small.n_tracks) if len(small.track_artists(k)) > 1)
    featured = small.track_artists(k)[1]
    _, found = everything(small, f'artist:"{small.artist_name(featured)}"', "track")
    assert k in found


def test_genre_filter(small: Catalog) -> None:
    for phrase in ("pop", "rock", "indie rock", "hip", "k-pop", "r&b", "zzz"):
        words = tokenize(phrase)

        def genre_ok(a: int, words: list[str] = words) -> bool:
            return any(
                all(any(t.startswith(w) for t in tokenize(g)) for w in words)
                for g in small.artist_genres(a)
            )

        q = f'genre:"{phrase}"'
        assert everything(small, q, "artist")[1] == brute_artists(small, genre_ok)
        assert everything(small, q, "track")[1] == brute_tracks(
            small, lambda k: any(genre_ok(a) for a in small.track_artists(k))
        )
        assert everything(small, q, "album") == (0, []), "genre: does not apply to albums"
    total, _ = everything(small, "genre:pop", "artist")
    assert total > 0


def test_year_filter(small: Catalog) -> None:
    for q, first, last in (
        ("year:2020", 2020, 2020),
        ("year:1990-2005", 1990, 2005),
        ("year:2026-2024", 2024, 2026),
    ):

        def active(i: int, first: int = first, last: int = last) -> bool:
            start, end = small.artist_years(i)
            return start <= last and end >= first

        assert everything(small, q, "artist")[1] == brute_artists(small, active)
        assert everything(small, q, "album")[1] == brute_albums(
            small, lambda j, first=first, last=last: first <= small.album_release(j).year <= last
        )
        assert everything(small, q, "track")[1] == brute_tracks(
            small,
            lambda k, first=first, last=last: (
                first <= small.album_release(small.track_album(k)).year <= last
            ),
        )
    combined = everything(small, "a year:2024-2026", "album")[1]
    assert combined == brute_albums(
        small,
        lambda j: (
            words_match(small.album_name(j), ["a"]) and 2024 <= small.album_release(j).year <= 2026
        ),
    )


def test_tags(small: Catalog) -> None:
    new_total, new = everything(small, "tag:new", "album")
    assert new_total > 0
    assert new == brute_albums(
        small, lambda j: 0 <= (small.today - small.album_release(j)).days <= 13
    )
    hip_total, hip = everything(small, "tag:hipster", "album")
    ordered = ranked(list(range(small.n_albums)), small.album_popularity)
    assert hip == ordered[len(ordered) - hip_total :]
    assert hip_total == -(-small.n_albums // 10)
    assert max(small.album_popularity(j) for j in hip) <= min(
        small.album_popularity(j) for j in ordered[:-hip_total]
    )
    for kind in ("artist", "track"):
        assert everything(small, "tag:new", kind) == (0, []), "tags apply to albums only"
    assert everything(small, "a tag:new tag:hipster", "album")[1] == [
        j for j in new if j in set(hip) and words_match(small.album_name(j), ["a"])
    ]


def test_album_and_track_filters(small: Catalog) -> None:
    assert everything(small, "album:a", "album")[1] == brute_albums(
        small, lambda j: words_match(small.album_name(j), ["a"])
    )
    assert everything(small, "album:a", "track")[1] == brute_tracks(
        small, lambda k: words_match(small.album_name(small.track_album(k)), ["a"])
    )
    assert everything(small, "track:lo", "track")[1] == brute_tracks(
        small, lambda k: words_match(small.track_name(k), ["lo"])
    )
    assert everything(small, "track:lo", "album") == (0, [])
    assert everything(small, "album:a", "artist") == (0, [])


# --------------------------------------------------------------------------------------------------
# ranking, paging, multi-type


def test_ranking_and_paging(small: Catalog) -> None:
    total, found = everything(small, "mo", "track")
    pops = [small.track_popularity(k) for k in found]
    assert pops == sorted(pops, reverse=True), "no whole-word 'mo' track: pure popularity order"
    pages: list[int] = []
    for offset in range(0, total + 20, 10):
        t, page = small.search("mo", ["track"], offset, 10)["track"]
        assert t == total
        pages.extend(page)
    assert pages == found
    assert small.search("mo", ["track"], total + 5, 10)["track"] == (total, [])
    assert small.search("mo", ["track"], 0, 0)["track"] == (total, [])
    _, artists = everything(small, "zo", "artist")
    assert artists == sorted(artists), "artist index is the popularity rank"


def test_multi_type_results(small: Catalog) -> None:
    result = small.search("mo", ["artist", "album", "track", "playlist"], 0, 5)
    assert set(result) == {"artist", "album", "track", "playlist"}
    for kind in ("artist", "album", "track"):
        assert result[kind] == small.search("mo", [kind], 0, 5)[kind]
        assert result[kind][0] > 5 and len(result[kind][1]) == 5


def test_search_deterministic_across_instances() -> None:
    a, b = Catalog(1200, 77), Catalog(1200, 77)
    for q in ("a", "the", "genre:rock", "year:2015-2020 b", "tag:hipster", 'artist:"m"'):
        assert a.search(q, ["artist", "album", "track"], 0, 100) == b.search(
            q, ["artist", "album", "track"], 0, 100
        )
    c = Catalog(1200, 78)
    assert a.search("a", ["artist"], 0, 100) != c.search("a", ["artist"], 0, 100)


def test_cached_queries_are_fast(medium: Catalog) -> None:
    medium.search("s", ["artist", "album", "track"], 0, 10)
    start = time.perf_counter()
    for offset in range(0, 1000, 10):
        medium.search("s", ["artist", "album", "track"], offset, 10)
    per_call = (time.perf_counter() - start) / 100
    assert per_call < 0.002  # ~0.02 ms measured; generous for a loaded CI machine


# --------------------------------------------------------------------------------------------------
# completeness: every artist is reachable within the offset cap


def test_every_artist_reachable_under_offset_cap(medium: Catalog) -> None:
    """Walk the prefix tree: a query with more than 1010 results (offset <= 1000, limit 10) is
    split into longer prefixes; when the prefix is itself a whole name word, also split by year;
    groups still too big are split by genre. The leaves must cover every artist."""
    cap = MAX_OFFSET + 10
    name_words = sorted(
        {w for i in range(medium.n_artists) for w in tokenize(medium.artist_name(i))}
    )
    word_set = set(name_words)
    first_year = min(medium.artist_years(i)[0] for i in range(medium.n_artists))
    genres = sorted({g for i in range(medium.n_artists) for g in medium.artist_genres(i)})
    covered: set[int] = set()
    queries = 0
    split_by_year = 0

    def next_chars(prefix: str) -> list[str]:
        lo = bisect.bisect_left(name_words, prefix)
        hi = bisect.bisect_left(name_words, prefix + "\U0010ffff")
        return sorted({w[len(prefix)] for w in name_words[lo:hi] if len(w) > len(prefix)})

    def collect(q: str) -> int:
        nonlocal queries
        total, _ = medium.search(q, ["artist"], 0, 0)["artist"]
        queries += 1
        if total <= cap:
            for offset in range(0, min(total, MAX_OFFSET + 1), 10):
                covered.update(medium.search(q, ["artist"], offset, 10)["artist"][1])
        return total

    def walk(prefix: str) -> None:
        nonlocal split_by_year
        if collect(prefix) <= cap:
            return
        for ch in next_chars(prefix):
            walk(prefix + ch)
        if prefix in word_set:  # artists whose word is exactly the prefix: split by year active
            split_by_year += 1
            for year in range(first_year, medium.today.year + 1):
                q = f"{prefix} year:{year}"
                if collect(q) > cap:
                    for genre in genres:
                        assert collect(f'{q} genre:"{genre}"') <= cap, q

    for ch in sorted({w[0] for w in name_words}):
        walk(ch)
    missing = set(range(medium.n_artists)) - covered
    examples = [medium.artist_name(i) for i in sorted(missing)[:5]]
    assert not missing, f"{len(missing)} artists unreachable, e.g. {examples}"
    assert queries < 20_000
    assert split_by_year > 0 or queries > 200, "the walk had to split"


# --------------------------------------------------------------------------------------------------
# index helpers


def test_set_helpers() -> None:
    import numpy as np

    from spotify_ingest.sim.search_index import (
        MatchCache,
        Postings,
        Vocabulary,
        gather_rows,
        intersect_sorted,
        union_of,
    )

    rng = np.random.default_rng(3)
    for size, n_items in ((50, 10_000), (5_000, 10_000)):  # sort path, bitmap path
        raw = rng.integers(0, n_items, size=size).astype(np.int32)
        assert union_of(raw, n_items).tolist() == sorted(set(raw.tolist()))
    a = np.asarray([1, 4, 9, 12, 30], dtype=np.int32)
    b = np.asarray([0, 4, 5, 12, 31, 40], dtype=np.int32)
    assert intersect_sorted(a, b).tolist() == [4, 12] == intersect_sorted(b, a).tolist()
    assert intersect_sorted(a, b[:0]).tolist() == []
    indptr = np.asarray([0, 2, 2, 5], dtype=np.int64)
    values = np.asarray([7, 8, 1, 2, 3], dtype=np.int32)
    assert gather_rows(indptr, values, np.asarray([2, 0, 1])).tolist() == [1, 2, 3, 7, 8]
    vocab = Vocabulary(["moon", "moonlight", "mood", "sun", "moon"])
    assert vocab.words == ["mood", "moon", "moonlight", "sun"]
    assert vocab.prefix_range("moo") == (0, 3) and vocab.prefix_range("moon") == (1, 3)
    assert vocab.prefix_range("x") == (4, 4)
    postings = Postings.build(
        np.asarray([1, 2, 1, 3, 0]), np.asarray([5, 5, 2, 1, 5]), n_words=4, n_items=6
    )
    assert postings.range_set(1, 3).tolist() == [2, 5]  # moon*, deduplicated
    assert postings.range_set(1, 2).tolist() == [2, 5]
    cache = MatchCache(max_bytes=4000)
    for key in range(10):
        cache.put(key, np.arange(200, dtype=np.int32))  # 900 bytes each with overhead
    assert len(cache) == 4 and cache.get(0) is None and cache.get(9) is not None
