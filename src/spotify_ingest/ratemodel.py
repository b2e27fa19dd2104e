"""A discrete-event model of Spotify's rolling-window limiter, and a harness to race policies on it.

Shared by the unit tests (``tests/test_ratecontrol.py``) and the virtual-time benchmark
(``bench/ratecontrol.py``). No asyncio and no real time: events are popped from a heap, so an hour
of traffic at 300 requests/s runs in seconds.

The server (:class:`SlidingLogServer`) keeps a log of ACCEPTED arrival times: a request is accepted
iff fewer than ``L`` accepted requests are in ``(t - W, t]``; refused requests are not logged; a
429 carries ``Retry-After`` in whole seconds (>= 1) and blocks the client that long: requests that
arrive during the block are refused, and one arriving a grace second or more after the block began
escalates the penalty (doubling), like the simulator (``spotify_ingest.sim.ratelimit``). ``L`` may
follow a schedule (halving, doubling ...).

The network (:class:`Latency`) gives each request a round trip and the part of it before the
server sees the request, so that requests reach the server in an order a little different from
the order they left in, and in-flight requests matter.

The harness counts, per run: accepted and refused requests (server arrival times), escalations,
arrivals during a block (in-flight requests that could not know yet), sends into a block the
client already knew about (must be 0), and the overshoot: the requests refused after the first
refusal and before its Retry-After ended.

Policies (the :class:`Policy` protocol, synchronous): our :class:`RateController` through
:class:`ControllerPolicy`; the seed's :class:`SeedPolicy` (unpaced, sleep one window after every
1,500 requests, sleep Retry-After on a 429); :class:`FixedRatePolicy` (a leaky bucket like
``aiolimiter.AsyncLimiter(60, W)``: 60 requests per window, pausing for Retry-After on a 429).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

from spotify_ingest.ratecontrol import LimitEstimate, RateController, Ticket

__all__ = [
    "ControllerPolicy",
    "FixedRatePolicy",
    "Latency",
    "ManualClock",
    "Policy",
    "RunResult",
    "SeedPolicy",
    "SlidingLogServer",
    "run",
]


class ManualClock:
    """A clock whose time is set by the harness (``now`` only; ``sleep`` is not used)."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - harness never sleeps
        raise RuntimeError("ManualClock cannot sleep; drive the synchronous core instead")


class SlidingLogServer:
    """Hidden ``(L, W)`` sliding-log limiter with Retry-After blocks and escalating penalties.

    ``schedule``: ``[(time, new_limit), ...]``. A refusal blocks the client for Retry-After
    seconds; every request arriving during a block is refused, and one arriving ``grace`` seconds
    or more after the block started (or last grew) escalates: the penalty doubles and the block
    restarts (as ``spotify_ingest.sim.ratelimit`` does). ``retry_after``: ``"room"`` (until enough
    logged requests leave for one more; the simulator's rule) or ``"oldest"`` (until the oldest
    leaves; the same unless the limit was just lowered).
    """

    def __init__(
        self,
        limit: int,
        window: float,
        schedule: Sequence[tuple[float, int]] = (),
        *,
        retry_after: str = "room",
        grace: float = 1.0,
    ) -> None:
        if retry_after not in ("oldest", "room"):
            raise ValueError("retry_after: 'oldest' or 'room'")
        self.retry_after = retry_after
        self.window = window
        self.grace = grace
        self._changes = sorted(schedule)
        self._limits = [limit] + [lim for _, lim in self._changes]
        self._times = [t for t, _ in self._changes]
        self._log: deque[float] = deque()
        self.blocked_until = -math.inf
        self.blocked_at = -math.inf
        self.penalty = 0.0
        self.escalations = 0
        self.refused_in_block = 0

    def limit_at(self, t: float) -> int:
        return self._limits[bisect_right(self._times, t)]

    def handle(self, t: float) -> tuple[bool, int]:
        """Decide a request arriving at ``t``: (accepted, Retry-After seconds)."""
        if t < self.blocked_until:
            if t - self.blocked_at >= self.grace:
                self.escalations += 1
                self.penalty = max(self.penalty, 1.0) * 2.0
                self.blocked_at = t
                self.blocked_until = t + self.penalty
            self.refused_in_block += 1
            return False, max(1, math.ceil(self.blocked_until - t - 1e-9))
        log = self._log
        cut = t - self.window
        while log and log[0] <= cut:
            log.popleft()
        limit = self.limit_at(t)
        if len(log) < limit:
            log.append(t)
            self.penalty = 0.0
            return True, 0
        first = 0 if self.retry_after == "oldest" else len(log) - limit
        ra = max(1, math.ceil(log[first] + self.window - t - 1e-9))
        self.blocked_at = t
        self.blocked_until = t + ra
        self.penalty = float(ra)
        return False, ra

    def limit_integral(self, t0: float, t1: float) -> float:
        """Integral of L(t) dt over [t0, t1] (for utilisation with a changing limit)."""
        total = 0.0
        edges = [t0] + [t for t in self._times if t0 < t < t1] + [t1]
        for a, b in itertools.pairwise(edges):
            total += self.limit_at(a) * (b - a)
        return total


