"""The hidden rate limit on plain numbers: windows, Retry-After, penalties, quota, schedules."""

from __future__ import annotations

import random

import pytest

from spotify_ingest.sim.ratelimit import (
    QUOTA_REASON,
    RATE_REASON,
    Algorithm,
    GroundTruth,
    RateLimiter,
    ScheduleStep,
    max_in_any_window,
    parse_limit_schedule,
    retry_after_header,
)


def limiter(**kw: object) -> RateLimiter:
    args: dict[str, object] = {"limit": 5, "window": 30.0, "origin": 0.0}
    args.update(kw)
    return RateLimiter(**args)  # type: ignore[arg-type]


def test_retry_after_header_rounds_up_and_is_at_least_one() -> None:
    assert retry_after_header(0.0001) == 1
    assert retry_after_header(1.0) == 1
    assert retry_after_header(1.2) == 2
    assert retry_after_header(29.0) == 29


def test_sliding_log_counts_accepted_in_window_and_reports_oldest_exit() -> None:
    rl = limiter()
    for t in (0.0, 1.0, 2.0, 3.0, 4.0):
        assert rl.check("c", "artist", t).allowed
    d = rl.check("c", "artist", 10.0)
    assert not d.allowed and d.reason == RATE_REASON
    assert d.retry_after == 20  # oldest (t=0) leaves the window (0, 30] at t=30
    # Waiting exactly the Retry-After is enough: the window is (30-30, 30] without t=0.
    assert rl.check("c", "artist", 30.0).allowed
    assert rl.accepted == 6 and rl.rejected == 1 and rl.escalations == 0


def test_sliding_refusals_are_not_counted() -> None:
    rl = limiter(limit=2)
    assert rl.check("c", "x", 0.0).allowed
    assert rl.check("c", "x", 0.0).allowed
    assert rl.window_count("c", 0.0) == 2
    d = rl.check("c", "x", 0.5)
    assert not d.allowed and d.retry_after == 30
    assert rl.window_count("c", 0.5) == 2


def test_clients_have_their_own_buckets() -> None:
    rl = limiter(limit=1)
    assert rl.check("a", "x", 0.0).allowed
    assert not rl.check("a", "x", 0.1).allowed
    assert rl.check("b", "x", 0.1).allowed


def test_early_retry_doubles_the_penalty_each_time_up_to_the_cap() -> None:
    rl = limiter(limit=1, penalty_cap=100.0)
    assert rl.check("c", "x", 0.0).allowed
    first = rl.check("c", "x", 10.0)
    assert first.retry_after == 20 and not first.escalated
    # Sending again while the Retry-After runs: 2x, then 4x, ... capped at 100.
    second = rl.check("c", "x", 11.0)
    assert second.escalated and second.retry_after == 40
    third = rl.check("c", "x", 12.0)
    assert third.retry_after == 80
    fourth = rl.check("c", "x", 13.0)
    assert fourth.retry_after == 100
    assert rl.escalations == 3
    assert rl.max_retry_after == 100
    # The block runs from the last escalation: 13 + 100.
    assert not rl.check("c", "x", 112.9).allowed  # early again (escalates, stays capped)
    assert rl.check("c", "x", 112.9 + 100).allowed
    assert rl.penalties(112.9 + 100) == []


def test_requests_in_flight_within_the_grace_do_not_escalate() -> None:
    rl = limiter(limit=1, escalation_grace=1.0)
    assert rl.check("c", "x", 0.0).allowed
    first = rl.check("c", "x", 10.0)
    assert first.retry_after == 20
    # Sixteen workers' requests that were already on their way: same block, time left.
    for k in range(16):
        d = rl.check("c", "x", 10.0 + k * 0.05)
        assert not d.allowed and not d.escalated
        assert d.retry_after == retry_after_header(30.0 - (10.0 + k * 0.05))
    assert rl.escalations == 0
    # A client that saw the 429 and still sends: doubled.
    d = rl.check("c", "x", 11.5)
    assert d.escalated and d.retry_after == 40
    # And again only after another grace.
    assert not rl.check("c", "x", 12.0).escalated
    assert rl.check("c", "x", 12.5).retry_after == 80
    assert rl.escalations == 2


