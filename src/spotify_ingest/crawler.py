"""The crawl engine: workers that take tasks from the planner, run them, and commit the results.

One asyncio event loop runs ``concurrency`` workers. The rate controller inside the client decides
when each request may go; the workers only keep it supplied. Each worker loops:

1. ask the planner for a task (it claims small batches from the store);
2. run it through :class:`~spotify_ingest.discovery.tasks.TaskRunner` (one or a few requests);
3. record artists + task done + spawned tasks as one write (whole or not at all; the SQLite store
   commits up to 16 such writes together, and the crawler flushes it four times a second and
   when it stops), and tell the planner the yield.

Errors per task: an endpoint that went away parks its kind (tasks stay pending); an id that does
not exist or a request the API refuses fails that task alone, for good; a server or transport
error that outlasted the client's retry budget, or a body that did not parse, is passing trouble
and no task is ever given up for it. The task backs off in the store with a durable
``not_before``: ``window / 2`` after its first failed attempt, doubling with each attempt, at most
``MAX_BACKOFF_WINDOWS`` windows (300 s for Spotify's 30 s window; the window is the API's unit of
time, so a short-window API or simulator backs off in proportion). Trouble at the token endpoint,
even a 4xx, is not the task's: no attempt counted, and the worker pauses as long, since every
task needs a token. Otherwise the worker goes on with other work at once; the planner makes the
task pending again once its time has come, in this run or the next. The crawl is ``done`` only
when no task is pending, leased or backing off: while only backing-off tasks remain, the workers
wait for the earliest (the progress display says so), and every stop request ends that wait. A
``MustWaitError`` (a Retry-After beyond ``--max-wait``, or the quota) and a credentials error stop
the crawl: in-flight work is given five seconds to finish, everything claimed goes back to pending,
and the error propagates to the CLI with all state saved.

Stopping on request (Ctrl-C, SIGTERM, ``--max-*``, ``--duration``) is the same clean path. The
grace is for requests on the wire only: a worker that waits (for a pause, a pacing slot, a
backoff, a quota countdown) is cancelled at once, so a stop with nothing on the wire is over in
a moment. The limits and stop requests are watched from the start, not only once the workers run:
start-up (a Retry-After deadline learned by an earlier run, the token fetch, the endpoint probe)
is cancelled by a stop as well, with the same state saved.

Every 429 is written down as a :class:`~spotify_ingest.deadline.RetryDeadline` before its pause
starts, and a run starts by honouring the one stored (see :mod:`spotify_ingest.deadline`). What
the crawl waits for is told to ``on_wait(reason, until)`` (``until``: epoch seconds or None) as
it starts, and ``on_wait(None)`` when it is over.

With a quota pacer (:mod:`~spotify_ingest.quota`) the crawler keeps its state in the store's meta
data (loaded by ``load_quota``, saved every ``quota.SAVE_EVERY`` seconds when it changed and at
the end) and puts the quota's line in every progress snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .auth import TOKEN_ENDPOINT
from .client import DEFAULT_QUOTA_WAIT, SpotifyClient
from .deadline import RetryDeadline, deadline_key, format_local, load_deadline, save_deadline
from .discovery.capabilities import Capabilities, probe
from .discovery.known import KnownNames
from .discovery.planner import Planner
from .discovery.search import Alphabet, SearchPlan
from .discovery.tasks import ENDPOINT_OF, STRATEGY_KINDS, STRATEGY_ORDER, TaskRunner
from .errors import (
    ApiError,
    ApiUnreachableError,
    AuthenticationError,
    BadRequestError,
    BadResponseError,
    CredentialsError,
    EndpointUnavailableError,
    InvalidLimitError,
    MustWaitError,
    NotFoundError,
    ServerError,
    SpotifyIngestError,
    StoreError,
    TransportError,
)
from .models import Artist
from .quota import SAVE_EVERY, QuotaPacer, describe, meta_key
from .ratecontrol import LimitEstimate, RateController
from .store import LeaseLostError
from .store.base import Task, TaskSpec
from .store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from .store.postgres import PostgresStore

    AnyStore = SQLiteStore | PostgresStore

__all__ = ["CrawlOptions", "CrawlReport", "Crawler", "Progress", "estimate_key"]

MAX_BACKOFF_WINDOWS = 10.0
ALPHABET_EVERY = 200  # tasks between saves of the learned search alphabet
LEASE_RENEW_SECONDS = 15.0  # renew PostgreSQL leases in flight or buffered (a third of a lease)
STOP_GRACE_SECONDS = 5.0
ESTIMATE_EVERY = 30.0  # seconds between saves of the learned limit while the crawl runs


def retry_delay(attempts: int, window: float) -> float:
    """Seconds a task backs off after its ``attempts``-th attempt met passing trouble."""
    return window * min(2.0 ** min(max(attempts - 1, 0), 20) / 2, MAX_BACKOFF_WINDOWS)


def error_text(exc: ApiError) -> str:
    """What a task's failure is stored as: ``Class status: message`` (``stats`` groups by the part
    before the colon)."""
    status = f" {exc.status}" if exc.status else ""
    return f"{type(exc).__name__}{status}: {exc}"


def estimate_key(client_id: str, api_base: str) -> str:
    """The meta key of a learned limit: per client id (hashed) and API base."""
    digest = hashlib.sha256(client_id.encode()).hexdigest()[:12]
    return f"rate_estimate:{digest}:{api_base.rstrip('/')}"


@dataclass(frozen=True)
class CrawlOptions:
    strategy: str = "auto"
    concurrency: int = 16
    max_requests: int | None = None
    max_artists: int | None = None
    duration: float | None = None
    hydrate: bool = True
    max_wait: float = 900.0  # a stored Retry-After deadline further away than this ends the run
    wait: bool = False  # ... unless the run may wait out any


#: ``on_wait(reason, until)``: what the crawl waits for (None: nothing), until when (epoch seconds).
WaitNotice = Callable[[str | None, float | None], None]


@dataclass
class Progress:
    """A snapshot for the live display."""

    elapsed: float
    requests: int
    artists: int
    full: int
    rate: float  # requests per second over the last window
    limit_estimate: float | None
    window: float
    rate_limited: int
    paused_for: float
    yields: dict[str, tuple[float, int]]
    capabilities: dict[str, bool]
    stop_reason: str | None
    # Seconds until the earliest backing-off task is due, while the crawl waits for nothing else
    retry_in: float | None = None
    quota: str | None = None  # the learned quota, one line (None: none learned)


@dataclass
class CrawlReport:
    stop_reason: str
    elapsed: float
    requests: int
    requests_by_status: dict[str, int]
    artists: int
    full: int
    new_artists: int
    tasks_done: int
    tasks_failed: int
    estimate: dict[str, Any] | None
    capabilities: dict[str, bool]
    yields: dict[str, dict[str, float]] = field(default_factory=dict)
    tasks_backed_off: int = 0  # times a task was set aside on passing trouble this run

    def to_json(self) -> dict[str, Any]:
        return {
            "stop_reason": self.stop_reason,
            "elapsed_seconds": round(self.elapsed, 3),
            "requests": self.requests,
            "requests_by_status": self.requests_by_status,
            "artists": {
                "total": self.artists,
                "full": self.full,
                "simplified": self.artists - self.full,
            },
            "new_artists_this_run": self.new_artists,
            "tasks": {
                "done": self.tasks_done,
                "failed": self.tasks_failed,
                "backed_off": self.tasks_backed_off,
            },
            "rate_estimate": self.estimate,
            "capabilities": self.capabilities,
            "yield_per_request": self.yields,
        }


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """Keep what exists when the crawl starts out of the garbage collector's full passes.

    A full collection walks every object the collector tracks, and the imported modules alone are
    ~55,000 of them: each of the crawl's full collections took 80-100 ms, all of it on the event
    loop (16 in a 100k extended crawl, 1.4 s of CPU and as many stalls of the request schedule).
    ``gc.freeze`` moves them to the permanent generation for the crawl's length; what the crawl
    creates is collected as usual. Undone at the end, for a process that goes on (tests).
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class Crawler:
    """One crawl over one store with one client."""

    def __init__(
        self,
        store: AnyStore,
        client: SpotifyClient,
        controller: RateController,
        options: CrawlOptions,
        *,
        client_id: str,
        api_base: str,
        on_progress: Callable[[Progress], None] | None = None,
        on_wait: WaitNotice | None = None,
        quota: QuotaPacer | None = None,
    ) -> None:
        if options.strategy not in STRATEGY_KINDS:
            raise SpotifyIngestError(f"unknown strategy {options.strategy!r}")
        self.store = store
        self.client = client
        self.controller = controller
        self.options = options
        self.on_progress = on_progress
        self.on_wait = on_wait
        self._estimate_key = estimate_key(client_id, api_base)
        self._deadline_key = deadline_key(client_id, api_base)
        self._deadline: RetryDeadline | None = None  # the latest one this run knows
        self._waiting_until: float | None = None  # monotonic end of the wait shown (None: none)
        client.on_429 = self.on_429

        self.quota = quota
        self._requests_before = 0  # requests of the tasks done before this run (for the quota)
        self._stop_reason: str | None = None
        self._fatal: BaseException | None = None
        self._started = 0.0
        self._in_flight: dict[int, Task] = {}
        self._wake = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._new_artists = 0
        self._tasks_done = 0
        self._tasks_failed = 0
        self._estimate_saved = False

        self._tasks_backed_off = 0
        self._retry_at: float | None = None  # epoch: workers wait for a backing-off task
        self._counts = store.artist_counts()
        self.capabilities = Capabilities()
        self.planner: Planner | None = None
        self.known = KnownNames()

    # -- control --------------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Finish in-flight work and stop (signal handlers call this)."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stop_event.set()
        self._wake.set()
        self.client.stop_waiting()  # calls waiting for a silent API give up at once

    @property
    def stopping(self) -> bool:
        return self._stop_reason is not None

    # -- set-up ---------------------------------------------------------------------------------

    @staticmethod
    def load_estimate(store: AnyStore, client_id: str, api_base: str) -> LimitEstimate | None:
        data = store.get_meta(estimate_key(client_id, api_base))
        if data is None:
            return None
        try:
            return LimitEstimate.from_json(json.dumps(data))
        except (TypeError, ValueError):
            return None

    def save_estimate(self) -> None:
        """Store the learned limit, committed at once: ``limits`` and the next run after a crash
        see it, not only the next run after a clean stop."""
        self.store.set_meta(self._estimate_key, json.loads(self.controller.estimate().to_json()))
        self.store.flush()
        self._estimate_saved = True

    def _estimate_due(self, since_saved: float) -> bool:
        """While the crawl runs: save the learned limit as soon as a 429 has bounded it, then
        every ``ESTIMATE_EVERY`` seconds (not before the first 429: a cold ramp's lower bound
        would cap the next run's start)."""
        if since_saved >= ESTIMATE_EVERY:
            return True
        return not self._estimate_saved and self.controller.estimate().upper is not None

    def on_429(self, seconds: float | None, kind: str, endpoint: str) -> None:
        """The client met a 429: write its deadline down (committed) before the pause starts."""
        if seconds is None:
            seconds = DEFAULT_QUOTA_WAIT if kind == "quota" else self.controller.window
        learned = RetryDeadline.after(seconds, kind, endpoint)
        if learned.later(self._deadline) is learned:
            self._deadline = learned
            save_deadline(self.store, self._deadline_key, learned)
        if self.options.wait or (kind == "rate" and seconds <= self.options.max_wait):
            self._show_wait(learned.describe(), learned.until)  # else the client ends the run

    def _show_wait(self, reason: str | None, until: float | None = None) -> None:
        if until is not None:
            self._waiting_until = time.monotonic() + (until - time.time())
        else:
            self._waiting_until = None if reason is None else math.inf
        if self.on_wait is not None:
            self.on_wait(reason, until)

    async def _honour_deadline(self) -> None:
        """Wait out the stored Retry-After deadline, or end the run if it is beyond --max-wait."""
        deadline = load_deadline(self.store, self._deadline_key)
        if deadline is None or deadline.seconds_left() <= 0:
            return
        self._deadline = deadline
        left = deadline.seconds_left()
        if left > self.options.max_wait and not self.options.wait:
            raise MustWaitError(
                f"Spotify's {'quota' if deadline.kind == 'quota' else 'Retry-After'} (met on "
                f"GET {deadline.endpoint}) runs until {format_local(deadline.until)}: "
                f"{left:.0f} s is above --max-wait {self.options.max_wait:.0f} s",
                wait_seconds=left,
                reason="QUOTA_EXCEEDED" if deadline.kind == "quota" else None,
            )
        end = deadline.monotonic()
        self.controller.pause_for(left)
        self._show_wait(deadline.describe(earlier_run=True), deadline.until)
        await asyncio.sleep(max(0.0, end - time.monotonic()))

    async def _fetch_token(self) -> None:
        """The first token, in view; a failure is left to the probe, which reports it as before."""
        self._show_wait("fetching a token")
        with contextlib.suppress(ApiError):
            await self.client.tokens.get()

    async def _start_up(self) -> tuple[TaskRunner, Planner]:
        await self._honour_deadline()
        await self._fetch_token()
        prepared = await self._prepare()
        self._show_wait(None)
        return prepared

    @staticmethod
    def load_quota(store: AnyStore, client_id: str, api_base: str, quota: QuotaPacer) -> None:
        """Give ``quota`` the ledger and the estimate saved by earlier runs."""
        quota.load(store.get_meta(meta_key(estimate_key(client_id, api_base))))

    def save_quota(self) -> None:
        if self.quota is not None:
            self.quota.dirty = False
            self.store.set_meta(meta_key(self._estimate_key), self.quota.to_json())

    async def _load_known(self) -> None:
        """Rebuild the known index from the store, letting the event loop run between chunks:
        a stop (a signal, ``--duration``) cancels start-up there, the index undone."""
        steps = self.known.load_in_steps(self.store.iter_names())
        try:
            for _ in steps:
                await asyncio.sleep(0)
        finally:
            steps.close()

    async def _prepare(self) -> tuple[TaskRunner, Planner]:
        recovered = self.store.recover_leases()
        if self.quota is not None:
            self._requests_before = self.store.requests_done()
        kinds = STRATEGY_KINDS[self.options.strategy]
        if not self.options.hydrate:
            kinds = kinds - {"hydrate"}
        self._show_wait("probing endpoints")
        self.capabilities = await probe(self.client, {ENDPOINT_OF[k] for k in kinds} | {"artists"})
        self._show_wait("rebuilding the name index")
        self.store.set_meta("capabilities", self.capabilities.to_json())
        alphabet = Alphabet.from_json(self.store.get_meta("alphabet"))
        plan = SearchPlan(alphabet, limit=self.capabilities.limit("search", 10), known=self.known)
        nodes = self.store.search_nodes()
        plan.totals.update((n.query, n.total) for n in nodes)
        plan.overflowed.update(
            n.query for n in nodes if n.status == "overflow" and " " not in n.query
        )
        await self._load_known()
        runner = TaskRunner(self.client, self.capabilities, plan, kinds, known=self.known)
        usable = frozenset(k for k in kinds if runner.enabled(k))
        seeds: list[TaskSpec] = []
        if "search" in usable:
            seeds.extend(plan.roots())
        for kind in ("featured_playlists", "categories", "new_releases"):
            if kind in usable:
                seeds.append(TaskSpec(kind, {"offset": 0}))
        self.store.add_tasks(seeds)
        planner = Planner(
            self.store,
            usable,
            prior=2.0 * plan.limit,
            hydrate_batch=50 if self.capabilities.has("artists") else 1,
            hydrate=self.options.hydrate,
            fixed_order=STRATEGY_ORDER.get(self.options.strategy),
        )
        runner.retired = planner.retired  # a retired kind is no longer spawned either
        if planner.fixed_order is None:  # auto: follow-ups are opportunistic, their backlog capped
            runner.backlog = planner.pending
        self.store.set_meta("last_run", {"started_at": time.time(), "recovered_leases": recovered})
        return runner, planner

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> CrawlReport:
        """Crawl until done, a limit, a stop request or a fatal error; state is saved on exit."""
        self._started = time.monotonic()
        ticker = asyncio.create_task(self._tick())  # limits and progress count from the start
        try:
            prepared = await self._unless_stopped(self._start_up())
            if prepared is None:  # stopped during start-up
                self._save_state()
                self._emit_progress()
                return self.report()
            runner, planner = prepared
            self.planner = planner
            with _frozen_heap():
                return await self._loop(runner, planner)
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    async def _unless_stopped(
        self, work: Coroutine[Any, Any, tuple[TaskRunner, Planner]]
    ) -> tuple[TaskRunner, Planner] | None:
        """Run ``work`` until it finishes (its result) or a stop is requested (None)."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self._stop_event.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return None if task.cancelled() else task.result()

    async def _loop(self, runner: TaskRunner, planner: Planner) -> CrawlReport:
        workers = [
            asyncio.create_task(self._worker(runner, planner))
            for _ in range(self.options.concurrency)
        ]
        enforcer = asyncio.create_task(self._cancel_after_grace(workers))
        try:
            results = await asyncio.gather(*workers, return_exceptions=True)
        except asyncio.CancelledError:
            self.request_stop("interrupted")
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        finally:
            try:
                enforcer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await enforcer
            finally:  # leases go back even if a progress callback failed
                self._shutdown(planner, runner)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                self._fatal = self._fatal or result
        if self._fatal is not None:
            raise self._fatal
        self._emit_progress()
        return self.report()

    async def _cancel_after_grace(self, workers: list[asyncio.Task[None]]) -> None:
        """Once a stop is requested, requests on the wire get ``STOP_GRACE_SECONDS`` to finish;
        workers that only wait (pause, pacing, backoff) are not waited for."""
        await self._stop_event.wait()
        grace_ends = time.monotonic() + STOP_GRACE_SECONDS
        while self.client.on_wire and time.monotonic() < grace_ends:
            await asyncio.sleep(0.05)
        for task in workers:
            task.cancel()

    def _shutdown(self, planner: Planner, runner: TaskRunner) -> None:
        self.known.close()
        planner.release_all()
        if self._in_flight:
            self.store.release(list(self._in_flight.values()))
            self._in_flight.clear()
        self.store.set_meta("alphabet", runner.search.alphabet.to_json())
        self._save_state()

    def _save_state(self) -> None:
        self.save_estimate()
        self.save_quota()
        self.store.set_meta("last_report", self.report().to_json())
        self.store.flush()  # a failed last commit is an error the user must see

    def _limit_reached(self) -> str | None:
        o = self.options
        if o.max_requests is not None and self.client.stats.requests >= o.max_requests:
            return "max-requests"
        if o.max_artists is not None and self._counts.total >= o.max_artists:
            return "max-artists"
        if o.duration is not None and time.monotonic() - self._started >= o.duration:
            return "duration"
        return None

    async def _worker(self, runner: TaskRunner, planner: Planner) -> None:
        while not self.stopping:
            reason = self._limit_reached()
            if reason is not None:
                self.request_stop(reason)
                return
            task = planner.next_task(self._in_flight.values())
            if task is None:
                if self._in_flight:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                retry_at = planner.next_retry()
                if retry_at is None:
                    self.request_stop("done")
                    return
                await self._wait_for_retry(retry_at)
                continue
            self._retry_at = None
            self._in_flight[task.id] = task
            try:
                await self._run_task(runner, planner, task)
            except asyncio.CancelledError:
                if task.id in self._in_flight:
                    self.store.release([task])
                raise
            except (
                MustWaitError,
                CredentialsError,
                AuthenticationError,
                StoreError,
                ApiUnreachableError,
            ) as exc:
                if task.id in self._in_flight:
                    self.store.release([task])
                self._fatal = self._fatal or exc
                self.request_stop("error")
                raise
            finally:
                self._in_flight.pop(task.id, None)
                self._wake.set()

    async def _wait_for_retry(self, retry_at: float) -> None:
        """Nothing is pending or in flight, but tasks back off: wait for the earliest, or until
        a task finishes or a stop is requested (both set ``_wake``)."""
        self._retry_at = retry_at
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(0.0, retry_at - time.time()))

    async def _back_off(self, task: Task, exc: ApiError) -> None:
        """Set a task whose request met passing trouble aside (module docstring). Trouble at
        the token endpoint would meet every task alike: this worker waits out the delay too (or
        until a stop), rather than bounce the whole frontier off the token endpoint."""
        token_trouble = exc.endpoint == TOKEN_ENDPOINT
        delay = retry_delay(task.attempts, self.controller.window)
        self.store.back_off(task, error_text(exc), time.time() + delay, attempted=not token_trouble)
        self._in_flight.pop(task.id, None)
        self._tasks_backed_off += 1
        if token_trouble:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), delay)

    async def _run_task(self, runner: TaskRunner, planner: Planner, task: Task) -> None:
        hydrate_ids = None
        if task.kind == "hydrate":
            hydrate_ids = self.store.simplified_among([str(i) for i in task.params["ids"]])
        try:
            outcome = await runner.run(task, hydrate_ids)
        except EndpointUnavailableError:
            self.capabilities.mark_unavailable(ENDPOINT_OF[task.kind])
            planner.disable(task.kind)
            self.store.release([task])
            self.store.set_meta("capabilities", self.capabilities.to_json())
            return
        except (NotFoundError, BadRequestError, InvalidLimitError) as exc:
            if exc.endpoint == TOKEN_ENDPOINT:  # the token endpoint's trouble, not the task's
                await self._back_off(task, exc)
                return
            self.store.fail(task, error_text(exc))  # the API's final answer to this request
            self._tasks_failed += 1
            return
        except (ServerError, TransportError, BadResponseError) as exc:
            await self._back_off(task, exc)
            return
        # A simplified artist we hold already can change nothing (the store keeps the fullest
        # form): most of a search page's album and track artists; nor can a full one identical to
        # the one we stored last. Dropping them here saves the store's look-ups of them. What
        # the known index has never held, a store only we write does not hold either: it is
        # spared looking those ids up too (most of a page's new artists).
        outcome.artists, unseen = self.known.for_store(outcome.artists)
        if self.store.sole_writer:
            outcome.unseen = unseen
        if self._tasks_done % ALPHABET_EVERY == 0:  # survives a SIGKILL with the task's commit
            outcome.meta = {**outcome.meta, "alphabet": runner.search.alphabet.to_json()}
        try:
            result = self.store.complete(task, outcome)
        except LeaseLostError:
            return  # another worker took the task over after our lease expired: its result counts
        if result.changes is not None:
            self.known.apply(result.changes)
        elif result.new_full or result.new_simplified or result.upgraded:
            self.known.add((a.id, a.name, isinstance(a, Artist)) for a in outcome.artists)
        self.known.stored(a for a in outcome.artists if isinstance(a, Artist))
        self._in_flight.pop(task.id, None)
        self._tasks_done += 1
        new = result.new_full + result.new_simplified
        self._new_artists += new
        self._counts = type(self._counts)(
            total=self._counts.total + new,
            full=self._counts.full + result.new_full + result.upgraded,
        )
        spawned = Counter(spec.kind for spec in outcome.spawn)
        planner.observe(task.kind, result.value, outcome.requests, spawned)
        if outcome.requests == 0:
            # A task the planner could skip (its artists all held) awaited nothing: without this
            # a worker running a long chain of them would hold the event loop (stalls of 70-140
            # ms were measured near the end of a crawl), and every request due meanwhile waits.
            await asyncio.sleep(0)

    # -- reporting ------------------------------------------------------------------------------

    async def _tick(self) -> None:
        saved = renewed = quota_saved = time.monotonic()
        lease = float(getattr(self.store, "lease_seconds", 3 * LEASE_RENEW_SECONDS))
        renew_every = min(LEASE_RENEW_SECONDS, lease / 3)
        while True:
            await asyncio.sleep(0.25)
            try:
                self.store.flush()  # a group of writes waits at most this long for its commit
            except StoreError as exc:
                self._fatal = self._fatal or exc
                self.request_stop("error")
            self._emit_progress()
            if self._waiting_until is not None and time.monotonic() >= self._waiting_until:
                self._show_wait(None)
            reason = self._limit_reached()  # also while every worker waits out a long pause
            if reason is not None and not self.stopping:
                self.request_stop(reason)
            now = time.monotonic()
            if self._estimate_due(now - saved):
                saved = now
                self.save_estimate()
            if self.quota is not None and self.quota.dirty and now - quota_saved >= SAVE_EVERY:
                quota_saved = now
                self.save_quota()
            renew = getattr(self.store, "renew_leases", None)  # PostgreSQL: shared frontier
            if renew is not None and now - renewed > renew_every:
                renewed = now
                held = list(self._in_flight.values())
                if self.planner is not None:
                    held.extend(self.planner.held())
                renew(held)

    def _emit_progress(self) -> None:
        if self.on_progress is None:
            return
        est = self.controller.estimate()
        stats = self.client.stats
        self.on_progress(
            Progress(
                elapsed=time.monotonic() - self._started,
                requests=stats.requests,
                artists=self._counts.total,
                full=self._counts.full,
                rate=self.controller.window_count() / self.controller.window,
                limit_estimate=est.limit,
                window=est.window,
                rate_limited=stats.rate_limited,
                paused_for=max(0.0, self.controller.paused_until - time.monotonic()),
                yields=self.planner.yields() if self.planner else {},
                capabilities=dict(self.capabilities.available),
                stop_reason=self._stop_reason,
                retry_in=None if self._retry_at is None else max(0.0, self._retry_at - time.time()),
                quota=self._quota_line(),
            )
        )

    def _quota_line(self) -> str | None:
        status = self.quota.status(self.quota.epoch()) if self.quota is not None else None
        if status is None:
            return None
        artists = self._counts.total
        requests = self._requests_before + self.client.stats.requests
        return describe(
            status, artists=artists, requests_per_artist=requests / artists if artists else None
        )

    def report(self) -> CrawlReport:
        stats = self.client.stats
        return CrawlReport(
            stop_reason=self._stop_reason or "done",
            elapsed=time.monotonic() - self._started if self._started else 0.0,
            requests=stats.requests,
            requests_by_status={str(k): v for k, v in sorted(stats.by_status.items())},
            artists=self._counts.total,
            full=self._counts.full,
            new_artists=self._new_artists,
            tasks_done=self._tasks_done,
            tasks_failed=self._tasks_failed,
            tasks_backed_off=self._tasks_backed_off,
            estimate=json.loads(self.controller.estimate().to_json()),
            capabilities=dict(self.capabilities.available),
            yields={
                k: {"value_per_request": round(m, 3), "requests": n}
                for k, (m, n) in (self.planner.yields() if self.planner else {}).items()
            },
        )
