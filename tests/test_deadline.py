"""RetryDeadline: what a 429 leaves in the store for every later process."""

from __future__ import annotations

import time

import pytest

from spotify_ingest.deadline import RetryDeadline, deadline_key, format_local


def test_a_deadline_round_trips_and_only_moves_later() -> None:
    first = RetryDeadline.after(30.0, "rate", "/v1/search")
    assert RetryDeadline.from_json(first.to_json()) == RetryDeadline(
        round(first.until, 3), "rate", "/v1/search", round(first.learned_at, 3)
    )
    sooner = RetryDeadline.after(5.0, "rate", "/v1/artists")
    assert sooner.later(first) is first and first.later(sooner) is first
    assert first.later(None) is first
    assert 29.0 < first.seconds_left() <= 30.0
    assert abs(first.monotonic() - (time.monotonic() + 30.0)) < 0.5


@pytest.mark.parametrize("value", [None, "x", {}, {"until": "soon", "kind": "rate"}, [1, 2]])
def test_an_unreadable_row_is_no_deadline(value: object) -> None:
    assert RetryDeadline.from_json(value) is None


def test_the_wait_is_named_with_its_local_end_and_source() -> None:
    deadline = RetryDeadline.after(60.0, "quota", "/v1/search")
    text = deadline.describe(earlier_run=True)
    assert text == (
        f"waiting for Spotify's quota to refill until {format_local(deadline.until)} "
        "(learned by an earlier run)"
    )
    assert "Retry-After" in RetryDeadline.after(1.0, "rate", "").describe()


def test_the_key_hides_the_client_id() -> None:
    key = deadline_key("my-client-id", "https://api.spotify.com/v1/")
    assert key.startswith("retry_deadline:") and key.endswith(":https://api.spotify.com/v1")
    assert "my-client-id" not in key
