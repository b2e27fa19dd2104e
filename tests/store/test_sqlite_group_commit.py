"""Group commits in the SQLite store: several writes per transaction, each still whole or absent.

A real process is killed (``os._exit``: no close, no commit, as SIGKILL leaves it) with a group
open; the next open must find every task either done with its artists or pending again.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from spotify_ingest.errors import StoreError
from spotify_ingest.models import Artist
from spotify_ingest.store import sqlite as sqlite_store
from spotify_ingest.store.base import Task, TaskOutcome, TaskSpec, TaskState
from spotify_ingest.store.sqlite import SQLiteStore


def _outcome(i: int) -> TaskOutcome:
    return TaskOutcome(artists=[Artist(id=f"a{i}", name=f"Artist {i}", genres=["x"])])


def _committed(path: Path) -> tuple[set[str], dict[int, int]]:
    """What another connection sees: artist ids, and tasks by state."""
    con = sqlite3.connect(path)
    try:
        ids = {r[0] for r in con.execute("SELECT id FROM artists")}
        states = dict(con.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state").fetchall())
    finally:
        con.close()
    return ids, states


def test_writes_of_a_group_are_seen_by_others_only_once_the_group_commits(tmp_path: Path) -> None:
    path = tmp_path / "crawl.db"
    with SQLiteStore(path, group_writes=4) as store:
        store.add_tasks(TaskSpec("search", {"q": f"q{i}"}) for i in range(3))  # write 1
        tasks = store.claim("search", 3)  # write 2
        store.complete(tasks[0], _outcome(0))  # write 3
        assert _committed(path)[0] == set()
        assert store.artist_counts().total == 1  # the store itself reads its open group
        store.complete(tasks[1], _outcome(1))  # write 4: the group commits
        assert _committed(path)[0] == {"a0", "a1"}
        store.complete(tasks[2], _outcome(2))
        assert _committed(path)[0] == {"a0", "a1"}
        store.flush()
        assert _committed(path) == ({"a0", "a1", "a2"}, {int(TaskState.DONE): 3})
        store.flush()  # nothing open: a no-op


def test_closing_commits_the_open_group(tmp_path: Path) -> None:
    path = tmp_path / "crawl.db"
    with SQLiteStore(path, group_writes=100) as store:
        store.add_tasks([TaskSpec("search", {"q": "a"})])
        (task,) = store.claim("search", 1)
        store.complete(task, _outcome(7))
    assert _committed(path) == ({"a7"}, {int(TaskState.DONE): 1})


def test_a_failing_write_rolls_back_alone(tmp_path: Path) -> None:
    path = tmp_path / "crawl.db"
    with SQLiteStore(path, group_writes=10) as store:
        store.add_tasks(TaskSpec("search", {"q": f"q{i}"}) for i in range(2))
        first, second = store.claim("search", 2)
        store.complete(first, _outcome(0))
        stranger = Task(id=second.id + 100, kind="search", params={}, priority=0, attempts=1)
        with pytest.raises(StoreError, match="not leased"):
            store.complete(stranger, _outcome(99))  # its artist row must not survive
        store.complete(second, _outcome(1))
        store.flush()
    assert _committed(path) == ({"a0", "a1"}, {int(TaskState.DONE): 2})


def test_a_kill_with_a_group_open_loses_only_that_group(tmp_path: Path) -> None:
    path = tmp_path / "crawl.db"
    script = textwrap.dedent(
        f"""
        import os
        from spotify_ingest.models import Artist
        from spotify_ingest.store.base import TaskOutcome, TaskSpec
        from spotify_ingest.store.sqlite import SQLiteStore

        store = SQLiteStore({str(path)!r}, group_writes=4)
        store.add_tasks(TaskSpec("search", {{"q": f"q{{i}}"}}) for i in range(6))  # write 1
        tasks = store.claim("search", 6)  # write 2
        for i, task in enumerate(tasks[:5]):  # writes 3-7: the group commits at write 4
            store.complete(task, TaskOutcome(artists=[Artist(id=f"a{{i}}", name="n")]))
        os._exit(9)  # no close, no commit: what SIGKILL leaves
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    assert _committed(path) == ({"a0", "a1"}, {int(TaskState.DONE): 2, int(TaskState.LEASED): 4})
    with SQLiteStore(path, group_writes=4) as store:
        assert store.recover_leases() == 4
        assert store.pending_counts() == {"search": 4}
        assert store.artist_counts().total == 2


def test_group_writes_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="group_writes"):
        SQLiteStore(tmp_path / "x.db", group_writes=0)


def _in_main_file(path: Path) -> set[str]:
    """Artist ids in the database file itself, ignoring the WAL (``immutable``: what has been
    checkpointed)."""
    con = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return {r[0] for r in con.execute("SELECT id FROM artists")}
    except sqlite3.OperationalError:  # not even the schema has been checkpointed yet
        return set()
    finally:
        con.close()


def test_background_checkpoints_copy_the_wal_into_the_file_while_the_crawl_writes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "crawl.db"
    with SQLiteStore(path, group_writes=4, background_checkpoints=True) as store:
        assert "sqlite-checkpoint" in {t.name for t in threading.enumerate()}
        # The crawl's own connection leaves checkpoints to the thread until the WAL is large.
        pages = store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        assert pages == sqlite_store.CHECKPOINT_MAX_PAGES
        store.add_tasks(TaskSpec("search", {"q": f"q{i}"}) for i in range(8))
        tasks = store.claim("search", 8)
        for i, task in enumerate(tasks):
            store.complete(task, _outcome(i))
        store.flush()  # committed to the WAL; only a checkpoint puts it in the file itself
        deadline = time.monotonic() + 20 * sqlite_store.CHECKPOINT_SECONDS + 5
        while _in_main_file(path) != {f"a{i}" for i in range(8)}:
            assert time.monotonic() < deadline, "the WAL was never checkpointed"
            time.sleep(sqlite_store.CHECKPOINT_SECONDS / 2)
    assert "sqlite-checkpoint" not in {t.name for t in threading.enumerate()}
    assert _committed(path)[0] == {f"a{i}" for i in range(8)}


def test_without_background_checkpoints_sqlite_checkpoints_as_usual(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "c.db") as store:
        assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
        assert store._checkpointer is None
