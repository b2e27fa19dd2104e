"""Schema migrations: a database written at every earlier schema version opens with today's code,
keeps its data, and works.

For each version ``v`` in ``0 .. SCHEMA_VERSION`` the test builds a database at ``v`` the way the
release of ``v`` did (the migration scripts 1..v, ``user_version = v``), fills it with rows in
that version's schema (:data:`SAMPLE_ROWS`, one writer per version), opens it with
:class:`SQLiteStore` (which migrates it) and checks that

* the file is at :data:`SCHEMA_VERSION`, and its schema is the schema of a new database;
* every row written at ``v`` is still there (primary keys of every table);
* the store works on it: claim and complete a task, read artists, export, the CLI's ``stats``.

Version 0 is "no database yet". A new migration must come with a sample writer for the version it
creates: the first test fails until it does, so each migration is tested from every version
before it.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from spotify_ingest.export import export_artists
from spotify_ingest.models import Artist
from spotify_ingest.store.base import TaskOutcome, TaskSpec
from spotify_ingest.store.schema import MIGRATIONS, SCHEMA_VERSION
from spotify_ingest.store.sqlite import SQLiteStore

from .harness import CLI, run_cli


def _rows_v1(db: sqlite3.Connection) -> None:
    """Rows as release 1 wrote them: artists (full and simplified), tasks in every state, meta,
    search nodes."""
    db.executemany(
        "INSERT INTO artists (id, name, detail, genres, popularity, followers, images, uri, "
        "external_url, found_by, first_seen, updated_at, hydration_queued) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            ("0TnOYISbd1XYRBk9myaseg", "Pitbull", 1, json.dumps(["dance pop"]), 80, 1000,
             json.dumps([{"url": "https://i.scdn.co/a.jpg", "height": 640, "width": 640}]),
             "spotify:artist:0TnOYISbd1XYRBk9myaseg", "https://open.spotify.com/artist/x",
             "search", 1.0, 2.0, 0),
            ("1vCWHaC5f2uS3yhpwWbIA6", "Avicii", 0, None, None, None, None, None, None,
             "album", 3.0, 3.0, 1),
        ],
    )  # fmt: skip
    db.executemany(
        "INSERT INTO tasks (kind, key, params, priority, state, attempts, created_at, requests, "
        "value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            ("search", 'search:{"offset":0,"q":"a"}', '{"offset":0,"q":"a"}', 1.0, 2, 1, 1.0, 1,
             3),
            ("search", 'search:{"offset":0,"q":"b"}', '{"offset":0,"q":"b"}', 1.0, 0, 0, 1.0,
             None, None),
            ("hydrate", 'hydrate:{"ids":["1vCWHaC5f2uS3yhpwWbIA6"]}',
             '{"ids":["1vCWHaC5f2uS3yhpwWbIA6"]}', 0.0, 1, 1, 2.0, None, None),
            ("album", 'album:{"album":"x"}', '{"album":"x"}', 0.0, 3, 5, 2.0, None, None),
        ],
    )  # fmt: skip
    db.execute("INSERT INTO meta (key, value) VALUES ('alphabet', ?)", (json.dumps({}),))
    db.execute("INSERT INTO search_nodes (query, parent, total, status) VALUES ('a', NULL, 3, "
               "'paging')")  # fmt: skip


#: Tasks as releases before version 3 failed them: on passing trouble (revived by version 3)
#: and on a final answer (kept failed).
FAILED_BEFORE_V3 = {
    "ServerError: GET /v1/search (/v1/search?q=c): server error 503": "pending",
    "TransportError: GET /v1/search (/v1/search?q=d): no response (ReadTimeout)": "pending",
    "BadResponseError: GET /v1/search: body is not JSON": "pending",
    "NotFoundError: GET /v1/albums/x: not found (404)": "failed",
    "BadRequestError: GET /v1/search: 400: bad query": "failed",
}


def _failed_before_v3(db: sqlite3.Connection) -> None:
    db.executemany(
        "INSERT INTO tasks (kind, key, params, priority, state, attempts, created_at, "
        "finished_at, error) VALUES ('search', ?, ?, 0, 3, 5, 1.0, 2.0, ?)",
        [(f'search:{{"n":{n}}}', f'{{"n":{n}}}', e) for n, e in enumerate(FAILED_BEFORE_V3)],
    )


def assert_revived(after: dict[int, list[Any]]) -> None:
    """``after``: the ``(state, attempts, error)`` of each task of :data:`FAILED_BEFORE_V3`, by
    its number, once migrated."""
    for n, (error, expected) in enumerate(FAILED_BEFORE_V3.items()):
        state, attempts, kept = after[n]
        if expected == "pending":
            assert (state, attempts, kept) == (0, 0, None), error
        else:
            assert (state, kept) == (3, error), error


def _rows_v3(db: sqlite3.Connection) -> None:
    """Version 3's rows: those of 1, and a task backing off."""
    _rows_v1(db)
    db.execute(
        "INSERT INTO tasks (kind, key, params, priority, state, attempts, created_at, "
        'not_before, error) VALUES (\'album\', \'album:{"album":"y"}\', \'{"album":"y"}\', '
        "0, 4, 2, 1.0, 9.0, 'ServerError 502: GET /v1/albums/y: server error 502')"
    )


