"""How search sees a name: normalised words.

Spotify's search matches each query word as a prefix of a word of the name, ignoring case and
accents. A word here is a maximal run of letters and digits after NFKD decomposition, with the
non-spacing marks removed, and ``casefold`` (``Beyoncé`` -> ``beyonce``, ``AC/DC`` -> ``ac``,
``dc``); a run of CJK, kana, Cyrillic or Arabic letters is one word. The simulator's search index
folds names the same way (``tests/test_text.py`` holds the two to it). The discovery planner uses it
to build queries and the store to count the artists it already knows under a prefix.
"""

from __future__ import annotations

import functools
import re
import unicodedata

__all__ = ["name_words", "normalise"]


def normalise(text: str) -> str:
    """Strip accents and fold case: NFKD, drop the non-spacing marks, casefold.

    Decomposition comes first, so a compatibility form folds like its plain letter (``ᴬ`` -> ``a``,
    ``Ｆ`` -> ``f``); casefolding can yield letters that decompose again (rare), hence the
    second pass.
    """
    if text.isascii():  # most names: nothing to decompose, and casefold is lower
        return text.lower()
    folded = _strip_marks(unicodedata.normalize("NFKD", text)).casefold()
    if folded.isascii():
        return folded
    return _strip_marks(unicodedata.normalize("NFKD", folded))


def _strip_marks(text: str) -> str:
    return "".join(c for c in text if unicodedata.category(c) != "Mn")


# A run of characters for which str.isalnum() holds: \w is exactly those and "_".
_WORD = re.compile(r"[^\W_]+")


@functools.lru_cache(maxsize=1 << 17)
def name_words(name: str) -> tuple[str, ...]:
    """The distinct words search matches against, in order of first appearance.

    Cached: the same popular names come back on many pages of a crawl.
    """
    return tuple(dict.fromkeys(_WORD.findall(normalise(name))))
