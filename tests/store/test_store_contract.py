"""The store contract, run over both backends: SQLite and PostgreSQL behave the same.

Each test gets a :class:`Backend`: ``open()`` opens a store on the test's own database (a temporary
SQLite file, or a fresh PostgreSQL schema), as often as a test needs to "restart the crawler".
The PostgreSQL runs skip when no server is reachable, and fail under CI (see ``conftest.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from spotify_ingest.errors import SchemaTooNewError, StoreError, UsageError
from spotify_ingest.models import Artist, SimplifiedArtist
from spotify_ingest.store import open_store
from spotify_ingest.store.base import SearchNode, TaskOutcome, TaskSpec, TaskState


@dataclass
class Backend:
    name: str
    open: Callable[..., Any]
    expire_leases: Callable[[], None]
    set_version: Callable[[int], None]
    get_version: Callable[[], int]
    schema_version: int
    opened: list[Any] = field(default_factory=list)


def _sqlite_backend(tmp_path: Path) -> Backend:
    import sqlite3

    from spotify_ingest.store.schema import SCHEMA_VERSION

    path = tmp_path / "crawl.db"

    def set_version(v: int) -> None:
        con = sqlite3.connect(path)
        con.execute(f"PRAGMA user_version = {v}")
        con.close()

    def get_version() -> int:
        con = sqlite3.connect(path)
        (v,) = con.execute("PRAGMA user_version").fetchone()
        con.close()
        return int(v)

    return Backend(
        "sqlite",
        open=lambda **kw: open_store(path, **kw),
        expire_leases=lambda: None,  # one process per file: every lease left at start is stale
        set_version=set_version,
        get_version=get_version,
        schema_version=SCHEMA_VERSION,
    )


def _postgres_backend(request: pytest.FixtureRequest) -> Backend:
    from spotify_ingest.store.pg_schema import SCHEMA_VERSION, VERSION_TABLE

    schema = request.getfixturevalue("pg_schema")

    def expire_leases() -> None:  # what time does to a dead worker's leases
        with schema.admin() as conn:
            conn.execute("UPDATE tasks SET lease_until = now() - interval '1 second'")

    def set_version(v: int) -> None:
        with schema.admin() as conn:
            conn.execute(f"UPDATE {VERSION_TABLE} SET version = %s", (v,))

    def get_version() -> int:
        with schema.admin() as conn:
            return int(conn.execute(f"SELECT version FROM {VERSION_TABLE}").fetchone()[0])

    url = schema.url
    return Backend(
        "postgres",
        open=lambda **kw: open_store(url, **kw) if url else _pg_open(schema.dsn, **kw),
        expire_leases=expire_leases,
        set_version=set_version,
        get_version=get_version,
        schema_version=SCHEMA_VERSION,
    )


def _pg_open(dsn: str, **kw: Any) -> Any:
    from spotify_ingest.store.postgres import PostgresStore

    return PostgresStore(dsn, **kw)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = _sqlite_backend(tmp_path) if request.param == "sqlite" else _postgres_backend(request)
    opener = b.open

    def tracked(**kw: Any) -> Any:
        s = opener(**kw)
        b.opened.append(s)
        return s

    b.open = tracked
    yield b
    for s in b.opened:
        s.close()


@pytest.fixture
def store(backend: Backend) -> Any:
    return backend.open()


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


def test_spawning_the_same_task_twice_is_a_no_op(store: Any) -> None:
    spec = TaskSpec("search", {"q": "a", "offset": 0})
    assert store.add_tasks([spec, spec]) == 1
    assert store.add_tasks([TaskSpec("search", {"offset": 0, "q": "a"})]) == 0
    assert store.add_tasks([]) == 0
    assert store.pending_counts() == {"search": 1}


def test_claim_orders_by_priority_then_age(store: Any) -> None:
    store.add_tasks([TaskSpec("search", {"q": q}, p) for q, p in [("a", 0), ("b", 2), ("c", 2)]])
    claimed = store.claim("search", 2)
    assert [t.params["q"] for t in claimed] == ["b", "c"]
    assert [t.attempts for t in claimed] == [1, 1]
    assert store.pending_counts() == {"search": 1}
    assert store.claim("album", 5) == []


def test_complete_records_artists_task_and_spawn_together(store: Any) -> None:
    store.add_tasks([TaskSpec("search", {"q": "a"})])
    (task,) = store.claim("search", 1)
    result = store.complete(
        task,
        TaskOutcome(
            artists=[full(1), simple(2), simple(2)],
            spawn=[TaskSpec("album", {"album": "x"}), TaskSpec("album", {"album": "x"})],
            search_nodes=[SearchNode("a", None, 10, "paging"), SearchNode("a", None, 12, "split")],
            requests=3,
            meta={"progress": {"n": 1}},
        ),
    )
    assert (result.new_full, result.new_simplified, result.upgraded, result.spawned) == (1, 1, 0, 1)
    assert result.value == 3
    counts = store.artist_counts()
    assert (counts.total, counts.full, counts.simplified) == (2, 1, 1)
    assert store.task_counts()["search"] == {"done": 1}
    assert store.pending_counts() == {"album": 1}
    assert store.search_nodes() == [SearchNode("a", None, 12, "split")]
    assert store.get_meta("progress") == {"n": 1}
    assert store.requests_done() == 3
    assert store.artist_ids() == {"a1", "a2"}


def test_simplified_never_overwrites_full_and_full_upgrades(store: Any) -> None:
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


def test_a_full_artist_seen_again_is_refreshed_not_counted(store: Any) -> None:
    store.add_tasks([TaskSpec("k", {"n": n}) for n in range(2)])
    t1, t2 = store.claim("k", 2)
    store.complete(t1, TaskOutcome(artists=[full(1, "Old")]))
    r = store.complete(t2, TaskOutcome(artists=[full(1, "New")]))
    assert (r.new_full, r.new_simplified, r.upgraded, r.value) == (0, 0, 0, 0)
    (row,) = store.iter_artists()
    assert row["name"] == "New"


def test_iter_names_streams_id_name_and_detail_of_every_artist(store: Any) -> None:
    store.add_tasks([TaskSpec("k", {"n": n}) for n in range(2)])
    t1, t2 = store.claim("k", 2)
    store.complete(t1, TaskOutcome(artists=[full(1, "Ünïcode Name"), simple(2), simple(3)]))
    store.complete(t2, TaskOutcome(artists=[full(3)]))  # a2 stays simplified, a3 is upgraded
    names = list(store.iter_names())
    assert sorted(names) == [("a1", "Ünïcode Name", True), ("a2", "Artist 2", False),
                             ("a3", "Artist 3", True)]  # fmt: skip
    assert sorted((a["id"], a["name"], a["detail"] == "full") for a in store.iter_artists()) == (
        sorted(names)
    )


def test_a_failed_commit_leaves_nothing_behind(store: Any) -> None:
    store.add_tasks([TaskSpec("k", {"n": 1})])
    (task,) = store.claim("k", 1)
    store.release([task])  # no longer leased: completing it must roll everything back
    with pytest.raises(StoreError):
        store.complete(
            task,
            TaskOutcome(
                artists=[full(1)],
                spawn=[TaskSpec("k", {"n": 2})],
                search_nodes=[SearchNode("q", None, 1, "paging")],
                meta={"x": 1},
            ),
        )
    assert store.artist_counts().total == 0
    assert store.pending_counts() == {"k": 1}
    assert store.search_nodes() == []
    assert store.get_meta("x") is None


def test_release_gives_the_attempt_back(store: Any) -> None:
    store.add_tasks([TaskSpec("k", {})])
    (task,) = store.claim("k", 1)
    store.release([task])
    (again,) = store.claim("k", 1)
    assert again.id == task.id and again.attempts == 1


def test_leases_of_a_dead_process_are_recovered(backend: Backend) -> None:
    s = backend.open()
    s.add_tasks([TaskSpec("k", {"n": n}) for n in range(5)])
    s.claim("k", 3)
    s.close()  # the process dies holding three leases
    backend.expire_leases()
    s = backend.open()
    assert s.pending_counts() == {"k": 2}
    assert s.recover_leases() == 3
    assert s.pending_counts() == {"k": 5}
    assert s.recover_leases() == 0


def test_hydration_batches_only_unqueued_simplified(store: Any) -> None:
    store.add_tasks([TaskSpec("k", {})])
    (task,) = store.claim("k", 1)
    store.complete(task, TaskOutcome(artists=[simple(i) for i in range(7)] + [full(9)]))
    assert store.queue_hydration(batch_size=3, max_tasks=10) == 3
    assert store.queue_hydration(batch_size=3, max_tasks=10) == 0
    batches = store.claim("hydrate", 10)
    assert sorted(len(t.params["ids"]) for t in batches) == [1, 3, 3]
    assert sorted(i for t in batches for i in t.params["ids"]) == [f"a{i}" for i in range(7)]
    assert store.simplified_among(["a0", "a9", "zz"]) == ["a0"]
    assert store.simplified_among([]) == []


def test_meta_round_trips_json(store: Any) -> None:
    store.set_meta("x", {"a": [1, 2]})
    store.set_meta("x", {"a": [3]})
    assert store.get_meta("x") == {"a": [3]}
    store.set_meta("s", "text with 'quotes' and ünïcode")
    assert store.get_meta("s") == "text with 'quotes' and ünïcode"
    assert store.get_meta("missing") is None


def test_rate_estimates_list_learned_limits(store: Any) -> None:
    store.set_meta("rate_estimate:abc:https://api.example/v1", {"rate": 2.5})
    store.set_meta("other", 1)
    assert store.rate_estimates() == [
        {"client": "abc", "api_base": "https://api.example/v1", "estimate": {"rate": 2.5}}
    ]


def test_meta_items_lists_the_rows_under_a_prefix_by_key(store: Any) -> None:
    store.set_meta("retry_deadline:b:https://api.example/v1", {"until": 2.0})
    store.set_meta("retry_deadline:a:https://api.example/v1", {"until": 1.0})
    store.set_meta("retry_deadlines_are_not_this", 0)
    store.set_meta("rate_estimate:a:https://api.example/v1", {"rate": 2.5})
    store.flush()
    assert store.meta_items("retry_deadline:") == [
        ("retry_deadline:a:https://api.example/v1", {"until": 1.0}),
        ("retry_deadline:b:https://api.example/v1", {"until": 2.0}),
    ]
    assert store.meta_items("%") == []  # a prefix, not a LIKE pattern


def test_a_database_from_a_newer_schema_is_refused_untouched(backend: Backend) -> None:
    backend.open().close()
    backend.set_version(backend.schema_version + 1)
    with pytest.raises(SchemaTooNewError, match="upgrade spotify-ingest"):
        backend.open()
    assert backend.get_version() == backend.schema_version + 1


def test_reopening_keeps_everything(backend: Backend) -> None:
    s = backend.open()
    s.add_tasks([TaskSpec("k", {})])
    (task,) = s.claim("k", 1)
    s.complete(task, TaskOutcome(artists=[full(1)]))
    s.close()
    s = backend.open(create=False)
    assert s.artist_counts().full == 1
    assert s.task_counts() == {"k": {"done": 1}}


def test_no_database_and_create_false_is_a_usage_error(backend: Backend) -> None:
    with pytest.raises(UsageError, match="crawl"):
        backend.open(create=False)


def test_failed_tasks_are_not_claimed_again(store: Any) -> None:
    store.add_tasks([TaskSpec("k", {})])
    (task,) = store.claim("k", 1)
    store.fail(task, "NotFoundError: no such artist")
    assert store.claim("k", 1) == []
    assert store.task_counts()["k"] == {TaskState.FAILED.name.lower(): 1}


def test_backing_off_tasks_wait_for_their_time_and_survive_a_restart(backend: Backend) -> None:
    s = backend.open()
    s.add_tasks([TaskSpec("k", {"n": n}) for n in range(3)])
    a, b, c = s.claim("k", 3)
    now = time.time()
    s.back_off(a, "ServerError 503: down", now + 3600, attempted=True)
    s.back_off(b, "TransportError: no response", now - 1, attempted=False)
    assert s.next_retry() == pytest.approx(now - 1)
    assert s.pending_counts() == {} and s.claim("k", 3) == []
    s.close()

    s = backend.open(create=False)
    backend.expire_leases()
    s.recover_leases()  # c was leased by the "crashed" process
    assert s.task_counts()["k"] == {"backoff": 2, "pending": 1}
    assert s.wake_due() == 1  # b's time has come; a's has not
    claimed = {t.id: t for t in s.claim("k", 3)}
    assert set(claimed) == {b.id, c.id}
    assert claimed[b.id].attempts == b.attempts  # not counted: as if b had never been claimed
    assert s.next_retry() == pytest.approx(now + 3600)
    assert s.next_retry(["k", "other"]) == pytest.approx(now + 3600)
    assert s.next_retry(["other"]) is None
    assert [(p.kind, p.state, p.reason, p.count) for p in s.task_problems()] == [
        ("k", TaskState.BACKOFF, "ServerError 503", 1)
    ]


def test_a_task_backs_off_with_its_attempt_counted(store: Any) -> None:
    store.add_tasks([TaskSpec("k", {})])
    (task,) = store.claim("k", 1)
    store.back_off(task, "ServerError 500: x", time.time() - 1, attempted=True)
    store.wake_due()
    (again,) = store.claim("k", 1)
    assert again.attempts == task.attempts + 1
    store.complete(again, TaskOutcome())
    assert store.next_retry() is None and store.task_problems() == []


def test_sqlite_users_do_not_need_psycopg(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys; from spotify_ingest.store import open_store; "
        f"open_store({str(tmp_path / 'x.db')!r}).close(); "
        "assert 'psycopg' not in sys.modules, 'psycopg imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
