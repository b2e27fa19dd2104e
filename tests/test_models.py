"""Decoding API bodies into the models: what is kept, dropped, flattened and refused."""

from __future__ import annotations

import re

import msgspec
import pytest

from spotify_ingest.models import (
    Artist,
    Followers,
    Page,
    SearchResult,
    decoder,
    parse_playlist_items,
)


def _page(items: str) -> bytes:
    return b'{"items": [' + items.encode() + b'], "total": 9, "limit": 3, "offset": 0}'


def test_null_items_are_dropped_and_followers_flattened() -> None:
    body = _page('null, {"id": "a1", "name": "A", "followers": {"href": null, "total": 5}}')
    page = decoder(Page[Artist]).decode(body)
    assert [a.id for a in page.items] == ["a1"]
    assert page.items[0].followers == 5
    assert page.items[0].follower_count == 5
    assert page.total == 9


def test_a_hand_built_artist_keeps_a_plain_count_and_flattens_a_nested_one() -> None:
    assert Artist(id="x", name="X", followers=7).follower_count == 7
    assert Artist(id="x", name="X", followers=Followers(total=3)).followers == 3


def test_unknown_fields_are_skipped() -> None:
    body = _page('{"id": "a", "name": "A", "available_markets": ["SE", "US"], "x": {"y": [1]}}')
    assert decoder(Page[Artist]).decode(body).items[0] == Artist(id="a", name="A")


@pytest.mark.parametrize(
    ("item", "where"),
    [
        ('{"id": "", "name": "A"}', "items[0].id"),  # an empty id
        ('{"name": "A"}', "items[0]"),  # no id at all
        ('{"id": "a", "name": "A", "popularity": -1}', "items[0].popularity"),
        ('{"id": "a", "name": "A", "followers": 9223372036854775808}', "items[0].followers"),
    ],
)
def test_a_body_of_the_wrong_shape_is_refused_with_the_place(item: str, where: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=re.escape(where)):
        decoder(Page[Artist]).decode(_page(item))


def test_a_cut_body_says_truncated() -> None:
    body = _page('{"id": "a", "name": "A"}')
    with pytest.raises(msgspec.DecodeError, match="truncated"):
        decoder(SearchResult).decode(body[:-5])


def test_playlist_entries_local_files_and_episodes_carry_no_track() -> None:
    entries = ",".join(
        [
            # a local file: null ids everywhere, which a Track would refuse
            '{"is_local": true, "track": {"id": null, "name": "demo",'
            ' "artists": [{"id": null, "name": "me"}], "album": {"id": null}}}',
            '{"item": {"type": "episode", "id": "e1", "name": "pod"}}',  # a podcast episode
            '{"track": null, "item": {"type": "track", "id": "t1", "name": "song",'
            ' "artists": [{"id": "a1", "name": "A"}]}, "added_at": "2026-01-01T00:00:00Z"}',
            '{"track": {"type": "track", "id": "t2", "name": "old",'
            ' "artists": [{"id": "a2", "name": "B"}]}}',  # before the move to "item"
            "null",
        ]
    )
    page = parse_playlist_items(_page(entries))
    assert [(e.is_local, e.track.id if e.track else None) for e in page.items] == [
        (True, None),
        (False, None),
        (False, "t1"),
        (False, "t2"),
    ]
    assert page.items[2].added_at == "2026-01-01T00:00:00Z"
    assert page.items[2].track is not None and page.items[2].track.artists[0].id == "a1"
    assert (page.total, page.limit, page.offset) == (9, 3, 0)
