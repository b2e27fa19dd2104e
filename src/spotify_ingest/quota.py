"""The API quota: a budget of calls per long period, learned from its lockout and never spent twice.

Beside the rolling 30 s window, the Web API has a quota: past some number of calls (reported:
about 23-25k) it answers every request with 429 ``QUOTA_EXCEEDED`` and a Retry-After of up to a
day. Neither the budget nor its period is published, so both are learned, as the window limit is.

Ledger (:class:`CallLedger`). Every call the crawler sends is counted in buckets of wall-clock
time (``bucket`` seconds; the runner uses a tenth of the rate window) and kept ``horizon`` seconds
(the learned period, at least :data:`DEFAULT_HORIZON`). It is saved with the store's meta data
about every :data:`SAVE_EVERY` seconds and at the end of a run, merged into coarser buckets
(``durable_bucket`` seconds, twenty fine ones), each bucket's calls counted at its end; a run
that loads it puts them in the fine bucket that holds that end (which ends no earlier). So the
ledger survives restarts in bounded size (a day of calls: 1,440 saved buckets, 25 kB), and a
call is never taken for older than it is. The merged buckets are kept up to date as calls are
recorded: a save costs the event loop about a millisecond.

Learning (:meth:`QuotaPacer.on_lockout`), at a quota 429 met at wall time ``t0`` with a
Retry-After of ``R`` seconds (or a rate 429 whose Retry-After is :data:`LONG_RETRY_AFTER` or
more, which only a quota explains):

* the lockout ends at ``t0 + R``: no call leaves before that, in this run or the next;
* the period ``P`` is ``R`` rounded up to a round duration (:data:`ROUND_PERIODS`: 1, 2, 5,
  10, 15, 30 seconds, 1, 5, 10, 15, 30 minutes, 1, 2, 3, 6, 12 hours, whole days), and never
  shorter than before. A lockout lasts one period if the quota counts calls over a rolling
  period, and until the end of the period if it counts them per fixed period: then ``R`` is
  shorter than the period by the time the period had run before the lockout, which the rounding
  covers unless the lockout came late in it;
* the budget ``B`` is the number of calls in the ledger within ``(t0 - P, t0]``, and the
  smallest such number over all lockouts. Under a quota per fixed period that stretch may
  reach into the period before: ``B`` is then too high, by at most the budget itself. Fewer
  than :data:`MIN_EVIDENCE` calls teach nothing about the budget (the account spent it
  elsewhere): only the lockout is kept. Calls answered by a 429, or never sent (stopped before
  they left), are taken out of the ledger (:meth:`QuotaPacer.unspent`), and out of the count of
  the last lockout if they were counted before it: the requests in flight beside the one that
  met the lockout are refused after it. If the API counts refusals as calls, the budget learned
  is only lower than the true one.

A lockout met while paced, that ends before a period has passed (``R < P``), can only be that
of a fixed period, which began at ``t0 + R - P`` if ``P`` is right. If that stretch holds at
least a third of ``B`` calls, ``P`` is kept and the budget is that count (a ``B`` learned across
two periods is at most twice the true one). If it holds fewer, the pacing let a second
allowance into one true period, which began before: the period becomes ``P + R`` rounded up,
and the count is taken from ``t0 + R`` minus that. A lockout met while paced that lasts ``P`` or
more is taken as one of a rolling period: the budget is what the last ``P`` held. On the
simulator's fixed periods a crawl started anywhere in a period meets at most two lockouts.

Pacing (:meth:`QuotaPacer.delay`). With a learned budget a call may leave only if fewer than
``allowance = floor(B * (1 - margin))`` calls (margin :data:`SAFETY_MARGIN`, 5 %) lie in the last
``P`` seconds, a call counting from the end of its bucket: at most ``allowance`` calls in any
stretch of ``P`` seconds. That bound holds whether the API counts its quota per rolling period or
per fixed one (every fixed period is one such stretch), across runs (the ledger is durable) and
the concurrent requests of one crawl (they share the pacer). The calls are not spread evenly
inside a period: the rolling window already sets the pace, and an even spread would only lose
the budget of the hours in which no crawl runs. What this costs: in a stretch of ``P`` seconds
the crawl uses up to ``allowance / B`` (95 %) of the quota.

The margin also covers what the ledger cannot see exactly: a bucket that straddles ``t0 - P``,
and the calls of at most :data:`SAVE_EVERY` seconds lost with a killed process.

Status (:class:`QuotaStatus`): the allowance, the calls left now, when the oldest counted calls
leave the period (the next refill) and when all of them have (full), and the days the rest of a
catalog of :data:`CATALOG_ESTIMATE` artists (an assumption) would take at the crawl's requests
per artist so far.

Several processes (``crawl --workers N``) share no pacer: the runner gives their workers none.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Final

from .clock import Clock, MonotonicClock
from .errors import MustWaitError

__all__ = [
    "CATALOG_ESTIMATE",
    "DEFAULT_HORIZON",
    "LONG_RETRY_AFTER",
    "MIN_EVIDENCE",
    "QUOTA_REASON",
    "SAFETY_MARGIN",
    "SAVE_EVERY",
    "CallLedger",
    "QuotaEstimate",
    "QuotaPacer",
    "QuotaStatus",
    "days_left",
    "describe",
    "meta_key",
    "saved_line",
    "saved_status",
]

#: Share of the learned budget kept unspent.
SAFETY_MARGIN: Final = 0.05
#: Calls in the ledger below which a lockout teaches nothing about the budget.
MIN_EVIDENCE: Final = 20
#: A rate 429 with a Retry-After this long (seconds) is a quota lockout too.
LONG_RETRY_AFTER: Final = 3600.0
#: Seconds of calls the ledger keeps at least (a day and some: the reported quota period).
DEFAULT_HORIZON: Final = 26 * 3600.0
#: Seconds between saves of the ledger during a run.
SAVE_EVERY: Final = 2.0
#: Artists in Spotify's catalog, assumed for the days left (reports say 11-15 million).
CATALOG_ESTIMATE: Final = 12_000_000
#: ``error.reason`` of a quota 429 (the other kind carries another reason or none); also the
#: reason the pacer's waits report.
QUOTA_REASON: Final = "QUOTA_EXCEEDED"
#: Durations (seconds) a quota period is rounded up to; past the last, whole days.
ROUND_PERIODS: Final = (
    *(1, 2, 5, 10, 15, 30),
    *(60, 300, 600, 900, 1800),
    *(3600, 7200, 10800, 21600, 43200, 86400),
)

#: ``on_wait(seconds_left, reason)``, as the client's countdown callback.
WaitCallback = Callable[[float, str | None], None]


def round_period(seconds: float) -> float:
    """The shortest round duration at or above ``seconds`` (see :data:`ROUND_PERIODS`)."""
    for period in ROUND_PERIODS:
        if seconds <= period:
            return float(period)
    return 86400.0 * math.ceil(seconds / 86400.0)


def meta_key(estimate_key: str) -> str:
    """The meta key of the quota beside the learned limit stored under ``estimate_key``."""
    return "quota:" + estimate_key.partition(":")[2]


class CallLedger:
    """Calls per bucket of wall-clock time (bucket ``k`` holds the calls of ``[k b, (k+1) b)``),
    and the same calls merged into ``durable_bucket``-second buckets, each counted at its end
    (``durable``: what is saved, kept up to date as calls are recorded)."""

    def __init__(
        self, bucket: float, durable_bucket: float, horizon: float = DEFAULT_HORIZON
    ) -> None:
        if not bucket > 0 or not durable_bucket > 0:
            raise ValueError("bucket widths must be > 0")
        self.bucket = bucket
        self.durable_bucket = durable_bucket
        self.horizon = horizon
        self.counts: dict[int, int] = {}  # bucket index -> calls, in time order
        self.durable: dict[int, int] = {}  # durable bucket index -> calls, in time order

    def index(self, t: float) -> int:
        return math.floor(t / self.bucket)

    def end(self, k: int) -> float:
        return (k + 1) * self.bucket

    def _durable_index(self, k: int) -> int:
        """The durable bucket that holds the end of bucket ``k``."""
        return math.ceil(self.end(k) / self.durable_bucket)

    def record(self, t: float, n: int = 1) -> int:
        """Count ``n`` calls at ``t``; returns the bucket index."""
        k = self.index(t)
        self.counts[k] = self.counts.get(k, 0) + n
        c = self._durable_index(k)
        self.durable[c] = self.durable.get(c, 0) + n
        return k

    def remove(self, k: int) -> bool:
        """Take one call out of bucket ``k``; False if it holds none."""
        if not _take_one(self.counts, k):
            return False
        _take_one(self.durable, self._durable_index(k))
        return True

    def calls_within(self, start: float, end: float) -> int:
        """Calls of the buckets that begin after ``start`` and no later than ``end``."""
        return sum(n for k, n in self.counts.items() if start < k * self.bucket <= end)

    def prune(self, now: float) -> None:
        """Forget the buckets that ended more than ``horizon`` seconds before ``now`` (the
        oldest first, in the order they were recorded)."""
        cutoff = now - self.horizon
        _drop_oldest(self.counts, lambda k: self.end(k) < cutoff)
        _drop_oldest(self.durable, lambda c: c * self.durable_bucket < cutoff)

    def to_json(self) -> dict[str, Any]:
        return {"bucket": self.durable_bucket, "ends": sorted(self.durable.items())}

    def load(self, data: Any) -> None:
        """Add the calls of :meth:`to_json` output: each in the bucket that holds the end of its
        saved bucket (which ends no earlier), and kept with that end for the next save."""
        if not isinstance(data, dict):
            return
        width = data.get("bucket")
        ends = data.get("ends")
        if not isinstance(width, int | float) or width <= 0 or not isinstance(ends, list):
            return
        for item in ends:
            if isinstance(item, list) and len(item) == 2:
                saved, n = item
                if isinstance(saved, int) and isinstance(n, int) and n > 0:
                    k = self.index(saved * width)
                    self.counts[k] = self.counts.get(k, 0) + n
                    c = math.ceil(saved * width / self.durable_bucket)
                    self.durable[c] = self.durable.get(c, 0) + n
        self.counts = dict(sorted(self.counts.items()))
        self.durable = dict(sorted(self.durable.items()))


def _take_one(counts: dict[int, int], key: int) -> bool:
    n = counts.get(key, 0)
    if n <= 0:
        return False
    if n == 1:
        del counts[key]
    else:
        counts[key] = n - 1
    return True


def _drop_oldest(counts: dict[int, int], old: Callable[[int], bool]) -> None:
    while counts:
        first = next(iter(counts))
        if not old(first):
            return
        del counts[first]


@dataclass
class QuotaEstimate:
    """What the lockouts taught: ``budget`` calls per ``period`` seconds, and the lockout's end."""

    budget: int | None = None  # None: no lockout with enough evidence yet
    period: float | None = None  # seconds
    lockout_until: float = 0.0  # wall-clock time (epoch seconds)
    lockouts: int = 0
    observed_at: float = 0.0  # wall-clock time of the last lockout

    @classmethod
    def from_json(cls, data: Any) -> QuotaEstimate:
        if not isinstance(data, dict):
            return cls()
        budget = data.get("budget")
        period = data.get("period")
        return cls(
            budget=budget if isinstance(budget, int) and budget > 0 else None,
            period=float(period) if isinstance(period, int | float) and period > 0 else None,
            lockout_until=float(data.get("lockout_until") or 0.0),
            lockouts=int(data.get("lockouts") or 0),
            observed_at=float(data.get("observed_at") or 0.0),
        )

    def allowance(self, margin: float = SAFETY_MARGIN) -> int | None:
        """Calls the pacer lets through per period (None: not learned)."""
        if self.budget is None:
            return None
        return max(1, math.floor(self.budget * (1.0 - margin)))


