"""The SQLite store: one-transaction completion, idempotent spawning, merge rules, recovery."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from spotify_ingest.errors import SchemaTooNewError, StoreError, UsageError
from spotify_ingest.models import Artist, SimplifiedArtist
from spotify_ingest.store.base import TaskOutcome, TaskSpec, TaskState
from spotify_ingest.store.schema import SCHEMA_VERSION
from spotify_ingest.store.sqlite import SQLiteStore


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    s = SQLiteStore(tmp_path / "crawl.db")
    yield s
    s.close()


def full(i: int, name: str = "") -> Artist:
    return Artist(
        id=f"a{i}",
        name=name or f"Artist {i}",
        genres=["pop"],
        popularity=50,
        followers=10,
        images=[],
        uri=f"spotify:artist:a{i}",
    )


def simple(i: int) -> SimplifiedArtist:
    return SimplifiedArtist(id=f"a{i}", name=f"Artist {i}", uri=f"spotify:artist:a{i}")


def test_spawning_the_same_task_twice_is_a_no_op(store: SQLiteStore) -> None:
    spec = TaskSpec("search", {"q": "a", "offset": 0})
    assert store.add_tasks([spec, spec]) == 1
    assert store.add_tasks([TaskSpec("search", {"offset": 0, "q": "a"})]) == 0
    assert store.pending_counts() == {"search": 1}


def test_claim_orders_by_priority_then_age(store: SQLiteStore) -> None:
    store.add_tasks([TaskSpec("search", {"q": q}, p) for q, p in [("a", 0), ("b", 2), ("c", 2)]])
    claimed = store.claim("search", 2)
    assert [t.params["q"] for t in claimed] == ["b", "c"]
    assert store.pending_counts() == {"search": 1}


def test_complete_records_artists_task_and_spawn_together(store: SQLiteStore) -> None:
    store.add_tasks([TaskSpec("search", {"q": "a"})])
    (task,) = store.claim("search", 1)
    result = store.complete(
        task,
        TaskOutcome(
            artists=[full(1), simple(2), simple(2)],
            spawn=[TaskSpec("album", {"album": "x"}), TaskSpec("album", {"album": "x"})],
        ),
    )
    assert (result.new_full, result.new_simplified, result.upgraded, result.spawned) == (1, 1, 0, 1)
    assert result.value == 3
    counts = store.artist_counts()
    assert (counts.total, counts.full, counts.simplified) == (2, 1, 1)
    assert store.task_counts()["search"] == {"done": 1}
    assert store.pending_counts() == {"album": 1}


def test_simplified_never_overwrites_full_and_full_upgrades(store: SQLiteStore) -> None:
    store.add_tasks([TaskSpec("k", {"n": n}) for n in range(3)])
    t1, t2, t3 = store.claim("k", 3)
    store.complete(t1, TaskOutcome(artists=[full(1, "Real Name")]))
    r = store.complete(
        t2, TaskOutcome(artists=[SimplifiedArtist(id="a1", name="Other"), simple(2)])
    )
    assert (r.new_simplified, r.upgraded) == (1, 0)
    r = store.complete(t3, TaskOutcome(artists=[full(2)]))
    assert r.upgraded == 1 and r.value == 1
    rows = {a["id"]: a for a in store.iter_artists()}
    assert rows["a1"]["name"] == "Real Name" and rows["a1"]["detail"] == "full"
    assert rows["a2"]["detail"] == "full" and rows["a2"]["genres"] == ["pop"]
    assert rows["a2"]["found_by"] == "k"


def test_ids_said_unseen_are_not_looked_up_and_a_wrong_hint_loses_nothing(
    store: SQLiteStore,
) -> None:
    """``TaskOutcome.unseen`` spares the look-ups of new ids; the counts follow the hint, but a
    hint that is wrong (an id held after all) never makes the row less than it was."""
    store.add_tasks([TaskSpec("k", {"n": n}) for n in range(3)])
    t1, t2, t3 = store.claim("k", 3)
    store.complete(t1, TaskOutcome(artists=[full(1, "Real Name")]))
    before = {a["id"]: a for a in store.iter_artists()}["a1"]
    r = store.complete(t2, TaskOutcome(artists=[full(2), simple(3)], unseen={"a2", "a3"}))
    assert (r.new_full, r.new_simplified, r.upgraded) == (1, 1, 0)
    assert sorted(r.changes or []) == [("a2", "Artist 2", 1, 1), ("a3", "Artist 3", 1, 0)]
    store.complete(t3, TaskOutcome(artists=[SimplifiedArtist(id="a1", name="X")], unseen={"a1"}))
    rows = {a["id"]: a for a in store.iter_artists()}
    assert rows["a1"] == before  # still full, same name, same first_seen
    assert rows["a2"]["detail"] == "full" and rows["a3"]["detail"] == "simplified"


def test_a_failed_commit_leaves_nothing_behind(store: SQLiteStore) -> None:
    store.add_tasks([TaskSpec("k", {"n": 1})])
    (task,) = store.claim("k", 1)
    store.release([task])  # no longer leased: completing it must roll everything back
    with pytest.raises(StoreError):
        store.complete(task, TaskOutcome(artists=[full(1)], spawn=[TaskSpec("k", {"n": 2})]))
    assert store.artist_counts().total == 0
    assert store.pending_counts() == {"k": 1}


def test_leases_of_a_dead_process_are_recovered(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with SQLiteStore(path) as s:
        s.add_tasks([TaskSpec("k", {"n": n}) for n in range(5)])
        s.claim("k", 3)
    with SQLiteStore(path) as s:
        assert s.pending_counts() == {"k": 2}
        assert s.recover_leases() == 3
        assert s.pending_counts() == {"k": 5}


def test_hydration_batches_only_unqueued_simplified(store: SQLiteStore) -> None:
    store.add_tasks([TaskSpec("k", {})])
    (task,) = store.claim("k", 1)
    store.complete(task, TaskOutcome(artists=[simple(i) for i in range(7)] + [full(9)]))
    assert store.queue_hydration(batch_size=3, max_tasks=10) == 3
    assert store.queue_hydration(batch_size=3, max_tasks=10) == 0
    batches = store.claim("hydrate", 10)
    assert sorted(len(t.params["ids"]) for t in batches) == [1, 3, 3]
    assert store.simplified_among(["a0", "a9", "zz"]) == ["a0"]


def test_meta_round_trips_json(store: SQLiteStore) -> None:
    store.set_meta("x", {"a": [1, 2]})
    store.set_meta("x", {"a": [3]})
    assert store.get_meta("x") == {"a": [3]}
    assert store.get_meta("missing") is None


def test_bad_paths_and_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a directory"):
        SQLiteStore(tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        SQLiteStore(tmp_path / "nope" / "c.db")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a spotify-ingest database"):
        SQLiteStore(garbage)
    foreign = tmp_path / "foreign.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE t (x)")
    con.close()
    with pytest.raises(StoreError, match="not a spotify-ingest database"):
        SQLiteStore(foreign)


def test_a_database_from_a_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    SQLiteStore(path).close()
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(SchemaTooNewError, match="upgrade spotify-ingest"):
        SQLiteStore(path)
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_failed_tasks_are_not_claimed_again(store: SQLiteStore) -> None:
    store.add_tasks([TaskSpec("k", {})])
    (task,) = store.claim("k", 1)
    store.fail(task, "NotFoundError: no such artist")
    assert store.claim("k", 1) == []
    assert store.task_counts()["k"] == {TaskState.FAILED.name.lower(): 1}
