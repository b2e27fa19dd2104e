"""The search planner's pieces on their own: the known-names index and the query tree's choices.

The crawl tests (``test_crawl.py``) run the same code end to end against the simulator; these pin
the rules the module docstrings state, with real SQLite and real search responses parsed by the
client's models.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import pytest

from spotify_ingest.discovery import known as known_module
from spotify_ingest.discovery.known import KnownNames
from spotify_ingest.discovery.planner import Planner
from spotify_ingest.discovery.search import Alphabet, SearchPlan, search_task
from spotify_ingest.models import Artist, SearchResult, SimplifiedArtist
from spotify_ingest.store.base import TaskSpec
from spotify_ingest.store.sqlite import SQLiteStore


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
    return msgspec.convert({"artists": page}, SearchResult)


def test_next_chars_are_the_characters_that_continue_a_prefix_in_held_words() -> None:
    known = _known("Maria Callas", "Max", "MA", "Mötley Crüe", "Moby", "Amaro")
    try:
        assert known.next_chars("ma") == {"r", "x"}  # "ma" itself continues with nothing
        assert known.next_chars("m") == {"a", "o"}  # "Mötley" is "motley" to search
        assert known.next_chars("c") == {"a", "r"}
        assert known.next_chars("amaro") == set()
        assert known.next_chars("z") == set()
        for prefix in ("ma", "m", "c", "z"):  # one seek per child agrees with the whole scan
            for char in "abcdefghijklmnopqrstuvwxyz":
                assert known.has_prefix(prefix + char) == (char in known.next_chars(prefix))
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
    assert len(later) == 36 + 11 - 3 and {"maz", "ma0", "maø"} <= later  # ø does not fold to o
    node_priority = max(t.priority for t in outcome.spawn if t.params["role"] == "node")
    assert all(t.priority < 0 < node_priority for t in outcome.spawn if t.params["role"] != "node")


def test_a_speculative_child_runs_once_held_words_predict_it_and_waits_again_otherwise() -> None:
    known = _known("Maria")
    plan = SearchPlan(Alphabet(), limit=10, known=known)
    try:
        assert plan.defer_again("mar", 0, "spec", again=False) is None  # predicted: run it
        later = plan.defer_again("maz", 0, "spec", again=False)
        assert later is not None and later.params["again"] is True
        assert later.priority < search_task("maz", 0, 10, role="spec").priority
        assert plan.defer_again("maz", 0, "spec", again=True) is None  # waits only once
        assert plan.defer_again("maz", 0, "node", again=False) is None
    finally:
        known.close()


def test_deferred_tiers_speculative_exact_unpredicted_then_overflowing_exact() -> None:
    spec = search_task("thez", 0, 10, role="spec")
    exact = search_task("the", 10, 10, role="exact")
    again = search_task("thez", 0, 10, role="spec", again=True)
    late = search_task("the", 10, 10, role="exact", again=True)
    page = search_task("a", 10, 10)
    assert late.priority < again.priority < exact.priority < spec.priority < 0 < page.priority
    # within the tier: deepest first, then the parents interleaved (every parent's "a" child
    # before any parent's "b" child)
    tier = [search_task(q, 0, 10, role="spec", again=True).priority for q in ("tha", "cla", "thb")]
    shallower = search_task("za", 0, 10, role="spec", again=True).priority
    assert tier[0] == tier[1] > tier[2] > shallower


def test_an_exact_run_waits_until_last_when_it_would_overflow() -> None:
    known = _known(*[f"The Band{i}" for i in range(30)], "Solo")
    plan = SearchPlan(Alphabet(), limit=10, max_offset=20, known=known)  # reach 30
    try:
        later = plan.defer_again("the", 10, "exact", again=False)
        assert later is not None and later.params["again"] is True
        assert plan.defer_again("the", 20, "exact", again=False) is None  # a run under way
        assert plan.defer_again("solo", 10, "exact", again=False) is None  # fits: runs now
    finally:
        known.close()


def test_an_exact_run_queues_a_few_pages_ahead_and_stops_where_exact_matches_end() -> None:
    plan = SearchPlan(Alphabet(), limit=10)
    exact_page = _page("dj", [f"DJ Name{i}" for i in range(10)], total=2400)
    outcome, _ = plan.outcome("dj", 990, "exact", exact_page)
    assert [t.params["offset"] for t in outcome.spawn if t.params["q"] == "dj"] == [1000]
    assert [n.status for n in outcome.search_nodes] == []
    outcome, _ = plan.outcome("dj", 20, "exact", exact_page)
    assert [t.params["offset"] for t in outcome.spawn if t.params["q"] == "dj"] == [30, 40, 50, 60]
    mixed = _page("dj", ["DJ Name", "Djorn"], total=2400)
    outcome, _ = plan.outcome("dj", 30, "exact", mixed)
    assert [t for t in outcome.spawn if t.params["q"] == "dj"] == []
    outcome, _ = plan.outcome("dj", 1000, "exact", exact_page)
    assert [n.status for n in outcome.search_nodes] == ["overflow"]


def test_counts_under_a_prefix_stay_exact_as_artists_arrive() -> None:
    """The first count scans; later ones come from tracked counters: both must agree."""
    known = _known("Anna Bell", "Annabel", "Bella")
    try:
        assert known.count("an") == (2, 2)
        assert known.count("b") == (2, 2)  # "Anna Bell" and "Bella"
        known.add([("s1", "Anne Annika", False), ("id0", "Anna Bell", True)])  # one new, one held
        assert known.count("an") == (3, 2)  # two words under "an": counted once
        known.add([("s1", "Anne Annika", True)])  # now known in full
        assert known.count("an") == (3, 3)
        assert known.count("ann") == known._scan("ann") == (3, 3)
        known.add([("s2", "Bob", False), ("s2", "Bob", True)])  # twice in one page: full wins
        assert known.count("b") == known._scan("b") == (3, 3)
        assert known.fresh([("s2", True), ("zz", False)]) == ({"zz"}, set())
    finally:
        known.close()


def test_only_artists_identical_to_the_stored_ones_count_as_unchanged() -> None:
    def artist(popularity: int) -> Artist:
        return msgspec.convert(
            {"id": "id9", "name": "Cleo", "genres": ["pop"], "popularity": popularity,
             "followers": {"total": 5}, "images": [{"url": "u", "height": 1, "width": 1}]},
            Artist,
        )  # fmt: skip

    def unchanged(a: Artist | SimplifiedArtist) -> bool:  # the store need not see it
        return known.for_store([a]) == ([], frozenset())

    known = _known("Anna Bell")  # id0, full, stored before this process saw it
    try:
        assert not unchanged(artist(40))  # never seen
        known.add([("id9", "Cleo", True)])
        assert not unchanged(artist(40))  # held in full, but what it said is unknown
        known.stored([artist(40)])
        assert unchanged(artist(40))
        assert not unchanged(artist(41))  # a field changed: the store must see it
        assert unchanged(SimplifiedArtist(id="id9", name="Cleo"))  # nothing to add
        assert not unchanged(SimplifiedArtist(id="id5", name="Nobody"))
        known.forget_recent()  # forgotten: the store compares, as without the cache
        assert not unchanged(artist(40))
        assert unchanged(SimplifiedArtist(id="id9", name="Cleo"))  # held, SQLite says
        assert known.fresh([("id9", True)]) == (set(), set())  # still held, from SQLite
    finally:
        known.close()


def test_the_store_is_given_only_what_can_change_it_and_told_which_ids_are_new() -> None:
    full = msgspec.convert({"id": "id9", "name": "Cleo", "genres": ["pop"]}, Artist)
    known = _known("Anna Bell")  # id0, full
    try:
        known.add([("s1", "Bob", False)])
        page: list[Artist | SimplifiedArtist] = [
            full,  # never seen: kept, new
            SimplifiedArtist(id="s1", name="Bob"),  # held simplified: nothing to add
            SimplifiedArtist(id="id0", name="Anna Bell"),  # held full: nothing to add
            SimplifiedArtist(id="n2", name="Nina"),  # never seen: kept, new
            msgspec.convert({"id": "id0", "name": "Anna Bell"}, Artist),  # what it said: unknown
        ]
        for cached in (True, False):  # from the recent-ids cache, and from SQLite alone
            if not cached:
                known.forget_recent()
            kept, unseen = known.for_store(page)
            assert [(a.id, type(a).__name__) for a in kept] == [
                ("id9", "Artist"), ("n2", "SimplifiedArtist"), ("id0", "Artist")
            ]  # fmt: skip
            assert unseen == {"id9", "n2"}
        known.add([("id9", "Cleo", True)])
        known.stored([full])
        assert known.for_store([full]) == ([], frozenset())  # identical to what was stored
    finally:
        known.close()


def test_the_filter_of_held_ids_never_forgets_one_and_rarely_claims_a_new_one() -> None:
    from spotify_ingest.discovery.known import ID_FILTER_BITS_LOG2, _IdFilter

    ids = _IdFilter(ID_FILTER_BITS_LOG2)
    held = [f"held{i:06d}" for i in range(20_000)]
    for artist_id in held:
        ids.add(artist_id)
    assert all(artist_id in ids for artist_id in held)
    claimed = sum(f"new{i:06d}" in ids for i in range(20_000))
    assert claimed <= 20  # ~0 expected at 20,000 held in 2**25 bits; 0.1 % is generous


def test_load_rebuilds_in_chunks_what_add_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bulk rebuild at start and the crawl's own path answer every question alike."""
    monkeypatch.setattr(known_module, "LOAD_CHUNK", 3)  # several chunks, one partly filled
    rows = [("id0", "Anna Bell", True), ("id1", "Bell Anna Bell", False), ("id2", "Моя Bell", True),
            ("id3", "Annabel", True), ("id4", "Zed", False), ("id5", "An", True),
            ("id6", "Bellini", True)]  # fmt: skip
    loaded, added = KnownNames(), KnownNames()
    try:
        added.add(rows)
        assert loaded.count("an") == (0, 0)  # tracked before the load: kept up to date by it
        assert loaded.load(iter(rows)) == len(rows)
        for prefix in ("a", "an", "anna", "b", "bell", "belli", "м", "z", "q"):
            assert loaded.count(prefix) == added.count(prefix), prefix
            assert loaded.next_chars(prefix) == added.next_chars(prefix), prefix
        assert loaded.count("an") == (4, 3)  # Anna Bell, Bell Anna Bell, Annabel, An
        assert loaded.with_word("bell") == added.with_word("bell") == 3
        loaded.forget_recent()  # a loaded id is answered by SQLite and its filter
        asked = [("id1", True), ("id4", False), ("id0", True), ("new", True)]
        assert loaded.fresh(asked) == added.fresh(asked) == ({"new"}, {"id1"})
    finally:
        loaded.close()
        added.close()


