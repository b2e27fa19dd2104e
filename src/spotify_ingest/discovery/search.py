"""The search strategy: a query tree over name prefixes that reaches every artist.

Spotify's search matches each query word as a prefix of a word of the name, case- and
accent-insensitively, ranks by relevance then popularity, reports an exact ``total``, and serves at
most ``offset <= 1000``: a query can show its first ``1000 + limit`` artists and no more (the
*reach*). So:

* The roots are one-character queries: ``a``-``z``, ``0``-``9``, the Latin letters that do not
  fold to them (``ø``, ``æ``, ``ł`` ...: :data:`LATIN_EXTRA`), one probe letter per other
  script (:data:`SCRIPTS`), and every first character of a name or title word seen in any
  result. A script
  whose probe finds anything, or whose letters appear in any name, *opens*: all its letters
  become roots. CJK ideographs open from a seed of common name characters and snowball.
* A node's first page tells its ``total``. If ``total`` fits under the reach (``1000 + limit``) the
  node is *paged*: every further page is queued at once. Otherwise it is *split*: one child per
  possible next character (``a``-``z0``-``9`` and :data:`LATIN_EXTRA` after a Latin letter or
  digit, the characters seen to follow the last one in other scripts). A child that matches
  nothing still costs one request.
* A split node's own word, when it is an artist's whole name word (the artist "A", the band "AB"),
  is not below any child. Spotify ranks exact word matches first, so a split node keeps paging while
  its pages still hold exact matches: the *exact run*.
* Which children are worth a request now is predicted from the name words already held (the known
  index, :mod:`spotify_ingest.discovery.known`, plus the page itself): a child is *likely* when
  some held word continues the prefix with its character (``ma`` -> ``mar`` for ``Maria``). Every
  other candidate is *speculative*. Speculative children and exact runs are *deferred*: they run
  after every other search request (deepest first), when the prefix's artists are usually all
  held, and are then skipped at no request if the artists we hold under the parent (under the
  node itself, for an exact run) number its exact ``total``. A speculative child that the words
  held by then predict runs; one they still do not predict waits once more, behind the subtrees
  that were re-predicted and behind the exact runs, which usually complete its parent. Whatever
  is not skipped runs as usual, so prediction only reorders requests and never loses an artist.
  An exact run that would overflow the reach (the word "the") waits until last: the artists its
  node misses are then mostly beyond the reach, and come through their other words, or through
  the pairs of overflowing words (below).
  Pages of a node whose artists are all held are skipped the same way.
* Every call asks for ``artist,album,track``: the albums and tracks on the page carry more artists
  (simplified) at no extra request, which the planner uses and hydration completes.

Completeness: every artist has a name word; the word's first character is a root; descending the
tree along that word reaches either a paged node (the artist is on one of its pages) or the word
itself as a split node (the artist is in its exact run). An exact run shows at most the reach: a
word that more artists have as a whole word *overflows* (node status ``overflow``; a 1M catalog
has 37 such words: "the", "n", "lil", "young", "orchestra" ...), and an artist all of whose words
overflow ("Young Orchestra") is on no page of the tree. So every word that overflows is paired
with every word that overflowed before it, as one query of two words (``orchestra young`` lists
the artists with both), in a last tier of its own: a pair whose artists are all held by then
costs its first page and no more. What is left out is an artist whose name is ONE overflowing
word ("Young", "N": in a 1M catalog ~25 artists), or whose words overflow even in pairs: name
search cannot list them (``genre:``/``year:`` filters might; not used). After a letter of a
script with a small alphabet (Cyrillic, Greek, Arabic, Hebrew, Hangul jamo, kana, Devanagari,
Thai) every letter of that script is a candidate, as a-z0-9 are after a Latin one; after a CJK
ideograph, the characters seen to follow it when the node split.

The offset rule is learned, not assumed. A server may serve only pages with ``offset + limit <=
1000`` and answer 400 past it. A 400 to a page at the end of the reach (``offset + limit >
max_offset``, never the first page) lowers ``max_offset`` to the refused offset less one page, so
the reach becomes 1000 and every later node whose total exceeds it splits; the node whose page was
refused splits then (a plain node), overflows (an exact run: its pairs are queued) or is recorded
as beyond the reach (a pair), exactly as if its total had exceeded the reach at its first page
(:meth:`SearchPlan.refused`). Under the default rule no such 400 comes and nothing changes.

A name word is NFKD with non-spacing marks removed, then ``casefold`` (:mod:`spotify_ingest.text`),
split on anything that is not a letter or digit; a run of CJK ideographs or kana is one word.
"""

