"""The simulator's hidden rate limit: pure logic on an explicit time axis, no I/O, no asyncio.

Every call takes ``now`` (seconds of the simulator's clock), so tests drive it with plain numbers.

Model
=====
Spotify limits "the number of calls your app makes in a rolling 30 second window" and never says
how many. The simulator keeps, per client id, one *global bucket* of limit ``L`` per window ``W``,
plus optional *endpoint buckets* (``endpoint_limits={"search": 50}``) that a request to that
endpoint must also pass (spotipy #937: one endpoint blocked while another still answered). A
request is accepted only if every bucket it touches admits it; an accepted request is recorded in
every one of them, a refused one in none.

Window algorithms (``Algorithm``), each with the Retry-After it reports:

``sliding`` (default): a log of the times of the ACCEPTED requests. At ``now`` the count is the
    number of logged times in ``(now - W, now]``. The request is accepted iff ``count < L``.
    Refused: Retry-After is the time until enough old entries leave the window for the count to
    drop below ``L``, i.e. ``log[count - L] + W - now`` (with ``count == L`` that is the oldest
    entry; a larger count happens when ``L`` was lowered by a schedule).
``fixed``: windows ``[k W, (k+1) W)`` counted from the limiter's start; at most ``L`` accepted
    per window (so up to ``2 L`` can pass around a boundary). Retry-After: the time to the next
    window start.
``token``: a bucket of capacity ``L`` refilled continuously at ``L / W`` tokens per second, full
    at start. Accepted iff a whole token is available. Retry-After: the time until it is.

Retry-After is reported in whole seconds, rounded up, at least 1 (``retry_after_header``).

Penalties (what users report: retrying during a Retry-After makes it longer). When a bucket refuses
a request it is *blocked* until ``now + Retry-After`` (the header value, so a client that waits
exactly what it was told is never early) and remembers ``penalty = Retry-After``. Every request
that arrives while the bucket is blocked is refused. If it arrives at least ``escalation_grace``
seconds (default 1 s) after the block started or last grew, it is an *escalation*: the penalty
doubles (capped at ``penalty_cap``), the block restarts from ``now`` for the new penalty, and the
answer's Retry-After is that penalty. Inside the grace the answer is a plain 429 with the time
left: requests that were already in flight when the first 429 left the server cannot have obeyed
it, and a concurrent client should not earn a 24-hour ban for one overshoot. The first request
after the block ends is judged by the window again and, if accepted, clears the penalty. Every
request that arrives during a block is logged (``blocked_arrivals``: when, how far into the block,
whether it escalated): the ground truth of a client that sends before it was told it may.

Quota (the daily-style quota beside the window): at most ``quota`` accepted requests per client in
each period ``[k P, (k+1) P)`` counted from the limiter's start. Past it every request is refused
with reason ``QUOTA_EXCEEDED`` and Retry-After = time to the period's end. Quota refusals do not
escalate (the block cannot get longer than the period anyway).

Limit schedule: ``L`` of the global bucket changes at given times since the limiter's start
(``parse_limit_schedule`` documents the SPEC syntax). Endpoint buckets keep their limits.

Ground truth (``GroundTruth``): every accepted request time is recorded, per client and overall,
and the most requests accepted in any window position (``max`` over all ``t`` of the count in
``(t - W, t]``) is maintained incrementally: the maximum is always reached by a window that ends at
an accepted request, so a running sliding count evaluated at each acceptance is exact.
"""

from __future__ import annotations

import math
import re
from array import array
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "QUOTA_REASON",
    "RATE_REASON",
    "Algorithm",
    "Bucket",
    "Decision",
    "FixedWindow",
    "GroundTruth",
    "LimitSchedule",
    "RateLimiter",
    "SlidingLog",
    "TokenBucket",
    "WindowCounter",
    "max_in_any_window",
    "parse_limit_schedule",
    "retry_after_header",
]

RATE_REASON = "RATE_LIMIT"
QUOTA_REASON = "QUOTA_EXCEEDED"
GLOBAL_BUCKET = ""  # name of the global bucket in penalty reports


class Algorithm(StrEnum):
    """Which window algorithm the hidden limit uses."""

    SLIDING = "sliding"
    FIXED = "fixed"
    TOKEN = "token"