def test_a_load_closed_half_way_leaves_the_index_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    """The crawl rebuilds the index a chunk per step, so that a stop can land between chunks;
    a load closed there undoes its staging (the index answers as before it began)."""
    monkeypatch.setattr(known_module, "LOAD_CHUNK", 2)
    rows = [(f"id{i}", name, True) for i, name in enumerate(["Anna", "Bell", "Cleo", "Dora", "Ed"])]
    known = _known("Zed")
    try:
        steps = known.load_in_steps(iter(rows))
        assert [next(steps), next(steps)] == [2, 4]  # a step a chunk
        steps.close()  # a stop between chunks
        assert not known._db.in_transaction  # staging undone, nothing left open
        assert known.count("a") == (0, 0) and known.count("z") == (1, 1)
        assert known.load(iter(rows)) == len(rows)  # a later load runs whole
        assert known.count("a") == (1, 1) and known.count("e") == (1, 1)
    finally:
        known.close()


def _cached(known: KnownNames, artist_id: str) -> bool:
    """Held, by the recent-ids cache."""
    return known._cached(artist_id) is not None


def test_held_ids_are_answered_from_memory_and_sqlite_alike() -> None:
    known = _known("Anna Bell")  # id0, full
    try:
        known.add([("s1", "Bob", False)])
        assert _cached(known, "s1") and _cached(known, "id0") and not _cached(known, "nobody")
        known.forget_recent()  # the cache is only a shortcut: SQLite answers the same
        assert not _cached(known, "s1")
        assert known.fresh([("s1", True), ("id0", True), ("new", False)]) == ({"new"}, {"s1"})
        assert _cached(known, "s1")  # looked up, so cached again
        known.add([("s1", "Bob", True)])
        assert known.fresh([("s1", True)]) == (set(), set())
    finally:
        known.close()


