"""Name words: the crawler must split and fold names exactly as the search it queries does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spotify_ingest.sim.search_index import tokenize
from spotify_ingest.text import name_words, normalise


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("AC/DC", ("ac", "dc")),
        ("Guns N' Roses", ("guns", "n", "roses")),
        ("blink-182", ("blink", "182")),
        ("Beyoncé", ("beyonce",)),
        ("Mötley Crüe", ("motley", "crue")),
        ("The The", ("the",)),
        ("周杰伦", ("周杰伦",)),
        ("a_b", ("a", "b")),
        ("ＡＢＣ", ("abc",)),  # full-width letters fold (NFKD)
        ("Straße", ("strasse",)),
        ("Sigur Rós", ("sigur", "ros")),
        ("Ørjan", ("ørjan",)),  # ø does not decompose
        ("", ()),
    ],
)
def test_name_words(name: str, words: tuple[str, ...]) -> None:
    assert name_words(name) == words


@given(st.text(max_size=30))
def test_the_words_are_the_simulators_words(name: str) -> None:
    assert list(name_words(name)) == list(dict.fromkeys(tokenize(name)))


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=30))
def test_ascii_takes_the_short_way_to_the_same_fold(name: str) -> None:
    assert normalise(name) == name.casefold()