@dataclass(frozen=True)
class Latency:
    """Round trip uniform in ``[rtt_min, rtt_max]``; the request reaches the server after
    ``up_base + rtt * up_share`` with ``up_base`` uniform in ``[up_min, up_max]`` seconds and
    ``up_share`` uniform in ``[share_min, share_max]``.

    The default puts the variable part of the round trip after the rate check (a gateway that
    checks, then a backend that takes its time, as the simulator does); :meth:`symmetric` splits
    every round trip about evenly, the hardest case for counting in arrival order.
    """

    rtt_min: float = 0.020
    rtt_max: float = 0.100
    up_min: float = 0.004
    up_max: float = 0.012
    share_min: float = 0.0
    share_max: float = 0.1

    lognormal_mean: float = 0.0  # > 0: round trips like the simulator's instead (see below)

    @classmethod
    def symmetric(cls) -> Latency:
        return cls(up_min=0.0, up_max=0.0, share_min=0.4, share_max=0.6)

    @classmethod
    def simulator(cls, mean: float = 0.030) -> Latency:
        """The simulator's latency: lognormal (sigma 0.5) with this mean, 1 % of requests 10x
        slower, all of it after the rate check (plus 0.2-1 ms of event-loop noise before)."""
        return cls(up_min=0.0002, up_max=0.001, share_min=0.0, share_max=0.0, lognormal_mean=mean)

    def sample(self, rng: random.Random) -> tuple[float, float]:
        if self.lognormal_mean > 0:
            mu = math.log(self.lognormal_mean) - 0.125
            rtt = rng.lognormvariate(mu, 0.5) * (10.0 if rng.random() < 0.01 else 1.0)
            up = rng.uniform(self.up_min, self.up_max)
            return up, up + rtt
        rtt = rng.uniform(self.rtt_min, self.rtt_max)
        up = rng.uniform(self.up_min, self.up_max) + rtt * rng.uniform(
            self.share_min, self.share_max
        )
        return min(up, rtt), rtt


class Policy(Protocol):
    """Synchronous policy interface used by :func:`run`."""

    def try_send(self, now: float) -> object | None:
        """A token if a request may leave now."""
        ...

    def wake_at(self, now: float) -> float:
        """When to try again (``inf``: only after a response)."""
        ...

    def on_response(self, token: object, now: float, accepted: bool, retry_after: int) -> None: ...


class ControllerPolicy:
    """Our :class:`RateController`, driven through its synchronous core."""

    def __init__(self, controller: RateController) -> None:
        self.rc = controller

    def try_send(self, now: float) -> object | None:
        return self.rc.try_acquire(now)

    def wake_at(self, now: float) -> float:
        if not self.rc.has_capacity():
            return math.inf
        return self.rc.ready_at(now)

    def on_response(self, token: object, now: float, accepted: bool, retry_after: int) -> None:
        ticket = cast(Ticket, token)  # (or another version's Ticket: bench/ratecontrol.py --ramp)
        if accepted:
            self.rc.on_success(ticket, now)
        else:
            self.rc.on_rate_limited(ticket, retry_after, now)


