"""Name generation for the simulated catalog: a word vocabulary, name templates, name tables.

A name is a *template* (``"{0}"``, ``"The {0} {1}"``, ``"DJ {0}"``, ``"{0} & the {1}"`` ...) plus up
to three *parts* taken from one shared list of display strings (the part vocabulary). Names are
stored as a template id (uint8) and part ids (int32, -1 = unused slot) - never as Python strings -
and rendered on demand with ``TEMPLATES[t].fmt.format(*parts)``.

Parts come in pools, each a contiguous id range:

* ``english`` / ``plural`` / ``given`` - fixed word lists (``Moon``, ``Roses``, ``Maria``);
* ``synth`` - pronounceable Latin words made of random syllables (``Valoren``), the bulk of
  names; the pool grows with the catalog so that identical names stay rare;
* ``accented`` - synthesized words with diacritics (``Sigúr``, ``Beyoncé``-like, ``Jøran``);
* ``styled`` - the shapes users meet: ``blink-182``, ``2Pac``, ``AC/DC``, ``P!nk``, ``Ke$ha``,
  ``MGMT``, ``D'Angelo``, ``will.i.am``, lowercase ``bbno``;
* ``letter`` / ``number`` - one-character names and numerals (``X``, ``7``, ``182``, ``1975``);
* ``han`` / ``kana`` / ``hangul`` / ``cyrillic`` / ``arabic`` - words in other scripts.

A pool is sampled with a skew (``start + floor(size * u ** skew)``, ``skew > 1`` favours the head),
which gives the "common names shared by a few dozen artists, most names unique" shape.

Every part is tokenised once (:func:`search_index.tokenize`) into ids of the global sorted
word vocabulary (a CSR part -> word ids), and gets a polynomial hash of its normalised word
sequence, so the search postings and the "identical normalised name" keys of millions of names
are computed with numpy from part ids alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from spotify_ingest.sim.search_index import Vocabulary, tokenize

__all__ = [
    "ALBUM_TEMPLATE_MIX",
    "ARTIST_LATIN_TEMPLATES",
    "COMPILATION_TEMPLATE_MIX",
    "TEMPLATES",
    "TRACK_TEMPLATE_MIX",
    "NameVocabulary",
    "Template",
    "build_vocabulary",
    "hash_tokens",
]

U64 = np.uint64
_M64 = (1 << 64) - 1
_HASH_BASE = 0x100000001B3  # FNV prime, odd: polynomial hash base


# --------------------------------------------------------------------------------------------------
# Word lists


def _word_list(text: str) -> list[str]:
    """Whitespace-separated words of a text block."""
    return text.split()


ENGLISH = _word_list(
    """
    Love Night Moon Sun Fire Rain River Ocean Sky Star Heart Soul Dream Light Shadow Black White
    Blue Red Gold Silver Velvet Echo Ghost Wolf Tiger Lion Eagle Raven Crow Dove Rose Lily Stone
    Glass Iron Steel Neon Electric Wild Golden Broken Lost Young Old New Last First Sweet Bitter
    Cold Warm Summer Winter Autumn Spring Morning Midnight Sunday Monday Friday Paradise Heaven
    Angel Devil Saint Sinner King Queen Prince Princess Empire Kingdom City Street Road Highway
    Desert Forest Mountain Valley Island Harbor Garden Window Mirror Door Home House Room Party
    Dance Disco Radio Video Tape Record Vinyl Rhythm Melody Harmony Chorus Song Ballad Blues
    Soul Fever Sugar Honey Candy Cherry Lemon Peach Apple Orange Wine Whiskey Coffee Smoke Dust
    Ash Thunder Lightning Storm Wind Wave Tide Flood Flame Spark Pulse Signal Static Circuit
    Machine Robot Rocket Planet Comet Galaxy Cosmic Orbit Satellite Future Memory Time Forever
    Never Always Tonight Tomorrow Yesterday Today Alive Free Lonely Happy Crazy Lucky Pretty
    Dirty Perfect Simple Secret Silent Loud Fast Slow High Low Deep Shallow Hollow Empty Full
    Little Big Tiny Giant Magic Mystic Holy Sacred Cosmic Crystal Diamond Pearl Ruby Jade Amber
    Coral Violet Scarlet Indigo Crimson Arctic Tropical Northern Southern Eastern Western Royal
    Rebel Outlaw Cowboy Pirate Sailor Soldier Hunter Dreamer Stranger Lover Fighter Runner Hero
    Legend Myth Story Tale Letter Promise Prayer Miracle Wonder Chance Fortune Destiny Gravity
    Horizon Sunrise Sunset Daylight Moonlight Starlight Firefly Butterfly Hurricane Avalanche
    Volcano Glacier Canyon Meadow Prairie Lagoon Bayou Delta Coast Shore Bridge Tower
    """
)

PLURAL = _word_list(
    """
    Roses Wolves Tigers Lions Eagles Ravens Crows Doves Stones Kings Queens Angels Devils Saints
    Sinners Strangers Lovers Fighters Runners Heroes Legends Dreamers Hunters Outlaws Cowboys
    Pirates Sailors Soldiers Rebels Ghosts Shadows Stars Hearts Souls Dreams Lights Waves Flames
    Sparks Signals Machines Robots Rockets Planets Comets Mirrors Doors Windows Streets Roads
    Cities Islands Mountains Valleys Rivers Oceans Storms Sparrows Foxes Bears Owls Snakes
    Monkeys Horses Bees Beetles Cats Dogs Birds Keys Guns Bones Hands Eyes Lips Teeth Kids Boys
    Girls Brothers Sisters Sons Daughters Strokes Killers Smiths Doors Cure Pixies Shins Knives
    """
)

GIVEN = _word_list(
    """
    John Maria David Anna Michael Sarah James Laura Robert Emma Daniel Sofia Carlos Ana Luis
    Elena Pedro Lucia Juan Paula Marco Giulia Luca Chiara Pierre Claire Louis Camille Hans Greta
    Lars Ingrid Sven Astrid Olaf Freya Ivan Olga Dmitri Natasha Ahmed Fatima Omar Leila Yusuf
    Aisha Kenji Yuki Hiro Sakura Min Jin Wei Mei Raj Priya Arjun Ananya Kwame Amara Kofi Zola
    Diego Valentina Mateo Camila Santiago Isabella Sebastian Gabriela Nico Lena Max Mia Leo Zoe
    Sam Alex Charlie Jamie Taylor Jordan Morgan Casey Riley Billie Frankie Johnny Bobby Tommy
    Jimmy Danny Eddie Freddie Marvin Otis Aretha Nina Etta Ella Billy Ray Willie Dolly Patsy
    Hank Buddy Elvis Chuck Stevie Janis Jimi Joni Carole Aaliyah Beyonce Rihanna Kanye Drake
    Shakira Selena Ariana Dua Lana Lorde Sia Adele Bruno Ed Harry Niall Zayn Justin Miley
    """
)

NUMBERS = tuple(
    [str(i) for i in range(1, 100)]
    + ["101", "112", "182", "311", "360", "404", "500", "808", "911", "999", "1000"]
    + [str(y) for y in range(1960, 2027, 3)]
)

HAN = (
    "周杰伦陈奕迅林俊杰王菲邓紫棋张学友刘德华梁静茹孙燕姿蔡依林李荣浩薛之谦毛不易华晨宇赵雷许巍朴树汪峰"
    "田馥甄五月天苏打绿草东没有派对告五人万能青年旅店新裤子痛仰乐队海龟先生春夏秋冬风花雪月山水云天"
    "龙凤金木土火光明星辰大小东西南北人心爱情梦想青春故事城市少年"
)
KANA = (
    "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワン"
    "ガギグゲゴザジズゼゾダデドバビブベボパピプペポ"
    "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわん"
)
CYRILLIC_ONSETS = (
    "б",
    "в",
    "г",
    "д",
    "ж",
    "з",
    "к",
    "л",
    "м",
    "н",
    "п",
    "р",
    "с",
    "т",
    "ф",
    "х",
    "ч",
    "ш",
    "",
)
CYRILLIC_VOWELS = ("а", "е", "и", "о", "у", "ы", "я", "ю", "ё")
CYRILLIC_CODAS = ("", "", "", "н", "р", "в", "й", "с", "л", "к")
ARABIC_LETTERS = "ابتثجحخدذرزسشصضطظعغفقكلمنهوي"
ARABIC_HARAKAT = "\u064e\u064f\u0650"  # fatha damma kasra: non-spacing marks, stripped by search

LATIN_ONSETS = (
    _word_list(
        """
    b c d f g h j k l m n p r s t v w z br cr dr fr gr kr pr tr st sk sl sh ch th ph qu bl cl fl
    gl pl sp sw tw y x
    """
    )
    + [""] * 4
)
LATIN_VOWELS = _word_list(
    """
    a e i o u a e i o a y ai ei ou ia io ea ee oo
    """
)
LATIN_CODAS = [
    "",
    "",
    "",
    "",
    "n",
    "r",
    "l",
    "s",
    "m",
    "x",
    "th",
    "nd",
    "rk",
    "nt",
    "ck",
    "ll",
    "ss",
]
ACCENTS = {
    "a": "áàâäãå",
    "e": "éèêë",
    "i": "íìîï",
    "o": "óòôöõø",
    "u": "úùûü",
    "n": "ñ",
    "c": "ç",
    "y": "ý",
}

# --------------------------------------------------------------------------------------------------
# Templates


@dataclass(frozen=True, slots=True)
class Template:
    """A name shape. ``fmt`` uses ``{0}``..``{2}`` for parts; literal words become searchable."""

    fmt: str
    slots: int

    def render(self, parts: list[str]) -> str:
        return self.fmt.format(*parts)


TEMPLATES: tuple[Template, ...] = (
    Template("{0}", 1),  # 0
    Template("{0} {1}", 2),  # 1
    Template("{0} {1} {2}", 3),  # 2
    Template("The {0}", 1),  # 3
    Template("The {0} {1}", 2),  # 4
    Template("DJ {0}", 1),  # 5
    Template("MC {0}", 1),  # 6
    Template("Lil {0}", 1),  # 7
    Template("Young {0}", 1),  # 8
    Template("{0} & the {1}", 2),  # 9
    Template("{0} and the {1}", 2),  # 10
    Template("{0} & {1}", 2),  # 11
    Template("{0} N' {1}", 2),  # 12
    Template("{0} Orchestra", 1),  # 13
    Template("{0} Trio", 1),  # 14
    Template("{0} Quartet", 1),  # 15
    Template("{0} Band", 1),  # 16
    Template("{0} Collective", 1),  # 17
    Template("{0} Ensemble", 1),  # 18
    Template("{0} (Remix)", 1),  # 19
    Template("{0} - Live", 1),  # 20
    Template("{0} {1} (Acoustic)", 2),  # 21
    Template("Intro", 0),  # 22
    Template("{0} Interlude", 1),  # 23
    Template("{0} (Deluxe Edition)", 1),  # 24
    Template("Live in {0}", 1),  # 25
    Template("{0} EP", 1),  # 26
    Template("Greatest Hits", 0),  # 27
    Template("{0} Hits", 1),  # 28
    Template("The Best of {0}", 1),  # 29
    Template("Essentials", 0),  # 30
    Template("{0} {1} Anthology", 2),  # 31
    Template("Hits {0}", 1),  # 32  (numbers: "Hits 2019")
    Template("Summer {0}", 1),  # 33
    Template("{0} of the {1}", 2),  # 34
    Template("{0} in the {1}", 2),  # 35
)

# Slot sources: (pool, weight, skew). A slot draws its pool by weight, then a part with the skew.
SlotMix = tuple[tuple[str, float, float], ...]
TemplateMix = tuple[tuple[int, float, tuple[SlotMix, ...]], ...]

_SINGLE_WORD: SlotMix = (
    ("synth", 0.70, 1.5),
    ("accented", 0.08, 1.3),
    ("english", 0.06, 1.0),
    ("given", 0.04, 1.0),
    ("styled", 0.08, 1.2),
    ("letter", 0.005, 1.0),
    ("number", 0.015, 1.0),
)
_GIVEN_OR_SYNTH: SlotMix = (("given", 0.5, 1.0), ("synth", 0.4, 1.5), ("accented", 0.1, 1.3))
_SURNAME: SlotMix = (("synth", 0.8, 1.6), ("accented", 0.2, 1.3))
_WORD: SlotMix = (("english", 0.6, 1.1), ("synth", 0.3, 1.5), ("accented", 0.1, 1.3))
_PLURAL: SlotMix = (("plural", 0.7, 1.0), ("synth", 0.3, 1.5))
_ENGLISH: SlotMix = (("english", 1.0, 1.1),)
_NUMBER: SlotMix = (("number", 1.0, 1.0),)

ARTIST_LATIN_TEMPLATES: TemplateMix = (
    (0, 0.44, (_SINGLE_WORD,)),
    (1, 0.15, (_GIVEN_OR_SYNTH, _SURNAME)),
    (1, 0.10, (_WORD, _WORD)),
    (2, 0.04, (_WORD, _WORD, _WORD)),
    (3, 0.06, (_PLURAL,)),
    (4, 0.03, (_ENGLISH, _PLURAL)),
    (5, 0.025, (_GIVEN_OR_SYNTH,)),
    (6, 0.007, (_GIVEN_OR_SYNTH,)),
    (7, 0.012, (_GIVEN_OR_SYNTH,)),
    (8, 0.006, (_GIVEN_OR_SYNTH,)),
    (9, 0.015, (_GIVEN_OR_SYNTH, _PLURAL)),
    (10, 0.006, (_GIVEN_OR_SYNTH, _PLURAL)),
    (11, 0.015, (_GIVEN_OR_SYNTH, _GIVEN_OR_SYNTH)),
    (12, 0.003, (_PLURAL, _PLURAL)),
    (13, 0.006, (_WORD,)),
    (14, 0.006, (_GIVEN_OR_SYNTH,)),
    (15, 0.003, (_WORD,)),
    (16, 0.006, (_GIVEN_OR_SYNTH,)),
    (17, 0.004, (_WORD,)),
    (18, 0.003, (_WORD,)),
)

_TITLE_WORD: SlotMix = (("english", 0.75, 1.2), ("synth", 0.2, 1.4), ("accented", 0.05, 1.3))
TRACK_TEMPLATE_MIX: TemplateMix = (
    (0, 0.45, (_TITLE_WORD,)),
    (1, 0.33, (_TITLE_WORD, _TITLE_WORD)),
    (2, 0.08, (_TITLE_WORD, _TITLE_WORD, _TITLE_WORD)),
    (34, 0.02, (_TITLE_WORD, _TITLE_WORD)),
    (35, 0.02, (_TITLE_WORD, _TITLE_WORD)),
    (19, 0.03, (_TITLE_WORD,)),
    (20, 0.02, (_TITLE_WORD,)),
    (21, 0.01, (_TITLE_WORD, _TITLE_WORD)),
    (22, 0.01, ()),
    (23, 0.01, (_TITLE_WORD,)),
)
ALBUM_TEMPLATE_MIX: TemplateMix = (
    (0, 0.40, (_TITLE_WORD,)),
    (1, 0.33, (_TITLE_WORD, _TITLE_WORD)),
    (2, 0.08, (_TITLE_WORD, _TITLE_WORD, _TITLE_WORD)),
    (4, 0.05, (_ENGLISH, _TITLE_WORD)),
    (24, 0.04, (_TITLE_WORD,)),
    (25, 0.02, (_TITLE_WORD,)),
    (26, 0.04, (_TITLE_WORD,)),
    (34, 0.04, (_TITLE_WORD, _TITLE_WORD)),
)
COMPILATION_TEMPLATE_MIX: TemplateMix = (
    (27, 0.25, ()),
    (28, 0.2, (_ENGLISH,)),
    (29, 0.15, (_ENGLISH,)),
    (30, 0.1, ()),
    (31, 0.1, (_ENGLISH, _ENGLISH)),
    (32, 0.1, (_NUMBER,)),
    (33, 0.1, (_ENGLISH,)),
)
# Other scripts: one or two words of the script's own pool.
SCRIPT_POOLS = ("latin", "han", "kana", "hangul", "cyrillic", "arabic")


def script_template_mix(pool: str, two_word_share: float) -> TemplateMix:
    word: SlotMix = ((pool, 1.0, 1.3),)
    return ((0, 1.0 - two_word_share, (word,)), (1, two_word_share, (word, word)))


# --------------------------------------------------------------------------------------------------
# Hashing helpers (uint64 arithmetic wraps, which is what we want)


def splitmix64(x: int) -> int:
    """SplitMix64 finaliser on a Python int (64-bit result)."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def splitmix64_np(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """SplitMix64 finaliser, vectorised."""
    with np.errstate(over="ignore"):
        z = x + U64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
        return z ^ (z >> U64(31))


def hash_tokens(token_ids: list[int]) -> int:
    """Polynomial hash of a word-id sequence: H(a+b) = H(a) * BASE**len(b) + H(b) (mod 2**64)."""
    h = 0
    for t in token_ids:
        h = (h * _HASH_BASE + splitmix64(t + 1)) & _M64
    return h


# --------------------------------------------------------------------------------------------------
# Vocabulary


@dataclass(slots=True)
class NameVocabulary:
    """Part list (display strings) with pools, word vocabulary and per-part word ids and hashes."""

    parts: list[str]
    pools: dict[str, tuple[int, int]]  # pool name -> (start, size)
    words: Vocabulary
    part_word_indptr: npt.NDArray[np.int64]  # CSR part -> word ids
    part_word_ids: npt.NDArray[np.int32]
    part_hash: npt.NDArray[np.uint64]  # polynomial hash of the part's word-id sequence
    part_nwords: npt.NDArray[np.int64]
    template_words: list[list[list[int]]]  # per template: word ids of the literal text per gap
    base_powers: npt.NDArray[np.uint64]  # _HASH_BASE ** k for k < 64

    def pick(
        self, pool: str, uniforms: npt.NDArray[np.float64], skew: float
    ) -> npt.NDArray[np.int32]:
        """Part ids from ``pool`` for uniforms in [0, 1): ``start + floor(size * u ** skew)``."""
        start, size = self.pools[pool]
        offs = np.minimum((size * uniforms**skew).astype(np.int64), size - 1)
        return (start + offs).astype(np.int32)

    def render(self, template: int, part_ids: tuple[int, int, int] | list[int]) -> str:
        tpl = TEMPLATES[template]
        return tpl.render([self.parts[p] for p in part_ids[: tpl.slots]])

    def name_words(
        self,
        templates: npt.NDArray[np.uint8],
        parts: npt.NDArray[np.int32],
        items: npt.NDArray[np.int64],
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]:
        """All (word id, item) pairs of a table of names (vectorised; duplicates possible)."""
        word_chunks: list[npt.NDArray[np.int32]] = []
        item_chunks: list[npt.NDArray[np.int64]] = []
        for slot in range(parts.shape[1]):
            p = parts[:, slot]
            used = p >= 0
            rows = p[used]
            starts = self.part_word_indptr[rows]
            lengths = self.part_word_indptr[rows + 1] - starts
            total = int(lengths.sum())
            if total == 0:
                continue
            ends = np.cumsum(lengths)
            offsets = np.repeat(starts - (ends - lengths), lengths) + np.arange(
                total, dtype=np.int64
            )
            word_chunks.append(self.part_word_ids[offsets])
            item_chunks.append(np.repeat(items[used], lengths))
        for t, gaps in enumerate(self.template_words):
            literal = [w for gap in gaps for w in gap]
            if not literal:
                continue
            members = items[templates == t]
            if len(members) == 0:
                continue
            word_chunks.append(np.tile(np.asarray(literal, dtype=np.int32), len(members)))
            item_chunks.append(np.repeat(members, len(literal)))
        if not word_chunks:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64)
        return np.concatenate(word_chunks), np.concatenate(item_chunks)

    def name_keys(
        self, templates: npt.NDArray[np.uint8], parts: npt.NDArray[np.int32]
    ) -> npt.NDArray[np.uint64]:
        """Hash of each name's normalised word sequence: equal keys = identical normalised names."""
        keys = np.zeros(len(templates), dtype=np.uint64)
        base = U64(_HASH_BASE)
        with np.errstate(over="ignore"):
            for t, gaps in enumerate(self.template_words):
                sel = np.flatnonzero(templates == t)
                if len(sel) == 0:
                    continue
                h = np.zeros(len(sel), dtype=np.uint64)
                for gap_index, gap in enumerate(gaps):
                    for w in gap:
                        h = h * base + U64(splitmix64(w + 1))
                    if gap_index < TEMPLATES[t].slots:
                        p = parts[sel, gap_index]
                        h = (
                            h * self.base_powers[np.minimum(self.part_nwords[p], 63)]
                            + self.part_hash[p]
                        )
                keys[sel] = h
        return keys