from __future__ import annotations

import functools
import operator
import string
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..models import Artist, SearchResult, SimplifiedArtist
from ..store.base import SearchNode, TaskOutcome, TaskSpec
from ..text import name_words, normalise
from .known import KnownNames

__all__ = [
    "BASE_ALPHABET",
    "LATIN_ALPHABET",
    "SEARCH_TYPES",
    "Alphabet",
    "SearchPlan",
    "name_words",
    "normalise",
    "script_followers",
    "script_of",
]

BASE_ALPHABET = string.ascii_lowercase + string.digits
# Latin letters that survive search's normalisation (casefold, NFKD, marks dropped): "Jøran" is
# "jøran", not "joran". They are candidates after every Latin letter or digit and roots, like
# a-z0-9: a split node whose children were chosen before such a letter was ever seen would
# otherwise never reach "Clørgraisuck" below "cl".
LATIN_EXTRA = "æðøþđħıłŋœŧ"
LATIN_ALPHABET = BASE_ALPHABET + LATIN_EXTRA
SEARCH_TYPES = ("artist", "album", "track")


def _span(first: int, last: int) -> str:
    return "".join(chr(c) for c in range(first, last + 1))


# Scripts other than Latin. Each has a probe (one common letter, searched at the start) and the
# letters a word may start with once normalised (Hangul syllables decompose into jamo, so 19 lead
# consonants start every Hangul word; kana lose their voicing marks). A script opens, and all its
# letters become root queries, when its probe finds anything or a name in it is seen. CJK
# ideographs are too many to enumerate: they open from a seed of common name characters and then
# snowball, every ideograph seen anywhere in a name becoming a root.
_CJK_SEED = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏"
    "吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦方白邹孟熊秦邱江尹薛段雷侯龙史陶黎贺顾毛郝龚邵万钱严武"
    "戴莫孔向汤大小天地人心爱梦青春光明星月风花雪山水云海东西南北新五乐队子一不之"
)
SCRIPTS: dict[str, tuple[str, str]] = {
    "CYRILLIC": ("а", _span(0x0430, 0x044F)),
    "GREEK": ("α", _span(0x03B1, 0x03C9)),
    "ARABIC": ("ا", _span(0x0621, 0x064A)),
    "HEBREW": ("א", _span(0x05D0, 0x05EA)),
    "HANGUL": ("\u1100", _span(0x1100, 0x1112)),
    "HIRAGANA": ("の", _span(0x3041, 0x3096)),
    "KATAKANA": ("ア", _span(0x30A1, 0x30FA)),
    "DEVANAGARI": ("क", _span(0x0905, 0x0939)),
    "THAI": ("ก", _span(0x0E01, 0x0E2E)),
    "CJK": ("王", _CJK_SEED),
}


def script_of(char: str) -> str:
    """The Unicode script name's first word (``LATIN``, ``CYRILLIC``, ``CJK`` ...), or ``""``."""
    try:
        name = unicodedata.name(char)
    except ValueError:
        return ""
    first = name.split(" ", 1)[0]
    return "HANGUL" if first == "HANGUL" else first


# Letters of a script's span that no word starts with: the small kana (they modify the kana
# before them), the Cyrillic hard and soft signs, the Arabic teh marbuta and alef maksura (word
# endings). Each would be a root query that finds nobody; a name seen starting with one still
# makes it a root (Alphabet.learn).
NEVER_FIRST = frozenset("ぁぃぅぇぉっゃゅょゎゕゖァィゥェォッャュョヮヵヶъь\u0629\u0649")


def script_roots(script: str) -> list[str]:
    """The normalised letters a word of ``script`` may start with (deduplicated, in order)."""
    letters = SCRIPTS[script][1]
    return list(
        dict.fromkeys(
            w[0]
            for w in (normalise(c) for c in letters)
            if w and w[0].isalnum() and w[0] not in NEVER_FIRST
        )
    )


# Letters that continue a word but never start one (Hangul vowels and final consonants once
# syllables decompose into jamo; the kana length mark).
_CONTINUATIONS = {
    "HANGUL": _span(0x1161, 0x1175) + _span(0x11A8, 0x11C2),
    "HIRAGANA": "\u30fc",
    "KATAKANA": "\u30fc",
}