class SeedPolicy:
    """The seed's policy: send as fast as the workers allow (no pacing), sleep one window after
    every 1,500 requests, and sleep Retry-After on a 429 (everyone: the seed was sequential)."""

    def __init__(self, window: float, max_concurrency: int = 16, every: int = 1500) -> None:
        self.window = window
        self.max_concurrency = max_concurrency
        self.every = every
        self.inflight = 0
        self.sent = 0
        self.paused_until = -math.inf

    def try_send(self, now: float) -> object | None:
        if now < self.paused_until or self.inflight >= self.max_concurrency:
            return None
        self.inflight += 1
        self.sent += 1
        if self.sent % self.every == 0:
            self.paused_until = max(self.paused_until, now + self.window)
        return self.sent

    def wake_at(self, now: float) -> float:
        if self.inflight >= self.max_concurrency:
            return math.inf
        return self.paused_until

    def on_response(self, token: object, now: float, accepted: bool, retry_after: int) -> None:
        self.inflight -= 1
        if not accepted:
            self.paused_until = max(self.paused_until, now + retry_after)


class FixedRatePolicy:
    """``aiolimiter.AsyncLimiter(max_rate, window)``: a leaky bucket of capacity ``max_rate``
    draining at ``max_rate / window`` per second (so a full burst first), plus a pause for
    Retry-After on a 429."""

    def __init__(self, window: float, max_rate: float = 60.0, max_concurrency: int = 16) -> None:
        self.rate = max_rate / window
        self.capacity = max_rate
        self.max_concurrency = max_concurrency
        self.level = 0.0
        self.last = 0.0
        self.inflight = 0
        self.paused_until = -math.inf

    def _leak(self, now: float) -> None:
        self.level = max(0.0, self.level - (now - self.last) * self.rate)
        self.last = now

    def try_send(self, now: float) -> object | None:
        if now < self.paused_until or self.inflight >= self.max_concurrency:
            return None
        self._leak(now)
        if self.level + 1 > self.capacity:
            return None
        self.level += 1
        self.inflight += 1
        return True

    def wake_at(self, now: float) -> float:
        if self.inflight >= self.max_concurrency:
            return math.inf
        self._leak(now)
        need = self.level + 1 - self.capacity
        return max(self.paused_until, now + max(0.0, need) / self.rate)

    def on_response(self, token: object, now: float, accepted: bool, retry_after: int) -> None:
        self.inflight -= 1
        if not accepted:
            self.paused_until = max(self.paused_until, now + retry_after)


@dataclass
class RunResult:
    """What happened in one run (times are server arrival times unless said otherwise)."""

    window: float
    duration: float
    server: SlidingLogServer
    accepted: list[float] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)
    escalations: int = 0  # the server's count of penalty escalations
    arrivals_in_block: int = 0  # requests that reached the server during a Retry-After block
    sent_into_block: int = 0  # ... of which sent after the client had received that 429
    max_inflight: int = 0
    sends: int = 0
    first_block_end: float = math.inf  # when the Retry-After of the first refusal ended

    def overshoot(self) -> int:
        """Requests refused after the first one, arriving before its Retry-After ended: what
        the client had sent before it could know (a server counting them punishes them all)."""
        if not self.refused:
            return 0
        return bisect_right(self.refused, self.first_block_end) - 1

    def utilisation(self, t0: float, t1: float | None = None) -> float:
        """Accepted in [t0, t1) over what the limit allowed: ``integral(L dt) / W``."""
        t1 = self.duration if t1 is None else t1
        n = bisect_left(self.accepted, t1) - bisect_left(self.accepted, t0)
        return n / (self.server.limit_integral(t0, t1) / self.window)

    def refusals(self, t0: float = 0.0, t1: float | None = None) -> int:
        t1 = self.duration if t1 is None else t1
        return bisect_left(self.refused, t1) - bisect_left(self.refused, t0)

    def refusal_ratio(self, t0: float = 0.0, t1: float | None = None) -> float:
        t1 = self.duration if t1 is None else t1
        acc = bisect_left(self.accepted, t1) - bisect_left(self.accepted, t0)
        ref = self.refusals(t0, t1)
        return ref / max(1, acc + ref)

    def time_to_fraction(self, fraction: float = 0.9, since: float = 0.0) -> float:
        """Seconds from ``since`` until the accepted count in the trailing window first reaches
        ``fraction * L`` (inf if never)."""
        acc = self.accepted
        i = bisect_left(acc, since)
        w = self.window
        lo = i
        for j in range(i, len(acc)):
            t = acc[j]
            while acc[lo] <= t - w:
                lo += 1
            if j - lo + 1 >= fraction * self.server.limit_at(t):
                return t - since
        return math.inf

    def last_refusal_after(self, t0: float) -> float:
        """Time of the last refusal at or after ``t0`` (``-inf`` if none)."""
        i = bisect_left(self.refused, t0)
        return self.refused[-1] if i < len(self.refused) else -math.inf


