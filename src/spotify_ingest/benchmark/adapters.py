"""Other rate-limiting policies behind spotify-ingest's client and planner (``RateControllerLike``).

Both adapters implement what ``SpotifyClient`` asks of a controller (``acquire``, ``on_success``,
``on_rate_limited``, ``on_no_response``, ``on_quota_exceeded``, ``release``, ``window``) and what
the crawler reads for its progress line (``estimate``, ``window_count``, ``paused_until``). With
them, the crawl differs from spotify-ingest's only in the pacing policy: same client (which still
waits out the Retry-After of the refused request before replaying it), same planner, same store.

``FixedRateController``: a cautious user's guess, ``aiolimiter.AsyncLimiter(60, W)``: at most 60
requests per window (60 per 30 s, scaled to the window's real length), a leaky bucket that lets a
full window's worth go at once. It knows nothing of 429s: other workers keep their pace while the
refused request waits.

``BotocoreAdaptiveController``: botocore's adaptive retry mode's client rate limiter
(``botocore.retries.adaptive.ClientRateLimiter``), wired exactly as
``botocore.retries.adaptive.register_retry_handler`` wires it: ``CubicCalculator`` (starting max
rate 0), ``TokenBucket(max_rate=1)``, ``RateClocker``; our 429 is its throttling error (a detector
that reads the flag we pass), every other answer and every transport failure a non-throttled
response, as botocore's ``needs-retry`` hook sees them. Its clock is the simulator's (``SimTime``
time, so rates are per simulated second and the CUBIC curve keeps its production shape). One
departure, for asyncio: ``on_sending_request`` blocks a thread on a condition variable whose
timeout is in real seconds, so ``acquire`` does the same non-blocking (``acquire(block=False)``,
then an asyncio sleep of the bucket's deficit / fill rate, in scaled time). Like botocore, it paces
nothing until the first throttle, and it does not read Retry-After.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from spotify_ingest.ratecontrol import LimitEstimate

from .clock import SimTime

__all__ = ["BotocoreAdaptiveController", "FixedRateController"]


class _SendLog:
    """Send times (scaled clock) of the last window, for ``window_count``."""

    def __init__(self, clock: SimTime, window: float) -> None:
        self.clock = clock
        self.window = window
        self.times: deque[float] = deque()

    def add(self) -> None:
        self.times.append(self.clock.now())

    def count(self) -> int:
        horizon = self.clock.now() - self.window
        while self.times and self.times[0] <= horizon:
            self.times.popleft()
        return len(self.times)


class FixedRateController:
    """``aiolimiter.AsyncLimiter`` at a fixed rate per window (see the module docstring)."""

    def __init__(self, rate_per_window: int, *, window: float, clock: SimTime) -> None:
        from aiolimiter import AsyncLimiter

        self.rate = rate_per_window
        self.window = window  # simulated seconds (the client scales its backoff with it)
        self._clock = clock
        self._limiter = AsyncLimiter(rate_per_window, window / clock.scale)
        self._log = _SendLog(clock, window)
        self.rate_limited = 0

    async def acquire(self) -> float:
        await self._limiter.acquire()
        self._log.add()
        return self._clock.now()

    def on_success(self, ticket: Any) -> None:
        pass

    def on_rate_limited(self, ticket: Any, retry_after: float | None) -> None:
        self.rate_limited += 1

    def on_quota_exceeded(self, ticket: Any, retry_after: float | None) -> None:
        self.rate_limited += 1

    def on_no_response(self, ticket: Any) -> None:
        pass

    def release(self, ticket: Any) -> None:
        pass

    @property
    def paused_until(self) -> float:
        return 0.0

    def window_count(self, now: float | None = None) -> int:
        return self._log.count()

    def estimate(self) -> LimitEstimate:
        return LimitEstimate(
            limit=self.rate, lower=0, upper=None, window=self.window, observed_at=time.time()
        )


class _BotocoreClock:
    """botocore's ``Clock`` interface on the simulator's scaled time."""

    def __init__(self, clock: SimTime) -> None:
        self._clock = clock

    def current_time(self) -> float:
        return self._clock.now()

    def sleep(self, amount: float) -> None:  # not used by the limiter's non-blocking path
        time.sleep(max(0.0, amount) / self._clock.scale)


class _FlagThrottlingDetector:
    """botocore's ``ThrottlingErrorDetector`` interface: our 429 is the throttling error."""

    def is_throttling_error(self, **kwargs: Any) -> bool:
        return bool(kwargs.get("throttled", False))


class BotocoreAdaptiveController:
    """botocore's adaptive ``ClientRateLimiter`` (see the module docstring)."""

    def __init__(self, *, window: float, clock: SimTime) -> None:
        from botocore.retries import adaptive, bucket, throttling

        self.window = window
        self._clock = clock
        bclock = _BotocoreClock(clock)
        self._bucket = bucket.TokenBucket(max_rate=1, clock=bclock)
        self._limiter = adaptive.ClientRateLimiter(
            rate_adjustor=throttling.CubicCalculator(
                starting_max_rate=0, start_time=bclock.current_time()
            ),
            rate_clocker=adaptive.RateClocker(bclock),
            token_bucket=self._bucket,
            throttling_detector=_FlagThrottlingDetector(),
            clock=bclock,
        )
        self._log = _SendLog(clock, window)
        self.rate_limited = 0
        self.throttle_events: list[tuple[float, float]] = []  # (sim time, new max rate)

    @property
    def enabled(self) -> bool:
        return bool(self._limiter._enabled)

    async def acquire(self) -> float:
        # ClientRateLimiter.on_sending_request: ``if self._enabled: self._token_bucket.acquire()``
        from botocore.exceptions import CapacityNotAvailableError

        while self.enabled:
            try:
                self._bucket.acquire(block=False)
                break
            except CapacityNotAvailableError:
                rate = float(self._bucket.max_rate)
                deficit = max(0.0, 1.0 - float(self._bucket.available_capacity))
                await self._clock.sleep(max(deficit / rate, 1e-3))
        self._log.add()
        return self._clock.now()

    def _response(self, throttled: bool) -> None:
        self._limiter.on_receiving_response(throttled=throttled)

    def on_success(self, ticket: Any) -> None:
        self._response(False)

    def on_rate_limited(self, ticket: Any, retry_after: float | None) -> None:
        self.rate_limited += 1
        self._response(True)
        self.throttle_events.append((self._clock.now(), float(self._bucket.max_rate)))

    def on_quota_exceeded(self, ticket: Any, retry_after: float | None) -> None:
        self.on_rate_limited(ticket, retry_after)

    def on_no_response(self, ticket: Any) -> None:
        self._response(False)

    def release(self, ticket: Any) -> None:
        pass

    @property
    def paused_until(self) -> float:
        return 0.0

    def window_count(self, now: float | None = None) -> int:
        return self._log.count()

    def estimate(self) -> LimitEstimate:
        rate = float(self._bucket.max_rate) if self.enabled else 0.0
        per_window = max(1, round(rate * self.window))
        return LimitEstimate(
            limit=per_window, lower=0, upper=None, window=self.window, observed_at=time.time()
        )