@functools.lru_cache(maxsize=32)
def script_followers(script: str) -> frozenset[str]:
    """The normalised letters that may follow a letter of ``script`` inside a word: its whole
    (small) alphabet. Empty for CJK, whose ideographs are too many to try as children."""
    if script not in SCRIPTS or script == "CJK":
        return frozenset()
    letters = SCRIPTS[script][1] + _CONTINUATIONS.get(script, "")
    return frozenset(ch for c in letters for ch in normalise(c) if ch.isalnum())


_SEEN_WORDS_MAX = 200_000
_SEEN_NAMES_MAX = 1 << 16  # names repeat within a stretch of the crawl: a short memory will do


def _is_ideograph(char: str) -> bool:
    """CJK unified or compatibility ideograph (the blocks names use)."""
    o = ord(char)
    return 0x3400 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x323AF


def _is_base(char: str) -> bool:
    return char in BASE_ALPHABET


def _is_latin(char: str) -> bool:
    return char in LATIN_ALPHABET


@dataclass
class Alphabet:
    """Characters learned from names: which start a word, which follow which."""

    first: set[str] = field(default_factory=lambda: set(BASE_ALPHABET))
    follow: dict[str, set[str]] = field(default_factory=dict)
    scripts: set[str] = field(default_factory=set)  # scripts opened (all their roots queued)
    # Words and whole names already learned from (bounded; forgetting one only costs learning it
    # again): most names on a page (album and track artists above all) came on earlier pages.
    _seen_words: set[str] = field(default_factory=set, repr=False)
    _seen_names: set[str] = field(default_factory=set, repr=False)
    _pairs: set[str] = field(default_factory=set, repr=False)  # "ab" once b followed a

    def __post_init__(self) -> None:
        self._pairs.update(a + b for a, followers in self.follow.items() for b in followers)

    def _add_root(self, char: str, new: set[str]) -> None:
        if char not in self.first:
            self.first.add(char)
            new.add(char)

    def open_script(self, script: str) -> set[str]:
        """Queue every root of ``script``; returns the roots not queued before."""
        new: set[str] = set()
        if script in SCRIPTS and script not in self.scripts:
            self.scripts.add(script)
            for char in script_roots(script):
                self._add_root(char, new)
        return new

    def learn(self, names: Iterable[str]) -> set[str]:
        """Record the characters of ``names``; returns root characters never queued before.

        Most words are ASCII: their first character is already a root (``a``-``z0``-``9``), no
        script can open and no ideograph can hide in them, so only their letter pairs are
        recorded, as one set difference against the pairs seen (not a loop over the word).
        """
        new: set[str] = set()
        seen = self._seen_words
        seen_names = self._seen_names
        pairs = self._pairs
        follow = self.follow
        for name in names:
            if name in seen_names:
                continue
            if len(seen_names) >= _SEEN_NAMES_MAX:
                seen_names.clear()
            seen_names.add(name)
            for word in name_words(name):
                if word in seen:
                    continue
                if len(seen) >= _SEEN_WORDS_MAX:
                    seen.clear()
                seen.add(word)
                fresh = set(map(operator.add, word, word[1:]))
                fresh -= pairs
                if fresh:
                    pairs |= fresh
                    for pair in fresh:
                        follow.setdefault(pair[0], set()).add(pair[1])
                if word.isascii():
                    continue
                self._add_root(word[0], new)
                if not _is_base(word[0]):
                    new |= self.open_script(script_of(word[0]))
                for char in word[1:]:
                    if _is_ideograph(char):  # any ideograph may start a word
                        self._add_root(char, new)
        return new

    def children(self, prefix: str) -> tuple[list[str], list[str]]:
        """The characters that may follow ``prefix``: (seen after its last one, the rest).

        After a Latin letter or digit "the rest" is the remainder of :data:`LATIN_ALPHABET`;
        after a letter of another script with a small alphabet, the rest of that alphabet
        (:func:`script_followers`); after a CJK ideograph, only the characters seen to follow.
        """
        last = prefix[-1]
        seen = self.follow.get(last, set())
        likely = sorted(seen)
        if _is_latin(last):
            rest = sorted(set(LATIN_ALPHABET) - seen)
        else:
            rest = sorted(script_followers(script_of(last)) - seen)
        return likely, rest

    def to_json(self) -> dict[str, object]:
        return {
            "first": sorted(self.first),
            "follow": {k: "".join(sorted(v)) for k, v in sorted(self.follow.items())},
            "scripts": sorted(self.scripts),
        }

    @classmethod
    def from_json(cls, data: object) -> Alphabet:
        if not isinstance(data, dict):
            return cls()
        first = set(data.get("first", ())) | set(BASE_ALPHABET)
        follow = {str(k): set(str(v)) for k, v in dict(data.get("follow", {})).items()}
        scripts = {str(x) for x in data.get("scripts", ())}
        return cls(first=first, follow=follow, scripts=scripts)