def test_scratch_folders_of_dead_crawls_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    root = Path(tempfile.gettempdir())
    dead = root / f"spotify-ingest-known-{gone.stdout.strip()}-test"
    alive = root / f"spotify-ingest-known-{os.getppid()}-test"  # our parent: alive
    for folder in (dead, alive):
        folder.mkdir(exist_ok=True)
        (folder / "known.db").write_bytes(b"x")
    try:
        known = KnownNames()
        known.close()
        assert not dead.exists()
        assert alive.exists()
    finally:
        shutil.rmtree(dead, ignore_errors=True)
        shutil.rmtree(alive, ignore_errors=True)


def test_children_after_a_small_script_are_its_whole_alphabet_not_only_pairs_seen() -> None:
    alphabet = Alphabet()
    alphabet.learn(["Мария"])  # seen: р after а
    likely, rest = alphabet.children("ма")
    assert likely == ["р"]
    assert "к" in rest and "р" not in rest and len(likely) + len(rest) == 31
    _, hangul_rest = alphabet.children("\u1100")  # after a lead consonant: the vowels
    assert "\u1161" in hangul_rest
    assert alphabet.children("王") == ([], [])  # CJK: only what was seen


def _exact_page(word: str, total: int) -> SearchResult:
    return _page(word, [f"{word.title()} Act{i}" for i in range(10)], total=total)


