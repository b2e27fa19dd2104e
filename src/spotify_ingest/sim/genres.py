"""Genre vocabulary of the simulated catalog, grouped into families, and browse categories.

Families let the catalog pick secondary genres close to an artist's primary genre, make
collaborations prefer similar artists, and fill category playlists with fitting tracks. Script
families (``c-pop``, ``k-pop``, ``russian rap`` ...) go to artists whose names are in that script.
"""

from __future__ import annotations

__all__ = ["CATEGORIES", "FAMILIES", "GENRES", "GENRE_FAMILY", "SCRIPT_FAMILIES"]

# family -> genres, most common first (genre choice inside a family is Zipf-like)
FAMILIES: dict[str, tuple[str, ...]] = {
    "pop": (
        "pop", "dance pop", "indie pop", "electropop", "synth-pop", "art pop", "pop rap", "pop rock",
        "teen pop", "bedroom pop", "dream pop", "europop", "chamber pop", "power pop", "hyperpop",
        "bubblegum pop", "baroque pop", "sophisti-pop",
    ),
    "hip hop": (
        "hip hop", "rap", "trap", "melodic rap", "drill", "underground hip hop", "gangster rap",
        "conscious hip hop", "east coast hip hop", "west coast rap", "southern hip hop", "uk drill",
        "boom bap", "cloud rap", "emo rap", "alternative hip hop", "grime", "phonk", "crunk",
    ),
    "rock": (
        "rock", "alternative rock", "indie rock", "classic rock", "hard rock", "punk rock",
        "post-punk", "garage rock", "psychedelic rock", "progressive rock", "soft rock", "grunge",
        "blues rock", "shoegaze", "post-rock", "math rock", "stoner rock", "surf rock", "folk rock",
        "rockabilly", "pop punk",
    ),
    "metal": (
        "metal", "heavy metal", "metalcore", "death metal", "thrash metal", "black metal",
        "doom metal", "nu metal", "power metal", "progressive metal", "deathcore", "sludge metal",
    ),
    "electronic": (
        "edm", "house", "techno", "deep house", "tech house", "lo-fi beats", "ambient", "trance",
        "drum and bass", "dubstep", "progressive house", "electro", "downtempo", "synthwave",
        "future bass", "uk garage", "trip hop", "idm", "big room", "hardstyle", "chillwave",
        "minimal techno",
    ),
    "r&b": (
        "r&b", "contemporary r&b", "soul", "neo soul", "alternative r&b", "funk", "gospel",
        "quiet storm", "motown", "new jack swing",
    ),
    "latin music": (
        "reggaeton", "latin pop", "trap latino", "urbano latino", "latin hip hop", "bachata",
        "salsa", "cumbia", "regional mexican", "corridos", "banda", "merengue", "sertanejo",
        "bossa nova", "samba", "mpb", "tango", "flamenco",
    ),
    "country": (
        "country", "contemporary country", "country pop", "americana", "bluegrass",
        "outlaw country", "alt-country", "country rock", "honky tonk", "red dirt",
    ),
    "folk": (
        "singer-songwriter", "folk", "indie folk", "acoustic pop", "celtic", "stomp and holler",
        "chamber folk", "folk punk", "anti-folk",
    ),
    "jazz": (
        "jazz", "vocal jazz", "smooth jazz", "jazz fusion", "bebop", "cool jazz", "hard bop",
        "swing", "big band", "latin jazz", "acid jazz", "free jazz",
    ),
    "classical": (
        "classical", "orchestral", "film score", "opera", "baroque", "romantic era",
        "contemporary classical", "neoclassical", "minimalism", "choral", "video game music",
        "early music",
    ),
    "reggae": ("reggae", "dancehall", "roots reggae", "dub", "ska", "rocksteady", "lovers rock"),
    "world": (
        "afrobeats", "afropop", "amapiano", "bollywood", "highlife", "afrobeat", "bhangra",
        "desi hip hop", "turkish pop", "french pop", "chanson", "italian pop", "german pop",
        "schlager", "greek pop", "fado", "soukous", "filmi", "nordic folk",
    ),
    "chinese": ("c-pop", "mandopop", "cantopop", "chinese hip hop", "chinese indie"),
    "japanese": ("j-pop", "anime", "j-rock", "city pop", "j-rap", "vocaloid"),
    "korean": ("k-pop", "k-indie", "k-rap", "korean r&b", "k-ballad"),
    "russian": ("russian pop", "russian rap", "russian rock", "ukrainian pop", "russian indie", "estrada"),
    "arabic": ("arabic pop", "khaleeji", "arabic hip hop", "rai", "mahraganat", "egyptian pop"),
}

GENRES: tuple[str, ...] = tuple(g for genres in FAMILIES.values() for g in genres)
GENRE_FAMILY: tuple[str, ...] = tuple(f for f, genres in FAMILIES.items() for _ in genres)

# script -> (family, weight) for primary genres
SCRIPT_FAMILIES: dict[str, tuple[tuple[str, float], ...]] = {
    "latin": (
        ("pop", 22), ("hip hop", 18), ("rock", 14), ("electronic", 12), ("latin music", 8),
        ("r&b", 7), ("metal", 5), ("country", 5), ("folk", 4), ("world", 3), ("jazz", 2),
        ("classical", 2), ("reggae", 1),
    ),
    "han": (("chinese", 1.0),),
    "kana": (("japanese", 1.0),),
    "hangul": (("korean", 1.0),),
    "cyrillic": (("russian", 1.0),),
    "arabic": (("arabic", 1.0),),
}

# Browse categories: (id, name, families whose tracks fill its playlists; empty = any)
CATEGORIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("toplists", "Top Lists", ()),
    ("pop", "Pop", ("pop",)),
    ("hiphop", "Hip-Hop", ("hip hop",)),
    ("rock", "Rock", ("rock",)),
    ("latin", "Latin", ("latin music",)),
    ("edm_dance", "Dance/Electronic", ("electronic",)),
    ("rnb", "R&B", ("r&b",)),
    ("country", "Country", ("country",)),
    ("indie_alt", "Indie", ("rock", "folk")),
    ("metal", "Metal", ("metal",)),
    ("jazz", "Jazz", ("jazz",)),
    ("classical", "Classical", ("classical",)),
    ("reggae", "Reggae", ("reggae",)),
    ("afro", "Afro", ("world",)),
    ("kpop", "K-Pop", ("korean",)),
    ("anime", "Anime", ("japanese",)),
    ("chill", "Chill", ("electronic", "folk", "jazz")),
    ("workout", "Workout", ("hip hop", "electronic", "rock")),
    ("party", "Party", ("pop", "hip hop", "latin music", "electronic")),
    ("mood", "Mood", ()),
)
