"""The PostgreSQL store: one frontier shared by many crawler processes on one or many hosts.

Same interface and semantics as :class:`~spotify_ingest.store.sqlite.SQLiteStore`; what differs is
what sharing the task queue between processes requires.

**Leases.** :meth:`PostgresStore.claim` picks pending tasks with ``SELECT ... FOR UPDATE SKIP
LOCKED`` (two workers claiming at once never wait for each other and never get the same task) and
marks them leased: ``leased_by`` = this store's ``worker_id``, ``lease_until`` = the server's
``clock_timestamp() + lease_seconds``. Lease times are on the *server's* clock, so clock skew
between crawler hosts does not matter. A lease is identified by the worker id together with the
task's ``attempts`` count (it grows with every claim not given back by :meth:`release`), so a
worker cannot act on an older, expired lease of its own either.

**Lease expiry.** A worker that dies leaves its tasks leased. Once ``lease_until`` has passed they
are expired, and :meth:`PostgresStore.recover_leases` puts them back to pending; every
:meth:`PostgresStore.claim` also does so (at most once a second by default), so a fleet
that keeps running picks up the work of a worker that died without anyone restarting. Live leases
of other workers are never touched (unlike SQLite, where one process owns the file and every lease
left over at start-up is stale). A worker whose tasks take long keeps them with
:meth:`PostgresStore.renew_leases` (a heartbeat every ``lease_seconds / 3`` or so); it returns the
tasks whose lease is lost, whose work should be abandoned.

**One transaction per task.** :meth:`PostgresStore.complete` upserts the artists, inserts the
spawned tasks, search nodes and meta, and marks the task done in ONE transaction, which commits
only if this worker still holds the lease (a lease that expired but was not yet recovered by anyone
is still held). If the lease was lost — expired, recovered and perhaps claimed and finished by
another worker — it raises :class:`~spotify_ingest.errors.StoreError` and rolls everything back, so
a task is never recorded twice. Every write is an idempotent upsert, so redoing a task whose commit
was lost stores nothing twice either. The whole record is ONE SQL statement (data-modifying CTEs,
inputs as JSON documents): a transaction by itself, in one round trip; a task with
``_COPY_FROM`` artists or more first COPYs them into a temporary table, in an explicit
transaction around both. Artists are upserted by id (``INSERT ... ON CONFLICT (id) DO UPDATE ...
WHERE excluded.detail >= artists.detail``: a simplified artist never overwrites a full one), in id
order, and the counts of new and upgraded artists are read from what the statement did, so two
workers reporting the same artist count it once (an upgrade racing another worker's first insert of
that artist may go uncounted; never counted twice). A deadlock or serialisation failure between
workers retries the whole transaction.

**Durability.** Like SQLite's ``synchronous=NORMAL``, the session runs with ``synchronous_commit =
off`` unless ``synchronous_commit=True``: a crash of the *server* may lose the last fraction of a
second of commits (never corrupting anything); those tasks run again. A crash of a crawler loses
nothing committed.

**Schema.** :mod:`spotify_ingest.store.pg_schema` holds the versioned migrations (applied under an
advisory lock, so workers starting together do not race); a newer schema is refused. Tables live
in the first schema of the connection's ``search_path`` (``?options=-csearch_path%3Dname`` in the
URL picks another one). Analysts may query the tables while the crawl runs: readers never block
the crawl and see only committed tasks.

Error messages name the database as ``postgresql://user@host:port/dbname``; a password in the DSN
never appears in one.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from ..errors import StoreError, UsageError
from ..models import Artist, Image, SimplifiedArtist
from . import LeaseLostError
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
from .pg_schema import LEASE_LOST_SQLSTATE, migrate, read_version

__all__ = ["PostgresStore", "describe_dsn"]

_T = TypeVar("_T")
Conn = psycopg.Connection[TupleRow]

_RETRIES = 5  # deadlocks / serialisation failures between workers: redo the transaction
_STREAM_ROWS = 2000  # rows per round trip of a streamed read's server-side cursor

_ARTIST_COLUMNS = (
    "id", "name", "detail", "genres", "popularity", "followers", "images", "uri",
    "external_url", "found_by", "first_seen", "updated_at",
)  # fmt: skip
_IMAGE_KEYS = Image.__struct_fields__  # url, height, width: the order SQLite's rows keep

# complete() is ONE statement: run in autocommit mode it is one transaction, in one round trip.
# Its inputs arrive as JSON documents (one per table), unpacked by json_to_recordset; a big batch
# of artists is COPYed into a temporary table first instead (then BEGIN, COPY, this, COMMIT).
#   upgraded     simplified rows a full object replaces; the UPDATE's row lock makes the
#                ``detail = 0`` test exact when workers race
#   full_rows    the other full objects, inserted or refreshed (``xmax = 0``: it was an insert)
#   simple_rows  simplified objects only ever insert: a known artist is left as it is
#   spawned, nodes, meta_rows   the tasks spawned, search nodes and meta the task produced
#   done         the task itself, only if this worker still holds the lease; if not,
#                spotify_ingest_lease_lost() raises and the whole statement rolls back
_COMPLETE_TEMPLATE = """
WITH input AS ({input}),
upgraded AS (
    UPDATE artists AS a SET
        name = i.name,
        detail = i.detail,
        genres = i.genres::jsonb,
        popularity = i.popularity,
        followers = i.followers,
        images = i.images::jsonb,
        uri = COALESCE(i.uri, a.uri),
        external_url = COALESCE(i.external_url, a.external_url),
        updated_at = %(now)s
    FROM input AS i
    WHERE a.id = i.id AND i.detail = 1 AND a.detail = 0
    RETURNING a.id
),
full_rows AS (
    INSERT INTO artists AS a (id, name, detail, genres, popularity, followers, images, uri,
                              external_url, found_by, first_seen, updated_at)
    SELECT i.id, i.name, i.detail, i.genres::jsonb, i.popularity, i.followers,
           i.images::jsonb, i.uri, i.external_url, %(found_by)s, %(now)s, %(now)s
    FROM input AS i
    WHERE i.detail = 1 AND i.id NOT IN (SELECT u.id FROM upgraded AS u)
    ORDER BY i.id
    ON CONFLICT (id) DO UPDATE SET
        name = excluded.name,
        detail = excluded.detail,
        genres = excluded.genres,
        popularity = excluded.popularity,
        followers = excluded.followers,
        images = excluded.images,
        uri = COALESCE(excluded.uri, a.uri),
        external_url = COALESCE(excluded.external_url, a.external_url),
        updated_at = excluded.updated_at
    WHERE excluded.detail >= a.detail
    RETURNING (a.xmax = 0) AS inserted
),
simple_rows AS (
    INSERT INTO artists (id, name, detail, uri, external_url, found_by, first_seen, updated_at)
    SELECT i.id, i.name, i.detail, i.uri, i.external_url, %(found_by)s, %(now)s, %(now)s
    FROM input AS i
    WHERE i.detail = 0
    ORDER BY i.id
    ON CONFLICT (id) DO NOTHING
    RETURNING 1
),
counts AS (
    SELECT (SELECT count(*) FROM full_rows WHERE inserted) AS new_full,
           (SELECT count(*) FROM simple_rows) AS new_simplified,
           (SELECT count(*) FROM upgraded) AS upgraded
),
spawned AS (
    INSERT INTO tasks (kind, key, params, priority, state, created_at)
    SELECT s.kind, s.key, s.params, s.priority, 0, %(now)s
    FROM ROWS FROM (json_to_recordset(%(spawn)s::json)
                    AS (kind text, key text, params jsonb, priority float8))
         WITH ORDINALITY AS s(kind, key, params, priority, n)
    ORDER BY s.n
    ON CONFLICT (key) DO NOTHING
    RETURNING 1
),
nodes AS (
    INSERT INTO search_nodes (query, parent, total, status)
    SELECT * FROM json_to_recordset(%(nodes)s::json)
        AS n(query text, parent text, total int4, status text)
    ON CONFLICT (query) DO UPDATE SET total = excluded.total, status = excluded.status
    RETURNING 1
),
meta_rows AS (
    INSERT INTO meta (key, value) SELECT key, value FROM jsonb_each(%(meta)s::jsonb)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value
    RETURNING 1
),
done AS (
    UPDATE tasks SET state = 2, finished_at = %(now)s, requests = %(requests)s,
        value = (SELECT 2 * new_full + new_simplified + upgraded FROM counts),
        lease_until = NULL
    WHERE id = %(task)s AND state = 1 AND leased_by = %(worker)s AND attempts = %(attempts)s
    RETURNING id
)
SELECT c.new_full, c.new_simplified, c.upgraded, (SELECT count(*) FROM spawned),
       (SELECT count(*) FROM nodes) + (SELECT count(*) FROM meta_rows),
       CASE WHEN EXISTS (SELECT 1 FROM done) THEN 0
            ELSE spotify_ingest_lease_lost(%(task)s, %(worker)s) END