def _syllable_words(
    rng: np.random.Generator,
    count: int,
    onsets: Sequence[str],
    vowels: Sequence[str],
    codas: Sequence[str],
    max_syllables: int,
) -> list[str]:
    """Pronounceable lowercase words: 1..max_syllables syllables (two most often); the first and
    last syllables may end in a coda consonant, middle ones do not."""
    heads = [o + v for o in onsets for v in vowels]
    full = [h + c for h in heads for c in codas]
    n_syl = rng.integers(1, max_syllables + 1, size=count)
    n_syl = np.where(rng.random(count) < 0.45, 2, n_syl)
    first = rng.integers(0, len(full), size=count)
    middle = rng.integers(0, len(heads), size=count)
    last = rng.integers(0, len(full), size=count)
    out: list[str] = [""] * count
    for n in range(1, max_syllables + 1):
        sel = np.flatnonzero(n_syl == n)
        a, b, c = first[sel].tolist(), middle[sel].tolist(), last[sel].tolist()
        if n == 1:
            words = [full[x] for x in a]
        elif n == 2:
            words = [full[x] + full[z] for x, z in zip(a, c, strict=True)]
        else:
            words = [
                full[x] + heads[y] * (n - 2) + full[z] for x, y, z in zip(a, b, c, strict=True)
            ]
        for k, w in zip(sel.tolist(), words, strict=True):
            out[k] = w
    return out


