"""The simulator's deterministic artist catalog: artists, releases, tracks, playlists, search.

``Catalog(n_artists, seed)`` builds everything from ``seed`` with numpy - one array per attribute,
integer word ids for names, no per-artist Python objects - and renders API objects on demand.

How the catalog is generated
----------------------------
* **Popularity.** Artist index ``i`` is its popularity rank. Each catalog is a uniform sample of a
  virtual 15M-artist catalog (the real size) that always keeps the top artist: artist ``i`` has
  virtual rank ``v = 1 + i * 15e6 / n`` and obscurity ``o = log10(v) / log10(15e6)`` in [0, 1].
  ``popularity = round(100 * (1 - o**2))`` (non-increasing in ``i``: the median artist is ~10) and
  ``followers ~ 1.2e8 * v**-0.95`` times log-normal noise. Everything below depends on ``o``, so
  a 20k catalog looks like a 1M one with fewer artists.
* **Names** (see :mod:`names`): a template and up to three parts; ~44% single-word names, the
  rest two words, three words, ``The ...``, ``DJ ...``, ``... & the ...``; 14% are written in
  Han, kana, Hangul, Cyrillic or Arabic script. No normalised name is shared by more than
  ``MAX_SAME_NAME`` artists (excess duplicates are renamed), so every artist is reachable by search.
* **Genres** (see :mod:`genres`): 0-3 per artist; the primary genre follows the script, the
  others mostly come from the same family; the chance of none grows to ~80% in the long tail.
* **Releases.** ``1 + 55 * v**-0.32`` releases on average (the top artist ~55, the tail 1-2).
  The tail's first release is an album (4-6 tracks) 30% of the time, the rest are singles (1-3
  tracks): under ten tracks in total. Popular artists also release compilations; half of those
  are multi-artist ("Various Artists"-style: tracks by similar artists, who are listed as album
  artists). Release dates span a career ending near the catalog's ``today`` for active artists,
  so ``tag:new`` and new releases are populated. Years active = first to last year of the
  artist's own releases (as main artist).
* **Collaborations.** A track features 1-2 other artists with probability ``0.015 + 0.3*(1-o)**2``.
  Partners are drawn near the lead artist in the list of artists sorted by (primary genre,
  popularity): same genre, similar popularity, wider spread further down the tail.
* **Related artists** (on demand): the same-genre neighbours of similar popularity (then same
  family, then popularity neighbours), scored by genre overlap then popularity distance, <= 20.
  Only artists in the top ``LINKED_SHARE`` of the catalog are ever *returned* as related, and
  playlists draw from the top tracks, so the long tail has no in-links except rare
  collaborations: reachable only by search, as in reality.
* **Playlists.** ~35 featured playlists, 20 categories of 8-12 playlists, and 5 playlists owned by
  the app (``app-owner``); 50-100 tracks each, drawn with a skew from the most popular tracks
  (category playlists from tracks whose lead artist is in the category's genre families).
* **Ids** are 22 base62 characters encoding a 128-bit number ``tag << 64 | y`` where ``y`` is a
  keyed bijection of the 64-bit index (xor, odd multiply, xorshift, odd multiply, xorshift; keys
  from seed and kind) and ``tag`` a keyed SplitMix64 hash of ``y``: reversible without a dict
  (modular inverses undo the multiplies), seed-dependent, and a foreign id fails the tag check
  (odds 2**-64).
* **Per-object details** (durations, ISRCs, UPCs, labels, markets, image hashes, explicit flags)
  are hashes of (seed, kind, index), computed when the object is rendered.

Storage is ordered for the API: an artist's releases are contiguous and already in Spotify order
(album, single, compilation; newest first); an album's tracks are contiguous. Search runs in
*rank space* (see :mod:`search_index`): postings of name words per type, CSR maps artist -> album
ranks and artist -> track ranks for ``artist:``, per-rank year/day arrays for ``year:``/``tag:``.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import zlib
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, NamedTuple

import numpy as np
import numpy.typing as npt

from spotify_ingest.sim import names as nm
from spotify_ingest.sim.genres import CATEGORIES, FAMILIES, GENRE_FAMILY, GENRES, SCRIPT_FAMILIES
from spotify_ingest.sim.search_index import (
    EMPTY_RANKS,
    MatchCache,
    ParsedQuery,
    Postings,
    Ranks,
    SearchQueryError,
    Vocabulary,
    gather_rows,
    intersect_sorted,
    parse_query,
    sorted_unique,
    tokenize,
    union_of,
)

__all__ = ["DEFAULT_TODAY", "MAX_SAME_NAME", "Catalog", "SearchQueryError"]

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
U16 = npt.NDArray[np.uint16]
F64 = npt.NDArray[np.float64]

DEFAULT_TODAY = dt.date(2026, 9, 1)
VIRTUAL_CATALOG = 15_000_000
MAX_SAME_NAME = 48  # "a few dozen"; the brief allows up to ~500
LINKED_SHARE = 0.4  # artists beyond this rank fraction never appear as related artists
NO_GENRE = np.uint16(0xFFFF)
ALBUM, SINGLE, COMPILATION, APPEARS_ON = 0, 1, 2, 3
GROUP_NAMES = ("album", "single", "compilation", "appears_on")
GROUP_CODES = {name: code for code, name in enumerate(GROUP_NAMES)}
SEARCH_TYPES = ("artist", "album", "track", "playlist")
OTHER_SPOTIFY_TYPES = frozenset({"show", "episode", "audiobook"})
EPOCH = dt.date(1970, 1, 1)
APP_OWNER = "app-owner"
SPOTIFY_OWNER = "spotify"

_KIND_CODES = {"artist": 0, "album": 1, "track": 2, "playlist": 3}
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BASE62_INDEX = {c: i for i, c in enumerate(_BASE62)}
_BASE62_PAIRS = tuple(a + b for a in _BASE62 for b in _BASE62)
_M32 = 0xFFFFFFFF
_M64 = (1 << 64) - 1
_SCRIPTS = ("latin", "han", "kana", "hangul", "cyrillic", "arabic")
_SCRIPT_SHARE = (0.86, 0.03, 0.025, 0.025, 0.035, 0.025)
_MARKETS = (
    "US",
    "GB",
    "DE",
    "FR",
    "ES",
    "IT",
    "SE",
    "NL",
    "BR",
    "MX",
    "AR",
    "CA",
    "AU",
    "JP",
    "KR",
    "IN",
)
_MAJOR_LABELS = (
    "Columbia",
    "Atlantic Records",
    "Republic Records",
    "Interscope Records",
    "RCA Records",
    "Island Records",
    "Capitol Records",
    "Def Jam Recordings",
    "Warner Records",
    "Epic",
    "Polydor",
    "Parlophone",
    "XL Recordings",
    "Sub Pop Records",
    "Domino Recording Co",
    "Matador Records",
    "Warp Records",
    "Ninja Tune",
    "4AD",
    "Rough Trade",
    "Big Machine",
    "Top Dawg Entertainment",
    "HYBE",
    "SM Entertainment",
    "Avex Trax",
    "Rimas Entertainment",
)
_INDIE_LABELS = ("DistroKid", "Independent", "Self-released", "TuneCore", "CD Baby", "Amuse")
_ARTIST_IMAGE_PREFIXES = (
    ("ab6761610000e5eb", 640),
    ("ab67616100005174", 300),
    ("ab6761610000f178", 64),
)
_ALBUM_IMAGE_PREFIXES = (
    ("ab67616d0000b273", 640),
    ("ab67616d00001e02", 300),
    ("ab67616d00004851", 64),
)
_FEATURED_NAMES = (
    "Today's Top Hits",
    "Global Top 50",
    "Viral Hits",
    "New Music Friday",
    "Hot Hits",
    "Songs to Sing in the Car",
    "Chill Vibes",
    "Mood Booster",
    "Beast Mode",
    "Deep Focus",
    "Peaceful Piano",
    "All Out 2010s",
    "All Out 2000s",
    "All Out 90s",
    "Rock Classics",
    "RapCaviar",
    "Baila Reggaeton",
    "mint",
    "Are & Be",
    "Hot Country",
    "Dance Party",
    "Fresh Finds",
    "Lorem",
    "Pollen",
    "Just Good Music",
    "Throwback Thursday",
    "Sleep",
    "Happy Hits!",
    "Life Sucks",
    "Anime Hits",
)
_CATEGORY_PLAYLIST_PATTERNS = (
    "{c} Hits",
    "Fresh {c}",
    "{c} Essentials",
    "{c} Classics",
    "{c} Rising",
    "All New {c}",
    "{c} Mix",
    "Best of {c}",
    "Chill {c}",
    "{c} Anthems",
    "{c} Deep Cuts",
    "{c} Gold",
)
_OWNED_NAMES = ("Crawl Seeds", "My Test Playlist", "Road Trip", "Favourites", "Discover Later")


class _IdKeys(NamedTuple):
    """Keys of one id kind: ``y = mix(index)`` (xor, odd multiply, xorshift, odd multiply,
    xorshift: a bijection of 64-bit integers) and the tag hash key."""

    xor_key: int
    mul1: int
    mul2: int
    inv1: int
    inv2: int
    tag_key: int


def _u64(x: int) -> np.uint64:
    return np.uint64(x & _M64)


def _stream_seed(seed: int, stream: str) -> np.random.SeedSequence:
    s = seed & _M64
    return np.random.SeedSequence([s & _M32, s >> 32, zlib.crc32(stream.encode())])


class Catalog:
    """Deterministic simulated catalog; see the module docstring for how it is generated.

    Immutable after construction (safe to share between threads); only the search caches change.
    """

    def __init__(
        self,
        n_artists: int,
        seed: int,
        *,
        today: dt.date = DEFAULT_TODAY,
        api_base: str = "https://api.spotify.com/v1",
        cache_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        if n_artists < 1:
            raise ValueError("n_artists must be >= 1")
        self.n_artists = int(n_artists)
        self.seed = int(seed)
        self.today = today
        self.api_base = api_base.rstrip("/")
        self._today_day = (today - EPOCH).days
        self._id_keys = {kind: self._derive_keys(code) for kind, code in _KIND_CODES.items()}
        self._id_cache: dict[str, dict[int, str]] = {kind: {} for kind in _KIND_CODES}
        self._lock = threading.Lock()
        self._matches = MatchCache(max_bytes=cache_bytes)
        self._parsed: dict[str, ParsedQuery] = {}
        self._genre_words = [tokenize(g) for g in GENRES]
        family_names = list(FAMILIES)
        self._family_of = [family_names.index(f) for f in GENRE_FAMILY]

        self._vocab = nm.build_vocabulary(self._rng("vocabulary"), self.n_artists)
        self._build_artists()
        self._build_releases()
        self._build_tracks()
        self._build_discographies()
        self._build_search()
        self._build_playlists()
        # arrays needed only while building
        del self._virtual_rank, self._obscurity, self._genre_pos, self._genre_order
        del self._album_multi, self._album_rank, self._co_album, self._co_artist

    # ------------------------------------------------------------------------------------------
    # construction

    def _rng(self, stream: str) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(_stream_seed(self.seed, stream)))

    def _derive_keys(self, kind_code: int) -> _IdKeys:
        base = nm.splitmix64((self.seed & _M64) ^ (0xA5A5_0000 + kind_code))
        xor_key = nm.splitmix64(base + 1)
        mul1 = nm.splitmix64(base + 2) | 1  # odd: invertible modulo 2**64
        mul2 = nm.splitmix64(base + 3) | 1
        return _IdKeys(
            xor_key,
            mul1,
            mul2,
            pow(mul1, -1, 1 << 64),
            pow(mul2, -1, 1 << 64),
            nm.splitmix64(base ^ 0x5DEECE66D),
        )

    def _build_artists(self) -> None:
        n = self.n_artists
        rng = self._rng("artists")
        idx = np.arange(n, dtype=np.float64)
        v = 1.0 + idx * (max(VIRTUAL_CATALOG, n) / n)
        self._obscurity: F64 = np.clip(np.log10(v) / math.log10(VIRTUAL_CATALOG), 0.0, 1.0)
        pop = np.round(100.0 * (1.0 - self._obscurity**2))
        self._popularity: U8 = np.minimum.accumulate(pop).astype(np.uint8)
        followers = 1.2e8 * v**-0.95 * rng.lognormal(0.0, 0.6, size=n)
        self._followers: npt.NDArray[np.uint32] = np.minimum(np.round(followers), 4e9).astype(
            np.uint32
        )
        self._has_images = rng.random(n) < (0.98 - 0.5 * self._obscurity)
        self._virtual_rank = v

        script = rng.choice(len(_SCRIPTS), size=n, p=np.asarray(_SCRIPT_SHARE))
        self._script: U8 = script.astype(np.uint8)
        self._build_artist_genres(rng)
        self._build_artist_names(rng)

    def _build_artist_genres(self, rng: np.random.Generator) -> None:
        n = self.n_artists
        family_names = list(FAMILIES)
        family_genres = [
            np.asarray([GENRES.index(g) for g in FAMILIES[f]], dtype=np.int64) for f in family_names
        ]
        genres = np.full((n, 3), NO_GENRE, dtype=np.uint16)
        o = self._obscurity
        p_none = 0.03 + 0.77 * o**4
        count = np.where(rng.random(n) < p_none, 0, 1 + rng.choice(3, size=n, p=[0.4, 0.35, 0.25]))
        count = np.where((o > 0.8) & (count == 3), 1, count)
        primary_family = np.zeros(n, dtype=np.int64)
        for s, script in enumerate(_SCRIPTS):
            sel = np.flatnonzero(self._script == s)
            fams = SCRIPT_FAMILIES[script]
            weights = np.asarray([w for _, w in fams], dtype=np.float64)
            choice = rng.choice(len(fams), size=len(sel), p=weights / weights.sum())
            primary_family[sel] = np.asarray([family_names.index(f) for f, _ in fams])[choice]
        latin_families = np.asarray([family_names.index(f) for f, _ in SCRIPT_FAMILIES["latin"]])
        for col in range(3):
            u = rng.random(n)
            other_family = latin_families[rng.integers(0, len(latin_families), size=n)]
            fam = primary_family if col == 0 else np.where(u < 0.75, primary_family, other_family)
            if col > 0:  # keep scripts apart: foreign families only for latin-script artists
                fam = np.where(self._script == 0, fam, primary_family)
            z = rng.random(n) ** 2.2
            chosen = np.zeros(n, dtype=np.int64)
            for f, members in enumerate(family_genres):
                sel = fam == f
                chosen[sel] = members[
                    np.minimum((z[sel] * len(members)).astype(np.int64), len(members) - 1)
                ]
            genres[:, col] = np.where(count > col, chosen, NO_GENRE).astype(np.uint16)
        # drop duplicate genres inside a row, keep the order (primary first)
        dup1 = genres[:, 1] == genres[:, 0]
        genres[dup1, 1] = NO_GENRE
        dup2 = (genres[:, 2] == genres[:, 0]) | (genres[:, 2] == genres[:, 1])
        genres[dup2, 2] = NO_GENRE
        move = (genres[:, 1] == NO_GENRE) & (genres[:, 2] != NO_GENRE)
        genres[move, 1] = genres[move, 2]
        genres[move, 2] = NO_GENRE
        self._genres: U16 = genres

        # artists sorted by (primary genre, index): neighbours = same genre, similar popularity
        primary = genres[:, 0].astype(np.int64)
        self._genre_order: I32 = np.lexsort((np.arange(n), primary)).astype(np.int32)
        sorted_primary = primary[self._genre_order]
        buckets = np.arange(len(GENRES) + 1, dtype=np.int64)
        buckets[-1] = int(NO_GENRE)
        self._bucket_lo: I64 = np.searchsorted(sorted_primary, buckets, side="left").astype(
            np.int64
        )
        self._bucket_hi: I64 = np.searchsorted(sorted_primary, buckets, side="right").astype(
            np.int64
        )
        pos = np.empty(n, dtype=np.int32)
        pos[self._genre_order] = np.arange(n, dtype=np.int32)
        self._genre_pos: I32 = pos
        # genre -> artists (any of the 3 columns), sorted by artist index
        flat_g = genres.reshape(-1).astype(np.int64)
        flat_a = np.repeat(np.arange(n, dtype=np.int64), 3)
        has = flat_g != int(NO_GENRE)
        key = flat_g[has] * n + flat_a[has]
        key.sort()
        g_of = key // n
        self._genre_artists: I32 = (key - g_of * n).astype(np.int32)
        self._genre_ptr: I64 = np.zeros(len(GENRES) + 1, dtype=np.int64)
        np.cumsum(np.bincount(g_of, minlength=len(GENRES)), out=self._genre_ptr[1:])

    def _bucket_of(self, artists: npt.NDArray[np.integer]) -> I64:
        g = self._genres[artists, 0].astype(np.int64)
        return np.where(g == int(NO_GENRE), len(GENRES), g)

    def _build_artist_names(self, rng: np.random.Generator) -> None:
        n = self.n_artists
        vocab = self._vocab
        templates = np.zeros(n, dtype=np.uint8)
        parts = np.full((n, 3), -1, dtype=np.int32)
        for s, script in enumerate(_SCRIPTS):
            sel = np.flatnonzero(self._script == s)
            if script == "latin":
                mix = nm.ARTIST_LATIN_TEMPLATES
            else:
                mix = nm.script_template_mix(
                    script, 0.15 if script in ("han", "kana", "hangul") else 0.5
                )
            t, p = nm.generate_names(rng, vocab, mix, len(sel))
            templates[sel] = t
            parts[sel] = p
        # cap identical normalised names: rename the excess (least popular first) with fresh words
        for _ in range(20):
            keys = vocab.name_keys(templates, parts)
            order = np.argsort(keys, kind="stable")
            sorted_keys = keys[order]
            starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
            group_rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
            excess = order[group_rank >= MAX_SAME_NAME]
            if len(excess) == 0:
                break
            fresh = vocab.pick("synth", rng.random(len(excess)), 1.0)
            parts[excess, 0] = fresh
        self._name_tpl: U8 = templates
        self._name_parts: I32 = parts

    def _partners(self, rng: np.random.Generator, leads: I64, spread: float) -> I64:
        """A similar artist for each lead (same primary genre, near in popularity); -1 if none."""
        if len(leads) == 0:
            return np.zeros(0, dtype=np.int64)
        bucket = self._bucket_of(leads)
        lo = self._bucket_lo[bucket]
        hi = self._bucket_hi[bucket]
        pos = self._genre_pos[leads].astype(np.int64)
        scale = spread + 0.03 * (pos - lo)
        mag = 1 + np.floor(rng.exponential(1.0, size=len(leads)) * scale).astype(np.int64)
        sign = np.where(rng.random(len(leads)) < 0.5, -1, 1)
        target = pos + sign * mag
        outside = (target < lo) | (target >= hi)
        target = np.where(outside, pos - sign * mag, target)
        target = np.clip(target, lo, hi - 1)
        same = target == pos
        target = np.where(same & (pos + 1 < hi), pos + 1, np.where(same, pos - 1, target))
        ok = (hi - lo >= 2) & (target >= lo) & (target < hi)
        return np.where(
            ok, self._genre_order[np.clip(target, 0, self.n_artists - 1)].astype(np.int64), -1
        )

    def _build_releases(self) -> None:
        n = self.n_artists
        rng = self._rng("releases")
        o = self._obscurity
        base = 1.0 + 55.0 * self._virtual_rank**-0.32
        n_rel = np.maximum(1, np.floor(base + rng.random(n))).astype(np.int64)
        rel_artist = np.repeat(np.arange(n, dtype=np.int64), n_rel)
        first_of = np.cumsum(n_rel) - n_rel
        rel_k = np.arange(len(rel_artist), dtype=np.int64) - np.repeat(first_of, n_rel)
        m = len(rel_artist)
        ro = o[rel_artist]
        tail = ro > 0.8
        u = rng.random(m)
        rtype = np.full(m, SINGLE, dtype=np.uint8)
        rtype[tail & (rel_k == 0) & (u < 0.3)] = ALBUM
        nt = ~tail
        rtype[nt & (u < 0.25 + 0.2 * (1.0 - ro))] = ALBUM
        rtype[nt & (ro < 0.7) & (u < 0.08)] = COMPILATION
        multi = (rtype == COMPILATION) & (rng.random(m) < 0.5)

        # careers and release days
        today = self._today_day
        active = rng.random(n) < (0.92 - 0.35 * o)
        career_years = np.minimum(rng.exponential(3.0 + 14.0 * (1.0 - o)), 70.0)
        start_day = today - (career_years * 365.25).astype(np.int64) - rng.integers(0, 365, size=n)
        start_day = np.maximum(start_day, (dt.date(1950, 1, 1) - EPOCH).days)
        last_day = np.where(
            active,
            today - np.floor(rng.exponential(300.0, size=n)).astype(np.int64),
            start_day + (rng.random(n) * np.maximum(today - 400 - start_day, 0)).astype(np.int64),
        )
        last_day = np.clip(last_day, start_day, today)
        span = last_day - start_day
        rday = start_day[rel_artist] + (rng.random(m) * span[rel_artist]).astype(np.int64)
        rday = np.where(rel_k == 0, last_day[rel_artist], rday)

        # Spotify order inside an artist: group, newest first, then generation order
        order = np.lexsort((rel_k, -rday, rtype, rel_artist))
        self.n_albums = int(m)
        self._album_artist: I32 = rel_artist[order].astype(np.int32)
        self._album_type: U8 = rtype[order]
        self._album_day: I32 = rday[order].astype(np.int32)
        self._album_multi = multi[order]
        self._album_start: I64 = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(n_rel, out=self._album_start[1:])
        years = self._day_years(self._album_day)
        self._album_year: U16 = years
        precision = np.zeros(m, dtype=np.uint8)  # 0 day, 1 month, 2 year
        up = rng.random(m)
        precision[(years < 1980) & (up < 0.6)] = 2
        precision[(precision == 0) & (up > 0.97)] = 1
        self._album_precision: U8 = precision
        # years active: first to last release year (albums are contiguous per artist)
        starts = self._album_start[:-1]
        self._year_start: U16 = np.minimum.reduceat(years, starts).astype(np.uint16)
        self._year_end: U16 = np.maximum.reduceat(years, starts).astype(np.uint16)

        # track counts
        ao = o[self._album_artist]
        atype = self._album_type
        ut = rng.random(m)
        counts = np.ones(m, dtype=np.int64)
        single = atype == SINGLE
        counts[single] = 1 + (ut[single] < 0.35) + (ut[single] < 0.12)
        album = atype == ALBUM
        tail_album = album & (ao > 0.8)
        counts[tail_album] = 4 + rng.integers(0, 3, size=int(tail_album.sum()))
        big_album = album & ~tail_album
        counts[big_album] = np.clip(
            np.round(rng.normal(11.0, 3.0, size=int(big_album.sum()))), 6, 30
        ).astype(np.int64)
        comp = atype == COMPILATION
        counts[comp] = 12 + rng.integers(0, 21, size=int(comp.sum()))
        self._track_start: I64 = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(counts, out=self._track_start[1:])
        self.n_tracks = int(self._track_start[-1])

        # album popularity: the artist's, lowered by age and chance
        age_years = (today - self._album_day.astype(np.int64)) / 365.25
        apop = (
            self._popularity[self._album_artist].astype(np.float64) * (0.7 + 0.3 * rng.random(m))
            - 0.4 * age_years
        )
        self._album_pop: U8 = np.clip(np.round(apop), 0, 100).astype(np.uint8)

        # album names (singles are renamed after their first track once tracks exist)
        names_rng = self._rng("album-names")
        tpl = np.zeros(m, dtype=np.uint8)
        parts = np.full((m, 3), -1, dtype=np.int32)
        script = self._script[self._album_artist]
        for s, sname in enumerate(_SCRIPTS):
            for is_comp in (False, True):
                sel = np.flatnonzero((script == s) & ((atype == COMPILATION) == is_comp))
                if len(sel) == 0:
                    continue
                if sname != "latin":
                    mix = nm.script_template_mix(sname, 0.3)
                elif is_comp:
                    mix = nm.COMPILATION_TEMPLATE_MIX
                else:
                    mix = nm.ALBUM_TEMPLATE_MIX
                t, p = nm.generate_names(names_rng, self._vocab, mix, len(sel))
                tpl[sel] = t
                parts[sel] = p
        self._album_tpl: U8 = tpl
        self._album_parts: I32 = parts

    @staticmethod
    def _day_years(days: npt.NDArray[np.integer]) -> U16:
        dates = np.asarray(days, dtype="datetime64[D]")
        return (dates.astype("datetime64[Y]").astype(np.int64) + 1970).astype(np.uint16)

    def _build_tracks(self) -> None:
        rng = self._rng("tracks")
        m, t_count = self.n_albums, self.n_tracks
        counts = np.diff(self._track_start)
        track_album = np.repeat(np.arange(m, dtype=np.int64), counts)
        position = np.arange(t_count, dtype=np.int64) - self._track_start[track_album]
        lead = self._album_artist[track_album].astype(np.int64)
        # multi-artist compilations: tracks after the first by similar artists
        on_multi = self._album_multi[track_album] & (position > 0)
        sel = np.flatnonzero(on_multi)
        if len(sel):
            partners = self._partners(rng, lead[sel], spread=30.0)
            lead[sel] = np.where(partners >= 0, partners, lead[sel])
        self._track_lead: I32 = lead.astype(np.int32)

        # featured artists
        lo = self._obscurity[lead]
        p_feat = 0.015 + 0.3 * (1.0 - lo) ** 2
        has_feat = rng.random(t_count) < p_feat
        feat_tracks = np.flatnonzero(has_feat)
        second = feat_tracks[rng.random(len(feat_tracks)) < 0.2]
        f_tracks = np.concatenate([feat_tracks, second])
        f_artists = self._partners(rng, lead[f_tracks], spread=3.0)
        keep = (f_artists >= 0) & (f_artists != lead[f_tracks])
        f_tracks, f_artists = f_tracks[keep], f_artists[keep]
        key = sorted_unique(f_tracks * self.n_artists + f_artists)
        f_tracks = key // self.n_artists
        self._feat_track: I32 = f_tracks.astype(np.int32)
        self._feat_artist: I32 = (key - f_tracks * self.n_artists).astype(np.int32)

        # popularity
        apop = self._album_pop[track_album].astype(np.int64)
        tpop = apop - rng.integers(0, 10, size=t_count) - np.minimum(position, 20) // 3
        self._track_pop: U8 = np.clip(tpop, 0, 100).astype(np.uint8)

        # names
        names_rng = self._rng("track-names")
        tpl = np.zeros(t_count, dtype=np.uint8)
        parts = np.full((t_count, 3), -1, dtype=np.int32)
        script = self._script[lead]
        for s, sname in enumerate(_SCRIPTS):
            sel = np.flatnonzero(script == s)
            if len(sel) == 0:
                continue
            mix = nm.TRACK_TEMPLATE_MIX if sname == "latin" else nm.script_template_mix(sname, 0.3)
            t, p = nm.generate_names(names_rng, self._vocab, mix, len(sel))
            tpl[sel] = t
            parts[sel] = p
        self._track_tpl: U8 = tpl
        self._track_parts: I32 = parts
        singles = np.flatnonzero(self._album_type == SINGLE)
        first = self._track_start[singles]
        self._album_tpl[singles] = tpl[first]
        self._album_parts[singles] = parts[first]

        # album artists beyond the main one: distinct leads of multi-artist compilations (<= 3)
        multi = np.flatnonzero(self._album_multi)
        co_album: list[I64] = []
        co_artist: list[I64] = []
        if len(multi):
            rows = np.repeat(multi, counts[multi])
            tracks = gather_rows(
                self._track_start, np.arange(t_count, dtype=np.int32), multi
            ).astype(np.int64)
            pairs = sorted_unique(rows * self.n_artists + lead[tracks])
            pa = pairs // self.n_artists
            pr = pairs - pa * self.n_artists
            not_main = pr != self._album_artist[pa]
            pa, pr = pa[not_main], pr[not_main]
            first_idx = np.flatnonzero(np.r_[True, pa[1:] != pa[:-1]])
            rank_in = np.arange(len(pa)) - np.repeat(first_idx, np.diff(np.r_[first_idx, len(pa)]))
            keep3 = rank_in < 3
            co_album.append(pa[keep3])
            co_artist.append(pr[keep3])
        self._co_album: I32 = (
            np.concatenate(co_album) if co_album else np.zeros(0, np.int64)
        ).astype(np.int32)
        self._co_artist: I32 = (
            np.concatenate(co_artist) if co_artist else np.zeros(0, np.int64)
        ).astype(np.int32)
        self._co_artists: dict[int, list[int]] = {}
        for album, artist in zip(self._co_album.tolist(), self._co_artist.tolist(), strict=True):
            self._co_artists.setdefault(album, []).append(artist)

    def _build_discographies(self) -> None:
        """CSR artist -> (album, group) in Spotify order, and the appears_on relation."""
        n, m = self.n_artists, self.n_albums
        counts = np.diff(self._track_start)
        track_album = np.repeat(np.arange(m, dtype=np.int64), counts)
        # album-artist pairs
        own_artist = self._album_artist.astype(np.int64)
        own_album = np.arange(m, dtype=np.int64)
        aa_artist = np.concatenate([own_artist, self._co_artist.astype(np.int64)])
        aa_album = np.concatenate([own_album, self._co_album.astype(np.int64)])
        aa_key = sorted_unique(aa_artist * m + aa_album)
        # track credit pairs (lead + featured) -> (artist, album), minus album-artist pairs
        cred_artist = np.concatenate(
            [self._track_lead.astype(np.int64), self._feat_artist.astype(np.int64)]
        )
        cred_track = np.concatenate(
            [np.arange(self.n_tracks, dtype=np.int64), self._feat_track.astype(np.int64)]
        )
        cred_key = sorted_unique(cred_artist * m + track_album[cred_track])
        pos = np.searchsorted(aa_key, cred_key)
        pos[pos == len(aa_key)] = 0
        appears = cred_key[aa_key[pos] != cred_key]
        all_artist = np.concatenate([aa_key // m, appears // m])
        all_album = np.concatenate([aa_key % m, appears % m])
        group = np.concatenate(
            [self._album_type[aa_key % m].astype(np.int64), np.full(len(appears), APPEARS_ON)]
        )
        order = np.lexsort(
            (all_album, -self._album_day[all_album].astype(np.int64), group, all_artist)
        )
        self._disco_album: I32 = all_album[order].astype(np.int32)
        self._disco_group: U8 = group[order].astype(np.uint8)
        self._disco_ptr: I64 = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(all_artist, minlength=n), out=self._disco_ptr[1:])
        self._album_artist_pairs = aa_key  # sorted artist*m + album (for the search build)
        self._credit_pairs = (cred_artist, cred_track)

    def _build_search(self) -> None:
        n, m, t_count = self.n_artists, self.n_albums, self.n_tracks
        vocab = self._vocab
        n_words = len(vocab.words)
        # artists: rank == index
        w, items = vocab.name_words(self._name_tpl, self._name_parts, np.arange(n, dtype=np.int64))
        self._artist_postings = Postings.build(w, items, n_words, n)
        # albums
        self._album_by_rank: I32 = np.argsort(
            -self._album_pop.astype(np.int16), kind="stable"
        ).astype(np.int32)
        album_rank = np.empty(m, dtype=np.int32)
        album_rank[self._album_by_rank] = np.arange(m, dtype=np.int32)
        self._album_rank: I32 = album_rank
        w, items = vocab.name_words(self._album_tpl, self._album_parts, album_rank.astype(np.int64))
        self._album_postings = Postings.build(w, items, n_words, m)
        self._album_year_r: U16 = self._album_year[self._album_by_rank]
        self._album_day_r: I32 = self._album_day[self._album_by_rank]
        self._hipster_start = m - max(1, math.ceil(0.1 * m)) if m else 0
        # tracks
        self._track_by_rank: I32 = np.argsort(
            -self._track_pop.astype(np.int16), kind="stable"
        ).astype(np.int32)
        track_rank = np.empty(t_count, dtype=np.int32)
        track_rank[self._track_by_rank] = np.arange(t_count, dtype=np.int32)
        self._track_rank: I32 = track_rank
        w, items = vocab.name_words(self._track_tpl, self._track_parts, track_rank.astype(np.int64))
        self._track_postings = Postings.build(w, items, n_words, t_count)
        del w, items
        track_album = self._track_album_array()
        self._track_year_r: U16 = self._album_year[track_album[self._track_by_rank]]
        # artist -> album ranks (album artists)
        aa = self._album_artist_pairs
        self._artist_album_ptr, self._artist_album_ranks = self._csr_by_artist(
            aa // m, album_rank[aa % m]
        )
        del self._album_artist_pairs
        cred_artist, cred_track = self._credit_pairs
        self._artist_track_ptr, self._artist_track_ranks = self._csr_by_artist(
            cred_artist, track_rank[cred_track]
        )
        del self._credit_pairs
        # playlists are indexed in _build_playlists

    def _csr_by_artist(self, artists: I64, ranks: I32) -> tuple[I64, I32]:
        key = artists.astype(np.int64) * np.int64(
            max(self.n_tracks, self.n_albums, 1)
        ) + ranks.astype(np.int64)
        key = sorted_unique(key)
        width = np.int64(max(self.n_tracks, self.n_albums, 1))
        art = key // width
        values = (key - art * width).astype(np.int32)
        ptr = np.zeros(self.n_artists + 1, dtype=np.int64)
        np.cumsum(np.bincount(art, minlength=self.n_artists), out=ptr[1:])
        return ptr, values

    def _track_album_array(self) -> I64:
        counts = np.diff(self._track_start)
        return np.repeat(np.arange(self.n_albums, dtype=np.int64), counts)

    def _build_playlists(self) -> None:
        rng = self._rng("playlists")
        t_count = self.n_tracks
        self._linked_n = max(1, math.ceil(LINKED_SHARE * self.n_artists))
        pool_size = min(t_count, max(3000, t_count // 40))
        top = self._track_by_rank[:pool_size].astype(np.int64)
        top = top[self._track_lead[top] < self._linked_n]
        wide = self._track_by_rank[: min(t_count, max(4 * pool_size, t_count // 5))].astype(
            np.int64
        )
        wide = wide[self._track_lead[wide] < self._linked_n]
        family_names = list(FAMILIES)
        genre_family = np.asarray(
            [family_names.index(f) for f in GENRE_FAMILY] + [-1], dtype=np.int64
        )
        top_family = genre_family[self._bucket_of(self._track_lead[top])]
        wide_family = genre_family[self._bucket_of(self._track_lead[wide])]

        def draw(candidates: I64, count: int) -> tuple[int, ...]:
            if len(candidates) == 0:
                candidates = top if len(top) else np.arange(t_count, dtype=np.int64)
            count = min(count, len(candidates))
            weights = 1.0 / (np.arange(len(candidates), dtype=np.float64) + 20.0)
            main = rng.choice(candidates, size=count, replace=False, p=weights / weights.sum())
            n_wide = min(len(wide), count // 7)
            extra = (
                rng.choice(wide, size=n_wide, replace=False) if n_wide else np.zeros(0, np.int64)
            )
            chosen = list(dict.fromkeys(main.tolist()[: count - n_wide] + extra.tolist()))
            rng.shuffle(chosen)
            return tuple(int(k) for k in chosen)

        names: list[str] = []
        owners: list[str] = []
        descriptions: list[str] = []
        tracks: list[tuple[int, ...]] = []
        followers: list[int] = []

        def add(
            name: str, owner: str, description: str, content: tuple[int, ...], fans: int
        ) -> int:
            names.append(name)
            owners.append(owner)
            descriptions.append(description)
            tracks.append(content)
            followers.append(fans)
            return len(names) - 1

        featured: list[int] = []
        for k, name in enumerate(_FEATURED_NAMES):
            size = int(rng.integers(50, 101))
            fans = int(3e7 / (k + 1) ** 0.8)
            featured.append(
                add(name, SPOTIFY_OWNER, f"The best of {name.lower()}.", draw(top, size), fans)
            )
        for i in range(min(8, self.n_artists)):
            ranks = self._artist_track_ranks[
                self._artist_track_ptr[i] : self._artist_track_ptr[i + 1]
            ]
            if len(ranks) < 20:
                continue
            own = self._track_by_rank[np.sort(ranks)[:50]].astype(np.int64)
            name = f"This Is {self.artist_name(i)}"
            featured.append(
                add(
                    name,
                    SPOTIFY_OWNER,
                    "All the essential tracks, all in one playlist.",
                    tuple(own.tolist()),
                    int(2e6 / (i + 1)),
                )
            )
        self._featured = featured

        self._category_names: dict[str, str] = {}
        self._category_lists: dict[str, list[int]] = {}
        for cid, cname, fams in CATEGORIES:
            self._category_names[cid] = cname
            candidates = top
            if fams:
                codes = [family_names.index(f) for f in fams]
                candidates = top[np.isin(top_family, codes)]
                if len(candidates) < 150:  # a thin family: reach further down, then anything
                    candidates = wide[np.isin(wide_family, codes)]
                if len(candidates) < 150:
                    extra = top[~np.isin(top, candidates)]
                    candidates = np.concatenate([candidates, extra[: 150 - len(candidates)]])
            count = int(rng.integers(8, 13))
            patterns = rng.permutation(len(_CATEGORY_PLAYLIST_PATTERNS))[:count]
            lists: list[int] = []
            for pat in patterns.tolist():
                name = _CATEGORY_PLAYLIST_PATTERNS[pat].format(c=cname)
                size = int(rng.integers(50, 101))
                fans = int(rng.integers(10_000, 3_000_000))
                lists.append(
                    add(name, SPOTIFY_OWNER, f"{cname}: {name}.", draw(candidates, size), fans)
                )
            self._category_lists[cid] = lists

        owned: list[int] = []
        for name in _OWNED_NAMES:
            size = int(rng.integers(50, 101))
            owned.append(
                add(
                    name,
                    APP_OWNER,
                    "",
                    draw(wide if len(wide) else top, size),
                    int(rng.integers(0, 50)),
                )
            )
        self._owned = owned

        self.n_playlists = len(names)
        self._playlist_names = names
        self._playlist_owners = owners
        self._playlist_descriptions = descriptions
        self._playlist_tracks = tracks
        self._playlist_followers = followers
        tokens = [tokenize(x) for x in names]
        self._playlist_vocab = Vocabulary(w for toks in tokens for w in toks)
        word_id = {w: i for i, w in enumerate(self._playlist_vocab.words)}
        pw = np.asarray([word_id[w] for toks in tokens for w in toks], dtype=np.int64)
        pi = np.asarray([p for p, toks in enumerate(tokens) for _ in toks], dtype=np.int64)
        self._playlist_postings = Postings.build(
            pw, pi, len(self._playlist_vocab), self.n_playlists
        )

        # new releases: the most popular non-compilation albums of the last two weeks
        recent_r = np.flatnonzero(self._album_day_r >= self._today_day - 13)
        recent = self._album_by_rank[recent_r]
        recent = recent[self._album_type[recent] != COMPILATION]
        self._new_releases = [int(j) for j in recent[:100]]

    # ------------------------------------------------------------------------------------------
    # ids

    def _encode_id(self, kind: str, index: int) -> str:
        cache = self._id_cache[kind]
        sid = cache.get(index)
        if sid is not None:
            return sid
        keys = self._id_keys[kind]
        y = ((index ^ keys.xor_key) * keys.mul1) & _M64
        y ^= y >> 32
        y = (y * keys.mul2) & _M64
        y ^= y >> 29
        number = (nm.splitmix64(y ^ keys.tag_key) << 64) | y
        pairs = []
        for _ in range(11):  # two base62 digits per step
            number, two = divmod(number, 3844)
            pairs.append(_BASE62_PAIRS[two])
        pairs.reverse()
        sid = "".join(pairs)
        if len(cache) >= 100_000:
            cache.clear()
        cache[index] = sid
        return sid

    def _encode_ids(self, kind: str, indices: I64) -> list[str]:
        """Vectorised :meth:`_encode_id` (same result), for bulk id listings."""
        keys = self._id_keys[kind]
        m32 = np.uint64(_M32)
        with np.errstate(over="ignore"):
            y = (indices.astype(np.uint64) ^ _u64(keys.xor_key)) * _u64(keys.mul1)
            y ^= y >> np.uint64(32)
            y = y * _u64(keys.mul2)
            y ^= y >> np.uint64(29)
        tag = nm.splitmix64_np(y ^ _u64(keys.tag_key))
        limbs = [tag >> np.uint64(32), tag & m32, y >> np.uint64(32), y & m32]
        digits = np.empty((len(indices), 22), dtype=np.uint8)
        base = np.uint64(62)
        for d in range(21, -1, -1):
            rem = np.zeros(len(indices), dtype=np.uint64)
            for li in range(4):
                cur = (rem << np.uint64(32)) | limbs[li]
                limbs[li] = cur // base
                rem = cur - limbs[li] * base
            digits[:, d] = rem.astype(np.uint8)
        alphabet = np.frombuffer(_BASE62.encode("ascii"), dtype=np.uint8)
        text = alphabet[digits].tobytes().decode("ascii")
        return [text[k * 22 : (k + 1) * 22] for k in range(len(indices))]

    def _decode_id(self, kind: str, sid: object, limit: int) -> int | None:
        if not isinstance(sid, str) or len(sid) != 22:
            return None
        number = 0
        for ch in sid:
            digit = _BASE62_INDEX.get(ch)
            if digit is None:
                return None
            number = number * 62 + digit
        if number >> 128:
            return None
        y = number & _M64
        keys = self._id_keys[kind]
        if nm.splitmix64(y ^ keys.tag_key) != number >> 64:
            return None
        y ^= (y >> 29) ^ (y >> 58)
        y = (y * keys.inv2) & _M64
        y ^= y >> 32
        index = ((y * keys.inv1) & _M64) ^ keys.xor_key
        return index if index < limit else None

    def artist_id(self, i: int) -> str:
        return self._encode_id("artist", self._check(i, self.n_artists))

    def artist_index(self, sid: str) -> int | None:
        return self._decode_id("artist", sid, self.n_artists)

    def album_id(self, j: int) -> str:
        return self._encode_id("album", self._check(j, self.n_albums))

    def album_index(self, sid: str) -> int | None:
        return self._decode_id("album", sid, self.n_albums)

    def track_id(self, k: int) -> str:
        return self._encode_id("track", self._check(k, self.n_tracks))

    def track_index(self, sid: str) -> int | None:
        return self._decode_id("track", sid, self.n_tracks)

    def playlist_id(self, p: int) -> str:
        return self._encode_id("playlist", self._check(p, self.n_playlists))

    def playlist_index(self, sid: str) -> int | None:
        return self._decode_id("playlist", sid, self.n_playlists)

    def resolve_id(self, sid: str) -> tuple[str, int] | None:
        """(kind, index) of any id of this catalog (kind: artist, album, track, playlist)."""
        limits = {
            "artist": self.n_artists,
            "album": self.n_albums,
            "track": self.n_tracks,
            "playlist": self.n_playlists,
        }
        for kind, limit in limits.items():
            index = self._decode_id(kind, sid, limit)
            if index is not None:
                return kind, index
        return None

    def iter_artist_ids(self) -> Iterator[str]:
        """Every artist id, in index (popularity) order; computed in vectorised chunks."""
        chunk = 65_536
        for start in range(0, self.n_artists, chunk):
            stop = min(self.n_artists, start + chunk)
            yield from self._encode_ids("artist", np.arange(start, stop, dtype=np.int64))

    @staticmethod
    def _check(index: int, limit: int) -> int:
        i = int(index)
        if not 0 <= i < limit:
            raise IndexError(f"index {index} out of range [0, {limit})")
        return i

    # ------------------------------------------------------------------------------------------
    # plain attributes (handy for tests and the app)

    def _hash(self, kind: int, index: int, salt: int = 0) -> int:
        return nm.splitmix64((self.seed & _M64) ^ (kind << 56) ^ (salt << 44) ^ index)

    def artist_name(self, i: int) -> str:
        i = self._check(i, self.n_artists)
        return self._vocab.render(int(self._name_tpl[i]), self._name_parts[i].tolist())

    def artist_genres(self, i: int) -> list[str]:
        return [
            GENRES[g]
            for g in self._genres[self._check(i, self.n_artists)].tolist()
            if g != int(NO_GENRE)
        ]

    def artist_popularity(self, i: int) -> int:
        return int(self._popularity[self._check(i, self.n_artists)])

    def artist_years(self, i: int) -> tuple[int, int]:
        """Years active (first and last release year)."""
        i = self._check(i, self.n_artists)
        return int(self._year_start[i]), int(self._year_end[i])

    def album_name(self, j: int) -> str:
        j = self._check(j, self.n_albums)
        return self._vocab.render(int(self._album_tpl[j]), self._album_parts[j].tolist())

    def album_artists(self, j: int) -> list[int]:
        """Album artists: the main artist first, then co-artists (multi-artist compilations)."""
        j = self._check(j, self.n_albums)
        main = int(self._album_artist[j])
        co = self._co_artists.get(j)
        return [main, *co] if co else [main]

    def album_release(self, j: int) -> dt.date:
        return EPOCH + dt.timedelta(days=int(self._album_day[self._check(j, self.n_albums)]))

    def album_popularity(self, j: int) -> int:
        return int(self._album_pop[self._check(j, self.n_albums)])

    def track_name(self, k: int) -> str:
        k = self._check(k, self.n_tracks)
        return self._vocab.render(int(self._track_tpl[k]), self._track_parts[k].tolist())

    def track_album(self, k: int) -> int:
        k = self._check(k, self.n_tracks)
        return int(self._track_start.searchsorted(k, side="right")) - 1

    def track_artists(self, k: int) -> list[int]:
        """Track artists: the lead artist first, then featured artists."""
        k = self._check(k, self.n_tracks)
        artists = [int(self._track_lead[k])]
        feat_track, n_feat = self._feat_track, len(self._feat_track)
        pos = int(feat_track.searchsorted(k))
        while pos < n_feat and feat_track[pos] == k:
            artists.append(int(self._feat_artist[pos]))
            pos += 1
        return artists

    def track_popularity(self, k: int) -> int:
        return int(self._track_pop[self._check(k, self.n_tracks)])

    # ------------------------------------------------------------------------------------------
    # rendering

    def _artist_ref(self, i: int) -> dict[str, Any]:
        aid = self._encode_id("artist", i)
        return {
            "external_urls": {"spotify": f"https://open.spotify.com/artist/{aid}"},
            "href": f"{self.api_base}/artists/{aid}",
            "id": aid,
            "name": self._vocab.render(int(self._name_tpl[i]), self._name_parts[i].tolist()),
            "type": "artist",
            "uri": f"spotify:artist:{aid}",
        }

    def _images(
        self, prefixes: tuple[tuple[str, int], ...], kind: int, index: int
    ) -> list[dict[str, Any]]:
        h = f"{self._hash(kind, index, 1):016x}{self._hash(kind, index, 2):016x}"[:24]
        return [
            {"url": f"https://i.scdn.co/image/{prefix}{h}", "height": size, "width": size}
            for prefix, size in prefixes
        ]

    def simplified_artist(self, i: int) -> dict[str, Any]:
        return self._artist_ref(self._check(i, self.n_artists))

    def artist_object(self, i: int) -> dict[str, Any]:
        i = self._check(i, self.n_artists)
        ref = self._artist_ref(i)
        return {
            "external_urls": ref["external_urls"],
            "followers": {"href": None, "total": int(self._followers[i])},
            "genres": self.artist_genres(i),
            "href": ref["href"],
            "id": ref["id"],
            "images": self._images(_ARTIST_IMAGE_PREFIXES, 0, i) if self._has_images[i] else [],
            "name": ref["name"],
            "popularity": int(self._popularity[i]),
            "type": "artist",
            "uri": ref["uri"],
        }

    def _release_date(self, j: int) -> tuple[str, str]:
        day = EPOCH + dt.timedelta(days=int(self._album_day[j]))
        precision = int(self._album_precision[j])
        if precision == 2:
            return f"{day.year:04d}", "year"
        if precision == 1:
            return f"{day.year:04d}-{day.month:02d}", "month"
        return day.isoformat(), "day"

    def _markets(self, j: int) -> list[str]:
        h = self._hash(1, j, 3)
        chosen = [m for b, m in enumerate(_MARKETS) if (h >> (2 * b)) & 3]
        return chosen or [_MARKETS[h % len(_MARKETS)]]

    def _album_base(self, j: int) -> dict[str, Any]:
        alid = self._encode_id("album", j)
        release_date, precision = self._release_date(j)
        return {
            "album_type": GROUP_NAMES[int(self._album_type[j])],
            "total_tracks": int(self._track_start[j + 1] - self._track_start[j]),
            "available_markets": self._markets(j),
            "external_urls": {"spotify": f"https://open.spotify.com/album/{alid}"},
            "href": f"{self.api_base}/albums/{alid}",
            "id": alid,
            "images": self._images(_ALBUM_IMAGE_PREFIXES, 1, j),
            "name": self._vocab.render(int(self._album_tpl[j]), self._album_parts[j].tolist()),
            "release_date": release_date,
            "release_date_precision": precision,
            "type": "album",
            "uri": f"spotify:album:{alid}",
            "artists": [self._artist_ref(a) for a in self.album_artists(j)],
        }

    def simplified_album(self, j: int, album_group: str | None = None) -> dict[str, Any]:
        obj = self._album_base(self._check(j, self.n_albums))
        if album_group is not None:
            obj["album_group"] = album_group
        return obj

    def _label(self, j: int) -> str:
        artist = int(self._album_artist[j])
        h = self._hash(0, artist, 4)
        if self._popularity[artist] >= 45:
            return _MAJOR_LABELS[h % len(_MAJOR_LABELS)]
        return _INDIE_LABELS[h % len(_INDIE_LABELS)]

    def album_object(self, j: int) -> dict[str, Any]:
        """Full AlbumObject without ``tracks`` (the app adds the paging object)."""
        obj = self._album_base(self._check(j, self.n_albums))
        label = self._label(j)
        year = int(self._album_year[j])
        obj["copyrights"] = [
            {"text": f"© {year} {label}", "type": "C"},
            {"text": f"℗ {year} {label}", "type": "P"},
        ]
        obj["external_ids"] = {"upc": f"{self._hash(1, j, 5) % 10**12:012d}"}
        obj["genres"] = []
        obj["label"] = label
        obj["popularity"] = int(self._album_pop[j])
        return obj

    def album_tracks(self, j: int) -> Sequence[int]:
        j = self._check(j, self.n_albums)
        return range(int(self._track_start[j]), int(self._track_start[j + 1]))

    def _track_common(self, k: int, album: int) -> dict[str, Any]:
        tid = self._encode_id("track", k)
        start = int(self._track_start[album])
        total = int(self._track_start[album + 1]) - start
        position = k - start
        disc, number = 1, position + 1
        if self._album_type[album] == ALBUM and total > 20:
            half = (total + 1) // 2
            if position >= half:
                disc, number = 2, position - half + 1
        h = self._hash(2, k, 6)
        return {
            "artists": [self._artist_ref(a) for a in self.track_artists(k)],
            "available_markets": self._markets(album),
            "disc_number": disc,
            "duration_ms": 95_000 + h % 210_000,
            "explicit": (h >> 40) % 100 < 14,
            "external_urls": {"spotify": f"https://open.spotify.com/track/{tid}"},
            "href": f"{self.api_base}/tracks/{tid}",
            "id": tid,
            "is_local": False,
            "name": self._vocab.render(int(self._track_tpl[k]), self._track_parts[k].tolist()),
            "preview_url": None,
            "track_number": number,
            "type": "track",
            "uri": f"spotify:track:{tid}",
        }

    def simplified_track(self, k: int) -> dict[str, Any]:
        k = self._check(k, self.n_tracks)
        return self._track_common(k, self.track_album(k))

    def track_object(self, k: int) -> dict[str, Any]:
        k = self._check(k, self.n_tracks)
        album = self.track_album(k)
        obj = self._track_common(k, album)
        h = self._hash(2, k, 7)
        country = _MARKETS[h % len(_MARKETS)]
        registrant = "".join(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[(h >> (6 * s)) % 36] for s in range(3)
        )
        year2 = int(self._album_year[album]) % 100
        obj["album"] = self._album_base(album)
        obj["external_ids"] = {"isrc": f"{country}{registrant}{year2:02d}{(h >> 24) % 100000:05d}"}
        obj["popularity"] = int(self._track_pop[k])
        return obj

    # ------------------------------------------------------------------------------------------
    # relations

    def artist_albums(self, i: int, groups: frozenset[str]) -> list[tuple[int, str]]:
        """(album index, album_group): groups in the order album, single, compilation,
        appears_on; newest first within a group."""
        i = self._check(i, self.n_artists)
        wanted = {GROUP_CODES[g] for g in groups if g in GROUP_CODES}
        lo, hi = int(self._disco_ptr[i]), int(self._disco_ptr[i + 1])
        albums = self._disco_album[lo:hi].tolist()
        codes = self._disco_group[lo:hi].tolist()
        return [(a, GROUP_NAMES[c]) for a, c in zip(albums, codes, strict=True) if c in wanted]

    def related_artists(self, i: int) -> list[int]:
        """Up to 20 similar artists, never ``i`` itself.

        Candidates: artists of similar popularity sharing one of ``i``'s genres, then sharing a
        genre family, then popularity neighbours. Scored by shared genres, same family,
        popularity gap, rank distance. Only artists in the linked top ``LINKED_SHARE`` of the
        catalog are returned, so the long tail has no related-artist in-links; genre-less artists
        of the tail get none.
        """
        i = self._check(i, self.n_artists)
        genres = [g for g in self._genres[i].tolist() if g != int(NO_GENRE)]
        if not genres and i >= self._linked_n:
            return []
        linked_n = self._linked_n

        def near(members: I32, width: int) -> I32:
            linked = members[: int(np.searchsorted(members, linked_n))]
            p = int(np.searchsorted(linked, i))
            return linked[max(0, p - width) : p + width]

        chunks: list[I32] = []
        for g in genres:
            chunks.append(
                near(self._genre_artists[self._genre_ptr[g] : self._genre_ptr[g + 1]], 30)
            )
        cand = self._candidates(chunks, i)
        families = {self._family_of[g] for g in genres}
        if len(cand) < 20 and families:
            for g in range(len(GENRES)):
                if self._family_of[g] in families and g not in genres:
                    chunks.append(
                        near(self._genre_artists[self._genre_ptr[g] : self._genre_ptr[g + 1]], 5)
                    )
            cand = self._candidates(chunks, i)
        if len(cand) < 20:
            lo = max(0, min(i, linked_n) - 15)
            chunks.append(np.arange(lo, min(linked_n, lo + 31), dtype=np.int32))
            cand = self._candidates(chunks, i)
        if len(cand) == 0:
            return []
        cand_genres = self._genres[cand].astype(np.int64)
        overlap = np.isin(cand_genres, np.asarray(genres, dtype=np.int64)).sum(axis=1)
        primary = cand_genres[:, 0]
        fam = np.asarray([*self._family_of, -1], dtype=np.int64)[
            np.where(primary == int(NO_GENRE), len(GENRES), primary)
        ]
        same_family = np.isin(fam, np.asarray(sorted(families) or [-2], dtype=np.int64))
        pop_gap = np.abs(self._popularity[cand].astype(np.int64) - int(self._popularity[i]))
        order = np.lexsort((cand, np.abs(cand - i), pop_gap, ~same_family, -overlap))
        return [int(c) for c in cand[order[:20]]]

    def _candidates(self, chunks: list[I32], i: int) -> I64:
        if not chunks:
            return np.zeros(0, dtype=np.int64)
        cand = sorted_unique(np.concatenate(chunks).astype(np.int64))
        kept: I64 = cand[(cand != i) & (cand < self._linked_n)]
        return kept

    # ------------------------------------------------------------------------------------------
    # browse and playlists

    def featured_playlists(self) -> list[int]:
        return list(self._featured)

    def categories(self) -> list[tuple[str, str]]:
        return list(self._category_names.items())

    def category_playlists(self, category_id: str) -> list[int] | None:
        lists = self._category_lists.get(category_id)
        return None if lists is None else list(lists)

    def category_object(self, category_id: str) -> dict[str, Any] | None:
        """CategoryObject for a known category id, else None."""
        name = self._category_names.get(category_id)
        if name is None:
            return None
        h = f"{zlib.crc32(category_id.encode()):08x}"
        return {
            "href": f"{self.api_base}/browse/categories/{category_id}",
            "icons": [
                {
                    "url": f"https://t.scdn.co/media/derived/{category_id}-{h}_274x274.jpg",
                    "height": 274,
                    "width": 274,
                }
            ],
            "id": category_id,
            "name": name,
        }

    def new_releases(self) -> list[int]:
        """Up to 100 albums and singles released in the last two weeks, most popular first."""
        return list(self._new_releases)

    def owned_playlists(self) -> list[int]:
        """The playlists owned by the app (``app-owner``)."""
        return list(self._owned)

    def playlist_owner(self, p: int) -> str:
        return self._playlist_owners[self._check(p, self.n_playlists)]

    def playlist_tracks(self, p: int) -> Sequence[int]:
        return self._playlist_tracks[self._check(p, self.n_playlists)]

    def playlist_name(self, p: int) -> str:
        return self._playlist_names[self._check(p, self.n_playlists)]

    def _owner_object(self, owner: str) -> dict[str, Any]:
        return {
            "display_name": "Spotify" if owner == SPOTIFY_OWNER else "App Owner",
            "external_urls": {"spotify": f"https://open.spotify.com/user/{owner}"},
            "href": f"{self.api_base}/users/{owner}",
            "id": owner,
            "type": "user",
            "uri": f"spotify:user:{owner}",
        }

    def playlist_object(self, p: int) -> dict[str, Any]:
        """Full PlaylistObject without ``tracks``/``items`` (the app adds the paging object)."""
        p = self._check(p, self.n_playlists)
        pid = self._encode_id("playlist", p)
        owner = self._playlist_owners[p]
        h = f"{self._hash(3, p, 8):016x}{self._hash(3, p, 9):016x}"
        return {
            "collaborative": False,
            "description": self._playlist_descriptions[p],
            "external_urls": {"spotify": f"https://open.spotify.com/playlist/{pid}"},
            "followers": {"href": None, "total": self._playlist_followers[p]},
            "href": f"{self.api_base}/playlists/{pid}",
            "id": pid,
            "images": [
                {
                    "url": f"https://i.scdn.co/image/ab67706f00000002{h[:24]}",
                    "height": 640,
                    "width": 640,
                }
            ],
            "name": self._playlist_names[p],
            "owner": self._owner_object(owner),
            "public": True,
            "snapshot_id": f"AAAA{h[:28]}",
            "type": "playlist",
            "uri": f"spotify:playlist:{pid}",
        }

    def simplified_playlist(self, p: int) -> dict[str, Any]:
        """SimplifiedPlaylistObject with ``tracks``/``items`` references ``{href, total}``."""
        obj = self.playlist_object(p)
        del obj["followers"]
        total = len(self._playlist_tracks[p])
        obj["tracks"] = {"href": f"{obj['href']}/tracks", "total": total}
        obj["items"] = {"href": f"{obj['href']}/items", "total": total}
        return obj

    def playlist_item(self, p: int, position: int) -> dict[str, Any]:
        """PlaylistTrackObject for the track at ``position`` of playlist ``p``."""
        p = self._check(p, self.n_playlists)
        tracks = self._playlist_tracks[p]
        k = tracks[self._check(position, len(tracks))]
        added = self.today - dt.timedelta(days=(self._hash(3, p, 10) + position * 7) % 1500)
        track = self.track_object(k)
        return {
            "added_at": f"{added.isoformat()}T12:00:00Z",
            "added_by": {
                key: value
                for key, value in self._owner_object(self._playlist_owners[p]).items()
                if key != "display_name"
            },
            "is_local": False,
            "item": track,
            "track": track,
        }

    def summary(self) -> dict[str, int]:
        """Totals for the ground-truth endpoint."""
        return {
            "artists": self.n_artists,
            "albums": self.n_albums,
            "tracks": self.n_tracks,
            "playlists": self.n_playlists,
            "featured_playlists": len(self._featured),
            "categories": len(self._category_names),
            "new_releases": len(self._new_releases),
        }

    # ------------------------------------------------------------------------------------------
    # search

    def search(
        self, q: str, types: Sequence[str], offset: int, limit: int
    ) -> dict[str, tuple[int, list[int]]]:
        """Per type: (exact total, indices of the page ``[offset, offset + limit)``).

        Ranked by relevance, then popularity, ties by index: items with every free query word
        as a whole name word first (see :meth:`_exact_first`). Types: artist, album, track,
        playlist; other Spotify types (show, episode, audiobook) give (0, []); anything else raises
        :class:`SearchQueryError`, as does an empty or malformed query (see :mod:`search_index`).
        """
        parsed = self._parse(q)
        start = max(0, int(offset))
        stop = start + max(0, int(limit))
        out: dict[str, tuple[int, list[int]]] = {}
        for t in types:
            if t in OTHER_SPOTIFY_TYPES:
                out[t] = (0, [])
                continue
            if t not in SEARCH_TYPES:
                raise SearchQueryError(f"unsupported search type {t!r}")
            matches = self._match(t, parsed)
            page = matches[start:stop]
            if t == "album":
                indices = self._album_by_rank[page].tolist()
            elif t == "track":
                indices = self._track_by_rank[page].tolist()
            else:
                indices = page.tolist()
            out[t] = (len(matches), indices)
        return out

    def _parse(self, q: str) -> ParsedQuery:
        parsed = self._parsed.get(q)
        if parsed is None:
            parsed = parse_query(q)
            if len(self._parsed) >= 100_000:
                self._parsed.clear()
            self._parsed[q] = parsed
        return parsed

    def _match(self, t: str, parsed: ParsedQuery) -> Ranks:
        key = (t, parsed)
        hit = self._matches.get(key)
        if hit is not None:
            return hit
        result = self._exact_first(t, parsed, self._evaluate(t, parsed))
        self._matches.put(key, result)
        return result

    def _exact_first(self, t: str, parsed: ParsedQuery, ranks: Ranks) -> Ranks:
        """Relevance before popularity: items having every free query word as a WHOLE name word
        come first (Spotify ranks ``q=ab`` artist "AB" above "Abba"); each group by popularity.
        """
        if not parsed.words or t not in ("artist", "album", "track") or len(ranks) < 2:
            return ranks
        postings = {
            "artist": self._artist_postings,
            "album": self._album_postings,
            "track": self._track_postings,
        }[t]
        exact = ranks
        for word in parsed.words:
            word_id = self._vocab.words.id_of(word)
            if word_id is None:
                return ranks
            exact = intersect_sorted(exact, postings.range_set(word_id, word_id + 1))
            if len(exact) == 0:
                return ranks
        if len(exact) == len(ranks):
            return ranks
        rest = np.setdiff1d(ranks, exact, assume_unique=True)
        return np.concatenate([exact, rest]).astype(ranks.dtype, copy=False)

    def _n_items(self, t: str) -> int:
        return {"artist": self.n_artists, "album": self.n_albums, "track": self.n_tracks}.get(
            t, self.n_playlists
        )

    def _word_set(self, t: str, word: str) -> Ranks:
        """Ranks of type ``t`` whose name has a word starting with ``word`` (cached)."""
        key = (t, "word", word)
        hit = self._matches.get(key)
        if hit is not None:
            return hit
        if t == "playlist":
            lo, hi = self._playlist_vocab.prefix_range(word)
            result = self._playlist_postings.range_set(lo, hi)
        else:
            postings = {
                "artist": self._artist_postings,
                "album": self._album_postings,
                "track": self._track_postings,
            }[t]
            lo, hi = self._vocab.words.prefix_range(word)
            result = postings.range_set(lo, hi)
        self._matches.put(key, result)
        return result

    def _words_set(self, t: str, words: Sequence[str]) -> Ranks | None:
        """Intersection of word sets, smallest first; None when ``words`` is empty."""
        sets = sorted((self._word_set(t, w) for w in words), key=len)
        if not sets:
            return None
        result = sets[0]
        for other in sets[1:]:
            if len(result) == 0:
                break
            result = intersect_sorted(result, other)
        return result

    def _artists_to(self, t: str, artists: Ranks) -> Ranks:
        """Items of type ``t`` credited to any of ``artists`` (album artists / track artists)."""
        if t == "artist":
            return artists
        if t == "album":
            ptr, values, n_items = self._artist_album_ptr, self._artist_album_ranks, self.n_albums
        else:
            ptr, values, n_items = self._artist_track_ptr, self._artist_track_ranks, self.n_tracks
        if len(artists) == 1:
            a = int(artists[0])
            return values[ptr[a] : ptr[a + 1]]
        return union_of(gather_rows(ptr, values, artists), n_items)

    def _artist_filter_set(self, t: str, phrase: tuple[str, ...]) -> Ranks:
        key = (t, "artist", phrase)
        hit = self._matches.get(key)
        if hit is not None:
            return hit
        artists = self._words_set("artist", phrase)
        result = self._artists_to(t, artists if artists is not None else EMPTY_RANKS)
        self._matches.put(key, result)
        return result

    def _genre_filter_set(self, t: str, phrase: tuple[str, ...]) -> Ranks:
        key = (t, "genre", phrase)
        hit = self._matches.get(key)
        if hit is not None:
            return hit
        matched = [
            g
            for g, words in enumerate(self._genre_words)
            if all(any(w.startswith(p) for w in words) for p in phrase)
        ]
        if not matched:
            result = EMPTY_RANKS
        else:
            ptr = self._genre_ptr
            if len(matched) == 1:
                g = matched[0]
                artists = self._genre_artists[ptr[g] : ptr[g + 1]]
            else:
                artists = union_of(
                    gather_rows(ptr, self._genre_artists, np.asarray(matched)), self.n_artists
                )
            result = self._artists_to(t, artists)
        self._matches.put(key, result)
        return result

    def _album_filter_set(self, t: str, phrase: tuple[str, ...]) -> Ranks:
        album_ranks = self._words_set("album", phrase)
        if album_ranks is None or t == "album":
            return album_ranks if album_ranks is not None else EMPTY_RANKS
        albums = self._album_by_rank[album_ranks].astype(np.int64)
        starts = self._track_start[albums]
        lengths = self._track_start[albums + 1] - starts
        total = int(lengths.sum())
        if total == 0:
            return EMPTY_RANKS
        ends = np.cumsum(lengths)
        tracks = np.repeat(starts - (ends - lengths), lengths) + np.arange(total, dtype=np.int64)
        return union_of(self._track_rank[tracks], self.n_tracks)

    _APPLIES: ClassVar[dict[str, frozenset[str]]] = {
        "artist": frozenset({"artist", "genre", "years"}),
        "album": frozenset({"artist", "years", "tags", "album"}),
        "track": frozenset({"artist", "genre", "years", "album", "track"}),
        "playlist": frozenset(),
    }

    def _evaluate(self, t: str, parsed: ParsedQuery) -> Ranks:
        applies = self._APPLIES[t]
        used = {
            "artist": bool(parsed.artist),
            "genre": bool(parsed.genre),
            "years": bool(parsed.years),
            "tags": bool(parsed.tags),
            "album": bool(parsed.album),
            "track": bool(parsed.track),
        }
        if any(flag and name not in applies for name, flag in used.items()):
            return EMPTY_RANKS
        sets: list[Ranks] = [self._word_set(t, w) for w in parsed.words]
        for phrase in parsed.track:
            sets.extend(self._word_set("track", w) for w in phrase)
        for phrase in parsed.artist:
            sets.append(self._artist_filter_set(t, phrase))
        for phrase in parsed.genre:
            sets.append(self._genre_filter_set(t, phrase))
        for phrase in parsed.album:
            sets.append(self._album_filter_set(t, phrase))
        if "hipster" in parsed.tags:
            sets.append(np.arange(self._hipster_start, self.n_albums, dtype=np.int32))
        result: Ranks | None = None
        for s in sorted(sets, key=len):
            result = s if result is None else intersect_sorted(result, s)
            if len(result) == 0:
                return EMPTY_RANKS
        # predicates over rank-indexed arrays: on the candidates, or on everything
        masks: list[npt.NDArray[np.bool_]] = []
        cand: Ranks | slice = result if result is not None else slice(None)
        for first, last in parsed.years:
            if t == "artist":
                masks.append((self._year_start[cand] <= last) & (self._year_end[cand] >= first))
            else:
                years = self._album_year_r if t == "album" else self._track_year_r
                y = years[cand]
                masks.append((y >= first) & (y <= last))
        if "new" in parsed.tags:
            day = self._album_day_r[cand]
            masks.append((day >= self._today_day - 13) & (day <= self._today_day))
        if not masks:
            return result if result is not None else EMPTY_RANKS
        mask = masks[0]
        for extra in masks[1:]:
            mask &= extra
        if result is None:
            return np.flatnonzero(mask).astype(np.int32)
        return result[mask]