FROM counts AS c
"""
_ARTIST_FIELDS = """
    id text, name text, detail int2, genres json, popularity int4, followers int8, images json,
    uri text, external_url text"""
_INCOMING = "pg_temp.spotify_ingest_incoming_artists"
_COMPLETE = _COMPLETE_TEMPLATE.replace(
    "{input}", f"SELECT * FROM json_to_recordset(%(artists)s::json) AS i({_ARTIST_FIELDS})"
)
_COMPLETE_COPIED = _COMPLETE_TEMPLATE.replace("{input}", f"SELECT * FROM {_INCOMING}")
_COPY_FROM = 2000  # artists in one task from which COPY costs less CPU than one JSON document

_INSERT_TASKS = """
INSERT INTO tasks (kind, key, params, priority, state, created_at)
SELECT s.kind, s.key, s.params, s.priority, 0, %(now)s
FROM ROWS FROM (json_to_recordset(%(spawn)s::json)
                AS (kind text, key text, params jsonb, priority float8))
     WITH ORDINALITY AS s(kind, key, params, priority, n)
ORDER BY s.n
ON CONFLICT (key) DO NOTHING
"""

_LEASE_UNTIL = "clock_timestamp() + %s * interval '1 second'"  # the server's clock, not ours

# Backing-off tasks whose time has come back to pending; SKIP LOCKED: another worker wakes them.
_WAKE = """
UPDATE tasks SET state = 0
WHERE id IN (
    SELECT id FROM tasks WHERE state = 4 AND not_before <= %s
    FOR UPDATE SKIP LOCKED
)
"""

# Expired leases back to pending; SKIP LOCKED: a row locked now is being completed or renewed.
_RECOVER = """
UPDATE tasks SET state = 0, leased_by = NULL, lease_until = NULL
WHERE id IN (
    SELECT id FROM tasks WHERE state = 1 AND lease_until < clock_timestamp()
    FOR UPDATE SKIP LOCKED
)
"""


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def describe_dsn(dsn: str) -> str:
    """The DSN as ``postgresql://user@host:port/dbname`` for messages: never a password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return _scrub(dsn)
    user = str(params.get("user") or "")
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = str(params.get("port") or "5432")
    dbname = str(params.get("dbname") or user or "postgres")
    return f"postgresql://{user + '@' if user else ''}{host}:{port}/{dbname}"


