"""The search planner's pieces on their own: the known-names index and the query tree's choices.

The crawl tests (``test_crawl.py``) run the same code end to end against the simulator; these pin
the rules the module docstrings state, with real SQLite and real search responses parsed by the
client's models.
"""

from __future__ import annotations

from spotify_ingest.discovery.known import KnownNames
from spotify_ingest.discovery.search import Alphabet, SearchPlan, search_task
from spotify_ingest.models import SearchResult


def _known(*names: str) -> KnownNames:
    known = KnownNames()
    known.add((f"id{i}", name, True) for i, name in enumerate(names))
    return known


def _page(query: str, names: list[str], total: int) -> SearchResult:
    items = [
        {
            "id": f"{query}{i}",
            "name": name,
            "type": "artist",
            "uri": f"spotify:artist:{query}{i}",
            "external_urls": {"spotify": "https://open.spotify.com/artist/x"},
            "href": "https://api.spotify.com/v1/artists/x",
            "genres": [],
            "images": [],
        }
        for i, name in enumerate(names)
    ]
    page = {"href": "h", "items": items, "limit": 10, "next": None, "offset": 0}
    page |= {"previous": None, "total": total}
    return SearchResult.model_validate({"artists": page})


def test_next_chars_are_the_characters_that_continue_a_prefix_in_held_words() -> None:
    known = _known("Maria Callas", "Max", "MA", "Mötley Crüe", "Moby", "Amaro")
    try:
        assert known.next_chars("ma") == {"r", "x"}  # "ma" itself continues with nothing
        assert known.next_chars("m") == {"a", "o"}  # "Mötley" is "motley" to search
        assert known.next_chars("c") == {"a", "r"}
        assert known.next_chars("amaro") == set()
        assert known.next_chars("z") == set()
    finally:
        known.close()


def test_a_split_node_queues_only_predicted_children_now_and_defers_the_rest() -> None:
    known = _known("Maria", "Marco", "Maxine")
    plan = SearchPlan(Alphabet(), limit=10, known=known)
    try:
        result = _page("ma", ["Malo", "Maria"], total=5000)  # over the reach: split
        outcome, _ = plan.outcome("ma", 0, "node", result)
    finally:
        known.close()
    now = {t.params["q"] for t in outcome.spawn if t.params["role"] == "node"}
    later = {t.params["q"] for t in outcome.spawn if t.params["role"] == "spec"}
    assert now == {"mal", "mar", "max"}  # held words and the page's own
    assert len(later) == 36 - 3 and "maz" in later and "ma0" in later
    node_priority = max(t.priority for t in outcome.spawn if t.params["role"] == "node")
    assert all(t.priority < 0 < node_priority for t in outcome.spawn if t.params["role"] != "node")


def test_a_speculative_child_runs_once_held_words_predict_it_and_waits_again_otherwise() -> None:
    known = _known("Maria")
    plan = SearchPlan(Alphabet(), limit=10, known=known)
    try:
        assert plan.defer_again("mar", "spec", again=False) is None  # predicted by now: run it
        later = plan.defer_again("maz", "spec", again=False)
        assert later is not None and later.params["again"] is True
        assert later.priority < search_task("maz", 0, 10, role="spec").priority
        assert plan.defer_again("maz", "spec", again=True) is None  # waits only once
        assert plan.defer_again("maz", "node", again=False) is None
    finally:
        known.close()


def test_exact_runs_wait_behind_every_speculative_child() -> None:
    exact = search_task("the", 10, 10, role="exact")
    spec = search_task("thez", 0, 10, role="spec", again=True)
    page = search_task("a", 10, 10)
    assert exact.priority < spec.priority < 0 < page.priority
