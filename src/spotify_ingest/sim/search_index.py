"""Search index of the simulator: text normalisation, query parsing, postings and set algebra.

Semantics (what ``Catalog.search`` promises, mirroring the Web API as far as it is documented)
--------------------------------------------------------------------------------------------------
* **Normalisation.** Text is NFKD-decomposed, non-spacing marks (``Mn``) are dropped and the rest
  is case-folded, so ``Beyoncé`` / ``BEYONCE`` / ``beyonce`` are the same and ``Rós`` matches
  ``ros``. Letters that do not decompose stay as they are (``ø`` is not ``o``).
* **Words.** A word is a maximal run of alphanumeric characters (``[^\\W_]+`` on the normalised
  text): ``AC/DC`` is ``ac`` + ``dc``, ``Guns N' Roses`` is ``guns`` + ``n`` + ``roses``,
  ``blink-182`` is ``blink`` + ``182``, ``2Pac`` is ``2pac``. A run of CJK, kana, Hangul, Cyrillic
  or Arabic letters is one word, so prefixes work on it (``周杰`` matches ``周杰伦``).
* **Free words.** Every query word must be a *prefix* of some word of the item's name (AND over
  query words; two query words may be satisfied by the same name word).
* **Filters.** ``field:value`` or ``field:"quoted value"``:

  - ``artist:X`` - artists: X's words prefix-match the artist's name; albums: one of the album's
    artists (``album.artists``) matches; tracks: one of the track's artists matches. Every word of
    X must match the *same* artist.
  - ``genre:X`` - artists having a genre whose words are prefix-matched by all words of X (so
    ``genre:rock`` finds ``rock``, ``indie rock`` and ``rockabilly``; ``genre:"indie rock"`` finds
    ``indie rock`` only unless another genre has the words ``indie*`` and ``rock*``); tracks:
    through any of the track's artists. Albums: no results (as on Spotify).
  - ``year:YYYY`` / ``year:YYYY-YYYY`` - artists: the years-active span overlaps the range;
    albums and tracks: release year within the range. A reversed range is swapped.
  - ``tag:new`` (released in the 14 days up to the catalog's ``today``) and ``tag:hipster`` (the
    10% least popular albums, by the album popularity order) - albums only.
  - ``album:X`` - albums: the album name; tracks: the name of the track's album.
    ``track:X`` - tracks: the track name.

  A filter that does not apply to a type gives that type zero results. Several filters AND.
  Unknown ``field:`` prefixes are ordinary text (``foo:bar`` is the words ``foo`` and ``bar``).
* **Errors.** A query with no word and no filter, a malformed ``year:``, an unknown ``tag:`` or
  a filter with an empty value raises :class:`SearchQueryError`.

Index structure
---------------
Every searchable type keeps its items in *rank space*: rank 0 is the most popular item (ties by
index), so "ranked by popularity" is "sorted ascending" and a page is a slice. For artists rank and
index coincide. Names are bags of normalised words; all distinct words form one sorted
:class:`Vocabulary` (word id = position in sorted order), so a prefix is a contiguous word-id range
found by two bisections. :class:`Postings` is a CSR matrix word id -> sorted ranks; a prefix's
postings are the contiguous slice ``values[indptr[lo]:indptr[hi]]``. When the range holds one word
the slice already is the (sorted, unique) answer - zero copy. Otherwise the slice is deduplicated
by ``np.unique`` when small, or by a boolean bitmap over all items when large (linear, no sort).
Query words and filters are intersected smallest-first by binary search of the smaller array in
the larger one. The catalog caches match arrays per (type, normalised query) in a byte-bounded LRU
(:class:`MatchCache`), so paging through a query costs a dictionary lookup and a slice.
"""

from __future__ import annotations

import bisect
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

__all__ = [
    "EMPTY_RANKS",
    "MatchCache",
    "ParsedQuery",
    "Postings",
    "SearchQueryError",
    "Vocabulary",
    "gather_rows",
    "intersect_sorted",
    "normalize",
    "parse_query",
    "sorted_unique",
    "tokenize",
    "union_of",
]

Ranks = npt.NDArray[np.int32]
IntArray = npt.NDArray[np.int64]

EMPTY_RANKS: Ranks = np.zeros(0, dtype=np.int32)
EMPTY_RANKS.setflags(write=False)

_WORD_RE = re.compile(r"[^\W_]+")


class SearchQueryError(ValueError):
    """The query cannot be parsed (empty, malformed filter). The HTTP app answers 400."""


# --------------------------------------------------------------------------------------------------
# Text normalisation