def _accent(rng: np.random.Generator, words: list[str]) -> list[str]:
    out: list[str] = []
    picks = rng.integers(0, 1 << 30, size=(len(words), 2)).tolist()
    for w, (a, b) in zip(words, picks, strict=True):
        chars = list(w)
        candidates = [i for i, ch in enumerate(chars) if ch.lower() in ACCENTS]
        if not candidates:
            out.append(w + "é")
            continue
        i = candidates[a % len(candidates)]
        options = ACCENTS[chars[i].lower()]
        repl = options[b % len(options)]
        chars[i] = repl.upper() if chars[i].isupper() else repl
        out.append("".join(chars))
    return out


def _styled(rng: np.random.Generator, base: list[str]) -> list[str]:
    """Punctuation/digit shapes from base words: blink-182, 2Pac, AC/DC, P!nk, MGMT, D'Angelo..."""
    out: list[str] = []
    kinds = rng.integers(0, 11, size=len(base)).tolist()
    nums = rng.integers(1, 1000, size=len(base)).tolist()
    letters = rng.integers(0, 26, size=(len(base), 4)).tolist()
    upper = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for w, kind, num, ls in zip(base, kinds, nums, letters, strict=True):
        low = w.lower()
        if kind == 0:
            out.append(f"{low}-{num}")
        elif kind == 1:
            out.append(f"{num % 10}{w}")
        elif kind == 2:
            out.append(f"{upper[ls[0]]}{upper[ls[1]]}/{upper[ls[2]]}{upper[ls[3]]}")
        elif kind == 3:
            vowel_at = next((i for i, ch in enumerate(w) if ch in "aeiou" and i > 0), -1)
            out.append(w[:vowel_at] + "!" + w[vowel_at + 1 :] if vowel_at > 0 else w + "!")
        elif kind == 4:
            s_at = low.find("s", 1)
            out.append(w[:s_at] + "$" + w[s_at + 1 :] if s_at > 0 else w + "$")
        elif kind == 5:
            out.append("".join(upper[x] for x in ls[: 3 + num % 2]))
        elif kind == 6:
            out.append(f"{upper[ls[0]]}'{w}")
        elif kind == 7:
            out.append(".".join(low[i : i + 2] for i in range(0, min(len(low), 6), 2)))
        elif kind == 8:
            out.append(low)
        elif kind == 9:
            out.append(w.upper())
        else:
            out.append(f"{w} {num}")
    return out


