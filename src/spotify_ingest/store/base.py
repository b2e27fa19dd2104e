"""What the crawler stores, independent of the database engine.

A *task* is one API request still to make (or a short page walk: a search page, one artist's
albums page, an album, a hydration batch). Tasks are durable rows; their identity is a canonical
``key`` derived from kind and parameters, so spawning the same task twice is a no-op. The crawler
claims tasks, makes the request, and hands the outcome to :meth:`Store.complete`, which in ONE
transaction upserts the artists, marks the task done and inserts the tasks it spawned: a crash at
any moment either keeps all of that or none of it.

A task is given up (``FAILED``) only on a final answer of the API (an unknown id, a refused
request). Passing trouble (a 5xx, a reset, a timeout, a bad body) sets it aside in ``BACKOFF``
with a durable ``not_before``: :meth:`Store.wake_due` makes it pending again once that time has
passed, in this run or a later one, so a crawl is never finished while one remains.

An artist is known ``SIMPLIFIED`` (id and name, from an album or a track) or ``FULL`` (a full
artist object: genres, images and whatever else the API still gives this app). A simplified object
never overwrites a full one.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

from ..models import Artist, SimplifiedArtist

__all__ = [
    "ArtistCounts",
    "Detail",
    "SearchNode",
    "Store",
    "Task",
    "TaskOutcome",
    "TaskProblem",
    "TaskSpec",
    "TaskState",
    "group_problems",
    "problem_reason",
    "task_key",
]


class Detail(IntEnum):
    SIMPLIFIED = 0
    FULL = 1


class TaskState(IntEnum):
    PENDING = 0
    LEASED = 1
    DONE = 2
    FAILED = 3  # for good: the API's answer is final (unknown id, refused request)
    BACKOFF = 4  # passing trouble (5xx, reset, timeout, bad body): pending again at not_before


def task_key(kind: str, params: Mapping[str, Any]) -> str:
    """The identity of a task: its kind and its parameters in canonical JSON."""
    return (
        kind + ":" + json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    )


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A task to create. ``priority``: higher runs first within its kind."""

    kind: str
    params: Mapping[str, Any]
    priority: float = 0.0

    @property
    def key(self) -> str:
        return task_key(self.kind, self.params)


@dataclass(frozen=True, slots=True)
class Task:
    """A task claimed from the store."""

    id: int
    kind: str
    params: Mapping[str, Any]
    priority: float
    attempts: int


@dataclass(frozen=True, slots=True)
class SearchNode:
    """A node of the search query tree: a query, its exact total and what we did with it."""

    query: str
    parent: str | None
    total: int
    status: str  # "paging": pages queued; "split": children queued instead; "empty"


@dataclass(slots=True)
class TaskOutcome:
    """Everything one finished task produced, committed together."""

    artists: Sequence[Artist | SimplifiedArtist] = ()
    spawn: Sequence[TaskSpec] = ()
    search_nodes: Sequence[SearchNode] = ()
    requests: int = 1
    meta: Mapping[str, Any] = field(default_factory=dict)
    # Ids of ``artists`` the store is known not to hold (the crawler's known index says so, for a
    # store only this crawler writes): it need not look them up. None: look every id up.
    unseen: AbstractSet[str] | None = None


@dataclass(frozen=True, slots=True)
class CompletionResult:
    """What the commit changed: the planner's reward signal."""

    new_full: int
    new_simplified: int
    upgraded: int  # known simplified before, full now
    spawned: int
    # The artists behind those counts, as ``(id, name, new, full)`` with ``new`` 1 for an id not
    # held before (0 for an upgrade) and ``full`` 1 when it is full now: what the crawler's known
    # index needs, so that it does not look the ids up again. None: this store does not say.
    changes: Sequence[tuple[str, str, int, int]] | None = None

    @property
    def value(self) -> float:
        """Units of progress: each artist id found is 1, each artist's full details is 1."""
        return 2.0 * self.new_full + self.new_simplified + self.upgraded


@dataclass(frozen=True, slots=True)
class TaskProblem:
    """Tasks of one kind failed for good or backing off, for one reason (``stats``)."""

    kind: str
    state: TaskState
    reason: str  # the error's class and HTTP status, such as "ServerError 503"
    count: int
    next_retry: float | None  # BACKOFF: the earliest not_before among them (epoch seconds)


def problem_reason(error: str | None) -> str:
    """The reason of a stored task error: its text up to the first ': '."""
    return (error or "unknown").split(": ", 1)[0]


ProblemRow = tuple[str, int, str | None, int, float | None]  # kind, state, error, count, retry


def group_problems(rows: Iterable[ProblemRow]) -> list[TaskProblem]:
    """``(kind, state, error, count, next_retry)`` rows, summed by kind, state and reason."""
    grouped: dict[tuple[str, int, str], tuple[int, float | None]] = {}
    for kind, state, error, count, retry in rows:
        key = (kind, state, problem_reason(error))
        held, earliest = grouped.get(key, (0, None))
        if retry is not None and (earliest is None or retry < earliest):
            earliest = retry
        grouped[key] = (held + count, earliest)
    return [
        TaskProblem(kind, TaskState(state), reason, count, retry)
        for (kind, state, reason), (count, retry) in sorted(grouped.items())
    ]


@dataclass(frozen=True, slots=True)
class ArtistCounts:
    total: int
    full: int

    @property
    def simplified(self) -> int:
        return self.total - self.full


class Store(Protocol):
    """The interface every store backend implements."""

    # True when one crawler process alone writes the store, so that its known index mirrors it
    # (and TaskOutcome.unseen may be trusted); False when workers share it.
    sole_writer: bool

    def close(self) -> None: ...

    def flush(self) -> None:
        """Make every write so far durable (a store that commits each write does nothing)."""

    def get_meta(self, key: str) -> Any: ...

    def set_meta(self, key: str, value: Any) -> None: ...

    def add_tasks(self, specs: Iterable[TaskSpec]) -> int: ...

    def claim(self, kind: str, limit: int) -> list[Task]: ...

    def pending_counts(self) -> dict[str, int]: ...

    def task_counts(self) -> dict[str, dict[str, int]]: ...

    def complete(self, task: Task, outcome: TaskOutcome) -> CompletionResult: ...

    def release(self, tasks: Iterable[Task], *, attempted: bool = False) -> None: ...

    def fail(self, task: Task, reason: str) -> None: ...

    def back_off(self, task: Task, reason: str, not_before: float, *, attempted: bool) -> None:
        """Set a leased task aside until ``not_before`` (epoch seconds): passing trouble."""

    def wake_due(self) -> int:
        """Backing-off tasks whose ``not_before`` has passed become pending; how many."""

    def next_retry(self, kinds: Collection[str] | None = None) -> float | None:
        """The earliest ``not_before`` of a backing-off task (of ``kinds``; None: none)."""

    def task_problems(self) -> list[TaskProblem]: ...

    def recover_leases(self) -> int: ...

    def queue_hydration(self, batch_size: int, max_tasks: int, priority: float = 0.0) -> int: ...

    def artist_counts(self) -> ArtistCounts: ...

    def iter_artists(self) -> Iterator[dict[str, Any]]: ...

    def iter_names(self) -> Iterator[tuple[str, str, bool]]: ...

    def search_nodes(self) -> list[SearchNode]: ...
