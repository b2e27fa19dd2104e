"""The planner: which kind of request to make next, by the yield each kind has shown.

The rate limit caps requests, so the only lever on how long a full crawl takes is the value each
request brings. Value is counted in units of progress: an artist id we did not have is 1, an
artist's full details we did not have is 1 (a new full artist from search is 2, an album's new
collaborator is 1, a hydrated artist is 1).

Each task kind with pending tasks is an arm of a bandit. The planner keeps, per arm, a discounted
sum of value and of requests (discount ``gamma`` per request of that arm), so the estimate follows
a yield that falls as the catalog fills up (search pages bring fewer new artists late in a crawl).
It picks the arm with the highest upper confidence bound

    mean_k + c * scale * sqrt(ln(N) / n_k)

where ``mean_k`` is discounted value per request, ``n_k`` the discounted request count, ``N`` their
sum and ``scale`` the best mean of the kinds tried so far, so exploration is proportionate to
what yields are possible.
Every arm starts with one optimistic pseudo-request worth ``prior`` so each is tried. Ties go to
the kind listed first in :data:`KIND_ORDER`; nothing is random, so one worker on a fixed catalog
makes the same choices every time.

Search is the backbone (its query tree reaches every artist) and hydration the finisher; every
other kind is opportunistic, and is *retired* for the rest of the run once it has had ``patience``
requests and its recent yield (discounted by ``RECENT_GAMMA`` per request, about the last fifty)
is below ``min_yield`` (default 0.05: one artist per twenty
requests). Without that rule a crawl whose search is complete would spend its last hours walking
albums that only hold artists it already has. The crawl ends when every non-retired kind is empty.

A named strategy (``--strategy seed|search|albums``) forces its plan instead: ``fixed_order``
lists its kinds by precedence, the first with pending tasks runs, and nothing retires.

Hydration is the low-priority stream: it is refilled from the store (simplified artists become
``hydrate`` tasks) only when few are pending, and competes on yield like any arm, so it runs when
discovery has grown cheaper than it.

Tasks are claimed from the store in small batches per kind and held in memory; ``release_all``
gives them back on shutdown (a crash leaves them leased, and the next start recovers them).
Tasks backing off after passing trouble are not pending: each count of the pending tasks first
makes those whose time has come pending again (``Store.wake_due``), so they are claimed again
within ``refresh_every`` results, or as soon as nothing else is pending.

A negative priority means *deferred*: such a task is worth running only once everything above it
is finished, because what those bring may make it unnecessary (search defers speculative
children and exact runs, which are skipped at no request when the artists they could bring are
held by then). Priorities fall into bands of :data:`BAND_WIDTH` below zero (every priority >= 0
is band 0). A task of a lower band is not handed out while a task of its kind from a higher band
is in flight (the caller waits for one to finish), and claimed deferred tasks go back to the store
when newer tasks of their kind have been spawned since the claim, so the store's order decides.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..store.base import Task
from ..store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from ..store.postgres import PostgresStore

__all__ = ["BAND_WIDTH", "ESSENTIAL", "KIND_ORDER", "ArmStats", "Planner", "band"]

# Width of a band of deferred priorities (see the module docstring).
BAND_WIDTH = 1000.0


def band(priority: float) -> int:
    """0 for every priority >= 0; -1 for [-1000, 0), -2 for [-2000, -1000) ..."""
    return 0 if priority >= 0 else math.floor(priority / BAND_WIDTH)


# Discount per request of the yield that decides retirement (about the last 50 requests).
RECENT_GAMMA = 0.98

# Kinds that never retire: search guarantees completeness, hydration completes details.
ESSENTIAL = frozenset({"search", "hydrate"})

KIND_ORDER = (
    "search",
    "featured_playlists",
    "categories",
    "category_playlists",
    "new_releases",
    "playlist_items",
    "related",
    "artist_albums",
    "album",
    "album_tracks",
    "hydrate",
)


@dataclass
class ArmStats:
    """Discounted evidence of one task kind's yield."""

    value: float
    requests: float
    total_value: float = 0.0
    total_requests: int = 0
    recent_value: float = 0.0  # the same, discounted fast and without the optimistic prior
    recent_requests: float = 0.0

    @property
    def mean(self) -> float:
        return self.value / self.requests if self.requests > 0 else 0.0