def test_requests_during_a_block_are_logged_with_how_far_into_it_they_came() -> None:
    rl = limiter(limit=1, escalation_grace=1.0)
    assert rl.check("c", "x", 0.0).allowed
    assert not rl.check("c", "x", 10.0).allowed  # the 429 that starts the block (20 s)
    assert list(rl.blocked_arrivals) == []  # the refusal that starts a block is not inside one
    rl.check("c", "x", 10.25)  # in flight: inside the grace
    rl.check("c", "x", 13.0)  # early: escalates, the block restarts at 13
    rl.check("c", "x", 13.5)
    assert list(rl.blocked_arrivals) == [
        (10.25, 0.25, False),
        (13.0, 3.0, True),
        (13.5, 0.5, False),
    ]
    assert rl.check("c", "x", 13.0 + 40.0).allowed  # after the block: not logged
    assert len(rl.blocked_arrivals) == 3


def test_zero_grace_escalates_every_early_request() -> None:
    rl = limiter(limit=1, escalation_grace=0.0, penalty_cap=1e9)
    assert rl.check("c", "x", 0.0).allowed
    assert rl.check("c", "x", 10.0).retry_after == 20
    assert rl.check("c", "x", 10.0).retry_after == 40
    assert rl.check("c", "x", 10.0).retry_after == 80


def test_waiting_the_retry_after_does_not_escalate() -> None:
    rl = limiter(limit=3)
    for t in (0.0, 0.5, 0.9):
        assert rl.check("c", "x", t).allowed
    d = rl.check("c", "x", 1.0)
    assert d.retry_after == 29
    assert rl.penalties(1.0)[0]["remaining_s"] == 29.0
    assert rl.check("c", "x", 1.0 + d.retry_after).allowed
    assert rl.escalations == 0


def test_fixed_window() -> None:
    rl = limiter(limit=2, algorithm=Algorithm.FIXED, window=10.0)
    assert rl.check("c", "x", 1.0).allowed
    assert rl.check("c", "x", 9.0).allowed
    d = rl.check("c", "x", 9.5)
    assert not d.allowed and d.retry_after == 1  # 0.5 s to the window end, rounded up
    # New window: two more, so 4 within 1.0 s around the boundary (the fixed-window weakness).
    assert rl.check("c", "x", 10.5).allowed
    assert rl.check("c", "x", 10.6).allowed
    assert rl.truth.max_in_window == 4


def test_token_bucket_refills_continuously() -> None:
    rl = limiter(limit=3, algorithm=Algorithm.TOKEN, window=30.0)  # 0.1 token/s
    for _ in range(3):
        assert rl.check("c", "x", 0.0).allowed
    d = rl.check("c", "x", 0.0)
    assert not d.allowed and d.retry_after == 10
    assert rl.check("c", "x", 10.0).allowed
    d = rl.check("c", "x", 15.0)  # half a token
    assert not d.allowed and d.retry_after == 5


def test_quota_per_period_with_reason_and_retry_after_to_period_end() -> None:
    rl = limiter(limit=1000, quota=3, quota_period=100.0)
    for t in (1.0, 2.0, 3.0):
        assert rl.check("c", "x", t).allowed
    d = rl.check("c", "x", 40.0)
    assert not d.allowed and d.reason == QUOTA_REASON and d.retry_after == 60
    assert not rl.check("c", "x", 41.0).escalated  # quota refusals do not escalate
    assert rl.quota_used("c", 50.0) == 3
    assert rl.check("c", "x", 100.0).allowed  # next period
    assert rl.quota_used("c", 100.0) == 1
    assert rl.rejected_quota == 2


