"""The quota pacer on virtual time: what a lockout teaches, and that the pacing never trips again.

The "server" in the long runs is the simulator's own limiter (``sim.ratelimit.RateLimiter``, a
quota per fixed period whose lockout ends with the period) or a quota counted over a rolling
period with a lockout of one period, both driven with explicit times.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import pytest

from spotify_ingest.crawler import estimate_key
from spotify_ingest.errors import MustWaitError
from spotify_ingest.quota import (
    CATALOG_ESTIMATE,
    MIN_EVIDENCE,
    QuotaPacer,
    days_left,
    describe,
    meta_key,
    round_period,
)
from spotify_ingest.ratecontrol import LimitEstimate
from spotify_ingest.sim.ratelimit import QUOTA_REASON, RateLimiter
from spotify_ingest.store.sqlite import SQLiteStore
from tests.reliability.harness import CLI, run_cli
from tests.sim.conftest import FakeClock

T0 = 1_000_000.0  # wall-clock epoch of the virtual runs


def pacer(bucket: float = 1.0, **kw: object) -> QuotaPacer:
    return QuotaPacer(bucket=bucket, clock=FakeClock(0.0), wall=lambda: T0, **kw)  # type: ignore[arg-type]


def warm_estimate() -> LimitEstimate:
    return LimitEstimate(limit=90, lower=90, upper=None, window=30.0, observed_at=time.time())


def spend(p: QuotaPacer, start: float, calls: int, rate: float) -> float:
    """``calls`` calls at ``rate`` per second from ``start``; returns the time of the last."""
    t = start
    for i in range(calls):
        t = start + i / rate
        p.record(t)
    return t


def test_a_lockout_teaches_budget_period_and_end() -> None:
    p = pacer()
    last = spend(p, T0, 2000, 20.0)  # 100 s of calls
    p.on_lockout(last + 1, 500.0)  # locked out 500 s: rounded up to a 10-minute period
    est = p.estimate
    assert (est.budget, est.period, est.lockouts) == (2000, 600.0, 1)
    assert est.lockout_until == last + 501
    assert est.allowance() == 1900
    assert p.delay(last + 2) == pytest.approx(499.0)


def test_after_the_lockout_calls_wait_for_old_ones_to_leave_the_period() -> None:
    p = pacer()
    last = spend(p, T0, 2000, 20.0)
    p.on_lockout(last + 1, 500.0)
    end = p.estimate.lockout_until
    # 101 calls must leave the period before the 1,901st: the 101st was sent at T0 + 5.0 s, in
    # bucket [T0 + 5, T0 + 6), which counts as sent at its end.
    assert p.delay(end) == pytest.approx(T0 + 6.0 + 600.0 - end)
    assert p.delay(T0 + 606.0) == 0.0


def test_the_other_requests_in_flight_meet_the_same_lockout_and_teach_nothing_more() -> None:
    p = pacer()
    last = spend(p, T0, 500, 50.0)
    p.on_lockout(last, 300.0)
    for i in range(15):
        p.on_lockout(last + 0.01 * i, 300.0)
    assert p.estimate.lockouts == 1
    assert p.estimate.budget == 500


def test_refused_calls_spend_no_budget() -> None:
    p = pacer()
    spend(p, T0, 300, 10.0)
    k = p.record(T0 + 31)
    p.unspent(k)
    p.on_lockout(T0 + 31, 60.0)
    assert p.estimate.budget == 300


def test_requests_in_flight_at_the_lockout_and_refused_after_it_are_not_budget() -> None:
    p = pacer()
    spend(p, T0, 300, 10.0)
    in_flight = [p.record(T0 + 30.5) for _ in range(8)]
    p.unspent(in_flight[0])
    p.on_lockout(T0 + 30.6, 60.0)
    assert p.estimate.budget == 307
    for k in in_flight[1:]:
        p.unspent(k)
    assert p.estimate.budget == 300


def test_too_few_calls_teach_the_lockout_only() -> None:
    p = pacer()
    spend(p, T0, MIN_EVIDENCE - 1, 1.0)
    p.on_lockout(T0 + 100, 3600.0)
    assert p.estimate.budget is None
    assert p.status(T0 + 200) is None
    assert p.delay(T0 + 200) == pytest.approx(3500.0)
    assert p.delay(T0 + 3700) == 0.0


def test_a_later_lockout_keeps_the_lowest_budget_and_the_longest_period() -> None:
    p = pacer()
    last = spend(p, T0, 1000, 10.0)
    p.on_lockout(last, 3000.0)  # 1 h
    t = p.estimate.lockout_until + 4000
    last = spend(p, t, 800, 10.0)
    p.on_lockout(last, 100.0)  # a 2-minute lockout: the period stays 1 h
    assert (p.estimate.budget, p.estimate.period, p.estimate.lockouts) == (800, 3600.0, 2)


def test_round_periods() -> None:
    assert [round_period(s) for s in (1, 7, 60, 61, 540, 599, 3599, 86000, 90000)] == [
        1, 10, 60, 300, 600, 600, 3600, 86400, 172800,
    ]  # fmt: skip


def test_a_saved_state_paces_a_new_run_no_earlier_than_the_old_one() -> None:
    p = pacer(bucket=0.5)
    last = spend(p, T0, 2000, 20.0)
    p.on_lockout(last + 1, 590.0)
    saved = p.to_json()
    assert len(saved["ledger"]["ends"]) <= 100 / 10 + 1  # merged into 10 s buckets
    q = pacer(bucket=0.25)
    q.load(saved)
    assert q.estimate == p.estimate
    for t in (T0 + 600, T0 + 605, T0 + 650, T0 + 700, T0 + 720):
        assert q.delay(t) >= p.delay(t)
    assert q.delay(T0 + 711) == 0.0  # every call counted as late as its 10 s bucket's end


def test_the_saved_ledger_forgets_calls_older_than_its_horizon_and_the_calls_given_back() -> None:
    p = pacer(bucket=3.0)
    spend(p, T0 - 30 * 3600, 100, 1.0)  # 30 h ago: past the 26 h kept
    spend(p, T0 - 3600, 100, 1.0)
    p.unspent(p.record(T0 - 10))
    saved = p.to_json()["ledger"]
    assert saved["bucket"] == 60.0
    assert sum(n for _, n in saved["ends"]) == 100
    assert saved["ends"][0][0] * 60.0 >= T0 - 3600


def test_unreadable_saved_states_are_ignored() -> None:
    for junk in (None, 3, "x", {"estimate": "x", "ledger": {"bucket": -1, "ends": [[1, 2]]}}):
        p = pacer()
        p.load(junk)
        assert p.estimate.budget is None and p.delay(T0) == 0.0


def test_status_and_the_days_left() -> None:
    p = pacer()
    last = spend(p, T0, 2000, 20.0)
    p.on_lockout(last, 600.0)
    status = p.status(last + 10)
    assert status is not None
    assert (status.allowance, status.left, status.lockout_until) == (1900, 0, last + 600)
    # The first calls leave the period at T0 + 601, but none may go before the lockout ends.
    assert status.next_refill == last + 600 and status.full_at == math.floor(last) + 1 + 600
    later = p.status(T0 + 1300)
    assert later is not None and later.left == 1900 and later.next_refill is None
    # 12M artists at 0.16 requests each: 1.92M calls, 1,900 per 10 minutes: 7.0 days.
    assert days_left(later, artists=0, requests_per_artist=0.16) == pytest.approx(
        CATALOG_ESTIMATE * 0.16 / 1900 * 600 / 86400
    )
    line = describe(later, artists=0, requests_per_artist=0.16)
    assert "1,900 of 1,900 calls left per 10m00s" in line
    assert "~7.0 days left for 12M artists (assumed)" in line


def test_take_waits_within_max_wait_and_stops_beyond_it() -> None:
    async def scenario() -> None:
        clock = FakeClock(0.0)
        waits: list[float] = []
        p = QuotaPacer(
            bucket=1.0, clock=clock, wall=lambda: T0, max_wait=60.0,
            on_wait=lambda left, reason: waits.append(left),
        )  # fmt: skip
        spend(p, T0, 100, 10.0)
        p.on_lockout(T0 + 10, 50.0)  # locked out 50 s; the period is a minute
        clock.t = 10.0
        # The lockout ends at T0 + 60, and the allowance (95 of the 100 calls per minute) is
        # spent until the first 10 calls leave the period at T0 + 61: 51 s within --max-wait.
        await p.take()
        assert clock.t == pytest.approx(61.0) and waits[0] == pytest.approx(50.0)
        for _ in range(94):
            await p.take()
        assert clock.t < 71.0
        p.max_wait = 5.0  # the next call must wait for those of T0 + 61 to leave, at T0 + 122
        with pytest.raises(MustWaitError, match="learned API quota"):
            await p.take()

    asyncio.run(scenario())


# ------------------------------------------------------------------------------------------------
# Long runs against a quota that the pacer does not know


class RollingQuota:
    """A quota over a rolling period: ``quota`` accepted calls in ``(t - P, t]``; past it, a
    lockout of one period."""

    def __init__(self, quota: int, period: float) -> None:
        self.quota, self.period = quota, period
        self.accepted: deque[float] = deque()
        self.locked_until = -math.inf
        self.refused = 0

    def check(self, t: float) -> float | None:
        """None: accepted; else the Retry-After."""
        while self.accepted and self.accepted[0] <= t - self.period:
            self.accepted.popleft()
        if t < self.locked_until:
            self.refused += 1
            return self.locked_until - t
        if len(self.accepted) >= self.quota:
            self.locked_until = t + self.period
            self.refused += 1
            return self.period
        self.accepted.append(t)
        return None


def run_against(
    check: Callable[[float], float | None], *, hours: float, rate: float, bucket: float = 1.0
) -> tuple[QuotaPacer, list[float], list[float]]:
    """A client sending at most ``rate`` calls per second through the pacer for ``hours``:
    returns the pacer, the times of the accepted calls and those of the lockouts."""
    p = pacer(bucket=bucket)
    accepted: list[float] = []
    lockouts: list[float] = []
    t, end = T0, T0 + hours * 3600
    while t < end:
        wait = p.delay(t)
        if wait > 0:
            t += wait
            continue
        k = p.record(t)
        retry_after = check(t)
        if retry_after is None:
            accepted.append(t)
        else:
            p.unspent(k)
            if not lockouts or t >= lockouts[-1]:
                lockouts.append(t + retry_after)
            p.on_lockout(t, retry_after)
        t += 1.0 / rate
    return p, accepted, lockouts


def per_period(times: list[float], origin: float, period: float) -> dict[int, int]:
    counts: dict[int, int] = {}
    for t in times:
        k = math.floor((t - origin) / period)
        counts[k] = counts.get(k, 0) + 1
    return counts


@pytest.mark.parametrize("started_into_period", [0, 200, 400, 500, 550, 590])
def test_a_fixed_period_quota_trips_at_most_twice_then_is_used_to_90_percent(
    started_into_period: float,
) -> None:
    """Starting at a period's start, the first lockout lasts about a period and teaches it. Later
    in a period, the first lockout teaches too short a period (200, 400: a lockout of 300 s) or a
    budget counted across two periods (500-590: up to 4,000): the second lockout corrects it."""
    origin = T0 - started_into_period
    limiter = RateLimiter(limit=10**9, window=1.0, origin=origin, quota=2000, quota_period=600.0)

    def check(t: float) -> float | None:
        d = limiter.check("c", "search", t)
        return None if d.allowed else float(d.retry_after)

    p, accepted, lockouts = run_against(check, hours=6, rate=20.0)
    assert len(lockouts) == (1 if started_into_period == 0 else 2)
    assert p.estimate.period == 600.0
    counts = per_period(accepted, origin, 600.0)
    after = math.ceil((lockouts[-1] - origin) / 600.0)
    full = [counts.get(k, 0) for k in range(after, max(counts))]
    assert len(full) >= 30 and min(full) >= 0.9 * 2000 and max(full) <= 2000


def test_a_rolling_quota_with_a_lockout_of_one_period_trips_once() -> None:
    server = RollingQuota(25_000, 86400.0)
    p, accepted, lockouts = run_against(server.check, hours=24 * 5, rate=5.0, bucket=3.0)
    assert len(lockouts) == 1, "tripped the quota again"
    assert p.estimate.period == 86400.0 and p.estimate.budget == 25_000
    after = [t for t in accepted if t >= lockouts[0]]
    days = (T0 + 5 * 86400 - lockouts[0]) / 86400
    assert len(after) / days >= 0.9 * 25_000


def test_quota_reason_is_the_simulators() -> None:
    from spotify_ingest.quota import QUOTA_REASON as OURS

    assert OURS == QUOTA_REASON


# ------------------------------------------------------------------------------------------------
# What `spotify-ingest limits` shows of a saved quota


def test_limits_shows_the_quota_left_its_refill_and_the_days_left(tmp_path: Path) -> None:
    db = tmp_path / "limits.db"
    api = "https://api.spotify.com/v1"
    now = time.time()
    p = QuotaPacer(bucket=3.0)
    spend(p, now - 4000, 25_000, 10.0)  # 2,500 s of calls, locked out 20 h 50 min ago
    p.on_lockout(now - 1400, 85_000.0)  # a day's period
    with SQLiteStore(db) as store:
        store.set_meta(estimate_key("an-app", api), json.loads(warm_estimate().to_json()))
        store.set_meta(meta_key(estimate_key("an-app", api)), p.to_json())
    text = run_cli([*CLI, "limits", "--db", str(db)], cwd=tmp_path)
    assert text.code == 0, text.stderr
    quota_line = text.stdout.splitlines()[1]
    assert quota_line.startswith("  quota: 0 of 23,750 calls left per 1d00h; locked out until ")
    assert "refills from " in quota_line
    as_json = run_cli([*CLI, "limits", "--db", str(db), "--json"], cwd=tmp_path)
    (row,) = json.loads(as_json.stdout)
    assert row["quota"]["estimate"]["budget"] == 25_000
    assert row["quota"]["status"]["left"] == 0