def test_an_overflowing_exact_run_pairs_its_word_with_every_word_that_overflowed_before() -> None:
    plan = SearchPlan(Alphabet(), limit=10, max_offset=20)  # reach 30
    first, _ = plan.outcome("young", 20, "exact", _exact_page("young", 100))
    assert [n.status for n in first.search_nodes] == ["overflow"]
    assert not [t for t in first.spawn if t.params["role"] == "pair"]  # nothing to pair with yet
    second, _ = plan.outcome("orchestra", 20, "exact", _exact_page("orchestra", 100))
    third, _ = plan.outcome("band", 20, "exact", _exact_page("band", 100))
    again, _ = plan.outcome("band", 20, "exact", _exact_page("band", 100))  # a repeat: no-op
    pairs = [t for o in (second, third, again) for t in o.spawn if t.params["role"] == "pair"]
    assert [t.params["q"] for t in pairs] == ["orchestra young", "band orchestra", "band young"]
    late = search_task("the", 10, 10, role="exact", again=True)
    assert all(t.priority < late.priority for t in pairs)  # after every other deferred tier
    fits, _ = plan.outcome("solo", 10, "exact", _exact_page("solo", 25))  # no overflow
    assert not [t for t in fits.spawn if t.params["role"] == "pair"]
    assert plan.overflowed == {"young", "orchestra", "band"}


