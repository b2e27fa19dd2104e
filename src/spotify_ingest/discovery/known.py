"""The artists the crawler holds under each name-word prefix, to skip search pages it need not see.

A search node ``p`` reports an exact ``total``: the number of artists with a name word starting
with ``p``. Once the artists we hold under ``p`` number ``total``, every page of ``p`` (and every
child query below it, and its exact-word run) can only repeat what we have, so the planner skips
them at no request. This matters because an artist with several name words is listed under each
of them ("Anna Bell" under ``a`` and ``b``), and a crawl that pages every node sees the average
artist about 1.5 times.

The index is a scratch SQLite file in a temporary folder named after the process (not the crawl
database: it is derived data, rebuilt from the store's artists at start by :meth:`KnownNames.load`,
a chunk at a time so that resuming a crawl of millions costs bounded memory; the folders of crawls
that were killed are deleted by the next one), holding ``(word, artist)`` pairs and whether each
artist is known in full, so a catalog of millions costs disk, not memory. The first count of a
prefix is a range scan of the words under it; from then on the prefix is *tracked*: its two
counts live in memory and every artist added afterwards bumps the tracked prefixes of its name
words (an artist with two words under one prefix counts once). The planner asks for the same
prefixes again and again (every page of a node checks its node), so a count costs a dictionary
look-up, not a scan of up to a thousand rows per page. Only the prefixes of search nodes are
ever tracked. Whether an id is held, and in full, is answered from a bounded cache of recently
seen ids before SQLite.

The same cache remembers a *fingerprint* of each full artist the store was last given (a hash of
its JSON). A page lists many artists we stored moments ago, unchanged (an artist is listed under
each of its name words), and many album and track artists we hold already:
:meth:`KnownNames.for_store` drops those before the store reads their rows back to compare them
(in a 100k extended crawl, 58 % of the full artists a page carries), and tells which of the rest
were never held, which a store this crawler alone writes then need not look up at all. A
fingerprint that is missing or differs only means the store compares as before.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Generator, Iterable, Sequence
from itertools import islice
from pathlib import Path

import msgspec

from ..models import Artist, SimplifiedArtist
from ..text import name_words

__all__ = ["LOAD_CHUNK", "RECENT_IDS_MAX", "KnownNames"]

# Ids held whose detail is cached in memory: a page's albums and tracks carry mostly artists seen
# moments ago, so most "is it new?" questions are answered without SQLite (~100 bytes an id).
# Two generations of half this size each: when the young one is full it becomes the old one and
# the old one is dropped, so the cache never forgets all at once (it used to, every 200,000 ids:
# in a 1M crawl each time sent a stretch of pages' artists to the store's look-ups).
RECENT_IDS_MAX = 200_000

# Additions per transaction of the scratch file. Nothing here needs to be durable (the index is
# rebuilt from the store at start), and a commit writes every page it dirtied: with one per page
# of results most of the index's CPU went into writing the same interior pages again and again.
COMMIT_EVERY = 256

# Artists read from the store at a time when the index is rebuilt at start (KnownNames.load):
# what the rebuild holds in memory at once, whatever the store's size.
LOAD_CHUNK = 20_000

# Size of the filter of held ids (:class:`_IdFilter`): 2**25 bits, 4 MiB.
ID_FILTER_BITS_LOG2 = 25


_DIR_PREFIX = "spotify-ingest-known-"


_encode = msgspec.json.Encoder().encode


def _fingerprint(artist: Artist) -> int:
    """A hash of everything the API said about ``artist``, never 0 or 1 (the cache's flags)."""
    value = hash(_encode(artist)) & 0x7FFF_FFFF_FFFF_FFFF
    return value if value > 1 else value + 2


class _IdFilter:
    """A Bloom filter of the ids held: ``False`` means never held, ``True`` only maybe.

    Most ids the index is asked about and does not have in its recent-ids cache are new ones
    (a page's new artists), and a look-up that finds nothing still reads the B-tree page where
    the id would be: in a 1M crawl the index's artist table outgrows its page cache and those
    reads were 5 % of the crawler's CPU. ``2 ** ID_FILTER_BITS_LOG2`` bits and three hashes (of
    Python's own, per-process, string hash) answer "never held" for all but ~0.1 % of new ids up
    to a million held, and still for more than half of them at fifteen million.
    """

    __slots__ = ("_bits", "_mask")

    def __init__(self, bits_log2: int) -> None:
        self._mask = (1 << bits_log2) - 1
        self._bits = bytearray(1 << (bits_log2 - 3))

    def _positions(self, key: str) -> tuple[int, int, int]:
        h = hash(key)
        mask = self._mask
        first, step = h & mask, ((h >> 32) & mask) | 1
        return first, (first + step) & mask, (first + 2 * step) & mask

    def add(self, key: str) -> None:
        bits = self._bits
        for p in self._positions(key):
            bits[p >> 3] |= 1 << (p & 7)

    def __contains__(self, key: str) -> bool:
        bits = self._bits
        return all(bits[p >> 3] & (1 << (p & 7)) for p in self._positions(key))


def _adds_to(held: int, artist: Artist | SimplifiedArtist) -> bool:
    """Whether storing ``artist`` over what is held of it (0 simplified, 1 full, or the
    fingerprint of the full artist last stored) can change anything: only a full artist can,
    and not one identical to the one last stored."""
    return isinstance(artist, Artist) and not (held > 1 and held == _fingerprint(artist))


def _remove_orphans() -> None:
    """Delete the scratch folders of crawls that died without closing theirs (SIGKILL, power
    loss): a folder is named after its process id, and one whose process is gone is garbage."""
    root = Path(tempfile.gettempdir())
    for folder in root.glob(_DIR_PREFIX + "*-*"):
        pid_text = folder.name[len(_DIR_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (PermissionError, OverflowError):
            continue  # alive (another user's), or not a process id at all


class KnownNames:
    """Artists we hold, indexed by their name words."""

    def __init__(self) -> None:
        _remove_orphans()
        self._dir = tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-")
        self._db = sqlite3.connect(Path(self._dir) / "known.db", isolation_level=None)
        self._db.executescript(
            """
            PRAGMA journal_mode = OFF;
            PRAGMA synchronous = OFF;
            PRAGMA cache_size = -16000;
            CREATE TABLE artist (id TEXT PRIMARY KEY, full INTEGER NOT NULL) WITHOUT ROWID;
            CREATE TABLE word (word TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (word, id))
                WITHOUT ROWID;
            """
        )
        self._tracked: dict[str, list[int]] = {}  # prefix -> [held, full], kept up to date
        self._deepest = 0  # the length of the longest prefix tracked
        # id -> 0 (simplified), 1 (full) or the fingerprint of the full artist last stored, for
        # ids held and seen lately (bounded)
        self._recent: dict[str, int] = {}
        self._older: dict[str, int] = {}  # the generation before _recent
        self._adds = 0  # calls of add that changed something, for COMMIT_EVERY
        self._ids = _IdFilter(ID_FILTER_BITS_LOG2)  # every id in the artist table, and more

    def close(self) -> None:
        self._db.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def add(self, artists: Iterable[tuple[str, str, bool]]) -> None:
        """Record ``(id, name, full)`` triples; a full artist stays full. Artists already held
        (and not newly full) change nothing."""
        merged: dict[str, tuple[str, bool]] = {}
        for artist_id, name, full in artists:
            held = merged.get(artist_id)
            if held is None:
                merged[artist_id] = (name, bool(full))
            elif full and not held[1]:
                merged[artist_id] = (held[0], True)
        if not merged:
            return
        before = self._held(list(merged))
        changes: list[tuple[str, str, int, int]] = []  # id, name, +held, +full
        for artist_id, (name, full) in merged.items():
            was = before.get(artist_id)
            if was is None:
                changes.append((artist_id, name, 1, int(full)))
            elif full and not was:
                changes.append((artist_id, name, 0, 1))
        self.apply(changes)

    def load(self, artists: Iterable[tuple[str, str, bool]]) -> int:
        """Rebuild from a store at start: record its ``(id, name, full)`` rows, each id once
        (:meth:`~spotify_ingest.store.base.Store.iter_names`); returns how many.

        Unlike :meth:`add` nothing is looked up or merged, and memory stays bounded whatever
        the store's size: the rows go :data:`LOAD_CHUNK` at a time into two unindexed staging
        tables, and then into the index tables in key order, sorted by SQLite (which spills to
        temporary files), so that the B-trees are built page after page instead of by random
        insertions (BENCHMARKS.md, "Resuming").
        """
        steps = self.load_in_steps(artists)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return int(done.value)

    def load_in_steps(self, artists: Iterable[tuple[str, str, bool]]) -> Generator[int, None, int]:
        """:meth:`load`, one chunk a step: yields the rows loaded so far after each chunk, so
        that an event loop can run between chunks; returns the total. Closed before the end
        (a stop during start-up), it undoes the staging and leaves the index as it was."""
        rows = iter(artists)
        words_of = name_words.__wrapped__  # a million names would only churn the shared cache
        db = self._db
        ids = self._ids
        loaded = 0
        if db.in_transaction:
            db.execute("COMMIT")
        db.execute("BEGIN")
        try:
            db.execute("DROP TABLE IF EXISTS load_artist")  # left by a load that failed half-way
            db.execute("DROP TABLE IF EXISTS load_word")
            db.execute("CREATE TEMP TABLE load_artist (id TEXT NOT NULL, full INTEGER NOT NULL)")
            db.execute("CREATE TEMP TABLE load_word (word TEXT NOT NULL, id TEXT NOT NULL)")
            while chunk := list(islice(rows, LOAD_CHUNK)):
                db.executemany(
                    "INSERT INTO load_artist VALUES (?, ?)",
                    ((i, int(full)) for i, _, full in chunk),
                )
                db.executemany(
                    "INSERT INTO load_word VALUES (?, ?)",
                    ((w, i) for i, name, _ in chunk for w in words_of(name)),
                )
                for artist_id, _, _ in chunk:
                    ids.add(artist_id)
                if self._tracked:
                    self._count_tracked([(i, name, 1, int(full)) for i, name, full in chunk])
                loaded += len(chunk)
                yield loaded
            db.execute(
                "INSERT INTO artist (id, full) SELECT id, full FROM load_artist WHERE true "
                "ORDER BY id ON CONFLICT (id) DO UPDATE SET full = MAX(full, excluded.full)"
            )
            db.execute(
                "INSERT OR IGNORE INTO word SELECT word, id FROM load_word ORDER BY word, id"
            )
            db.execute("DROP TABLE load_artist")
            db.execute("DROP TABLE load_word")
            db.execute("COMMIT")
        except BaseException:  # closed early (GeneratorExit) or failed: nothing half-loaded
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return loaded

    def apply(self, changes: Sequence[tuple[str, str, int, int]]) -> None:
        """Record what a store commit changed, as ``(id, name, new, full)`` (see
        :class:`~spotify_ingest.store.base.CompletionResult`): ``new`` 1 for an id not held
        before, 0 for one held simplified and full now. No look-up: the store has made it."""
        if not changes:
            return
        # full afterwards: a new artist if it came full, an upgraded one always
        full_now = [(i, int(d_held == 0 or d_full)) for i, _, d_held, d_full in changes]
        db = self._db
        if not db.in_transaction:
            db.execute("BEGIN")
        db.executemany(
            "INSERT INTO artist (id, full) VALUES (?, ?) "
            "ON CONFLICT (id) DO UPDATE SET full = MAX(full, excluded.full)",
            full_now,
        )
        db.executemany(
            "INSERT OR IGNORE INTO word (word, id) VALUES (?, ?)",
            ((w, i) for i, name, d_held, _ in changes if d_held for w in name_words(name)),
        )
        self._adds += 1
        if self._adds % COMMIT_EVERY == 0:
            db.execute("COMMIT")
        ids = self._ids
        for artist_id, full_after in full_now:
            ids.add(artist_id)
            self._remember(artist_id, full_after)
        self._count_tracked(changes)

    def _count_tracked(self, changes: Iterable[tuple[str, str, int, int]]) -> None:
        """Add ``(id, name, new, full)`` changes to the counts of the tracked prefixes."""
        tracked = self._tracked
        if tracked:
            for _, name, d_held, d_full in changes:
                for prefix in self._tracked_prefixes(name):
                    counts = tracked[prefix]
                    counts[0] += d_held
                    counts[1] += d_full

    def _tracked_prefixes(self, name: str) -> set[str]:
        tracked = self._tracked
        deepest = self._deepest  # no tracked prefix is longer than the deepest one tracked
        return {
            word[:k] for word in name_words(name) for k in range(1, min(len(word), deepest) + 1)
        } & tracked.keys()

    def _held(self, ids: list[str]) -> dict[str, int]:
        """``{id: full}`` of the ids held: from the recent-ids cache, the rest from SQLite."""
        held: dict[str, int] = {}
        misses = []
        for artist_id in ids:
            full = self._cached(artist_id)
            if full is None:
                misses.append(artist_id)
            else:
                held[artist_id] = 0 if full == 0 else 1
        held.update(self._looked_up(misses))
        return held

    def _looked_up(self, ids: list[str]) -> dict[str, int]:
        """``{id: full}`` of the ids held, from SQLite (ids the recent-ids cache does not know);
        an id the filter says was never held is not asked about."""
        wanted = [i for i in ids if i in self._ids]
        held: dict[str, int] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT id, full FROM artist WHERE id IN ({marks})", chunk)
            for artist_id, full in rows:
                held[artist_id] = full
                self._remember(artist_id, full)
        return held

    def _cached(self, artist_id: str) -> int | None:
        """The recent-ids cache's value for ``artist_id`` (None: not cached); a hit in the older
        generation moves into the young one, since the id is still in use."""
        value = self._recent.get(artist_id)
        if value is None:
            value = self._older.get(artist_id)
            if value is not None:
                self._remember(artist_id, value)
        return value

    def _remember(self, artist_id: str, full: int) -> None:
        if len(self._recent) >= RECENT_IDS_MAX // 2:
            # forgetting costs a look-up in SQLite, nothing else
            self._older = self._recent
            self._recent = {}
        self._recent[artist_id] = full

    def forget_recent(self) -> None:
        """Empty the recent-ids cache (it is only a shortcut: every answer stays the same)."""
        self._recent = {}
        self._older = {}

    def stored(self, artists: Iterable[Artist]) -> None:
        """Remember the fingerprints of full artists the store has just been given."""
        for artist in artists:
            self._remember(artist.id, _fingerprint(artist))

    def for_store(
        self, artists: Sequence[Artist | SimplifiedArtist]
    ) -> tuple[list[Artist | SimplifiedArtist], frozenset[str]]:
        """What the store must be given of ``artists``, and the ids among them never held.

        Dropped: a simplified artist held in any form, a full one identical to the one last
        stored (by its fingerprint). Ids the recent-ids cache does not know are looked up
        in SQLite, once for the page; what is not there either has never been held, which a
        store this crawler alone writes need not look up again (``TaskOutcome.unseen``).
        """
        cached = [self._cached(a.id) for a in artists]
        misses = [a.id for a, held in zip(artists, cached, strict=True) if held is None]
        found = self._looked_up(misses) if misses else {}
        kept: list[Artist | SimplifiedArtist] = []
        unseen: set[str] = set()
        for artist, held in zip(artists, cached, strict=True):
            if held is None:
                if artist.id not in found:
                    unseen.add(artist.id)
                elif not isinstance(artist, Artist):
                    continue
            elif not _adds_to(held, artist):
                continue
            kept.append(artist)
        return kept, frozenset(unseen)

    def fresh(self, artists: Iterable[tuple[str, bool]]) -> tuple[set[str], set[str]]:
        """Of ``(id, full)`` pairs: the ids never seen, and the ids seen simplified now full."""
        wanted = dict(artists)
        held = self._held(list(wanted))
        new = {i for i in wanted if i not in held}
        upgraded = {i for i, full in wanted.items() if full and held.get(i) == 0}
        return new, upgraded

    def next_chars(self, prefix: str) -> set[str]:
        """The characters that follow ``prefix`` in the name words we hold (``"ma"`` -> ``r`` for
        ``maria``). One index seek per distinct character, however many words share it."""
        found: set[str] = set()
        depth = len(prefix)
        start = prefix + "\x00"  # the word ``prefix`` itself has no next character
        while True:
            row = self._db.execute(
                "SELECT word FROM word WHERE word >= ? ORDER BY word LIMIT 1", (start,)
            ).fetchone()
            if row is None or not row[0].startswith(prefix) or len(row[0]) <= depth:
                return found
            char = row[0][depth]
            found.add(char)
            if ord(char) >= 0x10FFFF:
                return found
            start = prefix + chr(ord(char) + 1)

    def has_prefix(self, prefix: str) -> bool:
        """A held name word starts with ``prefix`` (one index seek)."""
        row = self._db.execute(
            "SELECT 1 FROM word WHERE word >= ? AND word < ? LIMIT 1",
            (prefix, prefix + "\U0010ffff"),
        ).fetchone()
        return row is not None

    def with_word(self, word: str) -> int:
        """Artists held with ``word`` as a whole name word."""
        row = self._db.execute("SELECT COUNT(*) FROM word WHERE word = ?", (word,)).fetchone()
        return int(row[0])

    def count(self, prefix: str) -> tuple[int, int]:
        """Artists known with a name word starting with ``prefix``: (all, full). The prefix is
        tracked from now on (see the module docstring)."""
        counts = self._tracked.get(prefix)
        if counts is None:
            counts = self._tracked[prefix] = list(self._scan(prefix))
            self._deepest = max(self._deepest, len(prefix))
        return counts[0], counts[1]

    def count_all(self, prefixes: Sequence[str]) -> int:
        """Artists held with, for every one of ``prefixes``, a name word starting with it (what
        a query of several words matches; one word may match several of them). Not tracked: a
        scan of each prefix's words, for the few pair queries at the end of a crawl."""
        where = " AND ".join(
            "id IN (SELECT id FROM word WHERE word >= ? AND word < ?)" for _ in prefixes
        )
        args = [bound for p in prefixes for bound in (p, p + "\U0010ffff")]
        row = self._db.execute(f"SELECT COUNT(*) FROM artist WHERE {where}", args).fetchone()
        return int(row[0])

    def _scan(self, prefix: str) -> tuple[int, int]:
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(a.full), 0) FROM artist a WHERE a.id IN "
            "(SELECT id FROM word WHERE word >= ? AND word < ?)",
            (prefix, prefix + "\U0010ffff"),
        ).fetchone()
        return int(row[0]), int(row[1])