# Requests that wait for the end of the crawl run in tiers below every node and page (priority
# ``tier + depth``, deepest first): speculative children, then exact runs, then the speculative
# children that the words held by then still do not predict, then the exact runs that would
# overflow (see SearchPlan.defer_again). By the end nearly every name word is held, so an
# unpredicted child is nearly always empty: its parent's missing artists are far more likely in
# the parent's exact run (on a 100k catalog, running these children before the exact runs cost
# 764 requests that found nothing).
DEFERRED_TIERS = {
    "spec": -1000.0,
    "exact": -2000.0,
    "spec2": -3000.0,
    "exact2": -4000.0,
    "pair": -5000.0,  # two overflowing words together: the very last (see SearchPlan.outcome)
}
# Pages of an exact run queued ahead of the one running.
EXACT_LOOKAHEAD = 4


def search_task(
    query: str, offset: int, limit: int, *, role: str = "page", again: bool = False
) -> TaskSpec:
    """A search request. ``role``: ``node`` (first page), ``page``, ``spec`` (a speculative
    child's first page), ``exact`` (a page of the exact run) or ``pair`` (the first page of two
    overflowing words together); ``again``: a speculative child or an exact run deferred a
    second time."""
    # Deeper nodes and continuation pages first: finishing a subtree before opening new ones keeps
    # the frontier small (depth-first), and pages already known to hold results are sure yield.
    priority = float(len(query)) + (0.5 if role != "node" else 0.0)
    params: dict[str, object] = {"q": query, "offset": offset, "limit": limit, "role": role}
    if role in ("spec", "exact", "pair"):
        priority += DEFERRED_TIERS[role + "2" if again else role]
    if again:
        params["again"] = True  # another task key than the first deferral's
    if again and role == "spec":
        # Interleave the parents: the first candidate of every parent, then the second ... so
        # that a parent completed by one of its children skips the rest instead of having them
        # all in flight at once (children of one parent are spawned together).
        rank = LATIN_ALPHABET.find(query[-1])
        priority -= (rank if rank >= 0 else len(LATIN_ALPHABET)) / 100.0
    return TaskSpec("search", params, priority)


