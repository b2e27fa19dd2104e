"""Realism knobs of the simulator: response latency and injected faults, from a seeded generator.

Latency (``latency_ms`` = mean in milliseconds, 0 = none): a lognormal body with sigma 0.5 whose
mean is ``latency_ms``, and a heavy tail: 1% of requests take 10x their drawn latency. The app
sleeps it with the injected clock, so a virtual clock makes it free in tests.

Faults, drawn once per accepted ``/v1`` request, mutually exclusive, in this order on one uniform
draw ``u``:

* ``u < fail_rate``: a 5xx answer, 500 / 502 / 503 equally likely, with Spotify's error object;
* then ``reset_rate``: the connection is reset without a response (see ``app.py`` for how);
* then ``truncate_rate``: a 200 whose JSON body is cut short (Content-Length matches the cut body,
  so only JSON parsing fails).

The generator is seeded from the simulator seed, so the same request sequence gets the same faults.
"""

from __future__ import annotations

import math
import random
from enum import Enum

__all__ = ["Fault", "FaultInjector", "LatencyModel"]

TAIL_PROBABILITY = 0.01  # share of requests in the slow tail
TAIL_FACTOR = 10.0  # how much slower a tail request is
SIGMA = 0.5  # lognormal shape of the latency body


class Fault(Enum):
    """A fault injected into one response."""

    ERROR_500 = 500
    ERROR_502 = 502
    ERROR_503 = 503
    RESET = "reset"
    TRUNCATE = "truncate"


SERVER_ERROR_MESSAGES = {
    500: "Server error.",
    502: "Bad gateway.",
    503: "Service unavailable",
}


class LatencyModel:
    """Lognormal latency with mean ``mean_ms`` plus a rare 10x tail; ``draw()`` is in seconds."""

    def __init__(self, mean_ms: float, rng: random.Random) -> None:
        self.mean_ms = mean_ms
        self._rng = rng
        # E[lognormal(mu, sigma)] = exp(mu + sigma^2 / 2); solve for mu so the body has mean_ms.
        self._mu = math.log(mean_ms) - SIGMA * SIGMA / 2 if mean_ms > 0 else 0.0

    def draw(self) -> float:
        if self.mean_ms <= 0:
            return 0.0
        ms = self._rng.lognormvariate(self._mu, SIGMA)
        if self._rng.random() < TAIL_PROBABILITY:
            ms *= TAIL_FACTOR
        return ms / 1000.0


class FaultInjector:
    """Draws the fault (or none) of each request from the configured rates."""

    def __init__(
        self, *, fail_rate: float, reset_rate: float, truncate_rate: float, rng: random.Random
    ) -> None:
        self.fail_rate = fail_rate
        self.reset_rate = reset_rate
        self.truncate_rate = truncate_rate
        self._rng = rng

    @property
    def active(self) -> bool:
        return self.fail_rate > 0 or self.reset_rate > 0 or self.truncate_rate > 0

    def draw(self) -> Fault | None:
        if not self.active:
            return None
        u = self._rng.random()
        if u < self.fail_rate:
            return self._rng.choice((Fault.ERROR_500, Fault.ERROR_502, Fault.ERROR_503))
        u -= self.fail_rate
        if u < self.reset_rate:
            return Fault.RESET
        u -= self.reset_rate
        if u < self.truncate_rate:
            return Fault.TRUNCATE
        return None

    def truncation_point(self, length: int) -> int:
        """Where to cut a body of ``length`` bytes: somewhere strictly inside it."""
        if length <= 1:
            return 0
        return self._rng.randrange(1, length)
