"""The search strategy: a query tree over name prefixes that reaches every artist.

Spotify's search matches each query word as a prefix of a word of the name, case- and
accent-insensitively, ranks by relevance then popularity, reports an exact ``total``, and serves at
most ``offset <= 1000``: a query can show its first ``1000 + limit`` artists and no more. So:

* The roots are one-character queries: ``a``-``z``, ``0``-``9``, and every other first character of
  a name word seen so far in any result (Cyrillic, Arabic, CJK ... are learned as they appear, and
  each new one becomes a root).
* A node's first page tells its ``total``. If ``total`` fits under the reach (``1000 + limit``) the
  node is *paged*: every further page is queued at once. Otherwise it is *split*: one child per
  possible next character (``a``-``z0``-``9`` after a Latin letter or digit, the characters seen to
  follow the last one in other scripts). Children that match nothing cost one request each.
* A split node's own word, when it is an artist's whole name word (the artist "A", the band "AB"),
  is not below any child. Spotify ranks exact word matches first, so a split node keeps paging while
  its pages still hold exact matches: the *exact run*.
* Every call asks for ``artist,album,track``: the albums and tracks on the page carry more artists
  (simplified) at no extra request, which the planner uses and hydration completes.

Completeness: every artist has a name word; the word's first character is a root; descending the
tree along that word reaches either a paged node (the artist is on one of its pages) or the word
itself as a split node (the artist is in its exact run). Identical names shared by more than the
reach would need ``genre:``/``year:`` filters; the planner logs such nodes (status
``overflow``) rather than pretend.

A name word is ``casefold`` + NFKD with combining marks removed, split on anything that is not a
letter or digit; a run of CJK ideographs or kana counts as one word.
"""

from __future__ import annotations

import itertools
import string
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..models import Artist, SearchResult, SimplifiedArtist
from ..store.base import SearchNode, TaskOutcome, TaskSpec

__all__ = [
    "BASE_ALPHABET",
    "SEARCH_TYPES",
    "Alphabet",
    "SearchPlan",
    "name_words",
    "normalise",
]

BASE_ALPHABET = string.ascii_lowercase + string.digits
SEARCH_TYPES = ("artist", "album", "track")