def test_endpoint_bucket_blocks_only_its_endpoint() -> None:
    rl = limiter(limit=10, endpoint_limits={"search": 2})
    assert rl.check("c", "search", 0.0).allowed
    assert rl.check("c", "search", 1.0).allowed
    d = rl.check("c", "search", 2.0)
    assert not d.allowed and d.bucket == "search" and d.retry_after == 28
    assert rl.check("c", "artist", 2.5).allowed  # the other endpoint still answers
    assert rl.escalations == 0
    # Search requests count in the global bucket too.
    assert rl.window_count("c", 3.0) == 3
    assert rl.check("c", "search", 3.0).escalated


def test_parse_limit_schedule() -> None:
    assert parse_limit_schedule("") == ()
    steps = parse_limit_schedule("120:half, 240:double,300:x1.5,360:80")
    assert steps == (
        ScheduleStep(120.0, factor=0.5),
        ScheduleStep(240.0, factor=2.0),
        ScheduleStep(300.0, factor=1.5),
        ScheduleStep(360.0, absolute=80),
    )
    for bad in ("120", "a:half", "120:triple", "120:0", "120:x0", "60:50,30:20", "60:-5"):
        with pytest.raises(ValueError):
            parse_limit_schedule(bad)


def test_limit_schedule_changes_the_limit_over_time() -> None:
    rl = limiter(
        limit=100, origin=1000.0, schedule=parse_limit_schedule("120:half,240:double,300:7")
    )
    assert rl.limit_at(1000.0) == 100
    assert rl.limit_at(1119.9) == 100
    assert rl.limit_at(1120.0) == 50
    assert rl.limit_at(1240.0) == 100
    assert rl.limit_at(1300.0) == 7
    rl.set_limit(42)
    assert rl.limit_at(1400.0) == 42


def test_lowered_limit_waits_for_enough_entries_to_leave() -> None:
    rl = limiter(limit=4, schedule=parse_limit_schedule("10:2"))
    for t in (0.0, 1.0, 2.0, 3.0):
        assert rl.check("c", "x", t).allowed
    # At t=10 the limit is 2 with 4 in the window: entries at 0, 1, 2 must leave -> t=32.
    d = rl.check("c", "x", 10.0)
    assert d.retry_after == 22


def test_disabled_limiter_accepts_everything_and_keeps_ground_truth() -> None:
    rl = limiter(limit=1, enabled=False)
    for i in range(50):
        assert rl.check("c", "x", i * 0.01).allowed
    assert rl.truth.max_in_window == 50


def test_sliding_log_never_exceeds_limit_in_any_window() -> None:
    rng = random.Random(3)
    rl = limiter(limit=20, window=5.0)
    t = 0.0
    for _ in range(3000):
        t += rng.expovariate(10.0)
        rl.check("c", "x", t)
    times = list(rl.truth.times)
    assert max_in_any_window(times, 5.0) == rl.truth.max_in_window <= 20
    assert rl.truth.max_in_window == 20


def test_ground_truth_incremental_max_matches_brute_force() -> None:
    rng = random.Random(7)
    times = sorted(rng.uniform(0, 100) for _ in range(500))
    truth = GroundTruth(7.0)
    for t in times:
        truth.record(t)
    brute = max(sum(1 for s in times if t - 7.0 < s <= t) for t in times)
    assert truth.max_in_window == brute == max_in_any_window(times, 7.0)


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_every_algorithm_refuses_then_recovers_after_retry_after(algorithm: Algorithm) -> None:
    rl = limiter(limit=10, window=10.0, algorithm=algorithm)
    t = 0.0
    accepted = 0
    while True:
        d = rl.check("c", "x", t)
        if not d.allowed:
            break
        accepted += 1
        t += 0.01
    assert accepted >= 10
    assert rl.check("c", "x", t + d.retry_after).allowed
