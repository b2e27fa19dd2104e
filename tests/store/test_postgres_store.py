"""The PostgreSQL store: what sharing one frontier between worker processes requires.

The behaviours both backends share are in ``test_store_contract.py`` (run over SQLite and
PostgreSQL); this file holds leasing between workers, concurrency, migrations racing, connection
errors, and the SQLite/PostgreSQL equivalence of exported rows. Each test has its own schema.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from spotify_ingest.errors import SchemaTooNewError, StoreError, UsageError
from spotify_ingest.models import Artist, Image, SimplifiedArtist
from spotify_ingest.store import LeaseLostError, is_postgres_url, open_store
from spotify_ingest.store.base import CompletionResult, SearchNode, Task, TaskOutcome, TaskSpec
from spotify_ingest.store.sqlite import SQLiteStore

from ..reliability.test_migrations import FAILED_BEFORE_V3, assert_revived
from .conftest import PgSchema, in_ci

try:
    from psycopg.types.json import Jsonb

    from spotify_ingest.store.pg_schema import MIGRATIONS, SCHEMA_VERSION, VERSION_TABLE
    from spotify_ingest.store.postgres import PostgresStore, describe_dsn
except ImportError as exc:  # psycopg missing: SQLite-only install
    if in_ci():
        raise
    pytest.skip(f"psycopg is not installed ({exc})", allow_module_level=True)

pytestmark = pytest.mark.services


@pytest.fixture
def open_pg(pg_schema: PgSchema) -> Iterator[Callable[..., PostgresStore]]:
    opened: list[PostgresStore] = []

    def make(**kw: Any) -> PostgresStore:
        s = PostgresStore(pg_schema.dsn, **kw)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


def full(i: int, name: str = "", **kw: Any) -> Artist:
    return Artist(id=f"a{i}", name=name or f"Artist {i}", genres=["pop"], **kw)


def simple(i: int, name: str = "") -> SimplifiedArtist:
    return SimplifiedArtist(id=f"a{i}", name=name or f"Artist {i}")


def expire(schema: PgSchema, where: str = "TRUE") -> None:
    with schema.admin() as conn:
        conn.execute(f"UPDATE tasks SET lease_until = now() - interval '1 second' WHERE {where}")


# -- leases between workers ---------------------------------------------------------------------


def test_two_workers_claim_disjoint_tasks(open_pg: Callable[..., PostgresStore]) -> None:
    a, b = open_pg(worker_id="A"), open_pg(worker_id="B")
    a.add_tasks([TaskSpec("k", {"n": n}) for n in range(10)])
    ta, tb = a.claim("k", 4), b.claim("k", 4)
    assert len(ta) == len(tb) == 4
    assert not {t.id for t in ta} & {t.id for t in tb}
    assert a.pending_counts() == {"k": 2}
    # B cannot finish, release or fail A's task
    with pytest.raises(StoreError, match="not leased by this worker"):
        b.complete(ta[0], TaskOutcome(artists=[full(1)]))
    b.release(ta)
    b.fail(ta[1], "nope")
    assert a.task_counts() == {"k": {"leased": 8, "pending": 2}}
    assert a.artist_counts().total == 0
    assert a.complete(ta[0], TaskOutcome(artists=[full(1)])).new_full == 1


def test_concurrent_claims_never_hand_out_a_task_twice(
    open_pg: Callable[..., PostgresStore],
) -> None:
    stores = [open_pg(worker_id=f"w{i}") for i in range(4)]
    stores[0].add_tasks([TaskSpec("k", {"n": n}) for n in range(400)])
    start = threading.Barrier(len(stores))

    def drain(s: PostgresStore) -> list[int]:
        start.wait()
        got: list[int] = []
        while batch := s.claim("k", 7):
            got += [t.id for t in batch]
        return got

    with ThreadPoolExecutor(len(stores)) as pool:
        claimed = list(pool.map(drain, stores))
    every = [i for ids in claimed for i in ids]
    assert len(every) == len(set(every)) == 400


def test_an_expired_lease_goes_to_another_worker_and_the_late_complete_is_refused(
    pg_schema: PgSchema, open_pg: Callable[..., PostgresStore]
) -> None:
    slow = open_pg(worker_id="slow", lease_seconds=0.5)
    other = open_pg(worker_id="other")
    other.recover_every = 0  # look for expired leases on every claim (default: once a second)
    slow.add_tasks([TaskSpec("k", {"n": 1})])
    (task,) = slow.claim("k", 1)
    assert other.recover_leases() == 0  # live lease: left alone
    assert other.claim("k", 1) == []
    time.sleep(0.6)
    (retry,) = other.claim("k", 1)  # claim recovers expired leases by itself
    assert retry.id == task.id and retry.attempts == 2
    assert other.complete(retry, TaskOutcome(artists=[full(1, "Second")])).new_full == 1
    with pytest.raises(LeaseLostError, match="not leased by this worker"):
        slow.complete(
            task, TaskOutcome(artists=[full(1, "First"), simple(2)], spawn=[TaskSpec("x", {})])
        )
    assert other.artist_counts().total == 1
    assert [a["name"] for a in other.iter_artists()] == ["Second"]
    assert other.pending_counts() == {}
    assert slow.renew_leases([task]) == [task]
    with pg_schema.admin() as conn:
        row = conn.execute("SELECT state, leased_by, value FROM tasks").fetchone()
    assert row == (2, "other", 2)


def test_an_expired_lease_still_held_can_be_completed(
    pg_schema: PgSchema, open_pg: Callable[..., PostgresStore]
) -> None:
    s = open_pg(worker_id="w")
    s.add_tasks([TaskSpec("k", {})])
    (task,) = s.claim("k", 1)
    expire(pg_schema)  # nobody recovered it yet: the lease is still this worker's
    assert s.complete(task, TaskOutcome(artists=[simple(1)])).new_simplified == 1


def test_the_same_worker_cannot_complete_an_older_lease(
    pg_schema: PgSchema, open_pg: Callable[..., PostgresStore]
) -> None:
    s = open_pg(worker_id="w")
    s.add_tasks([TaskSpec("k", {})])
    (old,) = s.claim("k", 1)
    expire(pg_schema)
    assert s.recover_leases() == 1
    (new,) = s.claim("k", 1)
    with pytest.raises(StoreError):
        s.complete(old, TaskOutcome())
    s.complete(new, TaskOutcome())


def test_recover_leases_takes_only_expired_ones(
    pg_schema: PgSchema, open_pg: Callable[..., PostgresStore]
) -> None:
    a, b = open_pg(worker_id="A"), open_pg(worker_id="B")
    a.add_tasks([TaskSpec("k", {"n": n}) for n in range(6)])
    ta, tb = a.claim("k", 3), b.claim("k", 3)
    expire(pg_schema, f"id IN ({', '.join(str(t.id) for t in ta)})")
    assert b.recover_leases() == 3
    assert b.pending_counts() == {"k": 3}
    assert b.complete(tb[0], TaskOutcome()).spawned == 0


def test_renewing_keeps_a_lease_past_its_first_expiry(
    open_pg: Callable[..., PostgresStore],
) -> None:
    a = open_pg(worker_id="A", lease_seconds=0.6)
    b = open_pg(worker_id="B")
    a.add_tasks([TaskSpec("k", {"n": n}) for n in range(2)])
    kept, dropped = a.claim("k", 2)
    for _ in range(3):
        time.sleep(0.25)
        assert a.renew_leases([kept]) == []
    assert b.recover_leases() == 1  # only the one not renewed
    (taken,) = b.claim("k", 5)
    assert taken.id == dropped.id
    assert a.renew_leases([kept, dropped]) == [dropped]
    a.complete(kept, TaskOutcome())
    assert a.renew_leases([kept]) == [kept]  # finished: nothing to renew
    assert a.renew_leases([]) == []


# -- artists from many workers ------------------------------------------------------------------


def test_concurrent_upserts_of_the_same_artists_end_in_one_full_row_each(
    open_pg: Callable[..., PostgresStore],
) -> None:
    n, rounds = 40, 6
    stores = [open_pg(worker_id=f"w{i}") for i in range(2)]
    stores[0].add_tasks([TaskSpec("k", {"r": r, "w": w}) for r in range(rounds) for w in range(2)])
    tasks = [s.claim("k", rounds) for s in stores]
    assert not {t.id for t in tasks[0]} & {t.id for t in tasks[1]}
    barrier = threading.Barrier(2)

    def work(w: int) -> list[CompletionResult]:
        results = []
        for r, task in enumerate(tasks[w]):
            ids = range(r * n, (r + 1) * n)
            # worker 0 brings simplified objects, worker 1 full ones, in opposite orders
            batch: list[Artist | SimplifiedArtist] = (
                [simple(i, "S") for i in ids] if w == 0 else [full(i, "F") for i in reversed(ids)]
            )
            barrier.wait()
            results.append(stores[w].complete(task, TaskOutcome(artists=batch)))
        return results

    with ThreadPoolExecutor(2) as pool:
        results = [r for rs in pool.map(work, range(2)) for r in rs]
    counts = stores[0].artist_counts()
    assert (counts.total, counts.full) == (n * rounds, n * rounds)
    assert {a["name"] for a in stores[1].iter_artists()} == {"F"}
    # exactly one insert created each row, whoever won the race
    assert sum(r.new_full + r.new_simplified for r in results) == n * rounds
    assert sum(r.upgraded for r in results) <= n * rounds


def test_concurrent_hydration_queueing_is_disjoint(open_pg: Callable[..., PostgresStore]) -> None:
    a, b = open_pg(worker_id="A"), open_pg(worker_id="B")
    a.add_tasks([TaskSpec("k", {})])
    (task,) = a.claim("k", 1)
    a.complete(task, TaskOutcome(artists=[simple(i) for i in range(500)]))
    barrier = threading.Barrier(2)

    def queue(s: PostgresStore) -> int:
        barrier.wait()
        total = 0
        while made := s.queue_hydration(batch_size=10, max_tasks=3):
            total += made
        return total

    with ThreadPoolExecutor(2) as pool:
        made = sum(pool.map(queue, [a, b]))
    batches = a.claim("hydrate", 100)
    assert made == len(batches) >= 50  # a worker that found rows locked may queue a short batch
    assert all(1 <= len(t.params["ids"]) <= 10 for t in batches)
    ids = [i for t in batches for i in t.params["ids"]]
    assert len(ids) == len(set(ids)) == 500


# -- schema, connections, errors ----------------------------------------------------------------


def test_workers_starting_together_migrate_once(pg_schema: PgSchema) -> None:
    barrier = threading.Barrier(4)

    def start(i: int) -> int:
        barrier.wait()
        with PostgresStore(pg_schema.dsn, worker_id=f"w{i}") as s:
            return s.artist_counts().total

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(start, range(4))) == [0, 0, 0, 0]
    with pg_schema.admin() as conn:
        assert conn.execute(f"SELECT version FROM {VERSION_TABLE}").fetchall() == [
            (SCHEMA_VERSION,)
        ]


def test_tasks_failed_on_passing_trouble_by_version_1_are_revived(
    pg_schema: PgSchema, open_pg: Callable[..., PostgresStore]
) -> None:
    """As in SQLite (tests/reliability/test_migrations.py): version 2 makes tasks that version 1
    gave up on passing trouble pending again, as new; final answers stay failed."""
    with pg_schema.admin() as conn:
        conn.execute(MIGRATIONS[1].encode())
        conn.execute(f"UPDATE {VERSION_TABLE} SET version = 1")
        for n, error in enumerate(FAILED_BEFORE_V3):
            conn.execute(
                "INSERT INTO tasks (kind, key, params, state, attempts, created_at, finished_at, "
                "leased_by, error) VALUES ('search', %s, %s, 3, 5, 1.0, 2.0, 'w0', %s)",
                (f"search:{n}", Jsonb({"n": n}), error),
            )
    open_pg().close()
    with pg_schema.admin() as conn:
        rows = conn.execute("SELECT params, state, attempts, error FROM tasks").fetchall()
    assert_revived({params["n"]: rest for params, *rest in rows})


def test_a_newer_schema_is_refused_before_anything_is_written(
    pg_schema: PgSchema, open_pg: Callable[..., PostgresStore]
) -> None:
    open_pg().close()
    with pg_schema.admin() as conn:
        conn.execute(f"UPDATE {VERSION_TABLE} SET version = %s", (SCHEMA_VERSION + 5,))
    with pytest.raises(SchemaTooNewError, match=f"version {SCHEMA_VERSION + 5}"):
        open_pg()


def test_foreign_tables_are_not_taken_over(pg_schema: PgSchema) -> None:
    with pg_schema.admin() as conn:
        conn.execute("CREATE TABLE artists (x int)")
    with pytest.raises(StoreError, match="not a spotify-ingest database"):
        PostgresStore(pg_schema.dsn)


def test_a_search_path_without_a_schema_is_explained(pg_server: str) -> None:
    from psycopg.conninfo import make_conninfo

    dsn = make_conninfo(pg_server, options="-c search_path=si_test_does_not_exist")
    with pytest.raises(StoreError, match="no schema to create tables in"):
        PostgresStore(dsn)


def test_errors_never_show_the_password() -> None:
    secret = "s3cr3t-pw"
    for dsn in (
        f"postgresql://bob:{secret}@127.0.0.1:1/crawl",
        f"host=127.0.0.1 port=1 user=bob password={secret} dbname=crawl",
    ):
        with pytest.raises(StoreError) as info:
            PostgresStore(dsn, connect_timeout=2)
        message = str(info.value)
        assert secret not in message and "\n" not in message
        assert "postgresql://bob@127.0.0.1:1/crawl" in message
    assert describe_dsn(f"postgres://bob:{secret}@h/db?bogus=1").count(secret) == 0
    with pytest.raises(UsageError) as bad:
        PostgresStore(f"postgresql://bob:{secret}@h/db?bogus=1")
    assert secret not in str(bad.value)


def test_bad_arguments_are_usage_errors(pg_schema: PgSchema) -> None:
    with pytest.raises(UsageError, match="lease_seconds"):
        PostgresStore(pg_schema.dsn, lease_seconds=0)
    with pytest.raises(UsageError, match="worker_id"):
        PostgresStore(pg_schema.dsn, worker_id=" ")


def test_a_closed_store_says_so(open_pg: Callable[..., PostgresStore]) -> None:
    s = open_pg()
    s.close()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.pending_counts()


def test_a_dropped_connection_is_replaced(
    pg_schema: PgSchema, open_pg: Callable[..., PostgresStore]
) -> None:
    s = open_pg(worker_id="w")
    s.add_tasks([TaskSpec("k", {})])
    with pg_schema.admin() as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            ("spotify-ingest w",),
        )
    with pytest.raises(StoreError):
        s.pending_counts()  # the statement that finds the connection dead fails...
    assert s.pending_counts() == {"k": 1}  # ...the next one reconnects


# -- backends agree -----------------------------------------------------------------------------


def test_open_store_picks_the_backend(pg_schema: PgSchema, tmp_path: Path) -> None:
    assert is_postgres_url("postgresql://x/y") and is_postgres_url("POSTGRES://x/y")
    assert not is_postgres_url("crawl.db") and not is_postgres_url(tmp_path / "x.db")
    with open_store(tmp_path / "c.db") as s:
        assert isinstance(s, SQLiteStore)
    if pg_schema.url is None:
        pytest.skip("the test server DSN is not a URL")
    with open_store(pg_schema.url, worker_id="w", lease_seconds=5) as s:
        assert isinstance(s, PostgresStore)
        assert (s.worker_id, s.lease_seconds) == ("w", 5.0)


def _same_crawl(store: Any) -> None:
    store.add_tasks([TaskSpec("search", {"q": "a"}), TaskSpec("hydrate", {"ids": ["a2"]})])
    (t1,) = store.claim("search", 1)
    store.complete(
        t1,
        TaskOutcome(
            artists=[
                Artist(
                    id="a1",
                    name="Björk",
                    genres=["art pop", "électronique"],
                    popularity=70,
                    followers=3_000_000_000,
                    images=[Image(url="https://i/1", height=640, width=640), Image(url="u2")],
                    uri="spotify:artist:a1",
                    external_urls={"spotify": "https://open.spotify.com/artist/a1"},
                ),
                SimplifiedArtist(id="a2", name="Two", uri="spotify:artist:a2"),
                SimplifiedArtist(id="B3", name="Three"),
                Artist(id="a4", name="No details"),
            ],
            search_nodes=[SearchNode("a", None, 3, "paging"), SearchNode("a b", "a", 0, "empty")],
        ),
    )
    (t2,) = store.claim("hydrate", 1)
    store.complete(t2, TaskOutcome(artists=[Artist(id="a2", name="Two", genres=[], images=[])]))


def test_both_backends_export_the_same_rows(pg_schema: PgSchema, tmp_path: Path) -> None:
    rows = []
    for s in (SQLiteStore(tmp_path / "c.db"), PostgresStore(pg_schema.dsn)):
        with s:
            _same_crawl(s)
            exported = list(s.iter_artists())
            nodes = s.search_nodes()
        for r in exported:
            assert isinstance(r.pop("first_seen"), float) and isinstance(r.pop("updated_at"), float)
        rows.append((exported, nodes))
    assert rows[0] == rows[1]
    # same key order too, including inside image objects (jsonb reorders keys; we do not)
    assert [list(r) for r in rows[0][0]] == [list(r) for r in rows[1][0]]
    assert [list(i) for i in rows[1][0][1]["images"]] == [["url", "height", "width"]] * 2


def test_iter_artists_streams_a_consistent_snapshot(open_pg: Callable[..., PostgresStore]) -> None:
    s = open_pg(worker_id="w")
    s.add_tasks([TaskSpec("k", {"n": n}) for n in range(2)])
    t1, t2 = s.claim("k", 2)
    s.complete(t1, TaskOutcome(artists=[simple(i) for i in range(5000)]))
    stream = s.iter_artists()
    first = next(stream)
    s.complete(t2, TaskOutcome(artists=[simple(i) for i in range(5000, 5100)]))  # writes go on
    rest = list(stream)
    ids = [first["id"], *(r["id"] for r in rest)]
    assert len(ids) == 5000 and ids == sorted(ids)
    assert s.artist_counts().total == 5100


def test_task_params_round_trip(open_pg: Callable[..., PostgresStore]) -> None:
    s = open_pg()
    params = {"q": "tag:new ünï \"x\" 'y'", "offset": 950, "types": ["artist"], "f": 0.5}
    s.add_tasks([TaskSpec("search", params, priority=1.5)])
    (task,) = s.claim("search", 1)
    assert isinstance(task, Task) and task.params == params and task.priority == 1.5


@pytest.mark.parametrize("copy_from", [1, 10**9], ids=["copy", "json"])
def test_both_write_paths_apply_the_merge_rules(
    monkeypatch: pytest.MonkeyPatch,
    pg_schema: PgSchema,
    open_pg: Callable[..., PostgresStore],
    copy_from: int,
) -> None:
    """Big batches go through COPY + a temporary table, small ones through one JSON document."""
    from spotify_ingest.store import postgres

    monkeypatch.setattr(postgres, "_COPY_FROM", copy_from)
    s = open_pg(worker_id="w")
    s.add_tasks([TaskSpec("k", {"n": n}) for n in range(5)])
    t1, t2, t3, t4, t5 = s.claim("k", 5)
    r = s.complete(t1, TaskOutcome(artists=[simple(1), simple(2), full(3, "Full")]))
    assert (r.new_full, r.new_simplified, r.upgraded) == (1, 2, 0)
    r = s.complete(
        t2,
        TaskOutcome(
            artists=[full(1, "Up"), simple(3, "Down"), simple(4), simple(2, "Again")],
            spawn=[TaskSpec("k", {"n": 9})],
            meta={"m": [1]},
        ),
    )
    assert (r.new_full, r.new_simplified, r.upgraded, r.spawned) == (0, 1, 1, 1)
    rows = {a["id"]: a for a in s.iter_artists()}
    assert {i: (a["name"], a["detail"]) for i, a in rows.items()} == {
        "a1": ("Up", "full"),
        "a2": ("Artist 2", "simplified"),
        "a3": ("Full", "full"),
        "a4": ("Artist 4", "simplified"),
    }
    assert rows["a1"]["genres"] == ["pop"] and rows["a2"]["genres"] is None
    # a lost lease rolls back the COPYed batch too, and the session can go on writing
    expire(pg_schema, f"id = {t3.id}")
    assert s.recover_leases() == 1
    with pytest.raises(StoreError, match="not leased"):
        s.complete(t3, TaskOutcome(artists=[full(7), simple(8)], meta={"m": [2]}))
    assert s.get_meta("m") == [1] and s.artist_counts().total == 4
    r = s.complete(t4, TaskOutcome(artists=[full(7), simple(8)]))
    assert (r.new_full, r.new_simplified) == (1, 1)
    assert s.complete(t5, TaskOutcome(artists=[simple(8), simple(9)])).new_simplified == 1
    assert s.artist_counts().total == 7


def test_a_first_big_batch_refused_does_not_break_the_next(
    monkeypatch: pytest.MonkeyPatch, pg_schema: PgSchema, open_pg: Callable[..., PostgresStore]
) -> None:
    from spotify_ingest.store import postgres

    monkeypatch.setattr(postgres, "_COPY_FROM", 2)
    s = open_pg(worker_id="w")
    s.add_tasks([TaskSpec("k", {"n": n}) for n in range(2)])
    lost, kept = s.claim("k", 2)
    s.release([lost])
    with pytest.raises(StoreError, match="not leased"):
        s.complete(lost, TaskOutcome(artists=[simple(1), simple(2)]))
    assert s.complete(kept, TaskOutcome(artists=[simple(1), simple(2)])).new_simplified == 2


def test_a_deadlock_between_workers_redoes_the_transaction(
    monkeypatch: pytest.MonkeyPatch, open_pg: Callable[..., PostgresStore]
) -> None:
    from psycopg import errors as pg_errors

    s = open_pg(worker_id="w")
    monkeypatch.setattr(time, "sleep", lambda _: None)
    calls: list[int] = []

    def flaky(conn: Any) -> int:
        calls.append(1)
        conn.execute("INSERT INTO meta (key, value) VALUES ('k', '1')")
        if len(calls) < 3:
            raise pg_errors.DeadlockDetected("deadlock detected")
        return len(calls)

    assert s._write(flaky) == 3  # the first two attempts rolled back, the third committed
    assert s.get_meta("k") == 1

    def always(conn: Any) -> int:
        raise pg_errors.SerializationFailure("could not serialize access")

    with pytest.raises(StoreError, match="after 5 attempts"):
        s._write(always)