def _scrub(text: str) -> str:
    """Mask passwords in a DSN-like string (URL userinfo, ``password=`` keywords)."""
    text = re.sub(r"(://[^:/@\s]*):[^@\s]*@", r"\1:***@", text)
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", r"\1***", text, flags=re.I)


def _default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class PostgresStore:
    """A :class:`~spotify_ingest.store.base.Store` in a PostgreSQL database, shared by workers.

    ``worker_id`` names this worker in ``tasks.leased_by`` (default: host, pid and a random
    suffix; two live workers must never share one). ``lease_seconds``: how long a claimed task
    stays this worker's without :meth:`renew_leases`. ``create=False`` refuses a database without
    the spotify-ingest tables instead of creating them. ``synchronous_commit``: see the module
    docstring.
    """

    # Workers share the database: no one crawler's known index is the whole of what it holds.
    sole_writer = False

    def __init__(
        self,
        dsn: str,
        *,
        worker_id: str | None = None,
        lease_seconds: float = 60.0,
        create: bool = True,
        synchronous_commit: bool = False,
        connect_timeout: float = 10.0,
    ) -> None:
        if not lease_seconds > 0:
            raise UsageError(f"lease_seconds must be positive, not {lease_seconds}")
        if worker_id is not None and not worker_id.strip():
            raise UsageError("worker_id must not be empty")
        self._dsn = dsn
        self.where = describe_dsn(dsn)
        try:
            self._password = str(conninfo_to_dict(dsn).get("password") or "")
        except psycopg.Error as exc:
            raise UsageError(f"invalid PostgreSQL DSN {self.where}: {self._message(exc)}") from None
        self.worker_id = worker_id or _default_worker_id()
        self.lease_seconds = float(lease_seconds)
        self._synchronous_commit = synchronous_commit
        self._connect_timeout = max(1, round(connect_timeout))
        self._lock = threading.RLock()
        self._closed = False
        # how often claim() first returns expired leases to pending (seconds; 0: every claim)
        self.recover_every = min(self.lease_seconds / 4, 1.0)
        self._last_recovery = 0.0
        self._incoming_on: Conn | None = None  # the connection whose session has the temp table
        self._conn = self._connect()
        try:
            if not create and read_version(self._conn) == 0:
                raise UsageError(
                    f"no spotify-ingest database at {self.where}: run `spotify-ingest crawl` first"
                )
            migrate(self._conn, self.where)
        except psycopg.Error as exc:
            self._conn.close()
            raise StoreError(f"cannot set up {self.where}: {self._message(exc)}") from None
        except BaseException:
            self._conn.close()
            raise

    # -- plumbing -------------------------------------------------------------------------------

    def _message(self, exc: BaseException) -> str:
        """One line, without the DSN's password."""
        lines = str(exc).strip().splitlines()
        text = lines[0].strip() if lines else type(exc).__name__
        password = getattr(self, "_password", "")
        if len(password) >= 4:  # libpq never echoes it; _scrub catches DSN-shaped text
            text = text.replace(password, "***")
        return _scrub(text)

    def _connect_kwargs(self, role: str = "") -> dict[str, Any]:
        kwargs: dict[str, Any] = {"application_name": f"spotify-ingest {self.worker_id}{role}"[:63]}
        with contextlib.suppress(psycopg.Error):
            if "connect_timeout" not in conninfo_to_dict(self._dsn):
                kwargs["connect_timeout"] = self._connect_timeout
        return kwargs

    def _connect(self) -> Conn:
        try:
            conn = psycopg.connect(self._dsn, autocommit=True, **self._connect_kwargs())
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to PostgreSQL at {self.where}: {self._message(exc)}"
            ) from None
        try:
            if not self._synchronous_commit:
                conn.execute("SET synchronous_commit = off")
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"cannot set up {self.where}: {self._message(exc)}") from None
        return conn

    def _live(self) -> Conn:
        """The connection; a broken one (server restart, network) is replaced."""
        if self._closed:
            raise StoreError(f"the store for {self.where} is closed")
        if self._conn.closed or self._conn.broken:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = self._connect()
        return self._conn

    def _write(self, fn: Callable[[Conn], _T], *, transaction: bool = True) -> _T:
        """Run ``fn`` in one transaction; redo it on a deadlock or serialisation failure.

        ``transaction=False``: ``fn`` runs a single statement, a transaction by itself.
        """
        with self._lock:
            for attempt in range(_RETRIES):
                conn = self._live()
                try:
                    if not transaction:
                        return fn(conn)
                    with conn.transaction():
                        return fn(conn)
                except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure) as exc:
                    if attempt == _RETRIES - 1:
                        raise StoreError(
                            f"cannot write to {self.where} after {_RETRIES} attempts: "
                            f"{self._message(exc)}"
                        ) from None
                    time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
                except psycopg.Error as exc:
                    raise StoreError(
                        f"cannot write to {self.where}: {self._message(exc)}"
                    ) from None
        raise AssertionError("unreachable")

    def _read(self, fn: Callable[[Conn], _T]) -> _T:
        with self._lock:
            try:
                return fn(self._live())
            except psycopg.Error as exc:
                raise StoreError(f"cannot read {self.where}: {self._message(exc)}") from None

    @property
    def backend_pid(self) -> int:
        """The server process serving this store's connection (diagnostics, benchmarks)."""
        with self._lock:
            return self._live().info.backend_pid

    def flush(self) -> None:
        """Every write commits on its own here: nothing to do."""

    def close(self) -> None:
        with self._lock:
            self._closed = True
            with contextlib.suppress(psycopg.Error):
                self._conn.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- meta -----------------------------------------------------------------------------------

    def get_meta(self, key: str) -> Any:
        row = self._read(
            lambda c: c.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        )
        return None if row is None else row[0]

    def set_meta(self, key: str, value: Any) -> None:
        self._write(
            lambda c: c.execute(
                "INSERT INTO meta (key, value) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, Jsonb(value, dumps=_json)),
            )
        )

    # -- tasks ----------------------------------------------------------------------------------

    @staticmethod
    def _insert_tasks(conn: Conn, specs: Iterable[TaskSpec], now: float) -> int:
        doc = _tasks_json(specs)
        if doc == "[]":
            return 0
        cur = conn.execute(_INSERT_TASKS, {"now": now, "spawn": doc})
        return max(cur.rowcount, 0)

    def add_tasks(self, specs: Iterable[TaskSpec]) -> int:
        specs = list(specs)
        return self._write(lambda c: self._insert_tasks(c, specs, time.time()))

    def claim(self, kind: str, limit: int) -> list[Task]:
        """Lease up to ``limit`` pending tasks of ``kind``: highest priority first, then oldest.

        Tasks other workers are claiming at the same moment are skipped, never waited for.
        Expired leases are recovered first (at most every :attr:`recover_every` seconds).
        """
        if limit <= 0:
            return []

        def work(conn: Conn) -> list[tuple[Any, ...]]:
            mono = time.monotonic()
            if mono - self._last_recovery >= self.recover_every:
                conn.execute(_RECOVER)
                self._last_recovery = mono
            return conn.execute(
                "WITH picked AS ("
                "    SELECT id FROM tasks WHERE state = 0 AND kind = %s"
                "    ORDER BY priority DESC, id LIMIT %s FOR UPDATE SKIP LOCKED"
                ") "
                "UPDATE tasks AS t SET state = 1, attempts = t.attempts + 1, leased_at = %s, "
                "    leased_by = %s, lease_until = " + _LEASE_UNTIL + " "
                "FROM picked WHERE t.id = picked.id "
                "RETURNING t.id, t.kind, t.params, t.priority, t.attempts",
                (kind, limit, time.time(), self.worker_id, self.lease_seconds),
            ).fetchall()

        rows = self._write(work)
        rows.sort(key=lambda r: (-r[3], r[0]))
        return [Task(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def renew_leases(self, tasks: Iterable[Task]) -> list[Task]:
        """Extend this worker's leases on ``tasks`` by ``lease_seconds`` from now.

        Returns the tasks whose lease this worker no longer holds (expired and recovered, released,
        finished): abandon their work, :meth:`complete` would refuse it.
        """
        tasks = list(tasks)
        if not tasks:
            return []
        ids = [t.id for t in tasks]
        attempts = [t.attempts for t in tasks]

        def work(conn: Conn) -> set[int]:
            rows = conn.execute(
                "UPDATE tasks AS t SET lease_until = " + _LEASE_UNTIL + " "
                "FROM unnest(%b::int8[], %b::int4[]) AS h(id, attempts) "
                "WHERE t.id = h.id AND t.attempts = h.attempts AND t.state = 1 "
                "    AND t.leased_by = %s "
                "RETURNING t.id",
                (self.lease_seconds, ids, attempts, self.worker_id),
            ).fetchall()
            return {r[0] for r in rows}

        held = self._write(work)
        return [t for t in tasks if t.id not in held]

    def pending_counts(self) -> dict[str, int]:
        rows = self._read(
            lambda c: c.execute(
                "SELECT kind, COUNT(*) FROM tasks WHERE state = 0 GROUP BY kind"
            ).fetchall()
        )
        return {kind: n for kind, n in rows}

    def task_counts(self) -> dict[str, dict[str, int]]:
        """``{kind: {state name: count}}`` over every task ever created."""
        rows = self._read(
            lambda c: c.execute(
                "SELECT kind, state, COUNT(*) FROM tasks GROUP BY kind, state"
            ).fetchall()
        )
        out: dict[str, dict[str, int]] = {}
        for kind, state, n in rows:
            out.setdefault(kind, {})[TaskState(state).name.lower()] = n
        return out

    def complete(self, task: Task, outcome: TaskOutcome) -> CompletionResult:
        """Record a finished task in one transaction, if this worker still holds its lease.

        Raises :class:`~spotify_ingest.store.LeaseLostError` (a :class:`StoreError`; nothing is
        recorded) when the lease is no longer this worker's: it expired and was recovered (perhaps
        finished by another worker) or it was released.
        """
        best: dict[str, Artist | SimplifiedArtist] = {}
        for artist in outcome.artists:
            held = best.get(artist.id)
            if held is None or (isinstance(artist, Artist) and not isinstance(held, Artist)):
                best[artist.id] = artist
        nodes = {n.query: n for n in outcome.search_nodes}  # the last word on a query wins
        ordered = [best[i] for i in sorted(best)]  # rows locked in id order: fewer deadlocks
        copy = len(ordered) >= _COPY_FROM
        params = {
            "artists": "[]" if copy else _artists_json(ordered),
            "spawn": _tasks_json(outcome.spawn),
            "nodes": _json(
                [
                    {"query": n.query, "parent": n.parent, "total": n.total, "status": n.status}
                    for n in nodes.values()
                ]
            ),
            "meta": _json(dict(outcome.meta)),
            "found_by": task.kind,
            "now": time.time(),
            "requests": outcome.requests,
            "task": task.id,
            "worker": self.worker_id,
            "attempts": task.attempts,
        }

        def work(conn: Conn) -> CompletionResult:
            creates_table = copy and self._incoming_on is not conn
            try:
                if copy:
                    self._copy_artists(conn, ordered)
                    row = conn.execute(_COMPLETE_COPIED, params).fetchone()
                else:
                    row = conn.execute(_COMPLETE, params).fetchone()
            except BaseException as exc:
                if creates_table:  # rolled back with the transaction that created it
                    self._incoming_on = None
                if not isinstance(exc, psycopg.Error):
                    raise
                if exc.sqlstate == LEASE_LOST_SQLSTATE:
                    raise LeaseLostError(
                        f"task {task.id} is not leased by this worker ({self.worker_id}): its "
                        "lease expired and was recovered, or it was released; nothing recorded"
                    ) from None
                raise
            assert row is not None
            new_full, new_simplified, upgraded, spawned = (int(x) for x in row[:4])
            return CompletionResult(new_full, new_simplified, upgraded, spawned)

        return self._write(work, transaction=copy)

    def _copy_artists(self, conn: Conn, artists: Sequence[Artist | SimplifiedArtist]) -> None:
        """COPY ``artists`` into this session's incoming table (emptied at commit)."""
        if self._incoming_on is not conn:
            conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {_INCOMING.split('.')[1]} ({_ARTIST_FIELDS}) "
                "ON COMMIT DELETE ROWS"
            )
            self._incoming_on = conn
        with conn.cursor().copy(f"COPY {_INCOMING} FROM STDIN") as copy:
            for a in artists:
                copy.write_row(_artist_tuple(a))

    def simplified_among(self, ids: Sequence[str]) -> list[str]:
        """The ids of ``ids`` still known only in simplified form (hydration skips the rest)."""
        wanted = list(ids)
        if not wanted:
            return []
        rows = self._read(
            lambda c: c.execute(
                "SELECT id FROM artists WHERE id = ANY(%b::text[]) AND detail = 0", (wanted,)
            ).fetchall()
        )
        simplified = {r[0] for r in rows}
        return [i for i in wanted if i in simplified]

    def release(self, tasks: Iterable[Task], *, attempted: bool = False) -> None:
        """Give this worker's leased tasks back (shutdown, or a request to retry later).

        ``attempted``: the request was made and failed, so the attempt counts (a task that keeps
        failing reaches the crawler's attempt limit); otherwise it is as if never claimed.
        """
        tasks = sorted(tasks, key=lambda t: t.id)
        if not tasks:
            return
        keep = 0 if attempted else 1
        self._write(
            lambda c: c.execute(
                f"UPDATE tasks AS t SET state = 0, attempts = GREATEST(t.attempts - {keep}, 0), "
                "    leased_by = NULL, lease_until = NULL "
                "FROM unnest(%b::int8[], %b::int4[]) AS h(id, attempts) "
                "WHERE t.id = h.id AND t.attempts = h.attempts AND t.state = 1 "
                "    AND t.leased_by = %s",
                ([t.id for t in tasks], [t.attempts for t in tasks], self.worker_id),
            )
        )

    def fail(self, task: Task, reason: str) -> None:
        """Give up on a task for good (the API will never answer it: unknown id, bad query).

        A no-op if the lease is no longer this worker's: the worker holding it decides.
        """
        self._write(
            lambda c: c.execute(
                "UPDATE tasks SET state = 3, finished_at = %s, error = %s, lease_until = NULL "
                "WHERE id = %s AND state = 1 AND leased_by = %s AND attempts = %s",
                (time.time(), reason[:500], task.id, self.worker_id, task.attempts),
            )
        )

    def back_off(self, task: Task, reason: str, not_before: float, *, attempted: bool) -> None:
        """Set this worker's leased task aside until ``not_before`` (epoch seconds): its request
        met passing trouble. ``attempted`` as for :meth:`release`; a no-op if the lease is no
        longer this worker's."""
        keep = 0 if attempted else 1
        self._write(
            lambda c: c.execute(
                f"UPDATE tasks SET state = 4, attempts = GREATEST(attempts - {keep}, 0), "
                "    not_before = %s, error = %s, leased_by = NULL, lease_until = NULL "
                "WHERE id = %s AND state = 1 AND leased_by = %s AND attempts = %s",
                (not_before, reason[:500], task.id, self.worker_id, task.attempts),
            )
        )

    def wake_due(self) -> int:
        """Backing-off tasks whose ``not_before`` has passed become pending; returns how many."""
        return self._write(lambda c: max(c.execute(_WAKE, (time.time(),)).rowcount, 0))

    def next_retry(self, kinds: Collection[str] | None = None) -> float | None:
        """The earliest ``not_before`` of a backing-off task (of ``kinds``; None: none)."""
        sql = "SELECT MIN(not_before) FROM tasks WHERE state = 4"
        if kinds is not None:
            sql += " AND kind = ANY(%s)"
        args = () if kinds is None else (list(kinds),)
        row = self._read(lambda c: c.execute(sql, args).fetchone())
        return None if row is None or row[0] is None else float(row[0])

    def task_problems(self) -> list[TaskProblem]:
        """Tasks failed for good or backing off, by kind, state and reason."""
        return group_problems(
            self._read(
                lambda c: c.execute(
                    "SELECT kind, state, error, COUNT(*)::int, MIN(not_before) FROM tasks "
                    "WHERE state IN (3, 4) GROUP BY kind, state, error"
                ).fetchall()
            )
        )

    def recover_leases(self) -> int:
        """Tasks whose lease EXPIRED (their worker died or hung) go back to pending; how many.

        Leases other workers still hold are left alone.
        """

        def work(conn: Conn) -> int:
            self._last_recovery = time.monotonic()
            return max(conn.execute(_RECOVER).rowcount, 0)

        return self._write(work)

    def queue_hydration(self, batch_size: int, max_tasks: int, priority: float = 0.0) -> int:
        """Turn simplified artists not yet queued into ``hydrate`` tasks of ``batch_size`` ids.

        Workers doing this at once queue disjoint artists (``FOR UPDATE SKIP LOCKED``).
        """
        if batch_size <= 0 or max_tasks <= 0:
            return 0

        def work(conn: Conn) -> int:
            rows = conn.execute(
                "WITH picked AS ("
                "    SELECT id FROM artists WHERE detail = 0 AND NOT hydration_queued"
                "    ORDER BY first_seen, id LIMIT %s FOR UPDATE SKIP LOCKED"
                ") "
                "UPDATE artists AS a SET hydration_queued = TRUE FROM picked "
                "WHERE a.id = picked.id RETURNING a.first_seen, a.id",
                (batch_size * max_tasks,),
            ).fetchall()
            if not rows:
                return 0
            ids = [r[1] for r in sorted(rows)]
            batches = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
            return self._insert_tasks(
                conn, (TaskSpec("hydrate", {"ids": b}, priority) for b in batches), time.time()
            )

        return self._write(work)

    # -- reading --------------------------------------------------------------------------------

    def artist_counts(self) -> ArtistCounts:
        row = self._read(
            lambda c: c.execute("SELECT COUNT(*), COALESCE(SUM(detail), 0) FROM artists").fetchone()
        )
        assert row is not None
        return ArtistCounts(total=int(row[0]), full=int(row[1]))

    def artist_ids(self) -> set[str]:
        rows = self._read(lambda c: c.execute("SELECT id FROM artists").fetchall())
        return {r[0] for r in rows}

    def iter_artists(self) -> Iterator[dict[str, Any]]:
        """Every artist as a dict of plain values, in id order, streamed from the database.

        Runs on its own connection in one read-only snapshot (server-side cursor), so it sees a
        consistent catalog while the crawl goes on and does not hold up this store's writes.
        """
        for row in self._stream(f"SELECT {', '.join(_ARTIST_COLUMNS)} FROM artists ORDER BY id"):
            item = dict(zip(_ARTIST_COLUMNS, row, strict=True))
            item["detail"] = Detail(item["detail"]).name.lower()
            if item["images"] is not None:
                item["images"] = [_image_dict(img) for img in item["images"]]
            yield item

    def iter_names(self) -> Iterator[tuple[str, str, bool]]:
        """Every artist as ``(id, name, full)``, streamed like :meth:`iter_artists` but unsorted
        and without the other fields: what a crawl's known index is rebuilt from at start."""
        for artist_id, name, detail in self._stream("SELECT id, name, detail FROM artists"):
            yield artist_id, name, detail == Detail.FULL

    def _stream(self, query: str) -> Iterator[tuple[Any, ...]]:
        """The rows of ``query`` through a server-side cursor on a read-only connection of
        their own, in one snapshot."""
        if self._closed:
            raise StoreError(f"the store for {self.where} is closed")
        try:
            conn = psycopg.connect(self._dsn, **self._connect_kwargs(" reader"))
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to PostgreSQL at {self.where}: {self._message(exc)}"
            ) from None
        try:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            with conn.cursor(name="spotify_ingest_artists") as cur:
                cur.itersize = _STREAM_ROWS
                cur.execute(query)
                yield from cur
            conn.rollback()
        except psycopg.Error as exc:
            raise StoreError(f"cannot read {self.where}: {self._message(exc)}") from None
        finally:
            conn.close()

    def search_nodes(self) -> list[SearchNode]:
        rows = self._read(
            lambda c: c.execute(
                "SELECT query, parent, total, status FROM search_nodes ORDER BY query"
            ).fetchall()
        )
        return [SearchNode(*row) for row in rows]

    def rate_estimates(self) -> list[dict[str, Any]]:
        """Every learned limit: ``{"client": hashed id, "api_base": ..., "estimate": {...}}``."""
        rows = self._read(
            lambda c: c.execute(
                "SELECT key, value FROM meta WHERE key LIKE %s ORDER BY key", ("rate_estimate:%",)
            ).fetchall()
        )
        out = []
        for key, value in rows:
            _, client, api_base = key.split(":", 2)
            out.append({"client": client, "api_base": api_base, "estimate": value})
        return out

    def meta_items(self, prefix: str) -> list[tuple[str, Any]]:
        """The meta rows whose key starts with ``prefix`` (``"retry_deadline:"`` ...), by key."""
        rows = self._read(
            lambda c: c.execute(
                "SELECT key, value FROM meta WHERE left(key, %s) = %s ORDER BY key",
                (len(prefix), prefix),
            ).fetchall()
        )
        return [(key, value) for key, value in rows]

    def requests_done(self) -> int:
        row = self._read(
            lambda c: c.execute(
                "SELECT COALESCE(SUM(requests), 0) FROM tasks WHERE state = 2"
            ).fetchone()
        )
        assert row is not None
        return int(row[0])


