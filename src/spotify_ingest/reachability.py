"""Whether the API answers at all, and how long a run waits for it when it does not.

One :class:`Reachability` per client, shared by its token provider and every API call. It tells
an API that answers badly (5xx, resets, a body cut short: the client's retries deal with those)
from one that does not answer at all: a try that ends in a refused connection, a connect timeout
or a read timeout while nothing else was heard from the API since it left.

While the API is silent:

* one try at a time goes out (the others queue at a gate), spaced by a growing pause (0.25 s,
  doubling, at most 5 s); such a try costs its request no retry of the client's budget;
* each failed try, and a try that hangs (after 1 s, then every 5 s), is reported through
  ``on_waiting``: "the API is not answering (try 3 to api.spotify.com, connection refused)";
  the first answer after a report reports ``None``;
* the run gives up with :class:`~spotify_ingest.errors.ApiUnreachableError` (exit 69) once the
  silence has lasted ``no_answer_timeout`` since the run's first try, when the silent host (API
  or token endpoint) never answered in this run, or ``outage_timeout`` since its first
  unanswered try, when it did. A try still in flight at that moment is abandoned.

Until a host's first answer, every try to it is watched the same way: a server that accepts
connections and never answers is reported from the first second. Once the hosts answer, a try
costs a set look-up and a counter.

:meth:`Reachability.stop` cancels every task waiting here (queued at the gate, pausing, or with a
try in flight while the API is silent, sent before the silence was known or during it), so that
a stop request does not sit out a silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import httpx

from .clock import Clock, MonotonicClock
from .errors import ApiUnreachableError

__all__ = [
    "DEFAULT_NO_ANSWER_TIMEOUT",
    "DEFAULT_OUTAGE_TIMEOUT",
    "Reachability",
    "Unanswered",
    "WaitingCallback",
]

logger = logging.getLogger("spotify_ingest.reachability")

R = TypeVar("R")

#: ``on_waiting(reason)``: what the run waits for, or None once the API answers again (the
#: signature of :meth:`spotify_ingest.display.CrawlDisplay.waiting`, whose ``until`` is not used).
WaitingCallback = Callable[[str | None], None]

#: Seconds a run that never got an answer waits for one before exit 69.
DEFAULT_NO_ANSWER_TIMEOUT = 45.0
#: Seconds a run that had answers waits for the API to answer again before exit 69.
DEFAULT_OUTAGE_TIMEOUT = 900.0
#: Errors that mean no answer at all (refused, connect timeout, read timeout and the like).
NO_ANSWER: tuple[type[Exception], ...] = (httpx.ConnectError, httpx.TimeoutException)
FIRST_PAUSE = 0.25  # seconds between the first two unanswered tries; doubles per try
MAX_PAUSE = 5.0  # ... up to this
FIRST_REPORT = 1.0  # a try without answer is reported after this long in flight
REPORT_EVERY = 5.0  # ... and again every this long


class Unanswered(Exception):
    """A try that got no answer while the API is silent: send it again (the gate paces it)."""


class Reachability:
    """Counts the API's answers and paces, reports and bounds its silences (module docstring)."""

    def __init__(
        self,
        *,
        no_answer_timeout: float = DEFAULT_NO_ANSWER_TIMEOUT,
        outage_timeout: float = DEFAULT_OUTAGE_TIMEOUT,
        clock: Clock | None = None,
        on_waiting: WaitingCallback | None = None,
    ) -> None:
        self.no_answer_timeout = no_answer_timeout
        self.outage_timeout = outage_timeout
        self.on_waiting = on_waiting
        self._clock: Clock = clock or MonotonicClock()
        self.answers = 0  # responses received (any HTTP status)
        self.tries = 0  # unanswered tries of the current silence
        self._first_try: float | None = None  # clock time of the run's first try
        self._silent_since: float | None = None  # first unanswered try of the current silence
        self._next_try = -math.inf  # no try of a silence leaves before this clock time
        self._last_failure = ""  # "connection refused", "read timeout" ...
        self._target = ""  # the host the last try went to
        self._heard: set[str] = set()  # the hosts that answered in this run
        self._reported = False  # on_waiting was told something since the last answer
        self._stopped = False
        self._gate = asyncio.Lock()  # one try at a time while the API is silent
        self._waiters: set[asyncio.Task[object]] = set()  # queued, pausing or watched tries
        self._in_flight: set[asyncio.Task[object] | None] = set()  # tries sent while answered

    def silent(self, target: str) -> bool:
        """True while a silence lasts, or while the host ``target`` has not answered yet."""
        return self._silent_since is not None or target not in self._heard

    async def send(self, attempt: Awaitable[R], target: str) -> R:
        """Await one try (to the host ``target``) and record whether it was answered.

        Raises :class:`Unanswered` when it got no answer and nothing else was heard from the API
        since it left, :class:`ApiUnreachableError` when the silence has lasted too long, and the
        try's own exception otherwise (one request's trouble, for the client's retries).
        """
        if self.silent(target):
            return await self._watched(attempt, target)
        answers = self.answers
        task = asyncio.current_task()
        self._in_flight.add(task)
        try:
            result = await attempt
        except NO_ANSWER as exc:
            # Sent before a silence that another request has already met: not a try of its own.
            self._no_answer(exc, answers, target, counted=self._silent_since is None)
            raise
        finally:
            self._in_flight.discard(task)
        self._answered(target)
        return result

    def stop(self) -> None:
        """Cancel every task waiting here, and any that would wait from now on; while a silence
        lasts, also the requests sent before it that are still waiting for their answer."""
        self._stopped = True
        waiting = list(self._waiters)
        if self._silent_since is not None:
            waiting += [task for task in self._in_flight if task is not None]
        for task in waiting:
            task.cancel()

    # -- a silence -------------------------------------------------------------------------------

    async def _watched(self, attempt: Awaitable[R], target: str) -> R:
        task = asyncio.current_task()
        if self._stopped or task is None:
            _discard(attempt)
            raise asyncio.CancelledError
        self._waiters.add(task)
        try:
            async with self._gate:
                if self.silent(target):
                    return await self._paced_try(attempt, target)
        except BaseException:
            _discard(attempt)  # not sent (cancelled, given up); one that ran is left as it is
            raise
        finally:
            self._waiters.discard(task)
        return await self.send(attempt, target)  # answered while this one queued

    async def _paced_try(self, attempt: Awaitable[R], target: str) -> R:
        if self._first_try is None:
            self._first_try = self._clock.now()
        self._target = target
        await self._pause()
        answers = self.answers
        sent = self._clock.now()
        job = asyncio.ensure_future(attempt)
        try:
            await self._watch(job, sent, target)
            result = job.result()
        except NO_ANSWER as exc:
            self._no_answer(exc, answers, target)
            raise
        finally:
            if not job.done():
                job.cancel()
                with contextlib.suppress(BaseException):
                    await job
        self._answered(target)
        return result

    async def _pause(self) -> None:
        """Sleep until the next try of a silence is due (giving up at the deadline)."""
        while True:
            now = self._clock.now()
            self._check(now)
            delay = min(self._next_try, self._deadline(now)) - now
            if delay <= 0:
                return
            await self._clock.sleep(delay)

    async def _watch(self, job: asyncio.Future[R], sent: float, target: str) -> None:
        """Wait for ``job``, reporting a try that hangs and giving up at the deadline."""
        report_at = sent + FIRST_REPORT
        while True:
            now = self._clock.now()
            timeout = min(report_at, self._deadline(now)) - now
            done, _ = await asyncio.wait({job}, timeout=max(0.0, timeout))
            if done:
                return
            now = self._clock.now()
            self._check(now, in_flight=True)
            if now >= report_at:
                report_at = now + REPORT_EVERY
                self._report(
                    f"the API is not answering (try {self.tries + 1} to {target}, "
                    f"no answer for {now - sent:.0f} s)"
                )

    def _no_answer(
        self, exc: Exception, answers_at_send: int, target: str, *, counted: bool = True
    ) -> None:
        """Record a try without an answer; raise :class:`Unanswered` if the API is silent."""
        if self.answers != answers_at_send:
            return  # other requests were answered meanwhile: this one's own trouble
        if not counted:
            raise Unanswered(describe_no_answer(exc)) from exc
        now = self._clock.now()
        if self._silent_since is None:
            self._silent_since = now
        self.tries += 1
        self._last_failure = describe_no_answer(exc)
        self._target = target
        self._next_try = now + min(MAX_PAUSE, FIRST_PAUSE * 2.0 ** min(self.tries - 1, 16))
        self._check(now)
        left = self._deadline(now) - now
        self._report(
            f"the API is not answering (try {self.tries} to {target}, {self._last_failure}); "
            f"giving up in {left:.0f} s"
        )
        raise Unanswered(self._last_failure) from exc

    def _answered(self, target: str) -> None:
        self.answers += 1
        self._heard.add(target)
        if self._silent_since is not None:
            self._silent_since = None
            self.tries = 0
            self._next_try = -math.inf
        if self._reported:
            self._reported = False
            logger.info("the API answers again")
            if self.on_waiting is not None:
                self.on_waiting(None)

    def _report(self, reason: str) -> None:
        self._reported = True
        logger.info("%s", reason)
        if self.on_waiting is not None:
            self.on_waiting(reason)

    # -- giving up -------------------------------------------------------------------------------

    def _deadline(self, now: float) -> float:
        if self._target not in self._heard:
            first = self._first_try if self._first_try is not None else now
            return first + self.no_answer_timeout
        since = self._silent_since if self._silent_since is not None else now
        return since + self.outage_timeout

    def _check(self, now: float, *, in_flight: bool = False) -> None:
        if now >= self._deadline(now):
            self._give_up(now, self.tries + (1 if in_flight else 0))

    def _give_up(self, now: float, tries: int) -> NoReturn:
        if self._target not in self._heard:
            since, flag = self._first_try or now, "--no-answer-timeout"
            what = "since the crawl started"
        else:
            since, flag = self._silent_since or now, "--outage-timeout"
            what = "after it had answered"
        last = self._last_failure or "no answer yet"
        raise ApiUnreachableError(
            f"the API did not answer for {now - since:.0f} s {what} ({tries} tries to "
            f"{self._target}, last: {last}): check --api-base / --token-url and the network, "
            f"or raise {flag}"
        )


def describe_no_answer(exc: Exception) -> str:
    """A few words for a try without an answer: "connection refused", "read timeout" ..."""
    if isinstance(exc, httpx.ConnectError):
        return "connection refused" if _refused(exc) else "cannot connect"
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return "connect timeout"
    if isinstance(exc, httpx.ReadTimeout):
        return "read timeout"
    return type(exc).__name__


def _refused(exc: BaseException) -> bool:
    """True if ``exc`` or an exception it was raised from is a refused connection."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or getattr(seen, "errno", None) == (
            errno.ECONNREFUSED
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return "refused" in str(exc).lower()


def _discard(attempt: Awaitable[object]) -> None:
    """Close a try that will not be sent (no 'coroutine was never awaited' warning)."""
    close = getattr(attempt, "close", None)
    if close is not None:
        close()