def normalize(text: str) -> str:
    """Case- and accent-insensitive form: NFKD, drop non-spacing marks, casefold (twice safe)."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")
    folded = stripped.casefold()
    if folded == stripped.lower() and folded.isascii():
        return folded
    # casefold may produce characters that decompose again (rare): normalise once more
    again = unicodedata.normalize("NFKD", folded)
    return "".join(ch for ch in again if unicodedata.category(ch) != "Mn")


def tokenize(text: str) -> list[str]:
    """The normalised words of ``text`` in order (duplicates kept)."""
    return _WORD_RE.findall(normalize(text))


# --------------------------------------------------------------------------------------------------
# Query parsing


@dataclass(frozen=True, slots=True)
class ParsedQuery:
    """A query in canonical form (sorted, deduplicated), hashable: usable as a cache key."""

    words: tuple[str, ...] = ()
    artist: tuple[tuple[str, ...], ...] = ()
    genre: tuple[tuple[str, ...], ...] = ()
    album: tuple[tuple[str, ...], ...] = ()
    track: tuple[tuple[str, ...], ...] = ()
    years: tuple[tuple[int, int], ...] = ()
    tags: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (
            self.words
            or self.artist
            or self.genre
            or self.album
            or self.track
            or self.years
            or self.tags
        )


_QUERY_TOKEN_RE = re.compile(
    r"""
      (?P<field>[A-Za-z]+):(?:"(?P<qval>[^"]*)"?|(?P<val>[^\s"]*))
    | "(?P<phrase>[^"]*)"?
    | (?P<text>[^\s"]+)
    """,
    re.VERBOSE,
)
_YEAR_RE = re.compile(r"^\s*(\d{1,4})\s*(?:-\s*(\d{1,4})\s*)?$")
_KNOWN_FIELDS = frozenset({"artist", "genre", "year", "tag", "album", "track"})
KNOWN_TAGS = frozenset({"new", "hipster"})


def canonical_words(words: Iterable[str]) -> tuple[str, ...]:
    """Sorted unique words, dropping any word that is a prefix of another (it is implied)."""
    unique = sorted(set(words))
    kept = [
        w for i, w in enumerate(unique) if not (i + 1 < len(unique) and unique[i + 1].startswith(w))
    ]
    return tuple(kept)


def parse_query(q: str) -> ParsedQuery:
    """Split ``q`` into free words and filters; raise :class:`SearchQueryError` if unusable."""
    words: list[str] = []
    filters: dict[str, list[tuple[str, ...]]] = {
        "artist": [],
        "genre": [],
        "album": [],
        "track": [],
    }
    years: list[tuple[int, int]] = []
    tags: set[str] = set()
    for m in _QUERY_TOKEN_RE.finditer(q):
        name = m.group("field")
        if name is not None and name.lower() in _KNOWN_FIELDS:
            key = name.lower()
            raw = m.group("qval") if m.group("qval") is not None else (m.group("val") or "")
            if key == "year":
                years.append(_parse_year(raw))
            elif key == "tag":
                tag = raw.strip().lower()
                if tag not in KNOWN_TAGS:
                    raise SearchQueryError(f"unknown tag {raw!r} (supported: tag:new, tag:hipster)")
                tags.add(tag)
            else:
                value_words = tokenize(raw)
                if not value_words:
                    raise SearchQueryError(f"empty value for filter {key}:")
                filters[key].append(canonical_words(value_words))
        else:
            words.extend(tokenize(m.group(0)))
    parsed = ParsedQuery(
        words=canonical_words(words),
        artist=tuple(sorted(set(filters["artist"]))),
        genre=tuple(sorted(set(filters["genre"]))),
        album=tuple(sorted(set(filters["album"]))),
        track=tuple(sorted(set(filters["track"]))),
        years=tuple(sorted(set(years))),
        tags=tuple(sorted(tags)),
    )
    if parsed.is_empty:
        raise SearchQueryError("empty query: give at least one word or filter")
    return parsed


def _parse_year(raw: str) -> tuple[int, int]:
    m = _YEAR_RE.match(raw)
    if m is None:
        raise SearchQueryError(f"malformed year filter {raw!r} (use year:YYYY or year:YYYY-YYYY)")
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) is not None else first
    return (first, last) if first <= last else (last, first)


# --------------------------------------------------------------------------------------------------
# Vocabulary and postings


class Vocabulary:
    """Sorted distinct normalised words; a word id is the word's position in sorted order."""

    __slots__ = ("words",)

    def __init__(self, words: Iterable[str]) -> None:
        self.words: list[str] = sorted(set(words))

    def __len__(self) -> int:
        return len(self.words)

    def id_of(self, word: str) -> int | None:
        i = bisect.bisect_left(self.words, word)
        return i if i < len(self.words) and self.words[i] == word else None

    def prefix_range(self, prefix: str) -> tuple[int, int]:
        """Half-open word-id range of the words starting with ``prefix`` (normalised)."""
        lo = bisect.bisect_left(self.words, prefix)
        hi = bisect.bisect_left(self.words, prefix + "\U0010ffff", lo)
        return lo, hi


@dataclass(slots=True)
class Postings:
    """CSR word id -> sorted unique item ranks (int32) for one item type."""

    n_items: int
    indptr: IntArray
    values: Ranks

    @classmethod
    def build(
        cls,
        word_ids: npt.NDArray[np.integer],
        ranks: npt.NDArray[np.integer],
        n_words: int,
        n_items: int,
    ) -> Postings:
        """From parallel arrays of (word id, item rank) pairs, duplicates allowed."""
        if len(word_ids) == 0:
            return cls(n_items, np.zeros(n_words + 1, dtype=np.int64), EMPTY_RANKS)
        key = sorted_unique(word_ids.astype(np.int64) * np.int64(n_items) + ranks.astype(np.int64))
        words = key // np.int64(n_items)
        values = (key - words * np.int64(n_items)).astype(np.int32)
        del key
        counts = np.bincount(words, minlength=n_words)
        indptr = np.zeros(n_words + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return cls(n_items, indptr, values)

    def nbytes(self) -> int:
        return int(self.indptr.nbytes + self.values.nbytes)

    def postings_count(self, lo: int, hi: int) -> int:
        return int(self.indptr[hi] - self.indptr[lo])

    def range_set(self, lo: int, hi: int) -> Ranks:
        """Sorted unique ranks of the items having a word with id in [lo, hi)."""
        if hi <= lo:
            return EMPTY_RANKS
        start, end = int(self.indptr[lo]), int(self.indptr[hi])
        chunk = self.values[start:end]
        if hi - lo == 1:
            return chunk  # one word: already sorted and unique
        return union_of(chunk, self.n_items)


def union_of(ranks: npt.NDArray[np.integer], n_items: int) -> Ranks:
    """Sorted unique int32 ranks from an unsorted array with duplicates.

    Uses a bitmap over all items when the input is large compared with ``n_items`` (linear time),
    ``np.unique`` (a sort) otherwise.
    """
    if len(ranks) == 0:
        return EMPTY_RANKS
    if len(ranks) * 24 > n_items:
        mask = np.zeros(n_items, dtype=bool)
        mask[ranks] = True
        return np.flatnonzero(mask).astype(np.int32)
    return sorted_unique(ranks.astype(np.int32, copy=False))


ArrayT = TypeVar("ArrayT", bound=np.ndarray[Any, Any])


def sorted_unique(values: ArrayT) -> ArrayT:
    """``np.unique`` by sort + neighbour comparison (numpy 2's hash-based unique is far slower)."""
    if len(values) == 0:
        return values.copy()
    ordered = np.sort(values)
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return cast(ArrayT, ordered[keep])


def intersect_sorted(a: Ranks, b: Ranks) -> Ranks:
    """Intersection of two sorted unique rank arrays (binary search of the smaller in the
    larger)."""
    if len(a) > len(b):
        a, b = b, a
    if len(a) == 0:
        return EMPTY_RANKS
    pos = np.searchsorted(b, a)
    pos[pos == len(b)] = 0
    found: Ranks = a[b[pos] == a]
    return found


def gather_rows(
    indptr: IntArray, values: npt.NDArray[np.int32], rows: npt.NDArray[np.integer]
) -> npt.NDArray[np.int32]:
    """Concatenation of CSR rows ``rows`` (vectorised, no Python loop)."""
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int32)
    rows64 = rows.astype(np.int64, copy=False)
    starts = indptr[rows64]
    lengths = indptr[rows64 + 1] - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int32)
    ends = np.cumsum(lengths)
    offsets = np.repeat(starts - (ends - lengths), lengths) + np.arange(total, dtype=np.int64)
    return values[offsets]


# --------------------------------------------------------------------------------------------------
# Cache


@dataclass(slots=True)
class MatchCache:
    """Thread-safe LRU of match arrays bounded by total bytes (and entry count)."""

    max_bytes: int = 256 * 1024 * 1024
    max_entries: int = 50_000
    _entries: OrderedDict[object, Ranks] = field(default_factory=OrderedDict)
    _bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    hits: int = 0
    misses: int = 0

    def get(self, key: object) -> Ranks | None:
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: object, value: Ranks) -> None:
        size = int(value.nbytes) + 100
        if size > self.max_bytes // 4:
            return
        if value.flags.writeable:
            value.setflags(write=False)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= int(old.nbytes) + 100
            self._entries[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes or len(self._entries) > self.max_entries:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= int(evicted.nbytes) + 100

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)