def _script_words(rng: np.random.Generator, pool: str, count: int) -> list[str]:
    if pool in ("han", "kana"):
        alphabet = HAN if pool == "han" else KANA
        lengths = rng.integers(2, 5 if pool == "han" else 6, size=count).tolist()
        picks = rng.integers(0, len(alphabet), size=(count, 6)).tolist()
        return ["".join(alphabet[c] for c in picks[k][:n]) for k, n in enumerate(lengths)]
    if pool == "hangul":
        lengths = rng.integers(2, 5, size=count).tolist()
        lead = rng.integers(0, 19, size=(count, 4)).tolist()
        vowel = rng.integers(0, 21, size=(count, 4)).tolist()
        tail = rng.choice(np.array([0, 0, 0, 4, 8, 16, 21]), size=(count, 4)).tolist()
        return [
            "".join(
                chr(0xAC00 + (lead[k][s] * 21 + vowel[k][s]) * 28 + tail[k][s]) for s in range(n)
            )
            for k, n in enumerate(lengths)
        ]
    if pool == "cyrillic":
        words = _syllable_words(rng, count, CYRILLIC_ONSETS, CYRILLIC_VOWELS, CYRILLIC_CODAS, 3)
        return [w.capitalize() for w in words]
    # arabic: 3-6 letters, sometimes the article, sometimes a vowel mark
    lengths = rng.integers(3, 7, size=count).tolist()
    picks = rng.integers(0, len(ARABIC_LETTERS), size=(count, 6)).tolist()
    article = (rng.random(count) < 0.2).tolist()
    marks = rng.integers(0, 8, size=count).tolist()
    out: list[str] = []
    for k, n in enumerate(lengths):
        letters = [ARABIC_LETTERS[c] for c in picks[k][:n]]
        if marks[k] < len(ARABIC_HARAKAT):
            letters.insert(1, ARABIC_HARAKAT[marks[k]])
        out.append(("ال" if article[k] else "") + "".join(letters))
    return out


