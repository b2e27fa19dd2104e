"""The simulator's scaled time as the contenders see it (no import of the simulator itself).

``SimTime(k).now()`` is ``time.monotonic() * k``, the same axis as the simulator's ``ScaledClock``
(``sim/app.py``); ``sleep`` waits ``seconds / k`` real seconds. It satisfies ``clock.Clock``, so
``SpotifyClient`` and ``RateController`` take it as their clock. Kept apart from ``sim.app`` so
that contender processes do not load the simulator (its imports would count in their RSS).
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["SimTime"]


class SimTime:
    """Monotonic time, ``scale`` simulated seconds per real second."""

    def __init__(self, scale: float) -> None:
        if not scale > 0:
            raise ValueError("scale must be > 0")
        self.scale = scale

    def now(self) -> float:
        return time.monotonic() * self.scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.scale)