def test_a_pair_is_paged_only_while_it_holds_artists_we_lack() -> None:
    known = _known("Young Orchestra", "Orchestra Young", "Young Band", "Young")
    plan = SearchPlan(Alphabet(), limit=10, max_offset=20, known=known)  # reach 30
    try:
        assert known.count_all(["young", "orchestra"]) == 2
        assert known.count_all(["young", "you"]) == 4  # one name word may match both
        page = _page("orchestra young", ["Young Orchestra"], total=3)  # id: "orchestra young0"

        def roles(total: int) -> tuple[list[str], list[int]]:
            out, _ = plan.outcome(
                "orchestra young",
                0,
                "pair",
                msgspec.structs.replace(
                    page, artists=msgspec.structs.replace(page.artists, total=total)
                ),
            )
            return [n.status for n in out.search_nodes], [
                int(t.params["offset"]) for t in out.spawn
            ]

        assert roles(3) == (["paging"], [])  # 2 held + 1 new on this page: complete
        assert roles(25) == (["paging"], [10, 20])  # still missing some: page it all
        assert roles(0) == (["empty"], [])
        assert roles(31) == (["overflow"], [])  # over the reach: name search cannot list them
        assert not plan.skippable("orchestra young", 10, "page", known)
    finally:
        known.close()


def test_letters_that_start_no_word_are_roots_only_once_a_name_starts_with_one() -> None:
    alphabet = Alphabet()
    opened = alphabet.open_script("KATAKANA")
    assert "ア" in opened and "カ" in opened
    assert "ッ" not in opened and "ャ" not in opened  # small kana modify the kana before them
    assert "ッ" in alphabet.learn(["ッポン"])  # a name that does start with one: queried after all
    assert "ъ" not in alphabet.open_script("CYRILLIC")


def test_the_planner_claims_a_backing_off_task_once_due_and_waits_only_for_kinds_it_runs(
    tmp_path: Path,
) -> None:
    with SQLiteStore(tmp_path / "plan.db") as store:
        store.add_tasks([TaskSpec("search", {"q": "a", "offset": 0}), TaskSpec("album", {"a": 1})])
        planner = Planner(store, frozenset({"search", "album"}), hydrate=False)
        search, album = planner.next_task(), planner.next_task()
        assert search is not None and album is not None and album.kind == "album"
        later = time.time() + 3600
        store.back_off(search, "ServerError 503: x", time.time() - 1, attempted=True)
        store.back_off(album, "ServerError 503: y", later, attempted=True)
        again = planner.next_task()
        assert again is not None and again.id == search.id  # due: pending again, claimed
        assert planner.next_task() is None  # the album task is not due
        assert planner.next_retry() == pytest.approx(later)
        planner.disable("album")  # its endpoint went away: nothing to wait for
        assert planner.next_retry() is None


def test_a_page_refused_at_the_end_of_the_reach_shrinks_it_and_splits_the_node() -> None:
    plan = SearchPlan(Alphabet(), limit=10)  # reach 1010
    plan.totals["c"] = 1010
    assert plan.refused("c", 0, 10, "node") is None  # a first page: not about the reach
    assert plan.refused("c", 500, 10, "page") is None  # well inside the reach
    outcome = plan.refused("c", 1000, 10, "page")
    assert outcome is not None and plan.max_offset == 990 and plan.reach == 1000
    assert [(n.query, n.status) for n in outcome.search_nodes] == [("c", "split")]
    children = {str(t.params["q"]) for t in outcome.spawn}
    assert {"ca", "cz", "c0"} <= children
    # An exact run refused there overflows and pairs its word; a pair is beyond the reach.
    plan.overflowed.add("the")
    exact = plan.refused("lil", 990, 10, "exact")
    assert exact is not None and exact.search_nodes[0].status == "overflow"
    assert [t.params["q"] for t in exact.spawn] == ["lil the"]
    pair = plan.refused("lil the", 990, 10, "page")
    assert pair is not None and pair.search_nodes[0].status == "overflow" and not pair.spawn
