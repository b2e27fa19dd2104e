"""The SQLite schema and its migrations.

``PRAGMA user_version`` holds the schema version. ``MIGRATIONS[v]`` takes a database at version
``v - 1`` to version ``v``; :func:`migrate` applies every step above the file's version, each in its
own transaction, so a database from any earlier release opens in this one. Add a step, never edit
one that has shipped.
"""

from __future__ import annotations

import sqlite3

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

_V1 = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL                 -- JSON
) WITHOUT ROWID;

CREATE TABLE artists (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    detail           INTEGER NOT NULL,  -- 0 simplified (id + name), 1 full artist object
    genres           TEXT,              -- JSON list, NULL when the API did not give it
    popularity       INTEGER,
    followers        INTEGER,
    images           TEXT,              -- JSON list of {url, height, width}
    uri              TEXT,
    external_url     TEXT,
    found_by         TEXT NOT NULL,     -- the kind of task that first found it
    first_seen       REAL NOT NULL,     -- epoch seconds
    updated_at       REAL NOT NULL,
    hydration_queued INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE INDEX artists_to_hydrate ON artists (first_seen) WHERE detail = 0 AND hydration_queued = 0;

CREATE TABLE tasks (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    key         TEXT NOT NULL UNIQUE,   -- kind + canonical JSON params: spawning twice is a no-op
    params      TEXT NOT NULL,
    priority    REAL NOT NULL DEFAULT 0,
    state       INTEGER NOT NULL,       -- 0 pending, 1 leased, 2 done, 3 failed
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  REAL NOT NULL,
    leased_at   REAL,
    finished_at REAL,
    requests    INTEGER,                -- API requests the task cost
    value       INTEGER,                -- artists found + details gained
    error       TEXT
);

CREATE INDEX tasks_pending ON tasks (kind, priority DESC, id) WHERE state = 0;

CREATE TABLE search_nodes (
    query  TEXT PRIMARY KEY,
    parent TEXT,
    total  INTEGER NOT NULL,
    status TEXT NOT NULL
) WITHOUT ROWID;
"""

# Version 2: artists in a rowid table, their ids in a unique index of their own. Keyed by its
# random ids, the table (rows of ~600 bytes with the images) took every new artist to a page of
# its own all over a file far larger than the page cache; now new rows go to the end of the table
# and only the small index entry lands at random. The store alone (bench/store_write.py, 300k
# artists): 0.74 -> 0.46 ms of CPU a finished task, with TaskOutcome.unseen (BENCHMARKS.md).
# The copy reads the old table in id order, without a sort: a large store migrates in one pass
# (and a WAL as large as it).
_V2 = """
CREATE TABLE artists_v2 (
    id               TEXT NOT NULL,
    name             TEXT NOT NULL,
    detail           INTEGER NOT NULL,
    genres           TEXT,
    popularity       INTEGER,
    followers        INTEGER,
    images           TEXT,
    uri              TEXT,
    external_url     TEXT,
    found_by         TEXT NOT NULL,
    first_seen       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    hydration_queued INTEGER NOT NULL DEFAULT 0
);

INSERT INTO artists_v2
SELECT id, name, detail, genres, popularity, followers, images, uri, external_url, found_by,
       first_seen, updated_at, hydration_queued
FROM artists;

DROP TABLE artists;

ALTER TABLE artists_v2 RENAME TO artists;

CREATE UNIQUE INDEX artists_id ON artists (id);

CREATE INDEX artists_to_hydrate ON artists (first_seen) WHERE detail = 0 AND hydration_queued = 0;
"""

# Version 3: passing trouble no longer fails a task; it backs off (state 4) until not_before
# (epoch seconds). Tasks failed for good on passing trouble (a 5xx, a reset or timeout, a bad
# body) go back to pending, to be asked for again; final answers (404, 400) stay failed.
_V3 = """
ALTER TABLE tasks ADD COLUMN not_before REAL;

UPDATE tasks SET state = 0, attempts = 0, error = NULL, finished_at = NULL
WHERE state = 3 AND (error LIKE 'ServerError%' OR error LIKE 'TransportError%'
                     OR error LIKE 'BadResponseError%');

CREATE INDEX tasks_backoff ON tasks (not_before) WHERE state = 4;
"""

MIGRATIONS: dict[int, str] = {1: _V1, 2: _V2, 3: _V3}
SCHEMA_VERSION = max(MIGRATIONS)


def migrate(db: sqlite3.Connection, version: int) -> None:
    """Bring ``db`` (autocommit connection) from ``version`` to :data:`SCHEMA_VERSION`."""
    for target in range(version + 1, SCHEMA_VERSION + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[target]):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {target}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (our scripts hold no ';' inside literals)."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