@dataclass(frozen=True)
class QuotaStatus:
    """The quota as the display and ``limits`` show it (times are wall-clock epoch seconds)."""

    allowance: int  # calls per period the crawler allows itself
    budget: int  # calls per period the lockouts showed
    period: float
    left: int  # calls that may leave now
    next_refill: float | None  # when the oldest counted calls leave the period, and the lockout
    # has ended (None: nothing counted)
    full_at: float | None  # when every counted call has left it (None: nothing counted)
    lockout_until: float | None  # the lockout's end, if it is still running
    lockouts: int


class QuotaPacer:
    """The ledger, the estimate and the pacing rule (see the module docstring).

    The core is synchronous and time-explicit (``delay``, ``record``, ``on_lockout``, ``status``
    take wall-clock seconds); :meth:`take` is the async gate the client awaits before each call.
    ``clock`` measures time within the run (the wall clock is read once, so a clock change
    moves nothing); ``wall`` gives the epoch at start.
    """

    def __init__(
        self,
        *,
        bucket: float,
        durable_bucket: float | None = None,
        margin: float = SAFETY_MARGIN,
        max_wait: float = 900.0,
        wait: bool = False,
        on_wait: WaitCallback | None = None,
        clock: Clock | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = CallLedger(bucket, durable_bucket or 20.0 * bucket)
        self.estimate = QuotaEstimate()
        self.margin = margin
        self.max_wait = max_wait
        self.wait = wait
        self.on_wait = on_wait
        self.clock: Clock = clock or MonotonicClock()
        self._offset = wall() - self.clock.now()
        self._window: deque[list[int]] = deque()  # [bucket index, calls] inside the period
        self._in_window = 0
        self.dirty = False  # changed since the last save
        # The last lockout of this run: its bucket, the calls it counted, the budget before it.
        self._lockout: tuple[int, int, int | None] | None = None

    # -- time --------------------------------------------------------------------------------

    def epoch(self) -> float:
        """Wall-clock time now, as measured by the run's clock."""
        return self._offset + self.clock.now()

    # -- persistence ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        self.ledger.prune(self.epoch())
        return {
            "estimate": asdict(self.estimate),
            "ledger": self.ledger.to_json(),
        }

    def load(self, data: Any) -> None:
        """Take over a saved state (:meth:`to_json`); anything unreadable is ignored."""
        if not isinstance(data, dict):
            return
        self.estimate = QuotaEstimate.from_json(data.get("estimate"))
        self.ledger.load(data.get("ledger"))
        self._set_horizon()
        self._rebuild_window()

    def _set_horizon(self) -> None:
        self.ledger.horizon = max(DEFAULT_HORIZON, self.estimate.period or 0.0)

    # -- the core ------------------------------------------------------------------------------

    def record(self, t: float) -> int:
        """One call sent at ``t``; returns its bucket, for :meth:`unspent`."""
        k = self.ledger.record(t)
        if self._window and self._window[-1][0] == k:
            self._window[-1][1] += 1
        else:
            self._window.append([k, 1])
        self._in_window += 1
        self.dirty = True
        return k

    def unspent(self, k: int) -> None:
        """The call counted in bucket ``k`` was answered 429, or never sent: no quota spent."""
        if not self.ledger.remove(k):
            return
        for entry in reversed(self._window):
            if entry[0] == k:
                entry[1] -= 1
                self._in_window -= 1
                break
        if self._lockout is not None and k <= self._lockout[0]:  # in flight at the lockout
            bucket, calls, before = self._lockout
            self._lockout = (bucket, calls - 1, before)
            self._learn_budget(calls - 1, before)
        self.dirty = True

    def delay(self, t: float) -> float:
        """Seconds from ``t`` until a call may leave (0: now)."""
        if t < self.estimate.lockout_until:
            return self.estimate.lockout_until - t
        allowance = self.estimate.allowance(self.margin)
        if allowance is None:
            return 0.0
        self._expire(t)
        need = self._in_window - allowance + 1  # calls that must leave the period first
        if need <= 0:
            return 0.0
        gone = 0
        for k, n in self._window:
            gone += n
            if gone >= need:
                return self._leaves(k) - t
        return 0.0  # unreachable: need <= calls in the window

    def on_lockout(self, t: float, retry_after: float) -> None:
        """A quota 429 (or a rate 429 of hours) met at ``t``: learn from the ledger.

        The other requests in flight meet the same lockout: they extend it, and teach nothing more.
        """
        est = self.estimate
        if t < est.lockout_until:
            est.lockout_until = max(est.lockout_until, t + retry_after)
            self.dirty = True
            return
        est.lockout_until = max(est.lockout_until, t + retry_after)
        before = est.budget
        est.period, calls = self._period_and_calls(t, retry_after)
        est.lockouts += 1
        est.observed_at = t
        self._lockout = (self.ledger.index(t), calls, before)
        self._learn_budget(calls, before)
        self._set_horizon()
        self._rebuild_window()
        self.dirty = True

    def _period_and_calls(self, t: float, retry_after: float) -> tuple[float, int]:
        """The period after a lockout met at ``t``, and the calls that lockout shows were
        allowed in one period (see the module docstring)."""
        est = self.estimate
        ledger = self.ledger
        rounded = round_period(retry_after)
        if est.period is None or est.budget is None or retry_after >= est.period:
            period = max(est.period or 0.0, rounded)
            return period, ledger.calls_within(t - period, t)
        # Met while paced, and over before a period has passed: a quota per fixed period, whose
        # last one began at end - P if P is right, and then held the budget, or at least half the
        # budget learned (which may have counted a stretch across two periods).
        end = t + retry_after
        in_period = ledger.calls_within(end - est.period, t)
        if 3 * in_period >= est.budget:
            return est.period, in_period
        period = max(est.period, round_period(est.period + retry_after))
        return period, ledger.calls_within(end - period, t)

    def _learn_budget(self, calls: int, before: int | None) -> None:
        """The budget from a lockout's count of calls and the budget learned before over the
        same period (None: none, or over a shorter one)."""
        if calls >= MIN_EVIDENCE:
            self.estimate.budget = calls if before is None else min(before, calls)
        elif before is not None:
            self.estimate.budget = before

    def status(self, t: float) -> QuotaStatus | None:
        """The quota at ``t`` (None: nothing learned yet)."""
        est = self.estimate
        allowance = est.allowance(self.margin)
        if allowance is None or est.budget is None or est.period is None:
            return None
        self._expire(t)
        counted = self._in_window
        locked = est.lockout_until if est.lockout_until > t else None
        return QuotaStatus(
            allowance=allowance,
            budget=est.budget,
            period=est.period,
            left=max(0, allowance - counted),
            next_refill=max(self._leaves(self._window[0][0]), locked or t) if counted else None,
            full_at=max(self._leaves(self._window[-1][0]), locked or t) if counted else None,
            lockout_until=locked,
            lockouts=est.lockouts,
        )

    def _leaves(self, k: int) -> float:
        """When the calls of bucket ``k`` leave the period."""
        return self.ledger.end(k) + (self.estimate.period or 0.0)

    def _expire(self, t: float) -> None:
        while self._window and self._leaves(self._window[0][0]) <= t:
            self._in_window -= self._window.popleft()[1]

    def _rebuild_window(self) -> None:
        self._window = deque([k, n] for k, n in sorted(self.ledger.counts.items()))
        self._in_window = sum(n for _, n in self._window)

    # -- the async gate ------------------------------------------------------------------------

    async def take(self) -> int:
        """Wait until a call may leave, then count it (the caller sends it at once); returns
        the call's bucket, for :meth:`unspent`.

        A wait longer than ``max_wait`` raises :class:`MustWaitError` (exit 75) unless ``wait``.
        """
        while True:
            t = self.epoch()
            delay = self.delay(t)
            if delay <= 0.0:
                return self.record(t)
            if delay > self.max_wait and not self.wait:
                raise MustWaitError(
                    self._must_wait_message(t, delay), wait_seconds=delay, reason=QUOTA_REASON
                )
            if self.on_wait is not None and delay > 1.0:
                self.on_wait(delay, QUOTA_REASON)
            await self.clock.sleep(min(delay, 1.0))

    def _must_wait_message(self, t: float, delay: float) -> str:
        if t < self.estimate.lockout_until:
            return f"the API quota is locked out for {delay:.0f} s more"
        status = self.status(t)
        assert status is not None
        return (
            f"the learned API quota ({status.allowance:,} calls per "
            f"{format_span(status.period)}) is spent for {delay:.0f} s more (above --max-wait "
            f"{self.max_wait:.0f} s)"
        )


def format_span(seconds: float) -> str:
    """``1d02h``, ``3h05m``, ``10m00s``, ``42s``."""
    s = max(0, round(seconds))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def days_left(
    status: QuotaStatus,
    *,
    artists: int,
    requests_per_artist: float,
    catalog: int = CATALOG_ESTIMATE,
) -> float:
    """Days the rest of a ``catalog``-artist crawl takes at the allowance (ignores the window)."""
    calls = max(0, catalog - artists) * requests_per_artist
    return calls / status.allowance * status.period / 86400.0


def _clock_time(epoch: float) -> str:
    """Local time of day, with the date if it is not today."""
    when = dt.datetime.fromtimestamp(epoch).astimezone()
    same_day = when.date() == dt.datetime.now().astimezone().date()
    return when.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S")


def saved_status(data: Any, now: float) -> tuple[QuotaEstimate, QuotaStatus | None]:
    """The estimate and the status at ``now`` (epoch) of a state saved by a crawl."""
    pacer = QuotaPacer(bucket=1.0, wall=lambda: now)
    pacer.load(data)
    return pacer.estimate, pacer.status(now)


def saved_line(data: Any, now: float, *, artists: int, requests_per_artist: float | None) -> str:
    """``limits``' line for a saved quota state ('' when it holds nothing learned)."""
    estimate, status = saved_status(data, now)
    if status is not None:
        return describe(status, artists=artists, requests_per_artist=requests_per_artist)
    if estimate.lockout_until > now:
        return f"locked out until {_clock_time(estimate.lockout_until)} (no budget learned yet)"
    return ""


def describe(status: QuotaStatus, *, artists: int, requests_per_artist: float | None) -> str:
    """One line: calls left of the allowance, the refill, the days left for the catalog."""
    parts = [f"{status.left:,} of {status.allowance:,} calls left per {format_span(status.period)}"]
    if status.lockout_until is not None:
        parts.append(f"locked out until {_clock_time(status.lockout_until)}")
    if status.next_refill is not None and status.full_at is not None:
        parts.append(
            f"refills from {_clock_time(status.next_refill)} (full {_clock_time(status.full_at)})"
        )
    if requests_per_artist:
        days = days_left(status, artists=artists, requests_per_artist=requests_per_artist)
        parts.append(
            f"~{days:.1f} days left for {CATALOG_ESTIMATE / 1e6:.0f}M artists (assumed) at "
            f"{requests_per_artist:.2f} requests per artist"
        )
    return "; ".join(parts)