_ARRIVE = 0
_RESPONSE = 1
_TRY = 2


def run(
    policy: Policy,
    server: SlidingLogServer,
    duration: float,
    *,
    latency: Latency | None = None,
    seed: int = 1,
    clock: ManualClock | None = None,
) -> RunResult:
    """Drive ``policy`` against ``server`` for ``duration`` seconds of virtual time, with
    unlimited demand (there is always a request to send)."""
    lat = latency or Latency()
    rng = random.Random(seed)
    res = RunResult(window=server.window, duration=duration, server=server)
    heap: list[tuple[float, int, int, list[object]]] = []
    seq = 0
    pending_try = math.inf
    inflight = 0
    known_block_end = -math.inf  # the latest Retry-After end the client has been told about
    heapq.heappush(heap, (0.0, 0, _TRY, []))
    while heap:
        t, _, kind, data = heapq.heappop(heap)
        if t > duration:
            break
        if clock is not None:
            clock.t = t
        if kind == _ARRIVE:
            sent_known_block = data[1]
            assert isinstance(sent_known_block, float)
            if t < server.blocked_until:
                res.arrivals_in_block += 1
            if t < sent_known_block:
                res.sent_into_block += 1
            ok, ra = server.handle(t)
            data.append(ok)
            data.append(ra)
            (res.accepted if ok else res.refused).append(t)
            if not ok:
                res.first_block_end = min(res.first_block_end, server.blocked_until)
                data.append(t + ra)
            continue
        if kind == _RESPONSE:
            inflight -= 1
            ok = bool(data[2])
            ra_val = data[3]
            assert isinstance(ra_val, int)
            if not ok:
                block_end = data[4]
                assert isinstance(block_end, float)
                known_block_end = max(known_block_end, block_end)
            policy.on_response(data[0], t, ok, ra_val)
        elif kind == _TRY and t >= pending_try:
            pending_try = math.inf
        while True:
            token = policy.try_send(t)
            if token is None:
                break
            up, rtt = lat.sample(rng)
            rec: list[object] = [token, known_block_end]
            seq += 1
            heapq.heappush(heap, (t + up, seq, _ARRIVE, rec))
            seq += 1
            heapq.heappush(heap, (t + rtt, seq, _RESPONSE, rec))
            inflight += 1
            res.sends += 1
        res.max_inflight = max(res.max_inflight, inflight)
        w = policy.wake_at(t)
        if w < pending_try and w <= duration:
            pending_try = max(w, t + 1e-9) if w <= t else w
            seq += 1
            heapq.heappush(heap, (pending_try, seq, _TRY, []))
    res.escalations = server.escalations
    return res


def controller_run(
    limit: int,
    window: float,
    duration_windows: float,
    *,
    schedule: Sequence[tuple[float, int]] = (),
    warm_start: LimitEstimate | None = None,
    max_concurrency: int = 128,
    latency: Latency | None = None,
    seed: int = 1,
    retry_after: str = "room",
) -> tuple[RunResult, RateController]:
    """Convenience: our controller against a fresh server for ``duration_windows`` windows."""
    clock = ManualClock()
    rc = RateController(window, warm_start=warm_start, max_concurrency=max_concurrency, clock=clock)
    server = SlidingLogServer(limit, window, schedule, retry_after=retry_after)
    res = run(
        ControllerPolicy(rc),
        server,
        duration_windows * window,
        latency=latency,
        seed=seed,
        clock=clock,
    )
    return res, rc