@dataclass
class SearchPlan:
    """Turns one search response into the artists it carries and the requests it calls for."""

    alphabet: Alphabet
    limit: int = 10  # results per call, learned from the capability probe
    max_offset: int = 1000
    totals: dict[str, int] = field(default_factory=dict)  # query -> exact total, once known
    known: KnownNames | None = None  # the artists held, to predict which children are non-empty
    overflowed: set[str] = field(default_factory=set)  # words whose exact run overflowed

    @property
    def reach(self) -> int:
        """How many results of one query can be paged: offsets 0..max_offset."""
        return self.max_offset + self.limit

    def skippable(self, query: str, offset: int, role: str, known: KnownNames) -> bool:
        """True when this request cannot bring an artist we do not hold.

        A page, an exact run or a speculative child of node ``q`` can be skipped once the artists
        we hold under ``q`` (under its parent, for a speculative child) number its exact total.
        Artists we hold only in simplified form would then need a hydration request each, so the
        skip is taken only when that costs fewer requests than the pages it saves.
        """
        if role not in ("page", "exact", "spec") or " " in query:
            return False  # (a pair's pages: its first page decided whether they are needed)
        target = query[:-1] if role == "spec" else query
        total = self.totals.get(target)
        if total is None:
            return False
        held, full = known.count(target)
        if held < total:
            return False
        pages_left = max(1, (min(total, self.reach) - offset) // self.limit)
        return held - full <= pages_left

    def defer_again(self, query: str, offset: int, role: str, again: bool) -> TaskSpec | None:
        """A second deferral for a deferred request whose turn has come, or None to run it now.

        *A speculative child.* Its parent is usually complete by now (then it is skipped) or
        still missing artists that some subtree will bring. If a held name word now continues
        the parent with the child's character, the child is no longer speculative and runs;
        otherwise it waits behind every such re-predicted subtree and every exact run (which
        usually complete the parent, and then it is skipped at no request).

        *An exact run that will overflow.* When we already hold at least the reach of artists
        with the node's word as a whole word ("the", "dj"), the run can show only the first of
        them, and the artists its node still misses are most likely beyond it, reachable only
        through their other words. Such a run waits behind the speculative children, which
        often bring those artists; on a 100k catalog the runs of "the" and "lil" otherwise cost
        200 requests for 2 artists.
        """
        if again or self.known is None:
            return None
        if role == "spec" and len(query) >= 2:
            if self.known.has_prefix(query):  # a held word continues the parent with this child
                return None
            return search_task(query, 0, self.limit, role="spec", again=True)
        if role == "exact" and offset == self.limit:
            if self.known.with_word(query.split()[-1]) < self.reach:
                return None
            return search_task(query, offset, self.limit, role="exact", again=True)
        return None

    def roots(self) -> list[TaskSpec]:
        """Latin letters and digits, every root learned so far, and one probe per script."""
        chars = set(self.alphabet.first) | set(LATIN_EXTRA)
        chars.update(normalise(probe)[0] for probe, _ in SCRIPTS.values())
        return [search_task(c, 0, self.limit, role="node") for c in sorted(chars)]

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
        # Titles teach roots too (an ideograph in a title snowballs into CJK names no artist
        # name on any page has shown yet).
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
        if self.known is not None:
            # An ASCII name or title can teach nothing then: every ASCII character that starts
            # a word is a root from the start, and the known index, not the letter pairs,
            # predicts children (see _children). Most names and titles are skipped.
            names = [name for name in names if not name.isascii()]
        new_first = self.alphabet.learn(names)
        spawn = [search_task(c, 0, self.limit, role="node") for c in sorted(new_first)]
        nodes: list[SearchNode] = []
        total = page.total if page is not None else 0
        items: Sequence[Artist] = page.items if page is not None else ()
        word = query.split()[-1] if query else ""
        if role == "pair":
            self._pair_outcome(query, total, items, spawn, nodes)
        elif role in ("node", "spec"):
            self.totals[query] = total
            if total and len(query) == 1 and not _is_base(query):
                opened = self.alphabet.open_script(script_of(query))
                spawn.extend(search_task(c, 0, self.limit, role="node") for c in sorted(opened))
            if total == 0:
                nodes.append(SearchNode(query, _parent(query), 0, "empty"))
            elif total <= self.reach:
                nodes.append(SearchNode(query, _parent(query), total, "paging"))
                spawn.extend(self._pages(query, total))
            else:
                nodes.append(SearchNode(query, _parent(query), total, "split"))
                likely, rest = self._children(query, artists)
                spawn.extend(search_task(query + c, 0, self.limit, role="node") for c in likely)
                spawn.extend(search_task(query + c, 0, self.limit, role="spec") for c in rest)
                if self._all_exact(items, word):
                    spawn.append(search_task(query, self.limit, self.limit, role="exact"))
        elif role == "exact" and items and self._all_exact(items, word):
            # The next pages of the run, a few ahead (spawning one twice is a no-op), so that a
            # long run at the end of the crawl is not a chain of one request in flight.
            ahead = (offset + k * self.limit for k in range(1, EXACT_LOOKAHEAD + 1))
            spawn.extend(
                search_task(query, off, self.limit, role="exact")
                for off in ahead
                if off <= self.max_offset and off < total
            )
            nxt = offset + self.limit
            if nxt > self.max_offset and nxt < total:
                nodes.append(SearchNode(query, _parent(query), total, "overflow"))
                spawn.extend(self._pairs_with(query))
        return TaskOutcome(artists=artists, spawn=spawn, search_nodes=nodes), sorted(new_first)

    def refused(self, query: str, offset: int, limit: int, role: str) -> TaskOutcome | None:
        """The outcome of a search page the server refused with 400, or None when the refusal
        is not about the reach (the first page of a query, or a page well inside the reach).

        A page at the end of the reach was refused: the server serves only ``offset + limit <=
        1000``. The reach shrinks to what it serves, and the query is treated as one whose total
        exceeds the reach: a plain node splits into its children (the artists that page would
        have listed are below them), an exact run overflows, a pair is beyond the reach.
        """
        if offset <= 0 or offset - limit < 0 or offset + limit <= self.max_offset:
            return None
        self.max_offset = min(self.max_offset, offset - limit)
        total = self.totals.get(query, 0)
        nodes: list[SearchNode] = []
        spawn: list[TaskSpec] = []
        if " " in query:
            nodes.append(SearchNode(query, query.split()[0], total, "overflow"))
        elif role == "exact":
            nodes.append(SearchNode(query, _parent(query), total, "overflow"))
            spawn.extend(self._pairs_with(query))
        else:
            nodes.append(SearchNode(query, _parent(query), total, "split"))
            likely, rest = self._children(query, ())
            spawn.extend(search_task(query + c, 0, self.limit, role="node") for c in likely)
            spawn.extend(search_task(query + c, 0, self.limit, role="spec") for c in rest)
        return TaskOutcome(spawn=spawn, search_nodes=nodes)

    def _pairs_with(self, word: str) -> list[TaskSpec]:
        """The pair queries of a word whose exact run just overflowed, one per earlier such word.

        An artist every one of whose name words overflowed ("Young Orchestra": 6,494 artists
        have the word "young", 5,514 "orchestra", in a 1M catalog) is beyond the reach of every
        node of the tree; ``young orchestra`` lists only the artists with both words.
        """
        if word in self.overflowed:
            return []
        others = sorted(self.overflowed)
        self.overflowed.add(word)
        return [
            search_task(" ".join(sorted((word, other))), 0, self.limit, role="pair")
            for other in others
        ]

    def _pair_outcome(
        self,
        query: str,
        total: int,
        items: Sequence[Artist],
        spawn: list[TaskSpec],
        nodes: list[SearchNode],
    ) -> None:
        """A pair's first page: page the rest only if the pair still holds artists we lack."""
        self.totals[query] = total
        parent = query.split()[0]
        if total == 0:
            nodes.append(SearchNode(query, parent, 0, "empty"))
            return
        if total > self.reach:  # identical names beyond the reach: name search cannot list them
            nodes.append(SearchNode(query, parent, total, "overflow"))
            return
        nodes.append(SearchNode(query, parent, total, "paging"))
        if self.known is not None:
            new_here, _ = self.known.fresh((a.id, True) for a in items)
            if self.known.count_all(query.split()) + len(new_here) >= total:
                return  # every artist of the pair is held (or on this page)
        spawn.extend(self._pages(query, total))

    def _pages(self, query: str, total: int) -> list[TaskSpec]:
        """The pages after the first of a query whose ``total`` fits under the reach."""
        last = min(total, self.reach)
        return [
            search_task(query, off, self.limit)
            for off in range(self.limit, last, self.limit)
            if off <= self.max_offset
        ]

    def _children(
        self, query: str, items: Sequence[Artist | SimplifiedArtist]
    ) -> tuple[list[str], list[str]]:
        """Child characters of split node ``query``: (likely, speculative).

        With the known index, a child is likely when a name word we hold (or one on this page)
        continues ``query`` with it: the words under a prefix predict its non-empty children far
        better than which letters follow which (after ``ma`` almost every letter follows an
        ``a`` somewhere, but few start a ``ma..`` word). Every other candidate of the alphabet is
        speculative: it waits for the end and is skipped when ``query`` turned out complete.
        """
        likely, rest = self.alphabet.children(query)
        if self.known is None:
            return likely, rest
        depth = len(query)
        seen = self.known.next_chars(query)
        for artist in items:
            for word in name_words(artist.name):
                if len(word) > depth and word.startswith(query):
                    seen.add(word[depth])
        candidates = set(likely) | set(rest) | seen
        return sorted(seen), sorted(candidates - seen)

    @staticmethod
    def _all_exact(items: Sequence[Artist], word: str) -> bool:
        """Every artist on the page has ``word`` as a whole name word."""
        return bool(items) and all(word in name_words(a.name) for a in items)


def _parent(query: str) -> str | None:
    return query[:-1] or None