def build_vocabulary(rng: np.random.Generator, n_artists: int) -> NameVocabulary:
    """The part list for a catalog of ``n_artists`` (pool sizes grow with the catalog)."""
    scale = max(n_artists, 1)
    pools_raw: dict[str, list[str]] = {}
    pools_raw["english"] = list(dict.fromkeys(ENGLISH))
    pools_raw["plural"] = list(dict.fromkeys(PLURAL))
    pools_raw["given"] = list(dict.fromkeys(GIVEN))
    pools_raw["number"] = list(dict.fromkeys(NUMBERS))
    pools_raw["letter"] = list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    synth_count = max(6000, int(0.4 * scale))
    synth = _syllable_words(rng, synth_count, LATIN_ONSETS, LATIN_VOWELS, LATIN_CODAS, 3)
    pools_raw["synth"] = list(dict.fromkeys(w.capitalize() for w in synth if len(w) >= 2))
    accent_base = _syllable_words(
        rng, max(800, scale // 15), LATIN_ONSETS, LATIN_VOWELS, LATIN_CODAS, 3
    )
    pools_raw["accented"] = list(
        dict.fromkeys(_accent(rng, [w.capitalize() for w in accent_base if w]))
    )
    styled_base = _syllable_words(
        rng, max(400, scale // 60), LATIN_ONSETS, LATIN_VOWELS, LATIN_CODAS, 2
    )
    pools_raw["styled"] = list(
        dict.fromkeys(_styled(rng, [w.capitalize() for w in styled_base if w]))
    )
    for pool, share in (
        ("han", 40),
        ("kana", 40),
        ("hangul", 40),
        ("cyrillic", 25),
        ("arabic", 40),
    ):
        pools_raw[pool] = list(dict.fromkeys(_script_words(rng, pool, max(300, scale // share))))

    parts: list[str] = []
    pools: dict[str, tuple[int, int]] = {}
    for name, words in pools_raw.items():
        pools[name] = (len(parts), len(words))
        parts.extend(words)

    # one plain ASCII alphanumeric word per part in these pools: skip the regex tokenizer
    simple_pools = {"english", "plural", "given", "number", "letter", "synth"}
    part_tokens: list[list[str]] = []
    for name, words in pools_raw.items():
        if name in simple_pools:
            part_tokens.extend([w.lower()] for w in words)
        else:
            part_tokens.extend(tokenize(w) for w in words)
    template_gap_tokens = [[tokenize(gap) for gap in _template_gaps(t)] for t in TEMPLATES]
    all_tokens: set[str] = set()
    for toks in part_tokens:
        all_tokens.update(toks)
    for gaps in template_gap_tokens:
        for gap_tokens in gaps:
            all_tokens.update(gap_tokens)
    vocab = Vocabulary(all_tokens)
    word_id = {w: i for i, w in enumerate(vocab.words)}

    lengths = np.fromiter((len(t) for t in part_tokens), dtype=np.int64, count=len(parts))
    indptr = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    flat = np.asarray([word_id[w] for toks in part_tokens for w in toks], dtype=np.int32)
    powers = [1]
    for _ in range(63):
        powers.append((powers[-1] * _HASH_BASE) & _M64)
    base_powers = np.asarray(powers, dtype=np.uint64)
    # part hash = sum over its words of splitmix64(id + 1) * BASE ** (words after it), vectorised
    part_of = np.repeat(np.arange(len(parts), dtype=np.int64), lengths)
    after = indptr[part_of + 1] - 1 - np.arange(len(flat), dtype=np.int64)
    with np.errstate(over="ignore"):
        contrib = (
            splitmix64_np(flat.astype(np.uint64) + U64(1)) * base_powers[np.minimum(after, 63)]
        )
    part_hash = np.zeros(len(parts), dtype=np.uint64)
    np.add.at(part_hash, part_of, contrib)
    template_words = [[[word_id[w] for w in gap] for gap in gaps] for gaps in template_gap_tokens]
    return NameVocabulary(
        parts=parts,
        pools=pools,
        words=vocab,
        part_word_indptr=indptr,
        part_word_ids=flat,
        part_hash=part_hash,
        part_nwords=lengths,
        template_words=template_words,
        base_powers=base_powers,
    )


def _template_gaps(template: Template) -> list[str]:
    """Literal text around the slots: ``"{0} & the {1}"`` -> ``["", " & the ", ""]``."""
    gaps: list[str] = []
    rest = template.fmt
    for slot in range(template.slots):
        marker = "{" + str(slot) + "}"
        before, rest = rest.split(marker, 1)
        gaps.append(before)
    gaps.append(rest)
    return gaps


def generate_names(
    rng: np.random.Generator, vocab: NameVocabulary, mix: TemplateMix, count: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int32]]:
    """``count`` names drawn from a template mix: (template ids, part ids (count, 3), -1 unused)."""
    templates = np.zeros(count, dtype=np.uint8)
    parts = np.full((count, 3), -1, dtype=np.int32)
    if count == 0:
        return templates, parts
    weights = np.asarray([w for _, w, _ in mix], dtype=np.float64)
    choice = rng.choice(len(mix), size=count, p=weights / weights.sum())
    for k, (template, _, slot_mixes) in enumerate(mix):
        sel = np.flatnonzero(choice == k)
        if len(sel) == 0:
            continue
        templates[sel] = template
        for slot, slot_mix in enumerate(slot_mixes):
            parts[sel, slot] = pick_from_mix(rng, vocab, slot_mix, len(sel))
    return templates, parts


def pick_from_mix(
    rng: np.random.Generator, vocab: NameVocabulary, slot_mix: SlotMix, count: int
) -> npt.NDArray[np.int32]:
    out = np.empty(count, dtype=np.int32)
    weights = np.asarray([w for _, w, _ in slot_mix], dtype=np.float64)
    which = (
        rng.choice(len(slot_mix), size=count, p=weights / weights.sum())
        if len(slot_mix) > 1
        else np.zeros(count, dtype=np.int64)
    )
    uniforms = rng.random(count)
    for k, (pool, _, skew) in enumerate(slot_mix):
        sel = which == k
        out[sel] = vocab.pick(pool, uniforms[sel], skew)
    return out