def _image_dict(img: Any) -> Any:
    """An image object with its keys in SQLite's order (jsonb reorders keys)."""
    if not isinstance(img, dict):
        return img
    ordered = {k: img[k] for k in _IMAGE_KEYS if k in img}
    ordered.update((k, v) for k, v in img.items() if k not in ordered)
    return ordered


def _artists_json(artists: Iterable[Artist | SimplifiedArtist]) -> str:
    """The JSON document :data:`_COMPLETE` reads artists from (absent key: SQL NULL)."""
    rows: list[dict[str, Any]] = []
    for a in artists:
        row: dict[str, Any] = {"id": a.id, "name": a.name, "uri": a.uri}
        if a.external_urls:
            row["external_url"] = a.external_urls.get("spotify")
        if isinstance(a, Artist):
            row["detail"] = int(Detail.FULL)
            row["genres"] = a.genres
            row["popularity"] = a.popularity
            row["followers"] = a.follower_count
            if a.images is not None:
                row["images"] = [
                    {"url": img.url, "height": img.height, "width": img.width} for img in a.images
                ]
        else:
            row["detail"] = int(Detail.SIMPLIFIED)
        rows.append(row)
    return _json(rows)


def _artist_tuple(a: Artist | SimplifiedArtist) -> tuple[Any, ...]:
    """A row of the incoming table (JSON columns as JSON text)."""
    url = a.external_urls.get("spotify") if a.external_urls else None
    if isinstance(a, Artist):
        images = None
        if a.images is not None:
            images = _json([{"url": i.url, "height": i.height, "width": i.width} for i in a.images])
        genres = None if a.genres is None else _json(a.genres)
        return (a.id, a.name, 1, genres, a.popularity, a.followers, images, a.uri, url)
    return (a.id, a.name, 0, None, None, None, None, a.uri, url)


def _tasks_json(specs: Iterable[TaskSpec]) -> str:
    return _json(
        [{"kind": s.kind, "key": s.key, "params": s.params, "priority": s.priority} for s in specs]
    )
