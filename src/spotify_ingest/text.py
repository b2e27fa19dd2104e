"""How search sees a name: normalised words.

Spotify's search matches each query word as a prefix of a word of the name, ignoring case and
accents. A word here is a maximal run of letters and digits after ``casefold`` and NFKD
decomposition with the combining marks removed (``Beyoncé`` -> ``beyonce``, ``AC/DC`` -> ``ac``,
``dc``); a run of CJK, kana, Cyrillic or Arabic letters is one word. The discovery planner uses it
to build queries and the store to count the artists it already knows under a prefix.
"""

from __future__ import annotations

import functools
import re
import unicodedata

__all__ = ["name_words", "normalise"]


def normalise(text: str) -> str:
    """Casefold and strip accents (NFKD without combining marks)."""
    if text.isascii():  # most names: nothing to decompose, and casefold is lower
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


# A run of characters for which str.isalnum() holds: \w is exactly those and "_".
_WORD = re.compile(r"[^\W_]+")


@functools.lru_cache(maxsize=1 << 17)
def name_words(name: str) -> tuple[str, ...]:
    """The distinct words search matches against, in order of first appearance.

    Cached: the same popular names come back on many pages of a crawl.
    """
    return tuple(dict.fromkeys(_WORD.findall(normalise(name))))
