"""The server's Retry-After as durable state: nothing is sent before a deadline anyone learned.

A 429 says "nothing before T". A process that forgets T (killed, stopped, or a new run started
before the printed time) sends its first request into the still-running block, which a server
with escalating penalties answers with a longer one. So every 429 is written down, before the
pause starts, as a :class:`RetryDeadline`: the absolute wall-clock time ``until``, its kind
(``rate``: the rolling window; ``quota``: the quota), the endpoint that met it and when it was
learned. It is a meta row per client id and API base (:func:`deadline_key`, next to the learned
limit), committed at once.

Every process reads it at start, before the token fetch and the capability probe: a deadline
further away than ``--max-wait`` ends the run at once (exit 75, naming the local time to come
back), a nearer one (or any, with ``--wait``) is waited out in view, and the rate controller starts
paused until it. Within one run the wall-clock deadline is turned into the monotonic clock once
(:meth:`RetryDeadline.monotonic`): a clock step during the run moves neither the pause nor the
countdown. A deadline only ever moves later (:meth:`RetryDeadline.later`), whoever learned it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import time
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "DEADLINE_PREFIX",
    "KINDS",
    "RetryDeadline",
    "deadline_key",
    "format_local",
    "load_deadline",
    "save_deadline",
]

DEADLINE_PREFIX = "retry_deadline"
KINDS = ("rate", "quota")


class _Meta(Protocol):
    def get_meta(self, key: str) -> Any: ...

    def set_meta(self, key: str, value: Any) -> None: ...

    def flush(self) -> None: ...


def deadline_key(client_id: str, api_base: str) -> str:
    """The meta key of the Retry-After deadline: per client id (hashed) and API base."""
    digest = hashlib.sha256(client_id.encode()).hexdigest()[:12]
    return f"{DEADLINE_PREFIX}:{digest}:{api_base.rstrip('/')}"


def format_local(epoch: float) -> str:
    """``14:32:05`` today, else ``2026-12-05 14:32:05``, in the local time zone."""
    moment = _dt.datetime.fromtimestamp(epoch).astimezone()
    if moment.date() == _dt.datetime.now().astimezone().date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class RetryDeadline:
    """Nothing may be sent to the API before ``until`` (epoch seconds, wall clock)."""

    until: float
    kind: str  # "rate" or "quota"
    endpoint: str
    learned_at: float  # epoch seconds

    @classmethod
    def after(cls, seconds: float, kind: str, endpoint: str) -> RetryDeadline:
        """The deadline of a 429 received now that says: wait ``seconds``."""
        now = time.time()
        return cls(until=now + max(0.0, seconds), kind=kind, endpoint=endpoint, learned_at=now)

    def seconds_left(self, now: float | None = None) -> float:
        return max(0.0, self.until - (time.time() if now is None else now))

    def monotonic(self) -> float:
        """``until`` on ``time.monotonic()``'s scale, for comparisons within this run."""
        return time.monotonic() + (self.until - time.time())

    def later(self, other: RetryDeadline | None) -> RetryDeadline:
        """Whichever of the two ends later (a deadline never moves earlier)."""
        return self if other is None or self.until >= other.until else other

    def describe(self, *, earlier_run: bool = False) -> str:
        """``waiting for Spotify's Retry-After until 14:32:05 (learned by an earlier run)``."""
        what = "quota to refill" if self.kind == "quota" else "Retry-After"
        source = " (learned by an earlier run)" if earlier_run else ""
        return f"waiting for Spotify's {what} until {format_local(self.until)}{source}"

    def to_json(self) -> dict[str, Any]:
        return {
            "until": round(self.until, 3),
            "kind": self.kind,
            "endpoint": self.endpoint,
            "learned_at": round(self.learned_at, 3),
        }

    @classmethod
    def from_json(cls, value: Any) -> RetryDeadline | None:
        """The stored deadline, or None for a missing or unreadable row (it is advice only)."""
        try:
            kind = str(value["kind"])
            return cls(
                until=float(value["until"]),
                kind=kind if kind in KINDS else "rate",
                endpoint=str(value.get("endpoint", "")),
                learned_at=float(value.get("learned_at", 0.0)),
            )
        except (TypeError, KeyError, ValueError, AttributeError):
            return None


def load_deadline(store: _Meta, key: str) -> RetryDeadline | None:
    return RetryDeadline.from_json(store.get_meta(key))


def save_deadline(store: _Meta, key: str, deadline: RetryDeadline) -> None:
    """Write the deadline and commit it at once (not left in a group of buffered writes)."""
    store.set_meta(key, deadline.to_json())
    store.flush()