def retry_after_header(seconds: float) -> int:
    """Whole seconds as Spotify sends them: rounded up, at least 1."""
    return max(1, math.ceil(seconds - 1e-9))


# --------------------------------------------------------------------------------------------
# Window counters: one per (client, bucket). ``admit`` only looks; ``record`` commits.


class WindowCounter:
    """Interface of the three window algorithms."""

    def admit(self, now: float, limit: int) -> float:
        """0.0 if a request at ``now`` fits under ``limit``, else seconds until one would."""
        raise NotImplementedError

    def record(self, now: float, limit: int) -> None:
        """Count an accepted request at ``now``."""
        raise NotImplementedError

    def count(self, now: float) -> float:
        """Requests currently counted against the limit (tokens used for the token bucket)."""
        raise NotImplementedError


class SlidingLog(WindowCounter):
    """Times of accepted requests in the last ``window`` seconds (see the module docstring)."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.log: deque[float] = deque()  # accepted request times, oldest first, all > now - W

    def _evict(self, now: float) -> None:
        horizon = now - self.window
        log = self.log
        while log and log[0] <= horizon:
            log.popleft()

    def admit(self, now: float, limit: int) -> float:
        self._evict(now)
        n = len(self.log)
        if n < limit:
            return 0.0
        # The count must drop to limit - 1: entries 0 .. n - limit must leave the window.
        return max(self.log[n - limit] + self.window - now, 1e-6)

    def record(self, now: float, limit: int) -> None:
        self.log.append(now)

    def count(self, now: float) -> float:
        self._evict(now)
        return float(len(self.log))


class FixedWindow(WindowCounter):
    """Counts per aligned window ``[k W, (k+1) W)`` measured from ``origin``."""

    def __init__(self, window: float, origin: float) -> None:
        self.window = window
        self.origin = origin
        self.index = -1  # index k of the window counted in ``used``
        self.used = 0  # accepted requests in window ``index``

    def _roll(self, now: float) -> None:
        k = math.floor((now - self.origin) / self.window)
        if k != self.index:
            self.index = k
            self.used = 0

    def admit(self, now: float, limit: int) -> float:
        self._roll(now)
        if self.used < limit:
            return 0.0
        end = self.origin + (self.index + 1) * self.window
        return max(end - now, 1e-6)

    def record(self, now: float, limit: int) -> None:
        self._roll(now)
        self.used += 1

    def count(self, now: float) -> float:
        self._roll(now)
        return float(self.used)


class TokenBucket(WindowCounter):
    """Capacity ``limit``, refilled at ``limit / window`` tokens per second, full at creation."""

    def __init__(self, window: float, limit: int, now: float) -> None:
        self.window = window
        self.tokens = float(limit)  # tokens available at time ``stamp``
        self.stamp = now

    def _refill(self, now: float, limit: int) -> None:
        if now > self.stamp:
            self.tokens = min(float(limit), self.tokens + (now - self.stamp) * limit / self.window)
            self.stamp = now
        else:
            self.tokens = min(float(limit), self.tokens)

    def admit(self, now: float, limit: int) -> float:
        self._refill(now, limit)
        if self.tokens >= 1.0 - 1e-9:
            return 0.0
        if limit <= 0:
            return self.window
        return max((1.0 - self.tokens) * self.window / limit, 1e-6)

    def record(self, now: float, limit: int) -> None:
        self._refill(now, limit)
        self.tokens -= 1.0

    def count(self, now: float) -> float:
        return self.tokens


# --------------------------------------------------------------------------------------------
# Limit schedule


@dataclass(frozen=True)
class ScheduleStep:
    """At ``at`` seconds since start, the global limit becomes ``absolute`` or ``factor`` x L."""

    at: float
    absolute: int | None = None
    factor: float | None = None

    def apply(self, current: int) -> int:
        if self.absolute is not None:
            return self.absolute
        assert self.factor is not None
        return max(1, round(current * self.factor))


_STEP_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*:\s*([^\s,]+)\s*$")


def parse_limit_schedule(spec: str) -> tuple[ScheduleStep, ...]:
    """Parse a limit-schedule SPEC.

    Syntax: comma-separated ``T:V`` steps, ``T`` in seconds since the simulator started (in the
    simulator's time, so scaled with ``time_scale``), ``V`` one of:

    * an integer ``N >= 1``: the limit becomes N (``60:50,120:200``);
    * ``half`` / ``double``: the limit in force is halved / doubled (``120:half,240:double``);
    * ``xF`` (or ``*F``), ``F > 0``: the limit in force is multiplied by F (``300:x1.5``).

    Steps must be in strictly increasing time order. An empty SPEC means no schedule.
    Raises ``ValueError`` with a one-line message on bad syntax.
    """
    steps: list[ScheduleStep] = []
    if not spec.strip():
        return ()
    for raw in spec.split(","):
        m = _STEP_RE.match(raw)
        if not m:
            raise ValueError(
                f"bad limit-schedule step {raw.strip()!r}: expected T:V, e.g. 120:half"
            )
        at = float(m.group(1))
        value = m.group(2).lower()
        if value == "half":
            step = ScheduleStep(at, factor=0.5)
        elif value == "double":
            step = ScheduleStep(at, factor=2.0)
        elif value[0] in "x*":
            try:
                factor = float(value[1:])
            except ValueError:
                raise ValueError(
                    f"bad limit-schedule factor {value!r} in {raw.strip()!r}"
                ) from None
            if not factor > 0 or not math.isfinite(factor):
                raise ValueError(f"limit-schedule factor must be > 0 in {raw.strip()!r}")
            step = ScheduleStep(at, factor=factor)
        elif value.isdigit():
            if int(value) < 1:
                raise ValueError(f"limit-schedule limit must be >= 1 in {raw.strip()!r}")
            step = ScheduleStep(at, absolute=int(value))
        else:
            raise ValueError(
                f"bad limit-schedule value {value!r} in {raw.strip()!r}: "
                "use an integer, half, double or xF"
            )
        if steps and at <= steps[-1].at:
            raise ValueError(f"limit-schedule times must increase: {raw.strip()!r}")
        steps.append(step)
    return tuple(steps)


class LimitSchedule:
    """The global limit as a function of time since start: ``base`` then each step in turn."""

    def __init__(self, base: int, steps: Sequence[ScheduleStep] = ()) -> None:
        self.base = base
        self.steps = tuple(steps)
        self._next = 0  # index of the first step not applied yet
        self.current = base  # limit in force after the applied steps
        self.override: int | None = None  # set by the control endpoint: wins over the schedule

    def at(self, elapsed: float) -> int:
        """Limit in force ``elapsed`` seconds after start (time must not go backwards)."""
        while self._next < len(self.steps) and self.steps[self._next].at <= elapsed:
            self.current = self.steps[self._next].apply(self.current)
            self._next += 1
        return self.override if self.override is not None else self.current

    def set(self, limit: int) -> None:
        """Force the limit from now on (schedule steps after now still apply on top of it)."""
        self.override = None
        self.current = limit


# --------------------------------------------------------------------------------------------
# Buckets with penalties, the limiter


@dataclass
class Bucket:
    """One client's counter for one bucket, plus its penalty state."""

    counter: WindowCounter
    blocked_until: float = -math.inf  # requests before this time are refused (and may escalate)
    blocked_at: float = -math.inf  # when the current block started or last escalated
    penalty: float = 0.0  # length of the current block (the last Retry-After given), seconds
    escalation_level: int = 0  # how many times the current block was doubled


@dataclass(frozen=True)
class Decision:
    """What the limiter says about one request."""

    allowed: bool
    retry_after: int = 0  # header value in whole seconds when refused
    reason: str | None = None  # RATE_REASON or QUOTA_REASON when refused
    escalated: bool = False  # the request was sent while a Retry-After was still running
    bucket: str = GLOBAL_BUCKET  # which bucket refused ("" = global)


ALLOWED = Decision(True)


@dataclass
class _ClientState:
    buckets: dict[str, Bucket] = field(default_factory=dict)
    quota_period: int = -1  # index of the period counted in quota_used
    quota_used: int = 0


class GroundTruth:
    """Every accepted request time, and the most accepted in any window position, incrementally.

    ``times`` keeps the first ``max_times`` accepted times (8 bytes each; ``truncated`` tells when
    more came), enough for any rate-limited run; ``max_in_window`` is always exact.
    """

    def __init__(self, window: float, max_times: int = 4_000_000) -> None:
        self.window = window
        self.max_times = max_times
        self.times = array("d")  # accepted request times, in order (the first max_times)
        self.truncated = False  # True when more than max_times were accepted
        self.count = 0  # accepted requests, all of them
        self._recent: deque[float] = deque()  # accepted times in (t - W, t]
        self.max_in_window = 0
        self.max_at = 0.0  # end time of a window holding max_in_window

    def record(self, now: float) -> None:
        self.count += 1
        if len(self.times) < self.max_times:
            self.times.append(now)
        else:
            self.truncated = True
        recent = self._recent
        recent.append(now)
        horizon = now - self.window
        while recent[0] <= horizon:
            recent.popleft()
        if len(recent) > self.max_in_window:
            self.max_in_window = len(recent)
            self.max_at = now


def max_in_any_window(times: Iterable[float], window: float) -> int:
    """Most of ``times`` (sorted ascending) inside any half-open window ``(t - window, t]``."""
    ts = list(times)
    best = 0
    lo = 0
    for hi, t in enumerate(ts):
        while ts[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


class RateLimiter:
    """Per-client hidden limit (global + endpoint buckets), penalties and quota.

    ``check(client, endpoint, now)`` decides and, when it accepts, records. All times are in the
    simulator's seconds; ``origin`` is the limiter's start (schedule, fixed windows and quota
    periods count from it).
    """

    def __init__(
        self,
        *,
        limit: int,
        window: float,
        origin: float,
        algorithm: Algorithm = Algorithm.SLIDING,
        schedule: Sequence[ScheduleStep] = (),
        penalty_cap: float = 86400.0,
        escalation_grace: float = 1.0,
        quota: int | None = None,
        quota_period: float = 86400.0,
        endpoint_limits: Mapping[str, int] | None = None,
        enabled: bool = True,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        if window <= 0:
            raise ValueError("window must be > 0")
        self.window = float(window)
        self.origin = origin
        self.algorithm = Algorithm(algorithm)
        self.schedule = LimitSchedule(limit, schedule)
        self.penalty_cap = penalty_cap
        self.escalation_grace = escalation_grace
        self.quota = quota
        self.quota_period = quota_period
        self.endpoint_limits = dict(endpoint_limits or {})
        self.enabled = enabled
        self._clients: dict[str, _ClientState] = {}
        # Ground truth and counters.
        self.truth = GroundTruth(window)
        self.truth_by_client: dict[str, GroundTruth] = {}
        self.accepted = 0
        self.rejected = 0
        self.rejected_quota = 0
        self.escalations = 0
        self.max_retry_after = 0
        #: Requests that arrived during a block, oldest first (the last 10,000):
        #: ``(time since origin, seconds since the block started or last grew, escalated)``.
        self.blocked_arrivals: deque[tuple[float, float, bool]] = deque(maxlen=10_000)

    # -- limits ----------------------------------------------------------------------------

    def limit_at(self, now: float) -> int:
        """The global limit in force at ``now``."""
        return self.schedule.at(now - self.origin)

    def set_limit(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.schedule.set(limit)

    def _new_counter(self, now: float, limit: int) -> WindowCounter:
        if self.algorithm is Algorithm.SLIDING:
            return SlidingLog(self.window)
        if self.algorithm is Algorithm.FIXED:
            return FixedWindow(self.window, self.origin)
        return TokenBucket(self.window, limit, now)

    def _client(self, client: str) -> _ClientState:
        state = self._clients.get(client)
        if state is None:
            state = self._clients[client] = _ClientState()
        return state

    def _bucket(self, state: _ClientState, name: str, now: float, limit: int) -> Bucket:
        bucket = state.buckets.get(name)
        if bucket is None:
            bucket = state.buckets[name] = Bucket(self._new_counter(now, limit))
        return bucket

    # -- the decision ----------------------------------------------------------------------

    def check(self, client: str, endpoint: str, now: float) -> Decision:
        """Decide on one request of ``client`` to ``endpoint`` at ``now``; record it if accepted."""
        if not self.enabled:
            self._accept(client, now)
            return ALLOWED
        state = self._client(client)
        global_limit = self.limit_at(now)
        touched: list[tuple[str, Bucket, int]] = [
            (GLOBAL_BUCKET, self._bucket(state, GLOBAL_BUCKET, now, global_limit), global_limit)
        ]
        endpoint_limit = self.endpoint_limits.get(endpoint)
        if endpoint_limit is not None:
            touched.append(
                (endpoint, self._bucket(state, endpoint, now, endpoint_limit), endpoint_limit)
            )

        # 1. Requests while a Retry-After runs: refused; escalate unless still in the grace.
        blocked = [(name, b) for name, b, _ in touched if now < b.blocked_until]
        if blocked:
            wait = 0.0
            wait_name = GLOBAL_BUCKET
            escalated = False
            into = max(now - b.blocked_at for _, b in blocked)
            for name, b in blocked:
                if now - b.blocked_at >= self.escalation_grace:
                    b.penalty = min(self.penalty_cap, max(b.penalty, 1.0) * 2.0)
                    b.escalation_level += 1
                    b.blocked_at = now
                    b.blocked_until = now + b.penalty
                    escalated = True
                if b.blocked_until - now > wait:
                    wait, wait_name = b.blocked_until - now, name
            if escalated:
                self.escalations += 1
            self.blocked_arrivals.append((now - self.origin, into, escalated))
            return self._refuse(RATE_REASON, wait, escalated=escalated, bucket=wait_name)

        # 2. Quota for the current period.
        if self.quota is not None:
            period = math.floor((now - self.origin) / self.quota_period)
            if period != state.quota_period:
                state.quota_period, state.quota_used = period, 0
            if state.quota_used >= self.quota:
                end = self.origin + (period + 1) * self.quota_period
                self.rejected_quota += 1
                return self._refuse(QUOTA_REASON, end - now)

        # 3. The windows: every bucket must admit.
        wait = 0.0
        refusing = GLOBAL_BUCKET
        for name, b, limit in touched:
            w = b.counter.admit(now, limit)
            if w > wait:
                wait, refusing = w, name
        if wait > 0.0:
            header = retry_after_header(wait)
            for name, b, limit in touched:
                if b.counter.admit(now, limit) > 0.0 or name == refusing:
                    b.blocked_at = now
                    b.blocked_until = now + header
                    b.penalty = float(header)
                    b.escalation_level = 0
            return self._refuse(RATE_REASON, float(header), bucket=refusing)

        # 4. Accepted: record everywhere.
        for _name, b, limit in touched:
            b.counter.record(now, limit)
            b.penalty = 0.0
            b.escalation_level = 0
        if self.quota is not None:
            state.quota_used += 1
        self._accept(client, now)
        return ALLOWED

    def _accept(self, client: str, now: float) -> None:
        self.accepted += 1
        self.truth.record(now)
        truth = self.truth_by_client.get(client)
        if truth is None:
            truth = self.truth_by_client[client] = GroundTruth(self.window)
        truth.record(now)

    def _refuse(
        self, reason: str, seconds: float, *, escalated: bool = False, bucket: str = GLOBAL_BUCKET
    ) -> Decision:
        header = retry_after_header(seconds)
        self.rejected += 1
        self.max_retry_after = max(self.max_retry_after, header)
        return Decision(False, header, reason, escalated, bucket)

    # -- reports ---------------------------------------------------------------------------

    def quota_used(self, client: str, now: float) -> int:
        state = self._clients.get(client)
        if state is None or self.quota is None:
            return 0
        period = math.floor((now - self.origin) / self.quota_period)
        return state.quota_used if period == state.quota_period else 0

    def penalties(self, now: float) -> list[dict[str, object]]:
        """Buckets whose Retry-After is still running at ``now``."""
        out: list[dict[str, object]] = []
        for client, state in self._clients.items():
            for name, b in state.buckets.items():
                if now < b.blocked_until:
                    out.append(
                        {
                            "client_id": client,
                            "bucket": name or "global",
                            "remaining_s": round(b.blocked_until - now, 3),
                            "penalty_s": b.penalty,
                            "escalation_level": b.escalation_level,
                        }
                    )
        return out

    def clear_penalties(self) -> None:
        """Forget every running Retry-After (the windows keep their counts)."""
        for state in self._clients.values():
            for b in state.buckets.values():
                b.blocked_until = -math.inf
                b.blocked_at = -math.inf
                b.penalty = 0.0
                b.escalation_level = 0

    def window_count(self, client: str, now: float) -> float:
        """What the client's global bucket counts at ``now`` (0 for an unknown client)."""
        state = self._clients.get(client)
        if state is None or GLOBAL_BUCKET not in state.buckets:
            return 0.0
        return state.buckets[GLOBAL_BUCKET].counter.count(now)