class Planner:
    """Chooses and hands out the next task; learns from each result."""

    def __init__(
        self,
        store: SQLiteStore | PostgresStore,
        kinds: frozenset[str],
        *,
        prior: float = 20.0,
        gamma: float = 0.995,
        exploration: float = 0.2,
        claim_batch: int = 16,
        hydrate_batch: int = 1,
        hydrate: bool = True,
        refresh_every: int = 200,
        min_yield: float = 0.05,
        patience: int = 50,
        fixed_order: tuple[str, ...] | None = None,
    ) -> None:
        self.store = store
        self.kinds = [k for k in KIND_ORDER if k in kinds]
        self.gamma = gamma
        self.exploration = exploration
        self.claim_batch = claim_batch
        self.hydrate_batch = hydrate_batch
        self.hydrate = hydrate and "hydrate" in kinds
        self.arms = {k: ArmStats(value=prior, requests=1.0) for k in self.kinds}
        self._buffers: dict[str, deque[Task]] = {k: deque() for k in self.kinds}
        self._spawned_since_claim: dict[str, int] = {}
        self._pending: dict[str, int] = {}
        self._stale = True
        self._disabled: set[str] = set()
        self.refresh_every = refresh_every
        self.min_yield = min_yield
        self.patience = patience
        self.retired: set[str] = set()
        self.fixed_order = fixed_order
        self._observed = 0

    # -- choosing -------------------------------------------------------------------------------

    def _refresh(self) -> None:
        self.store.wake_due()  # backing-off tasks whose time has come are pending again
        if self.hydrate and self.store.pending_counts().get("hydrate", 0) < 4 * self.claim_batch:
            self.store.queue_hydration(self.hydrate_batch, 8 * self.claim_batch)
        self._pending = self.store.pending_counts()
        self._stale = False

    def _available(self, kind: str) -> bool:
        return kind not in self._disabled and (
            bool(self._buffers[kind]) or self._pending.get(kind, 0) > 0
        )

    def choose(self) -> str | None:
        """The kind to run next, or None when nothing is pending."""
        if self._stale:
            self._refresh()
        candidates = [k for k in self.kinds if self._available(k)]
        if not candidates:
            self._refresh()
            candidates = [k for k in self.kinds if self._available(k)]
            if not candidates:
                return None
        if len(candidates) == 1:
            return candidates[0]
        if self.fixed_order is not None:
            return min(candidates, key=self.fixed_order.index)
        n_total = sum(self.arms[k].requests for k in candidates)
        tried = [self.arms[k].mean for k in candidates if self.arms[k].total_requests > 0]
        scale = max(max(tried, default=1.0), 1e-9)
        log_n = math.log(max(n_total, 1.0))

        def score(kind: str) -> float:
            arm = self.arms[kind]
            return arm.mean + self.exploration * scale * math.sqrt(log_n / arm.requests)

        return max(candidates, key=score)  # max() keeps the first of equal scores

    def next_task(self, in_flight: Collection[Task] = (), *, _tries: int = 3) -> Task | None:
        """The next task to run, or None: nothing is pending, or the next one is deferred behind
        a task of ``in_flight`` (the caller then waits for a task to finish and asks again)."""
        kind = self.choose()
        if kind is None:
            return None
        buffer = self._buffers[kind]
        if buffer and buffer[0].priority < 0 and self._spawned_since_claim.get(kind, 0):
            self.store.release(list(buffer))  # deferred, and newer work may outrank it now
            self._pending[kind] = self._pending.get(kind, 0) + len(buffer)
            buffer.clear()
        if not buffer:
            claimed = self.store.claim(kind, self.claim_batch)
            self._spawned_since_claim[kind] = 0
            self._pending[kind] = max(0, self._pending.get(kind, 0) - len(claimed))
            buffer.extend(claimed)
            if len(claimed) < self.claim_batch:
                self._pending[kind] = 0
            if not claimed:
                # The counts were stale (tasks handed back since, or claimed by another worker):
                # count again before saying nothing is pending.
                self._stale = True
                return self.next_task(in_flight, _tries=_tries - 1) if _tries > 0 else None
        head = band(buffer[0].priority)
        if head < 0 and any(t.kind == kind and band(t.priority) > head for t in in_flight):
            return None
        return buffer.popleft()

    # -- learning -------------------------------------------------------------------------------

    def observe(
        self, kind: str, value: float, requests: int, spawned: Mapping[str, int] | None = None
    ) -> None:
        """Account one finished task: ``value`` units of progress for ``requests`` requests.

        ``spawned`` counts the tasks it spawned by kind (an upper bound: duplicates of existing
        tasks are not inserted); a kind's count is corrected when a claim comes back short.
        """
        arm = self.arms.get(kind)
        if arm is None:
            return
        if requests > 0:
            decay = self.gamma**requests
            arm.value = arm.value * decay + value
            arm.requests = arm.requests * decay + requests
        arm.total_value += value
        arm.total_requests += requests
        if requests > 0:
            fast = RECENT_GAMMA**requests
            arm.recent_value = arm.recent_value * fast + value
            arm.recent_requests = arm.recent_requests * fast + requests
        if (
            self.fixed_order is None
            and kind not in ESSENTIAL
            and kind not in self.retired
            and arm.total_requests >= self.patience
            and arm.recent_value < self.min_yield * arm.recent_requests
        ):
            self.retired.add(kind)
            self.disable(kind)
        for spawned_kind, n in (spawned or {}).items():
            self._pending[spawned_kind] = self._pending.get(spawned_kind, 0) + n
            self._spawned_since_claim[spawned_kind] = (
                self._spawned_since_claim.get(spawned_kind, 0) + n
            )
        self._observed += 1
        if self._observed % self.refresh_every == 0:
            self._stale = True

    def next_retry(self) -> float | None:
        """When the earliest backing-off task of a kind still chosen here is due (epoch seconds;
        None: none backs off)."""
        return self.store.next_retry([k for k in self.kinds if k not in self._disabled])

    def disable(self, kind: str) -> None:
        """Stop choosing ``kind`` (its endpoint went away); its tasks stay pending in the store."""
        self._disabled.add(kind)
        buffer = self._buffers.get(kind)
        if buffer:
            self.store.release(list(buffer))
            buffer.clear()

    def release_all(self) -> None:
        """Give every claimed but unstarted task back to the store."""
        held = [t for buffer in self._buffers.values() for t in buffer]
        for buffer in self._buffers.values():
            buffer.clear()
        if held:
            self.store.release(held)

    def pending(self, kind: str) -> int:
        """Tasks of ``kind`` waiting: in the store (as last counted, plus spawns since) and
        claimed here."""
        return self._pending.get(kind, 0) + len(self._buffers.get(kind, ()))

    def held(self) -> list[Task]:
        """Tasks claimed from the store and not yet handed out."""
        return [t for buffer in self._buffers.values() for t in buffer]

    def yields(self) -> dict[str, tuple[float, int]]:
        """Per kind: discounted value per request now, and requests made so far."""
        return {k: (a.mean, a.total_requests) for k, a in self.arms.items()}