def normalise(text: str) -> str:
    """Casefold and strip accents (NFKD without combining marks)."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def name_words(name: str) -> list[str]:
    """The words search matches against: normalised runs of letters and digits."""
    words: list[str] = []
    current: list[str] = []
    for char in normalise(name):
        if char.isalnum():
            current.append(char)
        elif current:
            words.append("".join(current))
            current = []
    if current:
        words.append("".join(current))
    return words


def _is_base(char: str) -> bool:
    return char in BASE_ALPHABET


@dataclass
class Alphabet:
    """Characters learned from names: which start a word, which follow which (other scripts)."""

    first: set[str] = field(default_factory=lambda: set(BASE_ALPHABET))
    follow: dict[str, set[str]] = field(default_factory=dict)

    def learn(self, names: Iterable[str]) -> set[str]:
        """Record the characters of ``names``; returns first characters never seen before."""
        new_first: set[str] = set()
        for name in names:
            for word in name_words(name):
                if word[0] not in self.first:
                    self.first.add(word[0])
                    new_first.add(word[0])
                for a, b in itertools.pairwise(word):
                    if not (_is_base(a) and _is_base(b)):
                        self.follow.setdefault(a, set()).add(b)
        return new_first

    def children(self, prefix: str) -> list[str]:
        """Every character that may follow ``prefix`` in a name word, in a fixed order."""
        last = prefix[-1]
        chars = set(self.follow.get(last, ()))
        if _is_base(last):
            chars.update(BASE_ALPHABET)
        return sorted(chars)

    def to_json(self) -> dict[str, object]:
        return {
            "first": sorted(self.first),
            "follow": {k: "".join(sorted(v)) for k, v in sorted(self.follow.items())},
        }

    @classmethod
    def from_json(cls, data: object) -> Alphabet:
        if not isinstance(data, dict):
            return cls()
        first = set(data.get("first", ())) | set(BASE_ALPHABET)
        follow = {str(k): set(str(v)) for k, v in dict(data.get("follow", {})).items()}
        return cls(first=first, follow=follow)


def search_task(query: str, offset: int, limit: int, *, role: str = "page") -> TaskSpec:
    """A search request. ``role``: ``node`` (first page), ``page``, or ``exact`` (exact run)."""
    # Deeper nodes and continuation pages first: finishing a subtree before opening new ones keeps
    # the frontier small (depth-first), and pages already known to hold results are sure yield.
    priority = float(len(query)) + (0.5 if role != "node" else 0.0)
    return TaskSpec(
        "search", {"q": query, "offset": offset, "limit": limit, "role": role}, priority
    )


@dataclass
class SearchPlan:
    """Turns one search response into the artists it carries and the requests it calls for."""

    alphabet: Alphabet
    limit: int = 10  # results per call, learned from the capability probe
    max_offset: int = 1000

    @property
    def reach(self) -> int:
        """How many results of one query can be paged: offsets 0..max_offset."""
        return self.max_offset + self.limit

    def roots(self) -> list[TaskSpec]:
        return [search_task(c, 0, self.limit, role="node") for c in sorted(self.alphabet.first)]

    def outcome(
        self, query: str, offset: int, role: str, result: SearchResult
    ) -> tuple[TaskOutcome, list[str]]:
        """The outcome of one search call, and the new root characters it taught us."""
        artists: list[Artist | SimplifiedArtist] = []
        names: list[str] = []
        page = result.artists
        if page is not None:
            artists.extend(page.items)
            names.extend(a.name for a in page.items)
        for album in result.albums.items if result.albums else ():
            artists.extend(album.artists)
            names.append(album.name)
            names.extend(a.name for a in album.artists)
        for track in result.tracks.items if result.tracks else ():
            artists.extend(track.artists)
            names.append(track.name)
            names.extend(a.name for a in track.artists)
            if track.album is not None:
                artists.extend(track.album.artists)
        new_first = self.alphabet.learn(names)
        spawn = [search_task(c, 0, self.limit, role="node") for c in sorted(new_first)]
        nodes: list[SearchNode] = []
        total = page.total if page is not None else 0
        items: Sequence[Artist] = page.items if page is not None else ()
        word = query.split()[-1] if query else ""
        if role == "node":
            if total == 0:
                nodes.append(SearchNode(query, _parent(query), 0, "empty"))
            elif total <= self.reach:
                nodes.append(SearchNode(query, _parent(query), total, "paging"))
                last = min(total, self.reach)
                spawn.extend(
                    search_task(query, off, self.limit)
                    for off in range(self.limit, last, self.limit)
                    if off <= self.max_offset
                )
            else:
                nodes.append(SearchNode(query, _parent(query), total, "split"))
                spawn.extend(
                    search_task(query + c, 0, self.limit, role="node")
                    for c in self.alphabet.children(query)
                )
                if self._all_exact(items, word):
                    spawn.append(search_task(query, self.limit, self.limit, role="exact"))
        elif role == "exact" and items and self._all_exact(items, word):
            nxt = offset + self.limit
            if nxt <= self.max_offset and nxt < total:
                spawn.append(search_task(query, nxt, self.limit, role="exact"))
            elif nxt < total:
                nodes.append(SearchNode(query, _parent(query), total, "overflow"))
        return TaskOutcome(artists=artists, spawn=spawn, search_nodes=nodes), sorted(new_first)

    @staticmethod
    def _all_exact(items: Sequence[Artist], word: str) -> bool:
        """Every artist on the page has ``word`` as a whole name word."""
        return bool(items) and all(word in name_words(a.name) for a in items)


def _parent(query: str) -> str | None:
    return query[:-1] or None
