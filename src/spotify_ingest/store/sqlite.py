"""The SQLite store: one file, WAL journal, each finished task recorded whole or not at all.

Durability: the database runs in WAL mode with ``synchronous=NORMAL``. A killed process (SIGKILL,
OOM, Ctrl-C at the wrong moment) loses no committed transaction; a power cut may lose the last
few, which only means those tasks run again, and every write is an idempotent upsert, so nothing is
stored twice.

Group commits (``group_writes=N``; ``crawl`` uses :data:`CRAWL_GROUP_WRITES`): up to N writes (a
finished task, a claim, a release ...) share one transaction, each inside its own SAVEPOINT so
that a write that fails rolls back alone. The transaction commits at its N-th write, at
:meth:`SQLiteStore.flush` (the crawler calls it four times a second and when it stops) and at
:meth:`SQLiteStore.close`. A task is still recorded whole or not at all (its results, its
completion and the tasks it spawns are one write); a kill also undoes the writes since the last
commit, whose tasks are then pending again and asked for again, never stored twice. What it
buys: a commit writes every page its transaction dirtied, and consecutive tasks share some (the
tasks table, the tail of the artists table): commits took 2.30 s of CPU in a 50k-artist crawl
one by one, 1.60 s in groups of 16 (crawler 2.48 -> 2.37 ms per request).

What a write costs: a commit writes every page it dirtied. Artist ids are random, so an index
keyed by them takes most new artists to a page of their own; since schema version 2 that is only
the small ``artists_id`` index (~40 bytes an artist), while the rows (~600 bytes, with the
images) go to the end of a rowid table, a few pages a commit. (Keyed by id, in version 1, a 1M
store's every new artist read and rewrote a page of a table twenty times the page cache.) A
crawl that alone writes the file also passes the ids its known index has never held
(``TaskOutcome.unseen``), and :meth:`SQLiteStore.complete` does not look those up.

Statement journals live in memory (``temp_store``; a group's SAVEPOINTs wrote them to a
temporary file) and the page cache is 32 MiB (:data:`CACHE_KIB`); with the crawler's fingerprints
of stored artists, that took a 100k extended crawl from 7.3-7.5 to 6.6-6.7 ms of crawler CPU a
request, side by side.

In a crawl (``background_checkpoints``) checkpoints run in a thread of their own. Copying the
WAL back into the database (and its ``fdatasync``) took 20-130 ms at a time inside whichever
commit crossed ``wal_autocheckpoint``; on the event loop every such stall delays the requests due
then and widens the rate controller's jitter margin (a 100k extended crawl spent 3.6-5.1 s of its
100 s blocked in such commits). The thread runs a PASSIVE checkpoint every
:data:`CHECKPOINT_SECONDS` on its own connection; SQLite lets it copy while the crawl keeps
committing, and Python's sqlite3 releases the GIL while it works. Should the WAL still outgrow
:data:`CHECKPOINT_MAX_PAGES` (checkpoints that never catch up), the crawl's own connection
checkpoints at its next commit, as SQLite does by default.

Tasks a dead process had leased go back to pending when the store is opened
(:meth:`SQLiteStore.recover_leases`): one SQLite file serves one crawler process at a time, which
an exclusive lock file enforces (``lock``, :mod:`spotify_ingest.store.lock`). Readers
(``read_only``: ``stats``, ``export``, ``limits``) write nothing but an upgrade of an older
schema, and WAL lets them read a snapshot beside a crawl without a lock the writer waits for; a
file this user may not write they open read-only (:meth:`SQLiteStore._connect_read_only`). A
crawl, once its store is open, never waits for a lock (:data:`CRAWL_BUSY_MS`): SQLite's busy wait
would block its event loop, signals included, and in WAL neither readers nor its checkpoint
thread ever hold the lock a write needs, so whoever does is another program (not a crawl: the
lock file keeps those out). The write fails at once saying so, and the crawl stops, exit 4. (At
open, before the event loop runs, it waits like any connection: a reader that was the file's last
connection may be checkpointing it as it closes.)

Opening checks, before anything is written: a path that is not a regular file (``/dev/null``,
where SQLite would create ``/dev/null-journal``) is refused; a file this user may not write, or
in a folder it may not write, is called read-only for a crawl; ``PRAGMA quick_check`` reads every
page of a file for structural damage and is interrupted after :data:`INTEGRITY_CHECK_SECONDS`
(a few hundred MB a second from the page cache), so a large file is checked in part: damage
found in time is refused as corrupt, damage beyond it meets SQLite's own checks as it is read.

Schema versions live in ``PRAGMA user_version`` and :mod:`spotify_ingest.store.schema` holds the
migrations from every earlier version; a database from a newer version is refused, never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from ..errors import SchemaTooNewError, StoreError, UsageError
from ..models import Artist, SimplifiedArtist
from .base import (
    ArtistCounts,
    CompletionResult,
    Detail,
    SearchNode,
    Task,
    TaskOutcome,
    TaskProblem,
    TaskSpec,
    TaskState,
    group_problems,
)
from .lock import DatabaseLock
from .schema import SCHEMA_VERSION, migrate

__all__ = ["CRAWL_GROUP_WRITES", "CRAWL_OPTIONS", "SQLiteStore"]

# Writes per transaction in a crawl (see "Group commits" above): a commit every ~0.15 s at 100
# requests/s, and a kill repeats at most this many tasks beyond those in flight.
CRAWL_GROUP_WRITES = 16

# Page cache of the crawl database, in KiB (SQLite's default is 2 MiB). Every finished task looks
# up and updates artists by id, a random key: with the default cache a 200k-artist crawl read
# 1,600 pages a second back from the OS (pread).
CACHE_KIB = 32 * 1024

# Background checkpoints (module docstring): how often, and the WAL size (pages) at which the
# crawl's own connection checkpoints after all.
CHECKPOINT_SECONDS = 0.5
CHECKPOINT_MAX_PAGES = 50_000

# How a crawl opens its store (``SQLiteStore(path, **CRAWL_OPTIONS)``): the CLI and the benchmark.
CRAWL_OPTIONS: dict[str, Any] = {
    "group_writes": CRAWL_GROUP_WRITES,
    "background_checkpoints": True,
    "lock": True,
}

# How long a connection waits for another's lock, in ms; a crawl (``lock``) does not wait at all
# once open (module docstring).
BUSY_MS = 5000
CRAWL_BUSY_MS = 0

# The integrity check at open is interrupted after this long (module docstring).
INTEGRITY_CHECK_SECONDS = 1.0

_CHUNK = 500  # SQLite's host-parameter limit is 999 on old builds

_UPSERT_ARTIST = """
INSERT INTO artists (id, name, detail, genres, popularity, followers, images, uri, external_url,
                     found_by, first_seen, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    name = excluded.name,
    detail = excluded.detail,
    genres = excluded.genres,
    popularity = excluded.popularity,
    followers = excluded.followers,
    images = excluded.images,
    uri = COALESCE(excluded.uri, artists.uri),
    external_url = COALESCE(excluded.external_url, artists.external_url),
    updated_at = excluded.updated_at
WHERE excluded.detail >= artists.detail
"""

_ARTIST_COLUMNS = (
    "id", "name", "detail", "genres", "popularity", "followers", "images", "uri",
    "external_url", "found_by", "first_seen", "updated_at",
)  # fmt: skip


_to_json = msgspec.json.Encoder().encode  # compact UTF-8 JSON: '[{"url":"...","height":640,...}]'
_from_json = msgspec.json.Decoder().decode
_DETAIL_NAMES = {d.value: d.name.lower() for d in Detail}  # 1 -> "full"


def _code(exc: sqlite3.Error) -> int:
    """SQLite's primary result code of ``exc`` (SQLITE_CORRUPT, SQLITE_READONLY ...)."""
    return int(getattr(exc, "sqlite_errorcode", 0)) & 0xFF


def _has_tables(db: sqlite3.Connection) -> bool:
    return bool(db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall())


def _artist_row(artist: Artist | SimplifiedArtist, found_by: str, now: float) -> tuple[Any, ...]:
    url = (artist.external_urls or {}).get("spotify")
    if isinstance(artist, Artist):
        images = None if artist.images is None else _to_json(artist.images).decode()
        genres = None if artist.genres is None else _to_json(artist.genres).decode()
        return (
            artist.id, artist.name, int(Detail.FULL), genres, artist.popularity,
            artist.follower_count, images, artist.uri, url, found_by, now, now,
        )  # fmt: skip
    return (
        artist.id, artist.name, int(Detail.SIMPLIFIED), None, None, None, None, artist.uri, url,
        found_by, now, now,
    )  # fmt: skip


class _Checkpointer:
    """A thread that copies the WAL back into the database (module docstring)."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(CHECKPOINT_SECONDS):
            # A failed checkpoint loses nothing (the WAL keeps every commit), and the next one,
            # or the crawl's own connection past CHECKPOINT_MAX_PAGES, does the work.
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(sqlite3.Error):
            self._db.close()


class SQLiteStore:
    """A :class:`~spotify_ingest.store.base.Store` in one SQLite file."""

    # One crawler process at a time writes the file (the lock file): what its known index holds
    # is what the file holds, so TaskOutcome.unseen can spare complete() its look-ups.
    sole_writer = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        group_writes: int = 1,
        background_checkpoints: bool = False,
        lock: bool = False,
        read_only: bool = False,
    ) -> None:
        if group_writes < 1:
            raise ValueError("group_writes must be at least 1")
        if read_only and create:
            raise ValueError("a read-only store cannot create its file")
        self.path = Path(path)
        self._group_writes = group_writes
        self._group_open = 0  # writes in the open group transaction (group_writes > 1)
        self._checkpointer: _Checkpointer | None = None
        existed = self._check_path(create, writing=not read_only)
        self._lock = DatabaseLock(self.path) if lock else None
        if self._lock is not None:
            self._lock.acquire()
        try:
            self._db = self._open(read_only, existed, background_checkpoints)
            if background_checkpoints:
                self._checkpointer = self._start_checkpointer()
            if self._lock is not None:  # open: from now on the crawl's only rival is a stranger
                self._db.execute(f"PRAGMA busy_timeout = {CRAWL_BUSY_MS}")
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise

    def _check_path(self, create: bool, *, writing: bool) -> bool:
        """Refuse a path that cannot be this store's file; returns whether the file exists."""
        if self.path.is_dir():
            raise UsageError(
                f"--db {self.path} is a directory: give a file path such as spotify.db"
            )
        if not self.path.exists():
            if not create:
                raise UsageError(f"no database at {self.path}: run `spotify-ingest crawl` first")
            parent = self.path.parent if str(self.path.parent) else Path(".")
            if not parent.is_dir():
                raise UsageError(f"--db {self.path}: folder {parent} does not exist")
            if not os.access(parent, os.W_OK):
                raise StoreError(f"--db {self.path}: folder {parent} is not writable")
            return False
        if not stat.S_ISREG(self.path.stat().st_mode):
            # SQLite would put its journal beside it (/dev/null-journal).
            raise UsageError(
                f"--db {self.path} is not a regular file: give a file path such as spotify.db"
            )
        if not os.access(self.path, os.R_OK):
            raise StoreError(f"--db {self.path} is not readable")
        why = self._why_read_only() if writing else None
        if why:
            raise StoreError(self._read_only_message(why))
        return True

    def _why_read_only(self) -> str | None:
        """Why this user cannot write the (existing) file, or None when it can."""
        if not os.access(self.path, os.W_OK):
            return "the file is read-only"
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not os.access(parent, os.W_OK):
            return f"its folder {parent} is not writable"
        return None

    def _read_only_message(self, why: str) -> str:
        return (
            f"{self.path} is read-only for this user ({why}): a crawl writes to it; make it "
            "writable or crawl a copy (stats and export read it as it is)"
        )

    def _open(
        self, read_only: bool, check: bool, background_checkpoints: bool
    ) -> sqlite3.Connection:
        """Connect, refuse what this spotify-ingest cannot use (``check``: its integrity too),
        and (unless read-only) prepare the file for writing. Nothing is written to a file that
        is refused."""
        db = self._connect(read_only)
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SchemaTooNewError(
                    f"{self.path} has schema version {version}, newer than this spotify-ingest "
                    f"understands ({SCHEMA_VERSION}): upgrade spotify-ingest"
                )
            if version == 0 and _has_tables(db):
                raise StoreError(f"{self.path} is an SQLite file but not a spotify-ingest database")
            if check:
                self._check_integrity(db)
            if read_only and version < SCHEMA_VERSION:
                # An older file is upgraded once; that takes a writer.
                db.close()
                return self._open(False, False, background_checkpoints)
            if not read_only:
                self._prepare(db, version, background_checkpoints)
        except sqlite3.Error as exc:
            db.close()
            raise self._error(exc) from None
        except BaseException:
            db.close()
            raise
        return db

    def _connect(self, read_only: bool) -> sqlite3.Connection:
        """A connection to the file; a reader's is read-only only where it must be (a read-only
        connection leaves the WAL files behind when it closes)."""
        if read_only and self._why_read_only():
            return self._connect_read_only()
        try:
            return sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from None

    def _connect_read_only(self) -> sqlite3.Connection:
        """Read a file this user may not write. Without WAL files beside it no connection has it
        open, and it is read as immutable: read-only connections would create WAL files that,
        owned by this user, its owner could not write. Otherwise read-only through them."""
        in_use = any(self.path.with_name(self.path.name + s).exists() for s in ("-wal", "-shm"))
        uri = self.path.absolute().as_uri() + ("?mode=ro" if in_use else "?immutable=1")
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)

    @staticmethod
    def _prepare(db: sqlite3.Connection, version: int, background_checkpoints: bool) -> None:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        # A group's SAVEPOINTs keep a statement journal of the pages each write touched; in a
        # temporary file that was 1,400 write(2)s a second at 100 requests a second.
        db.execute("PRAGMA temp_store = MEMORY")
        db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        if background_checkpoints:
            db.execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_MAX_PAGES}")
        migrate(db, version)

    def _check_integrity(self, db: sqlite3.Connection) -> None:
        """``PRAGMA quick_check``, interrupted after :data:`INTEGRITY_CHECK_SECONDS` (module
        docstring): what it found wrong by then is refused as corrupt."""
        timer = threading.Timer(INTEGRITY_CHECK_SECONDS, db.interrupt)
        timer.start()
        try:
            rows = db.execute("PRAGMA quick_check(3)").fetchall()
        except sqlite3.OperationalError as exc:
            if _code(exc) != sqlite3.SQLITE_INTERRUPT:
                raise
            return  # the part checked in time was sound
        finally:
            timer.cancel()
            timer.join()
        lines = [line.strip() for row in rows for line in str(row[0]).splitlines()]
        if lines != ["ok"]:  # the rest: "*** in database main ***", "Page 182: btreeInitPage..."
            found = [line for line in lines if line and not line.startswith("***")]
            raise StoreError(self._corrupt_message("; ".join(found[:2])))

    def _corrupt_message(self, detail: str) -> str:
        return (
            f"{self.path} is corrupt ({detail}): nothing was written to it; restore it from a "
            "backup or give another --db"
        )

    def _error(self, exc: sqlite3.Error) -> StoreError:
        """The StoreError an sqlite3 error at open means, named by what SQLite said."""
        code = _code(exc)
        if code == sqlite3.SQLITE_READONLY:
            return StoreError(self._read_only_message(str(exc)))
        if code == sqlite3.SQLITE_CORRUPT:
            return StoreError(self._corrupt_message(str(exc)))
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return StoreError(
                f"{self.path} is locked by another program ({exc}): stop it and try again"
            )
        return StoreError(
            f"{self.path} is not a spotify-ingest database or is corrupt ({exc}): "
            "move it away or give another --db"
        )

    def _start_checkpointer(self) -> _Checkpointer:
        try:
            return _Checkpointer(self.path)
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(f"cannot open database {self.path}: {exc}") from None

    # -- plumbing -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write: its own transaction, or a SAVEPOINT in the open group (module docstring).

        ``BEGIN IMMEDIATE`` takes the write lock up front.
        """
        db = self._db
        if self._group_writes == 1:
            self._begin()
            try:
                yield db
            except BaseException:
                self._rollback()
                raise
            self._commit()
            return
        if not db.in_transaction:
            self._group_open = 0
            self._begin()
        db.execute("SAVEPOINT write")
        try:
            yield db
        except BaseException:
            if db.in_transaction:  # else SQLite rolled the whole group back itself
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK TO write")
                    db.execute("RELEASE write")
            raise
        db.execute("RELEASE write")
        self._group_open += 1
        if self._group_open >= self._group_writes:
            self._commit()

    def _begin(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _code(exc) == sqlite3.SQLITE_BUSY and self._lock is not None:
                raise self._held_by_another_program(exc) from None
            raise StoreError(f"cannot write to {self.path}: {exc}") from None

    def _held_by_another_program(self, exc: sqlite3.Error) -> StoreError:
        """A crawl's write met another program's lock (module docstring): the crawl stops."""
        return StoreError(
            f"cannot write to {self.path}: another program holds its write lock ({exc}); stop "
            "it, then run the crawl again"
        )

    def _commit(self) -> None:
        self._group_open = 0
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"cannot commit to {self.path}: {exc}") from None

    def flush(self) -> None:
        """Commit the writes of the open group, if any (a no-op when every write commits)."""
        if self._db.in_transaction:
            self._commit()

    def _rollback(self) -> None:
        """Roll back the open transaction, if SQLite has not already done so.

        After some errors (disk full, I/O error) SQLite rolls the transaction back itself; a
        ROLLBACK then fails with "no transaction is active", and that error must not replace the
        one that explains what went wrong.
        """
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def _write(self, fn_sql: str, args: Sequence[Any] = ()) -> None:
        try:
            with self._tx() as db:
                db.execute(fn_sql, args)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to {self.path}: {exc}") from None

    def close(self) -> None:
        """Commit the open group (if any) and close the file."""
        with contextlib.suppress(sqlite3.Error, StoreError):
            self.flush()
        if self._checkpointer is not None:
            self._checkpointer.close()
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- meta -----------------------------------------------------------------------------------

    def get_meta(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        self._write(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value, ensure_ascii=False)),
        )

    # -- tasks ----------------------------------------------------------------------------------

    @staticmethod
    def _insert_tasks(db: sqlite3.Connection, specs: Iterable[TaskSpec], now: float) -> int:
        before = db.total_changes
        db.executemany(
            "INSERT OR IGNORE INTO tasks (kind, key, params, priority, state, created_at) "
            "VALUES (?, ?, ?, ?, 0, ?)",
            (
                (s.kind, s.key, json.dumps(s.params, ensure_ascii=False), s.priority, now)
                for s in specs
            ),
        )
        return db.total_changes - before

    def add_tasks(self, specs: Iterable[TaskSpec]) -> int:
        try:
            with self._tx() as db:
                return self._insert_tasks(db, specs, time.time())
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to {self.path}: {exc}") from None

    def claim(self, kind: str, limit: int) -> list[Task]:
        """Lease up to ``limit`` pending tasks of ``kind``: highest priority first, then oldest."""
        try:
            with self._tx() as db:
                rows = db.execute(
                    "SELECT id, kind, params, priority, attempts FROM tasks "
                    "WHERE state = 0 AND kind = ? ORDER BY priority DESC, id LIMIT ?",
                    (kind, limit),
                ).fetchall()
                db.executemany(
                    "UPDATE tasks SET state = 1, attempts = attempts + 1, leased_at = ? "
                    "WHERE id = ?",
                    ((time.time(), r[0]) for r in rows),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to {self.path}: {exc}") from None
        return [Task(r[0], r[1], json.loads(r[2]), r[3], r[4] + 1) for r in rows]

    def pending_counts(self) -> dict[str, int]:
        rows = self._db.execute(
            "SELECT kind, COUNT(*) FROM tasks WHERE state = 0 GROUP BY kind"
        ).fetchall()
        return {kind: n for kind, n in rows}

    def task_counts(self) -> dict[str, dict[str, int]]:
        """``{kind: {state name: count}}`` over every task ever created."""
        out: dict[str, dict[str, int]] = {}
        for kind, state, n in self._db.execute(
            "SELECT kind, state, COUNT(*) FROM tasks GROUP BY kind, state"
        ):
            out.setdefault(kind, {})[TaskState(state).name.lower()] = n
        return out

    def complete(self, task: Task, outcome: TaskOutcome) -> CompletionResult:
        """Record a finished task in one transaction; see the module docstring of ``base``."""
        now = time.time()
        best: dict[str, Artist | SimplifiedArtist] = {}
        for artist in outcome.artists:
            held = best.get(artist.id)
            if held is None or (isinstance(artist, Artist) and not isinstance(held, Artist)):
                best[artist.id] = artist
        try:
            with self._tx() as db:
                unseen = outcome.unseen
                stored = self._rows_of(
                    db, list(best) if unseen is None else [i for i in best if i not in unseen]
                )
                new_full = new_simplified = upgraded = 0
                rows = []
                changes: list[tuple[str, str, int, int]] = []
                for artist_id, artist in best.items():
                    full = isinstance(artist, Artist)
                    before = stored.get(artist_id)
                    if before is not None and not full:
                        continue  # a simplified artist seen again: nothing it could add
                    row = _artist_row(artist, task.kind, now)
                    if before is None:
                        if full:
                            new_full += 1
                        else:
                            new_simplified += 1
                        changes.append((artist_id, artist.name, 1, int(full)))
                    elif before[1] == Detail.SIMPLIFIED:
                        upgraded += 1
                        changes.append((artist_id, artist.name, 0, 1))
                    elif before == row[1:9]:
                        continue  # a full artist seen again, unchanged
                    rows.append(row)
                if rows:
                    db.executemany(_UPSERT_ARTIST, rows)
                cur = db.execute(
                    "UPDATE tasks SET state = 2, finished_at = ?, requests = ?, value = ? "
                    "WHERE id = ? AND state = 1",
                    (now, outcome.requests, 2 * new_full + new_simplified + upgraded, task.id),
                )
                if cur.rowcount != 1:
                    raise StoreError(f"task {task.id} was not leased by this crawler")
                spawned = self._insert_tasks(db, outcome.spawn, now) if outcome.spawn else 0
                if outcome.search_nodes:
                    db.executemany(
                        "INSERT INTO search_nodes (query, parent, total, status) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT (query) DO UPDATE SET "
                        "total = excluded.total, status = excluded.status",
                        ((n.query, n.parent, n.total, n.status) for n in outcome.search_nodes),
                    )
                if outcome.meta:
                    db.executemany(
                        "INSERT INTO meta (key, value) VALUES (?, ?) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        ((k, json.dumps(v, ensure_ascii=False)) for k, v in outcome.meta.items()),
                    )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to {self.path}: {exc}") from None
        return CompletionResult(new_full, new_simplified, upgraded, spawned, changes)

    @staticmethod
    def _rows_of(db: sqlite3.Connection, ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        """Stored ``(name, detail, genres, popularity, followers, images, uri, external_url)``."""
        held: dict[str, tuple[Any, ...]] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in db.execute(
                "SELECT id, name, detail, genres, popularity, followers, images, uri, external_url "
                f"FROM artists WHERE id IN ({marks})",
                chunk,
            ):
                held[row[0]] = tuple(row[1:])
        return held

    @staticmethod
    def _details_of(db: sqlite3.Connection, ids: Sequence[str]) -> dict[str, Detail]:
        known: dict[str, Detail] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for artist_id, detail in db.execute(
                f"SELECT id, detail FROM artists WHERE id IN ({marks})", chunk
            ):
                known[artist_id] = Detail(detail)
        return known

    def simplified_among(self, ids: Sequence[str]) -> list[str]:
        """The ids of ``ids`` still known only in simplified form (hydration skips the rest)."""
        known = self._details_of(self._db, list(ids))
        return [i for i in ids if known.get(i) == Detail.SIMPLIFIED]

    def release(self, tasks: Iterable[Task], *, attempted: bool = False) -> None:
        """Give leased tasks back (shutdown, or a request that must be retried later).

        ``attempted``: the request was made and failed, so the attempt counts (a task that keeps
        failing reaches the crawler's attempt limit); otherwise it is as if never claimed.
        """
        keep = 0 if attempted else 1
        try:
            with self._tx() as db:
                db.executemany(
                    f"UPDATE tasks SET state = 0, attempts = MAX(attempts - {keep}, 0) "
                    "WHERE id = ? AND state = 1",
                    ((t.id,) for t in tasks),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to {self.path}: {exc}") from None

    def fail(self, task: Task, reason: str) -> None:
        """Give up on a task for good (the API will never answer it: unknown id, bad query)."""
        self._write(
            "UPDATE tasks SET state = 3, finished_at = ?, error = ? WHERE id = ?",
            (time.time(), reason[:500], task.id),
        )

    def back_off(self, task: Task, reason: str, not_before: float, *, attempted: bool) -> None:
        """Set a leased task aside until ``not_before`` (epoch seconds): its request met passing
        trouble. ``attempted`` as for :meth:`release`."""
        keep = 0 if attempted else 1
        self._write(
            f"UPDATE tasks SET state = 4, attempts = MAX(attempts - {keep}, 0), not_before = ?, "
            "error = ? WHERE id = ? AND state = 1",
            (not_before, reason[:500], task.id),
        )

    def wake_due(self) -> int:
        """Backing-off tasks whose ``not_before`` has passed become pending; returns how many."""
        try:
            with self._tx() as db:
                return db.execute(
                    "UPDATE tasks SET state = 0 WHERE state = 4 AND not_before <= ?", (time.time(),)
                ).rowcount
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to {self.path}: {exc}") from None

    def next_retry(self, kinds: Collection[str] | None = None) -> float | None:
        """The earliest ``not_before`` of a backing-off task (of ``kinds``; None: none)."""
        sql = "SELECT MIN(not_before) FROM tasks WHERE state = 4"
        if kinds is not None:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
        row = self._db.execute(sql, tuple(kinds or ())).fetchone()
        return None if row[0] is None else float(row[0])

    def task_problems(self) -> list[TaskProblem]:
        """Tasks failed for good or backing off, by kind, state and reason."""
        return group_problems(
            self._db.execute(
                "SELECT kind, state, error, COUNT(*), MIN(not_before) FROM tasks "
                "WHERE state IN (3, 4) GROUP BY kind, state, error"
            )
        )

    def recover_leases(self) -> int:
        """Tasks leased by a process that is gone go back to pending; returns how many."""
        try:
            with self._tx() as db:
                return db.execute("UPDATE tasks SET state = 0 WHERE state = 1").rowcount
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to {self.path}: {exc}") from None

    def queue_hydration(self, batch_size: int, max_tasks: int, priority: float = 0.0) -> int:
        """Turn simplified artists not yet queued into ``hydrate`` tasks of ``batch_size`` ids."""
        try:
            with self._tx() as db:
                ids = [
                    r[0]
                    for r in db.execute(
                        "SELECT id FROM artists WHERE detail = 0 AND hydration_queued = 0 "
                        "ORDER BY first_seen, id LIMIT ?",
                        (batch_size * max_tasks,),
                    )
                ]
                if not ids:
                    return 0
                db.executemany(
                    "UPDATE artists SET hydration_queued = 1 WHERE id = ?", ((i,) for i in ids)
                )
                batches = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
                return self._insert_tasks(
                    db, (TaskSpec("hydrate", {"ids": b}, priority) for b in batches), time.time()
                )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to {self.path}: {exc}") from None

    # -- reading --------------------------------------------------------------------------------

    def artist_counts(self) -> ArtistCounts:
        total, full = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(detail), 0) FROM artists"
        ).fetchone()
        return ArtistCounts(total=total, full=full)

    def artist_ids(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT id FROM artists")}

    def iter_artists(self) -> Iterator[dict[str, Any]]:
        """Every artist as a dict of plain values, in id order, streamed from the database."""
        for row in self._stream(f"SELECT {', '.join(_ARTIST_COLUMNS)} FROM artists ORDER BY id"):
            item = dict(zip(_ARTIST_COLUMNS, row, strict=True))
            item["detail"] = _DETAIL_NAMES[item["detail"]]
            for key in ("genres", "images"):
                if item[key] is not None:
                    item[key] = _from_json(item[key])
            yield item

    def iter_names(self) -> Iterator[tuple[str, str, bool]]:
        """Every artist as ``(id, name, full)``, streamed in storage order (no sort, no JSON):
        what a crawl's known index is rebuilt from at start."""
        for artist_id, name, detail in self._stream("SELECT id, name, detail FROM artists"):
            yield artist_id, name, detail == Detail.FULL

    def _stream(self, query: str) -> Iterator[tuple[Any, ...]]:
        """The rows of ``query``, fetched a thousand at a time. Damage the integrity check at
        open did not reach in time (module docstring) is named as such here."""
        cur = self._db.cursor()
        cur.arraysize = 1000
        try:
            cur.execute(query)
            while rows := cur.fetchmany():
                yield from rows
        except sqlite3.DatabaseError as exc:
            if _code(exc) != sqlite3.SQLITE_CORRUPT:
                raise StoreError(f"cannot read {self.path}: {exc}") from None
            raise StoreError(
                f"{self.path} is corrupt ({exc}): restore it from a backup or give another --db"
            ) from None

    def search_nodes(self) -> list[SearchNode]:
        return [
            SearchNode(*row)
            for row in self._db.execute(
                "SELECT query, parent, total, status FROM search_nodes ORDER BY query"
            )
        ]

    def rate_estimates(self) -> list[dict[str, Any]]:
        """Every learned limit: ``{"client": hashed id, "api_base": ..., "estimate": {...}}``."""
        out = []
        for key, value in self._db.execute(
            "SELECT key, value FROM meta WHERE key LIKE 'rate_estimate:%' ORDER BY key"
        ):
            _, client, api_base = key.split(":", 2)
            out.append({"client": client, "api_base": api_base, "estimate": json.loads(value)})
        return out

    def meta_items(self, prefix: str) -> list[tuple[str, Any]]:
        """The meta rows whose key starts with ``prefix`` (``"retry_deadline:"`` ...), by key."""
        rows = self._db.execute(
            "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ? ORDER BY key",
            (len(prefix), prefix),
        )
        return [(key, json.loads(value)) for key, value in rows]

    def requests_done(self) -> int:
        row = self._db.execute("SELECT COALESCE(SUM(requests), 0) FROM tasks WHERE state = 2")
        return int(row.fetchone()[0])