#: version -> a writer of sample rows in that version's schema (0: no database, nothing to write)
# (version 2 moved the artists into a rowid table; their columns, and so the rows, are those of 1)
SAMPLE_ROWS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _rows_v1,
    2: _rows_v1,
    3: _rows_v3,
}


def _build(path: Path, version: int) -> None:
    """A database at ``version``, as the release of that version left it, with sample rows."""
    if version == 0:
        return
    with contextlib.closing(sqlite3.connect(path)) as db:
        for step in range(1, version + 1):
            db.executescript(MIGRATIONS[step])
        db.execute(f"PRAGMA user_version = {version}")
        SAMPLE_ROWS[version](db)
        db.commit()


def _schema(path: Path) -> list[tuple[str, str, str]]:
    """Every table and index with its SQL, comments and spacing left out."""

    def bare(sql: str | None) -> str:
        lines = [line.split("--", 1)[0] for line in (sql or "").splitlines()]
        return " ".join(" ".join(lines).split()).replace("( ", "(").replace(" )", ")")

    with contextlib.closing(sqlite3.connect(path)) as db:
        return sorted(
            (kind, name, bare(sql))
            for kind, name, sql in db.execute("SELECT type, name, sql FROM sqlite_master")
            if not name.startswith("sqlite_")
        )


def _unique_columns(db: sqlite3.Connection, table: str) -> list[str]:
    """The columns of ``table``'s first unique index (artists since version 2: ``id``)."""
    for index in db.execute(f'PRAGMA index_list("{table}")').fetchall():
        if index[2]:  # unique
            return [r[2] for r in db.execute(f'PRAGMA index_info("{index[1]}")')]
    return []


def _keys(path: Path) -> dict[str, set[tuple[object, ...]]]:
    """Key values of every row of every table: its primary key, else its unique index, else
    its rowid."""
    out: dict[str, set[tuple[object, ...]]] = {}
    with contextlib.closing(sqlite3.connect(path)) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            info = db.execute(f'PRAGMA table_info("{table}")').fetchall()
            pk = [row[1] for _, row in sorted((r[5], r) for r in info if r[5])]
            pk = pk or _unique_columns(db, table) or ["rowid"]
            cols = ", ".join(f'"{c}"' if c != "rowid" else c for c in pk)
            out[table] = {tuple(r) for r in db.execute(f'SELECT {cols} FROM "{table}"')}
    return out


def test_every_migration_has_sample_rows() -> None:
    assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1)), "versions must be 1..N"
    missing = sorted(set(MIGRATIONS) - set(SAMPLE_ROWS))
    assert not missing, f"add a SAMPLE_ROWS writer for schema version(s) {missing}"


@pytest.mark.parametrize("version", range(0, SCHEMA_VERSION + 1))
def test_database_from_an_earlier_version_opens_keeps_data_and_works(
    tmp_path: Path, version: int
) -> None:
    old = tmp_path / f"v{version}.db"
    _build(old, version)
    before = _keys(old) if version else {}

    with SQLiteStore(old) as store:
        counts = store.artist_counts()
        tasks = store.task_counts()
        store.add_tasks([TaskSpec("search", {"q": "zz", "offset": 0})])
        (task,) = store.claim("search", 1)
        artist = Artist(id="4gzpq5DPGxSnKTe4SA8HAU", name="Coldplay", genres=["rock"])
        result = store.complete(task, TaskOutcome(artists=[artist]))
        exported = export_artists(store.iter_artists(), tmp_path / "out.jsonl", "jsonl")

    with contextlib.closing(sqlite3.connect(old)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    fresh = tmp_path / "fresh.db"
    SQLiteStore(fresh).close()
    assert _schema(old) == _schema(fresh), "a migrated database differs from a new one"
    after = _keys(old)
    for table, keys in before.items():
        assert keys <= after.get(table, set()), f"rows of {table} lost in the migration"
    if version:
        assert counts.total == len(before["artists"])
        assert sum(n for by_state in tasks.values() for n in by_state.values()) == len(
            before["tasks"]
        )
    assert result.new_full == 1 and exported == counts.total + 1

    run = run_cli([*CLI, "stats", "--json", "--db", str(old)], cwd=tmp_path)
    assert run.code == 0, str(run)
    assert json.loads(run.stdout)["artists"]["total"] == counts.total + 1


@pytest.mark.parametrize("version", [1, 2])
def test_tasks_failed_on_passing_trouble_are_revived(tmp_path: Path, version: int) -> None:
    """Releases before version 3 gave a task up after five 5xx, resets or bad bodies: the
    migration makes those pending again, as new; final answers (404, 400) stay failed."""
    old = tmp_path / f"v{version}.db"
    _build(old, version)
    with contextlib.closing(sqlite3.connect(old)) as db:
        _failed_before_v3(db)
        db.commit()
    SQLiteStore(old).close()
    with contextlib.closing(sqlite3.connect(old)) as db:
        after = {
            json.loads(params)["n"]: rest
            for params, *rest in db.execute("SELECT params, state, attempts, error FROM tasks")
            if '"n"' in params
        }
    assert_revived(after)
