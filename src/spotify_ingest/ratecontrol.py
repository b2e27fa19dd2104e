"""The adaptive rate controller: learns an unpublished rolling-window limit and paces just under it.

The problem
===========
Spotify counts an app's calls in a rolling window of ``W`` seconds (30 in production) and answers
429 past a limit ``L`` it never publishes and may change at any moment. The server behaves like a
sliding log of ACCEPTED requests: a request is accepted iff fewer than ``L`` accepted requests are
in ``(now - W, now]``; refused ones are not logged; the 429 carries ``Retry-After`` in whole
seconds (>= 1). A client that sends during a Retry-After is punished with penalties that double
each time (hours), so every 429 costs every worker a Retry-After of silence.

The algorithm
=============
**1. Exact self-accounting.** We keep our own sliding log: the tickets we sent, in send order,
minus those the server refused (it did not log them either). In-flight tickets count: the server
logs them if it accepts them. Two counts are read from it: over the exact window (what the server
counts: the *evidence* scale) and over ``W + margin`` (what the *cap* compares). ``margin`` is a
jitter allowance: half the spread of round-trip times (5th to 95th percentile), at least 0.3 % of
``W``, plus an extra learned from 429s at a level that kept passing (halving every 20 windows). A
request may leave only when the one it replaces left our window ``margin`` ago, so it cannot reach
the server before its predecessor has left the server's window, although they took different
paths.

**2. Evidence.** A success proves ``L >= n + 1`` and a rate 429 proves ``L <= n``, where ``n`` is
what the server had logged when the request reached it. We estimate ``n`` in *arrival order*, not
send order: each request is taken to reach the server ``arrival_share`` of its round trip after it
left (0.25: gateways check before the slow part; a typical round trip for one still in flight),
which matters only for the few requests sent within a round trip of the window's two ends and
removes most of the reordering noise at high rates. The lower bound discounts what that estimate
may be off by at the local rate (a tenth of a round trip's worth of requests). When a 429 comes
back, the tickets in flight sent after it had counted it: their counts are decremented. The
bounds are ``lower`` (``lo``) and ``upper`` (``hi``).

Because the cap on our count rises one request at a time, the first 429 happens exactly when the
server's count reaches ``L``: one refusal pins the limit (lower == upper right after), so there is
no bisection to do.

**3. Modes.**

* COLD (no estimate): cap ``max(initial_limit, 2 * lo)``, sends at twice the cap's even rate: the
  count doubles about every quarter window, 600 per window is reached in under two windows (with
  round trips under ``W / 80``, see below). The first 429 ends the ramp: the requests still in
  flight then are ignored (at the ramp's rate they reorder a lot), the bounds are taken loosely,
  and a *gap probe* pins ``L`` once the level passed.
  *Bounded overshoot*: the server refuses (and may count against us) whatever arrives during the
  Retry-After of that first 429, i.e. every request in flight with the refused one. So the ramp
  keeps at most ``1 + max(2, overshoot_share * lo)`` requests in flight (``lo <= L``: at most 5 %
  of ``L`` refused after the first). That caps the ramp's rate at that many per round trip: no
  cost while a round trip is under about ``W / 80`` (the ramp's own pace is ``4 lo`` per window;
  ``W = 30`` s: 375 ms), a slower ramp above. Where round trips exceed 4 % of ``W`` the count
  could not grow under that cap: it allows ``1.2 lo`` per window's worth of round trips instead
  (the overshoot is then about ``1.2 * rate * round trip``).
* HOLD: cap ``lo`` on the ``W + margin`` count. Each success at the cap re-confirms it.
* PROBE: cap on the exact count. Either a *gallop* above ``lo`` (``lo + 1``, then steps of 2, 4,
  8 ... each time a request sent at the cap passed: a raised limit is found in a few windows) or a
  *gap probe* straight up to a fresh upper bound (one step: the count rises one at a time, so at
  most one 429). A 429 ends it: HOLD at the refused count less the estimate's noise.

**4. Pacing and the quiet stretch.** In HOLD each request leaves as the one sent ``W + margin``
earlier expires, so a pattern, once set, repeats window after window; sends are never closer than
``W / (2.25 E)`` (refilling what a pause left, following a dense stretch) and, when the count is
at the cap, spread evenly over the part of the window outside the quiet stretch (5 % allowance).
The *quiet stretch* is a part of the window, one Retry-After long (at most a third of ``W``), in
which HOLD sends nothing; it is the hole the first probe's pause left in the pattern, kept on
purpose and replayed every window. Regular probes start just before it (by one round trip and the
few requests the margin holds back), so the Retry-After of a failed probe falls where nothing
would have been sent anyway: a failed probe costs one 429 and almost no throughput. A Retry-After
says when the oldest logged request leaves, so a probe refused right as the stretch's replay
begins would hear "2 s" (the stretch is a pause plus a round trip long): the first request above
``lo`` waits until no such "bad" stretch begins within the next second (our log tells exactly).
The stretch does not hold sends back while the count is far below the cap (after a drop).

**5. How often to probe; evidence that fades.** The upper bound lives until the next regular probe.
The interval (in windows) is the larger of what the throughput budget allows (the pause a failed
probe costs outside the quiet stretch, over ``utilisation_budget``) and what the 429 budget allows
(one 429 per probe: ``1 / (refusal_budget * L)``), within ``[min_probe_windows,
max_probe_windows]`` (2 and 6 by default, so a doubled limit is found within about 10 windows). The
lower bound is revalidated by every pass at the cap; a 429 below it is classified:

* *jitter*: at a cap that kept passing (our count within ``slack`` of ``lo``): widen the margin;
  if it happens again within 3 windows (or ``lo`` had never passed), step ``lo`` down by one;
* *drop*: clearly below ``lo``, or ``lo`` not confirmed for two windows: the limit went down.
  If the Retry-After is 2 s or more (a server that says when there will be *room*, as the
  simulator does), our own log says how many of our requests leave the window by then, which
  bounds the new ``L`` from both sides: HOLD at ``max(lower, drop_factor * upper)`` and
  gap-probe up to the upper. Otherwise cut to ``drop_factor`` (0.7) of the refused count and
  gap-probe back up. Evidence from requests sent before the refused one is ignored from then on.
  While the new level has not passed yet, the count rises to it one request at a time, so the
  next 429 is at the limit itself: HOLD just under it, no further cut;
* *echo*: a request sent before the pause the first 429 started (it was in flight; the server
  refuses whatever arrives during its block): no news, except that round trips differ, so the
  first 429 back need not be the first the server gave: a lower count in the same episode
  tightens the bound.

**6. 429 handling.** ``on_rate_limited`` pauses every waiter until receipt + Retry-After + 1 ms:
after the server's block ends (it started before our receipt). A 429 without Retry-After pauses
one window: after ``W`` every request the server logged has left its window. The refused request
is not counted and is replayed by the caller. A quota 429 (``on_quota_exceeded``) pauses without
evidence.

**7. Warm start.** A stored :class:`LimitEstimate` (per client id and API base, by the crawler;
scaled if its window differs) starts HOLD 5 % under it, then one gap probe up to the stored upper
bound: no 429 if the limit did not change, the drop rules if it went down, the regular probes if
it went up.

Why not the usual suspects
==========================
* **botocore's adaptive mode** (a CUBIC-shaped token bucket: on a throttle, cut the rate to 0.7x
  the measured rate, then regrow along a cubic curve back to and past the old maximum). It learns
  a *rate*, not a count in a window it could replicate exactly, so a 429 only says "too fast": it
  cuts 30 %, regrows, overshoots into the next throttle (a sawtooth averaging ~85 % of the limit,
  one 429 per cycle), and its bucket holds a second of tokens that it spends at once after a
  pause. Its retries read only AWS's ``x-amz-retry-after`` (capped at backoff + 5 s), never
  Retry-After, and delay only the retried request, not the other workers.
* **AIMD** (+1 per interval, halve on loss): the same sawtooth with a 50 % cut, ~75 % on average.
* **Scrapy's AutoThrottle** targets latency (delay = latency / target concurrency). A 429 is fast,
  so it *speeds up* when refused, and it ignores Retry-After (scrapy #3849, #4424, #6660).
* **Google SRE client-side throttling** rejects locally with probability
  ``max(0, (requests - K * accepts) / (requests + 1))``: it sheds load to protect an overloaded
  backend and by design keeps sending about ``1/K`` above capacity, i.e. a steady stream of 429s,
  exactly what a server with escalating penalties punishes.

Here one 429 pins the limit, steady state sits at it with no sawtooth, a pause costs only the
slots that expire during it (probes: almost none, thanks to the quiet stretch), a lowered limit
is read off the Retry-After, and probes are spaced by an explicit budget.

Limits
======
With ``W <= 2`` s a Retry-After (>= 1 s) is half a window or more and cannot hide in a quiet
stretch of at most a third of it; at ``W = 1`` s it cannot carry bounds either: utilisation is
lower there (0.85-0.95 in the model). For small limits one probe 429 is a large share: the 429
ratio is about ``1 / (max_probe_windows * L)`` (L = 10: 1.7 %) unless probes are spaced further,
which delays finding a raised limit. The trade is two constructor arguments.

The core is synchronous and time-explicit (:meth:`RateController.try_acquire`,
:meth:`~RateController.ready_at`, ``on_*`` with an optional ``now``), so it runs on virtual time
(``spotify_ingest.ratemodel``); :meth:`~RateController.acquire` is the asyncio facade: waiters queue
FIFO, only the head one waits, for the time ``ready_at`` names or until a response changes the
state (a probe step, a 429), whichever comes first; a cancelled waiter leaves the queue and wakes
the next; :meth:`~RateController.permit` is its context manager. CPU: about 2 us per request in
the core, 3.5 us through ``acquire`` when no wait is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from spotify_ingest.clock import Clock, MonotonicClock

__all__ = ["LimitEstimate", "RateController", "Ticket"]

_INFLIGHT = 0
_ACCEPTED = 1
_REFUSED = 2
_LOST = 3

_COLD = 0
_HOLD = 1
_PROBE = 2
_MODE_NAMES = ("cold", "hold", "probe")


@dataclass(frozen=True, slots=True)
class LimitEstimate:
    """What the controller believes about the limit, for display and storage.

    ``limit`` is the count per window the controller operates at; ``lower`` is proven by
    successes (``L >= lower``), ``upper`` by a 429 (``L <= upper``; None: unknown or expired);
    ``window`` in seconds; ``observed_at`` in epoch seconds; ``samples`` is the number of
    responses that carried evidence.
    """

    limit: int
    lower: int
    upper: int | None
    window: float
    observed_at: float
    samples: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": 1,
                "limit": self.limit,
                "lower": self.lower,
                "upper": self.upper,
                "window": self.window,
                "observed_at": self.observed_at,
                "samples": self.samples,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> LimitEstimate:
        """Parse :meth:`to_json` output; raises ``ValueError`` on anything else."""
        try:
            raw = json.loads(text)
            upper = raw.get("upper")
            est = cls(
                limit=int(raw["limit"]),
                lower=int(raw["lower"]),
                upper=None if upper is None else int(upper),
                window=float(raw["window"]),
                observed_at=float(raw["observed_at"]),
                samples=int(raw.get("samples", 0)),
            )
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a stored limit estimate: {exc}") from exc
        if est.limit < 1 or est.lower < 0 or est.window <= 0:
            raise ValueError("not a stored limit estimate: non-positive limit or window")
        return est


class Ticket:
    """A permit to send one request; hand it back through one of the ``on_*`` methods."""

    __slots__ = ("count_before", "count_cap", "mode", "rtt", "sent_at", "seq", "state")

    def __init__(
        self, seq: int, sent_at: float, count_before: int, count_cap: int, mode: int
    ) -> None:
        self.seq = seq  # send order
        self.sent_at = sent_at  # controller clock time
        self.count_before = count_before  # our counted requests in (sent - W, sent)
        self.count_cap = count_cap  # ... in (sent - W - margin, sent): what the cap compares
        self.mode = mode  # the controller's mode when it left
        self.state = _INFLIGHT
        self.rtt = -1.0  # round-trip time once answered

    def __repr__(self) -> str:
        return f"Ticket(seq={self.seq}, sent_at={self.sent_at:.4f}, count={self.count_before})"


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _resolve_after(fut: asyncio.Future[None], _task: asyncio.Task[None]) -> None:
    _resolve(fut)


class _Waiter:
    __slots__ = ("fut",)

    def __init__(self) -> None:
        self.fut: asyncio.Future[None] | None = None


class RateController:
    """Learns the unknown rolling-window limit, paces requests under it and pauses on 429.

    Not thread-safe: one event loop (or one virtual-time driver) owns it.
    """

    def __init__(
        self,
        window: float = 30.0,
        *,
        warm_start: LimitEstimate | None = None,
        max_concurrency: int = 16,
        clock: Clock | None = None,
        initial_limit: int = 4,
        pace_allowance: float = 0.05,
        catchup: float = 2.25,
        quiet_share: float = 1.0 / 3.0,
        arrival_share: float = 0.25,
        drop_factor: float = 0.7,
        utilisation_budget: float = 0.01,
        refusal_budget: float = 0.0015,
        min_probe_windows: float = 2.0,
        max_probe_windows: float = 6.0,
        default_retry_after: float | None = None,
        overshoot_share: float = 0.05,
    ) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self._clock: Clock = clock or MonotonicClock()
        self._w = float(window)
        self._max_conc = max_concurrency
        self._initial = max(1, initial_limit)
        self._alpha = pace_allowance
        self._catchup = catchup
        self._quiet_share = quiet_share
        self._share = arrival_share
        self._beta = drop_factor
        self._util_budget = utilisation_budget
        self._refusal_budget = refusal_budget
        self._min_probe = min_probe_windows
        self._max_probe = max_probe_windows
        self._default_ra = self._w if default_retry_after is None else default_retry_after
        self._overshoot = overshoot_share

        # Our sliding log: counted tickets (in flight, accepted or lost; refused ones are removed),
        # oldest first, kept a little longer than W + margin to estimate the server's count in
        # arrival order. The first ``_old`` were sent at or before now - W - margin (out of the
        # cap's window), the first ``_edge`` at or before now - W (out of the exact window).
        self._log: deque[Ticket] = deque()
        self._old = 0
        self._edge = 0
        self._seq = 0
        self._inflight = 0
        self._last_send = -math.inf
        self._next_send = -math.inf  # pacing: earliest time of the next send
        self._paused_until = -math.inf
        self._pause_started = -math.inf  # receipt of the latest 429 that was not an echo
        self._episode_min = 0  # the lowest count refused since then
        self._episode_kind = ""  # and how that first 429 was read

        # Evidence, in counts over the exact window (what the server counts).
        self._lo = 0  # L >= lo (proven by a success)
        self._lo_at = -math.inf  # last time the operating cap was reached and passed
        self._hi: int | None = None  # L <= hi (proven by a 429)
        self._hi_expires = math.inf
        self._epoch = 0  # tickets with seq < epoch carry no evidence
        self._samples = 0
        self._last_ra = 1.0
        self._last_jitter_at = -math.inf

        # Policy.
        self._mode = _COLD
        self._target = self._initial  # E: the cap on our window count
        self._galloping = False  # PROBE above lo (True) or up to a live upper bound (False)
        self._delta = 1  # gallop step
        self._probe_k = 1.0 + pace_allowance  # pacing factor above lo while probing
        self._next_probe_at = math.inf
        self._aligned = False  # the due probe was moved to the start of the quiet stretch
        self._probe_not_before = -math.inf  # no request above lo before (Retry-After = 1 s)
        self._gap_pending = False  # decide about probing at the next pass at the cap ...
        self._confirm_seq = 0  # ... by a ticket at least this recent
        self._gap_any = False  # ... and fill any gap up to the upper bound, however small

        # The quiet stretch: a part of the window (one Retry-After long, at most quiet_share * W)
        # in which HOLD sends nothing. It comes back every W + margin, following our own pattern.
        # Probes start at it, so the pause after a failed probe costs (almost) nothing.
        self._q_len = 0.0  # 0: none
        self._q_from = math.inf
        self._q_to = -math.inf
        self._q_last_send = -math.inf  # the last send before the coming stretch

        # Round-trip times -> jitter margin.
        self._rtt_n = 0
        self._rtt_mean = 0.0
        self._rtt_dev = 0.0
        self._rtt_ring: list[float] = []  # the last 256 round trips
        self._rtt_lo = 0.0  # their 5th percentile
        self._rtt_hi = 0.0  # their 95th percentile
        self._margin_extra = 0.0  # learned from 429s at a cap that kept passing
        self._margin_extra_at = 0.0
        self._margin = min(0.05, 0.02 * self._w)
        self._retain = 0.0  # how much longer than W + margin the log is kept

        self._waiters: deque[_Waiter] = deque()
        #: Recent 429s as ``(clock time, kind)``; kind is "cold" (end of the ramp), "probe",
        #: "jitter" (at a cap that kept passing), "drop" (below it: the limit went down) or "echo"
        #: (sent before the pause that the first 429 started). For diagnostics and tests.
        self.refusals: deque[tuple[float, str]] = deque(maxlen=4096)
        self.probes = 0  # probes started

        if warm_start is not None:
            self._apply_warm_start(warm_start)

    # ------------------------------------------------------------------ public properties

    @property
    def window(self) -> float:
        return self._w

    @property
    def paused_until(self) -> float:
        """Clock time until which nothing may be sent (-inf when never paused)."""
        return self._paused_until

    @property
    def in_flight(self) -> int:
        return self._inflight

    @property
    def max_concurrency(self) -> int:
        return self._max_conc

    @property
    def target(self) -> int:
        """The current cap on our window count (the operating estimate, or a probe above it)."""
        return self._target

    @property
    def margin(self) -> float:
        """The jitter allowance added to the window when deciding whether a slot is free."""
        return self._margin

    @property
    def mode(self) -> str:
        return _MODE_NAMES[self._mode]

    def window_count(self, now: float | None = None) -> int:
        """Our counted requests sent in the exact last window ``(now - W, now]``."""
        self._advance(self._clock.now() if now is None else now)
        return len(self._log) - self._edge

    def estimate(self) -> LimitEstimate:
        """The limit we operate at and its bounds; ``observed_at`` is the latest evidence."""
        limit = self._lo if self._lo > 0 else self._target
        if self._hi is not None:
            limit = min(limit, self._hi)
        seen = max(self._lo_at, self._pause_started)
        age = self._clock.now() - seen if seen > -math.inf else 0.0
        return LimitEstimate(
            limit=max(1, limit),
            lower=self._lo,
            upper=self._hi,
            window=self._w,
            observed_at=time.time() - max(0.0, age),
            samples=self._samples,
        )

    # ------------------------------------------------------------------ synchronous core

    def try_acquire(self, now: float | None = None) -> Ticket | None:
        """A ticket if a request may leave now, else None (see :meth:`ready_at`)."""
        if now is None:
            now = self._clock.now()
        if (
            self._inflight >= self._flight_cap()
            or now < self._paused_until
            or now < self._next_send
        ):
            return None
        if now >= self._next_probe_at:
            self._start_probe(now)
        mode = self._mode
        log = self._log
        self._advance(now)
        n = len(log) - self._old
        count = len(log) - self._edge
        target = self._target
        if self._q_len:
            if now >= self._q_to:
                self._roll_quiet(now)
            if now < self._q_from:
                self._q_last_send = now
            elif mode == _HOLD and n >= 0.9 * target:  # (far below the cap: refill first)
                return None
        # HOLD and COLD cap the count over W + margin (jitter-safe); PROBE caps the exact window
        # so that the server's count really rises to the level being tested.
        capped = count if mode == _PROBE else n
        if capped >= target:
            return None
        if mode == _PROBE and count >= self._lo - 2 and now < self._probe_not_before:
            return None
        self._seq += 1
        ticket = Ticket(self._seq, now, count, n, mode)
        log.append(ticket)
        self._inflight += 1
        self._last_send = now
        if mode == _COLD:
            k = 2.0
        elif mode == _PROBE and count >= self._lo:
            k = self._probe_k
        elif capped + 1 < target:
            k = self._catchup  # refill what a pause left empty, follow a dense stretch
        else:
            k = self._hold_k()
        # A schedule, not "now + spacing": a wake-up that came late (a busy event loop) may be
        # made up by the next send, within a few milliseconds.
        spacing = self._w / (target * k)
        self._next_send = max(self._next_send, now - min(3.0 * spacing, 0.005)) + spacing
        return ticket

    def ready_at(self, now: float | None = None) -> float:
        """Earliest clock time at which :meth:`try_acquire` may succeed, concurrency aside."""
        if now is None:
            now = self._clock.now()
        t = max(now, self._paused_until, self._next_send)
        if now >= self._next_probe_at:
            self._start_probe(now)
        self._advance(now)
        log = self._log
        if self._mode == _PROBE:
            excess = len(log) - self._edge - self._target
            if excess >= 0:
                t = max(t, log[self._edge + excess].sent_at + self._w)
            if len(log) - self._edge >= self._lo - 2:
                t = max(t, self._probe_not_before)
        else:
            excess = len(log) - self._old - self._target
            if excess >= 0:
                t = max(t, log[self._old + excess].sent_at + (self._w + self._margin))
            if self._q_len and self._mode == _HOLD:
                if now >= self._q_to:
                    self._roll_quiet(now)
                if self._q_from <= t < self._q_to:
                    # Blocked only if the count will still be near the cap then.
                    wm = self._w + self._margin
                    i = self._old
                    while i < len(log) and log[i].sent_at + wm <= t:
                        i += 1
                    if len(log) - i >= 0.9 * self._target:
                        t = self._q_to
        if self._next_probe_at < t:
            # Wake up to start the probe (which lifts the cap and the quiet stretch).
            t = max(now, self._paused_until, self._next_send, self._next_probe_at)
        return t

    def has_capacity(self) -> bool:
        return self._inflight < self._flight_cap()

    def on_success(self, ticket: Ticket, now: float | None = None) -> None:
        """The request got a response other than a 429 (4xx and 5xx too: it reached the server)."""
        if ticket.state != _INFLIGHT:
            return
        if now is None:
            now = self._clock.now()
        ticket.state = _ACCEPTED
        self._inflight -= 1
        ticket.rtt = now - ticket.sent_at
        self._observe_rtt(ticket.rtt, now)
        if ticket.seq >= self._epoch:
            self._samples += 1
            # The server had room: L >= its count + 1. Only cold and probe requests can raise the
            # lower bound, so only they pay for the estimate in arrival order.
            if ticket.mode == _HOLD:
                c = ticket.count_before + 1
            else:
                c = self._server_count(ticket, now) + 1 - self._noise()
            if c > self._lo:
                self._lo = c
                self._lo_at = now
                if self._hi is not None and c > self._hi:
                    self._hi = None  # the limit went up since that 429
                    self._hi_expires = math.inf
                self._retarget(now)
            if (
                ticket.mode == _PROBE
                and self._mode == _PROBE
                and ticket.count_before + 1 >= self._target
            ):
                self._probe_step_passed(now)
            elif ticket.mode == _HOLD and ticket.count_cap + 1 >= self._target:
                # The cap was reached and passed: the operating level is confirmed.
                self._lo_at = now
                if self._gap_pending and ticket.seq >= self._confirm_seq:
                    self._confirmed(now)
        if self._waiters:
            self._wake_head()

    def on_rate_limited(
        self, ticket: Ticket, retry_after: float | None, now: float | None = None
    ) -> None:
        """A 429 of the rolling-window kind. Pauses everyone; the caller replays the request."""
        if ticket.state != _INFLIGHT:
            return
        if now is None:
            now = self._clock.now()
        ticket.state = _REFUSED
        self._inflight -= 1
        ticket.rtt = now - ticket.sent_at
        self._observe_rtt(ticket.rtt, now)
        self._advance(now)
        refused_at = self._server_count(ticket, now)  # L <= this
        ra_bounds = None
        if retry_after is not None and 2 <= retry_after <= self._w:
            ra_bounds = self._retry_after_bounds(ticket, refused_at, float(retry_after), now)
        self._uncount(ticket, now)
        ra = self._default_ra if retry_after is None or retry_after < 0 else float(retry_after)
        if retry_after is not None and retry_after > 0:
            self._last_ra = float(retry_after)
        # A refusal of a request sent before the current pause began is an echo of the 429 that
        # started it (it was in flight): same full window, no news.
        echo = ticket.sent_at < self._pause_started
        if not echo:
            self._pause_started = now
            self._episode_min = refused_at
        # + 1 ms: our clock and the server's second boundaries need not agree exactly.
        self._paused_until = max(self._paused_until, now + ra + 0.001)
        if ticket.seq >= self._epoch and not echo:
            self._samples += 1
            kind = self._learn_refusal(ticket, refused_at, ra_bounds, now)
            self._episode_kind = kind
            self.refusals.append((now, kind))
        else:
            if refused_at < self._episode_min and self._episode_kind in ("probe", "drop"):
                # Round trips differ: the first 429 back need not be the first the server gave,
                # and everything it refused after that had a higher count. The lowest count of
                # the episode is the better bound.
                self._episode_min = refused_at
                if self._hi is None or refused_at < self._hi:
                    self._hi = max(1, refused_at)
                if self._mode == _HOLD and self._lo > self._hi - self._noise():
                    self._lo = max(1, self._hi - self._noise())
                    self._target = self._lo
            self.refusals.append((now, "echo"))
        if self._waiters:
            self._wake_head()

    def on_no_response(self, ticket: Ticket, now: float | None = None) -> None:
        """Transport failure. It stays counted in our window (the server may have seen it)."""
        if ticket.state != _INFLIGHT:
            return
        ticket.state = _LOST
        self._inflight -= 1
        if self._waiters:
            self._wake_head()

    def on_quota_exceeded(
        self, ticket: Ticket, retry_after: float | None, now: float | None = None
    ) -> None:
        """A 429 with reason QUOTA_EXCEEDED: no evidence about the window; pauses everyone."""
        if ticket.state != _INFLIGHT:
            return
        if now is None:
            now = self._clock.now()
        ticket.state = _LOST
        self._inflight -= 1
        self._uncount(ticket, now)  # a 429 is not logged by the window either
        ra = self._default_ra if retry_after is None or retry_after < 0 else float(retry_after)
        self._paused_until = max(self._paused_until, now + ra + 0.001)
        if self._waiters:
            self._wake_head()

    def pause_for(self, seconds: float, now: float | None = None) -> None:
        """Send nothing for ``seconds`` from now: a Retry-After learned by an earlier run."""
        if now is None:
            now = self._clock.now()
        self._paused_until = max(self._paused_until, now + max(0.0, seconds))
        if self._waiters:
            self._wake_head()

    def release(self, ticket: Ticket) -> None:
        """Give back a ticket whose request was never sent (e.g. the caller was cancelled)."""
        if ticket.state != _INFLIGHT:
            return
        ticket.state = _LOST
        self._inflight -= 1
        self._uncount(ticket, self._clock.now())
        if self._waiters:
            self._wake_head()

    # ------------------------------------------------------------------ async facade

    async def acquire(self) -> Ticket:
        """Wait (FIFO) for the pause, a pacing slot and a concurrency slot; return a ticket."""
        if not self._waiters:
            ticket = self.try_acquire()
            if ticket is not None:
                return ticket
        me = _Waiter()
        self._waiters.append(me)
        loop = asyncio.get_running_loop()
        try:
            while True:
                if self._waiters[0] is me:
                    now = self._clock.now()
                    ticket = self.try_acquire(now)
                    if ticket is not None:
                        self._waiters.popleft()
                        if self._waiters:
                            self._wake_head()
                        return ticket
                    fut = me.fut = loop.create_future()
                    if not self.has_capacity():
                        await fut  # a response frees a slot (or raises the ramp's cap)
                    else:
                        # Until the time ready_at names, or until a response changes the state
                        # (a probe step raises the cap, a 429 pauses...), whichever comes first.
                        # (At least 0.1 ms: never spin if the clock is coarser than our sums.)
                        delay = max(1e-4, self.ready_at(now) - now)
                        if type(self._clock) is MonotonicClock:
                            timer = loop.call_later(delay, _resolve, fut)
                            try:
                                await fut
                            finally:
                                timer.cancel()
                        else:
                            sleeper = loop.create_task(self._clock.sleep(delay))
                            sleeper.add_done_callback(functools.partial(_resolve_after, fut))
                            try:
                                await fut
                            finally:
                                sleeper.cancel()
                else:
                    me.fut = loop.create_future()
                    await me.fut
        except BaseException:
            was_head = bool(self._waiters) and self._waiters[0] is me
            with contextlib.suppress(ValueError):
                self._waiters.remove(me)
            if was_head and self._waiters:
                self._wake_head()
            raise

    @contextlib.asynccontextmanager
    async def permit(self) -> AsyncIterator[Ticket]:
        """``async with rc.permit() as t:`` releases the ticket if the body reports no outcome."""
        ticket = await self.acquire()
        try:
            yield ticket
        finally:
            if ticket.state == _INFLIGHT:
                self.on_no_response(ticket)

    # ------------------------------------------------------------------ internals

    def _wake_head(self) -> None:
        fut = self._waiters[0].fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _advance(self, now: float) -> None:
        # Same float expressions as in ready_at (sent + W [+ margin] <= now), so that a wake-up
        # at the time ready_at named finds the slot free.
        log = self._log
        n = len(log)
        w = self._w
        edge = self._edge
        while edge < n and log[edge].sent_at + w <= now:
            edge += 1
        wm = w + self._margin
        old = self._old
        while old < edge and log[old].sent_at + wm <= now:
            old += 1
        while old and log[old - 1].sent_at + wm > now:  # the margin grew
            old -= 1
        keep = wm + self._retain
        while old and log[0].sent_at + keep <= now:
            log.popleft()
            old -= 1
            edge -= 1
        self._edge = edge
        self._old = old

    def _server_count(self, r: Ticket, now: float) -> int:
        """Our requests the server had logged when ``r`` reached it, estimated in arrival order.

        A request reaches the server about half its round trip after it leaves. Requests sent
        just before ``r`` may arrive after it, and some sent just after it may overtake it; at
        the far end some sent just inside ``r``'s window had already left the server's. Counting
        by estimated arrival (send + rtt / 2) instead of by send time removes most of that noise.
        """
        log = self._log
        share = self._share
        arrive = r.sent_at + share * (r.rtt if r.rtt >= 0 else self._rtt_mean)
        start = arrive - self._w
        half = share * max(self._rtt_hi, self._rtt_mean)
        mean = self._rtt_mean
        out = 0
        n = len(log)
        i = 0
        while i < n:
            t = log[i]
            if t.sent_at > start:
                break
            rtt = t.rtt if t.rtt >= 0 else mean  # in flight: a typical trip
            if t.sent_at + share * rtt <= start:
                out += 1
            i += 1
        j = n - 1
        seen = False
        while j >= i:
            t = log[j]
            if t is r:
                seen = True
                out += 1
            elif t.sent_at <= arrive - half:
                break
            else:
                rtt = t.rtt if t.rtt >= 0 else mean  # in flight: a typical trip
                if t.sent_at + share * rtt >= arrive:
                    out += 1  # reached the server after r
            j -= 1
        if not seen and n and log[i if i < n else n - 1].sent_at <= r.sent_at:
            out += 1  # r is in the log, among those counted wholesale
        return max(0, n - out)

    def _uncount(self, ticket: Ticket, now: float) -> None:
        """Remove a refused (or unsent) ticket from our log: the server never logged it."""
        self._advance(now)
        log = self._log
        # It is almost always among the newest entries: search from the right.
        for i in range(len(log) - 1, -1, -1):
            t = log[i]
            if t is ticket:
                del log[i]
                if i < self._edge:
                    self._edge -= 1
                if i < self._old:
                    self._old -= 1
                break
            if t.state == _INFLIGHT and t.seq > ticket.seq:
                t.count_before -= 1  # it had counted the refused one
                t.count_cap -= 1

    def _retry_after_bounds(
        self, r: Ticket, count: int, retry_after: float, now: float
    ) -> tuple[int, int] | None:
        """Bounds on L from a Retry-After that says when there will be room for one more.

        Such a Retry-After is ``ceil(t - arrival)`` where ``t`` is when the ``(count - L)``-th
        oldest logged request leaves the window, so ``count - L + 1`` of our ``count`` requests
        in the window leave between ``arrival + RA - 1`` and ``arrival + RA``. (A server that
        answers "until the oldest leaves" says RA = 1 here and this is not used.)
        """
        arrive = r.sent_at + self._share * (r.rtt if r.rtt >= 0 else self._rtt_mean)
        start = arrive - self._w
        mean = self._rtt_mean
        gone_early = gone_late = 0  # ours in the window that leave by arrive + RA - 1 / + RA
        for t in self._log:
            if t is r:
                continue
            rtt = t.rtt if t.rtt >= 0 else mean  # in flight: a typical trip
            a = t.sent_at + self._share * rtt
            if a <= start:
                continue
            if a >= arrive:
                break
            if a <= start + retry_after:
                gone_late += 1
                if a <= start + retry_after - 1.0:
                    gone_early += 1
        return max(1, count + 1 - gone_late), max(1, count - gone_early)

    def _observe_rtt(self, rtt: float, now: float) -> None:
        if rtt < 0:
            return
        n = self._rtt_n
        if n == 0:
            self._rtt_mean = rtt
            self._rtt_dev = rtt / 4
        else:
            err = rtt - self._rtt_mean
            self._rtt_mean += err / 16
            self._rtt_dev += (abs(err) - self._rtt_dev) / 16
        ring = self._rtt_ring
        if len(ring) < 256:
            ring.append(rtt)
        else:
            ring[n % 256] = rtt
        self._rtt_n = n + 1
        if n < 64 or n % 64 == 0:
            ordered = sorted(ring)
            top = len(ordered) - 1
            self._rtt_lo = ordered[int(0.05 * top)]
            self._rtt_hi = ordered[int(0.95 * top + 0.5)]
            self._update_margin(now)

    def _update_margin(self, now: float) -> None:
        """Margin = half the spread of round-trip times (one-way jitter) + learned extra."""
        if self._margin_extra:
            # The learned part halves every 20 windows without a jitter 429.
            self._margin_extra *= 0.5 ** ((now - self._margin_extra_at) / (20.0 * self._w))
            self._margin_extra_at = now
        spread = self._rtt_hi - self._rtt_lo
        # Never less than what costs 0.3 % of throughput (generous when the window is long).
        self._margin = min(
            0.1 * self._w, max(0.003 * self._w, 0.5 * spread + 0.001 + self._margin_extra)
        )
        self._retain = min(self._w, 1.5 * max(self._rtt_hi, self._rtt_mean))

    def _keep_quiet(self) -> None:
        """A probe's pause leaves a hole in our pattern: keep it as the quiet stretch."""
        ra = self._last_ra
        if self._q_len or self._quiet_share <= 0 or ra > 2.0:
            return
        self._q_len = min(0.98 * ra, self._quiet_share * self._w)
        self._q_last_send = self._last_send
        self._q_from = math.inf
        self._q_to = -math.inf

    def _hold_k(self) -> float:
        """Pacing factor in HOLD: even spacing over the part of the window outside the stretch."""
        return (1.0 + self._alpha) * self._w / (self._w - self._q_len)

    def _probe_interval(self) -> float:
        """Windows between regular probes, from the throughput and 429 budgets."""
        if self._q_len:
            cost = max(0.0, self._last_ra - self._q_len) / self._w + 0.02
        else:
            cost = (self._last_ra / self._w) ** 2
        by_util = cost / self._util_budget
        by_refusals = 1.0 / (self._refusal_budget * max(1, self._lo))
        return min(self._max_probe, max(self._min_probe, by_util, by_refusals))

    def _schedule_probe(self, now: float) -> None:
        """Regular probe after the budgeted interval; the upper bound lives until then."""
        self._gap_pending = False
        self._next_probe_at = now + self._probe_interval() * self._w
        self._hi_expires = self._next_probe_at

    def _await_confirmation(self) -> None:
        """Decide about probing once a request sent from now on passes at the cap."""
        self._gap_pending = True
        self._confirm_seq = self._seq + 1
        self._next_probe_at = math.inf
        self._hi_expires = math.inf

    def _confirmed(self, now: float) -> None:
        hi = self._hi
        need = 0 if self._gap_any or hi is None else max(1, math.ceil(0.02 * hi))
        self._gap_any = False
        if hi is not None and hi - self._lo > need:
            self._gap_pending = False
            self._next_probe_at = now  # fill the gap: one step up to the fresh upper bound
            self._hi_expires = math.inf
        else:
            self._schedule_probe(now)

    def _roll_quiet(self, now: float) -> None:
        """Move the quiet stretch to its next replay, one window after the last send before it."""
        shift = self._w + self._margin
        # Just after the replay of the last send before the stretch (that one must still go).
        start = self._q_last_send + shift + 0.5 * self._w / max(1, self._target)
        while start + self._q_len <= now:
            start += shift
        self._q_from = start
        self._q_to = start + self._q_len

    def _noise(self) -> int:
        """How many requests our estimate of the server's count may be off by at the local rate
        (a tenth of a round trip's worth of requests)."""
        return math.floor(0.1 * self._rtt_mean * self._target * self._hold_k() / self._w)

    def _soon_room(self, now: float) -> float:
        """When a probe may be refused and hear Retry-After: 1, not 2.

        The server's Retry-After is the time until the oldest request it logged leaves. Where our
        pattern has a gap longer than a second (the quiet stretch and the pause that made it),
        the time ``t`` between the gap's replay start and its end minus one second is "bad":
        there the oldest request leaves more than a second later. If such a bad stretch begins
        within the next second, a probe started now would be refused in it; wait until it ends.
        """
        w = self._w
        share = self._share
        mean = self._rtt_mean
        prev = -math.inf
        for t in self._log:
            arrive = t.sent_at + share * (t.rtt if t.rtt >= 0 else mean)
            bad_end = arrive + w - 1.0 + 0.01
            if bad_end > now and bad_end > prev + w:  # a gap longer than a second
                if prev + w < now + 1.0:
                    return max(now, bad_end)
                return now
            prev = arrive
        return now

    def _start_probe(self, now: float) -> None:
        self._next_probe_at = math.inf
        hi = self._hi
        gap = hi is not None and now < self._hi_expires and hi > self._lo
        if self._q_len and not gap and not self._aligned:
            if now >= self._q_to:
                self._roll_quiet(now)
            # Start early enough that the probe request reaches the server as the stretch begins:
            # the ramp (the requests the margin keeps out of our cap) plus one round trip.
            ramp = (self._edge - self._old + 2) * self._w / (self._target * self._hold_k())
            start = self._q_from - ramp - self._rtt_mean
            if start + 0.05 * self._q_len < now:  # too late for this one: the next one
                start += self._w + self._margin
            if start > now:
                self._aligned = True
                self._next_probe_at = start
                self._hi_expires = max(self._hi_expires, start)
                return
        self._aligned = False
        self._mode = _PROBE
        self.probes += 1
        if gap:
            assert hi is not None
            self._galloping = False
            self._target = hi
            self._probe_k = 1.0 + max(self._alpha, (hi - self._lo) / hi)
            return
        self._hi = None
        self._hi_expires = math.inf
        self._galloping = True
        self._delta = 1
        self._target = self._lo + 1
        # If it fails, the server's Retry-After is the time until the oldest request it logged
        # leaves. Right at the start of our quiet stretch that is the whole stretch plus the
        # round trip that made it, over 1 s: 2 s of silence. Send the first request above lo
        # only once some logged request leaves within the second.
        self._probe_not_before = self._soon_room(now)
        self._probe_k = 1.0 + max(self._alpha, 4.0 / self._target)

    def _flight_cap(self) -> int:
        """Requests allowed in flight: in COLD, one more than the overshoot allowed (3. Modes)."""
        if self._mode != _COLD:
            return self._max_conc
        lo = self._lo
        overshoot = max(2, math.floor(self._overshoot * lo))
        growth = math.floor(1.2 * lo * self._rtt_mean / self._w)  # more if round trips > 4 % W
        return min(self._max_conc, 1 + max(overshoot, growth))

    def _hold(self) -> None:
        self._mode = _HOLD
        self._target = max(1, self._lo)

    def _retarget(self, now: float) -> None:
        lo = self._lo
        mode = self._mode
        if mode == _COLD:
            self._target = max(self._initial, 2 * lo)
        elif mode == _HOLD:
            self._target = max(1, lo)
        elif self._galloping:
            while lo >= self._target:  # the last step passed: double the next one
                self._delta *= 2
                self._target = lo + self._delta
            self._probe_k = 1.0 + max(self._alpha, 4.0 * self._delta / self._target)
        elif lo >= self._target:  # gap filled up to the upper bound without a 429
            self._hold()
            self._schedule_probe(now)

    def _probe_step_passed(self, now: float) -> None:
        """A probe request sent at the cap passed (by our count, whatever the noisy estimate in
        arrival order says): next gallop step, or the gap is filled."""
        if self._galloping:
            self._delta *= 2
            self._target += self._delta
            self._probe_k = 1.0 + max(self._alpha, 4.0 * self._delta / self._target)
        else:
            self._lo = max(self._lo, self._target - 1)
            self._hold()
            self._schedule_probe(now)

    def _learn_refusal(
        self, ticket: Ticket, refused_at: int, ra_bounds: tuple[int, int] | None, now: float
    ) -> str:
        m = max(1, refused_at)  # L <= m (server units: the exact window)
        lo = self._lo
        # How far our count may stray from the server's (reordering within the jitter margin).
        slack = max(2, math.ceil(0.01 * lo), math.ceil(2.0 * lo / self._w * self._margin))
        if self._hi is None or m < self._hi or now >= self._hi_expires:
            self._hi = m
        noise = self._noise()
        if self._gap_pending and ticket.seq >= self._confirm_seq and ticket.mode == _HOLD:
            # A level set after a drop (or at a warm start) has not passed yet, and the count has
            # been rising to it one request at a time: this 429 is at the limit itself.
            self._lo = max(1, min(lo, m - noise))
            self._hi = m
            self._target = self._lo
            self._epoch = self._seq + 1
            self._await_confirmation()
            return "drop"
        if ra_bounds is not None and ra_bounds[1] + noise < lo - slack and ticket.mode != _COLD:
            # The Retry-After said when there will be room; our log says how many of ours will
            # have left by then: the limit went down, to about this. (A Retry-After that is long
            # because of a hole in our own pattern gives an upper bound near lo: not this case.)
            self._hi = ra_bounds[1]
            self._lo = max(1, min(max(ra_bounds[0], math.floor(self._beta * self._hi)), m - 1))
            self._lo_at = now
            self._epoch = ticket.seq + 1
            self._hold()
            self._await_confirmation()
            self._gap_any = True
            return "drop"
        if ticket.mode == _COLD:
            if self._mode == _COLD:
                # The end of the ramp. At the ramp's rate our count and the server's differ by
                # up to rate * jitter (requests overtake each other), so take the bounds loosely,
                # ignore every request still in flight, and let the gap probe pin the limit.
                noise = round(2.0 * self._target / self._w * self._margin)
                self._hi = m + noise
                self._lo = max(1, min(lo, m) - noise)
                self._epoch = self._seq + 1
                self._hold()
                self._await_confirmation()
            return "cold"
        if ticket.mode == _PROBE or self._mode == _PROBE:
            if m >= lo - slack:
                self._keep_quiet()
                # The ceiling. Hold at the count that was refused, less what our estimate of the
                # server's count may be off by at the local rate; the tickets in flight were
                # sent above it and prove nothing more.
                self._lo = max(1, min(lo, m - noise))
                self._epoch = self._seq + 1
                if self._mode == _PROBE:
                    self._hold()
                    self._await_confirmation()
                return "probe"
        elif m >= lo - slack:
            # At the cap. If the cap kept passing, this is jitter beyond our margin (or the first
            # sign of a lower limit: the next request after the pause, further below, tells):
            # widen the margin. If it had not passed since it was set, or this happens again
            # soon, the lower bound was optimistic: step it down.
            if now - self._lo_at <= 2.0 * self._w:
                spread = max(self._rtt_hi - self._rtt_lo, 0.001)
                self._margin_extra = min(2.0 * spread, self._margin_extra + 0.25 * spread)
                self._margin_extra_at = now
                self._update_margin(now)
            if now - self._lo_at > 2.0 * self._w or now - self._last_jitter_at < 3.0 * self._w:
                self._lo = max(1, min(lo - 1, m))
                self._target = self._lo
            self._last_jitter_at = now
            self._epoch = self._seq + 1
            return "jitter"
        # The limit went down: cut, forget what was sent before, refill the gap once confirmed.
        self._lo = max(1, math.floor(self._beta * min(m, ticket.count_cap)))
        self._lo_at = now
        self._epoch = ticket.seq + 1
        self._hold()
        self._await_confirmation()
        self._gap_any = True
        return "drop"

    def _apply_warm_start(self, est: LimitEstimate) -> None:
        scale = self._w / est.window if est.window > 0 else 1.0
        known = max(1, round(max(1, min(est.limit, est.lower or est.limit)) * scale))
        self._lo = max(1, known - max(1, math.ceil(0.05 * known)))
        self._lo_at = self._clock.now()
        self._hi = known if est.upper is None else max(1, round(est.upper * scale))
        self._hold()
        self._await_confirmation()
        self._confirm_seq = 0
        self._gap_any = True

    def debug_state(self) -> dict[str, Any]:
        """Internal state for tests and benchmarks (not a stable interface)."""
        return {
            "mode": _MODE_NAMES[self._mode],
            "target": self._target,
            "lo": self._lo,
            "hi": self._hi,
            "margin": self._margin,
            "quiet": self._q_len,
            "probe_interval": self._probe_interval(),
            "next_probe_at": self._next_probe_at,
            "paused_until": self._paused_until,
            "inflight": self._inflight,
            "count": len(self._log) - self._old,
        }
