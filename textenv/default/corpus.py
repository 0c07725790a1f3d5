"""Synthetic movie reviews: a small seeded grammar with a sentiment lexicon.

The grammar is the single source of truth for two things: the corpus the SFT model is trained on, and the
gold judge's notion of a well-formed sentence (``judge.py`` compiles these same templates into regular
expressions). A review is 1-3 short sentences; the first is an "opener" (it names the film), the others
are "follow-ups" (acting, plot, music, ...). Every sentiment slot draws its polarity on its own, so one
review can mix praise and complaint, and the corpus -- and the SFT model trained on it -- covers the whole
range from glowing to scathing. That spread is what leaves PPO room to raise the reward.

    >>> reviews = generate_reviews(3, seed=0)
    >>> reviews.column_names
    ['text', 'label', 'sentiment']
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

# ---- lexicon -------------------------------------------------------------------------------------------

GENRES = ("movie", "film", "thriller", "comedy", "drama", "western", "musical", "documentary", "romance",
          "mystery", "sequel", "cartoon")
PLOTS = ("a lonely detective", "two old friends", "a small town", "a stolen painting", "a family reunion",
         "a haunted house", "a young chef", "a long journey", "a broken robot", "a missing dog", "a rock band",
         "a bank robbery", "a space station", "a retired teacher", "a secret garden", "an old boxer")
ACTORS = ("Anna Berg", "Tom Hale", "Maria Lopez", "Sam Reed", "Lena Park", "Omar Khan", "Julia Stone",
          "Ben Carter", "Nina Cole", "Leo Grant")
ROLES = ("the detective", "the villain", "the mother", "the hero", "the captain", "the chef", "the teacher",
         "the stranger", "the king", "the pilot")
ASPECTS = ("acting", "plot", "script", "music", "ending", "dialogue", "pacing", "soundtrack", "cast", "story",
           "direction", "camera work")
ADVERBS = ("very", "really", "quite", "truly", "rather")

# Sentiment-bearing phrases by polarity. The judge counts the head words of the positive and negative
# phrases (``POSITIVE_WORDS`` / ``NEGATIVE_WORDS`` below).
ADJECTIVES = {
    "positive": ("great", "wonderful", "brilliant", "superb", "delightful", "charming", "moving", "beautiful",
                 "excellent", "clever", "gripping", "stunning", "fantastic", "touching"),
    "negative": ("boring", "dull", "awful", "terrible", "weak", "clumsy", "tedious", "bland", "messy",
                 "painful", "forgettable", "predictable", "horrible", "lifeless"),
    "neutral": ("long", "short", "quiet", "loud", "simple", "familiar", "unusual", "modern", "dark", "calm",
                "strange", "ordinary"),
}
VERBS = {
    "positive": ("loved", "enjoyed", "adored", "liked", "admired"),
    "negative": ("hated", "disliked", "loathed", "resented"),
    "neutral": ("watched", "saw", "rented", "remember"),
}
NOUNS = {
    "positive": ("a masterpiece", "a delight", "a joy", "a treat", "a gem", "a triumph"),
    "negative": ("a mess", "a disaster", "a bore", "a failure", "a letdown", "a waste of time"),
    "neutral": ("an experiment", "a long ride", "a period piece", "a family affair"),
}
POLARITIES = ("positive", "negative", "neutral")

# ---- grammar -------------------------------------------------------------------------------------------
# Slots in braces. ADJ / VERB / NOUN carry sentiment; ADJ_CONTRAST is an ADJ whose polarity is the
# opposite of the sentence's previous sentiment slot (what "but" promises).
OPENERS = (
    "The {GENRE} was {ADJ}.",
    "This {GENRE} was {ADJ}.",
    "The {GENRE} about {PLOT} was {ADJ}.",
    "This {GENRE} about {PLOT} was {ADJ}.",
    "I {VERB} this {GENRE}.",
    "I {VERB} this {GENRE} about {PLOT}.",
    "{ACTOR} was {ADJ} as {ROLE}.",
)
FOLLOWUPS = (
    "The {ASPECT} was {ADJ}.",
    "The {ASPECT} was {ADJ} and the {ASPECT} was {ADJ}.",
    "The {ASPECT} was {ADJ} but the {ASPECT} was {ADJ_CONTRAST}.",
    "It was {NOUN}.",
    "{ACTOR} was {ADJ} as {ROLE}.",
    "I {VERB} it.",
    "Overall, it was {ADJ}.",
)
SENTIMENT_SLOTS = ("ADJ", "ADJ_CONTRAST", "VERB", "NOUN")
PLAIN_SLOTS = {"GENRE": GENRES, "PLOT": PLOTS, "ACTOR": ACTORS, "ROLE": ROLES, "ASPECT": ASPECTS}
_SLOT = re.compile(r"\{([A-Z_]+)\}")


def _sentiment_words(polarity: str) -> frozenset[str]:
    # A noun phrase counts through its head word ("a waste of time" -> "waste").
    heads = {"a waste of time": "waste"}
    nouns = {heads.get(p, p.split()[-1]) for p in NOUNS[polarity]}
    return frozenset(ADJECTIVES[polarity]) | frozenset(VERBS[polarity]) | frozenset(nouns)


# The words the judge counts (lower case); neutral words count for nothing.
POSITIVE_WORDS = _sentiment_words("positive")
NEGATIVE_WORDS = _sentiment_words("negative")


# ---- generation ----------------------------------------------------------------------------------------


@dataclass
class CorpusConfig:
    """How the synthetic reviews are drawn."""

    review_mix: tuple[float, float, float] = (0.4, 0.4, 0.2)
    """Probability that a review is mostly positive, mostly negative, or mixed."""
    slot_positive: tuple[float, float, float] = (0.85, 0.15, 0.5)
    """For each review kind above: probability that a non-neutral sentiment slot is positive."""
    neutral_slot: float = 0.15
    """Probability that a sentiment slot takes a neutral word, whatever the review kind."""
    sentences: tuple[float, float, float] = (0.3, 0.45, 0.25)
    """Probability of 1, 2 or 3 sentences."""
    adverb: float = 0.3
    """Probability that an adjective gets an intensifier ("very", "quite", ...)."""


def _fill(template: str, rng: random.Random, p_positive: float, cfg: CorpusConfig) -> tuple[str, int]:
    """Fill one template. Returns the sentence and the word index where its first sentiment slot starts."""
    words: list[str] = []
    first_sentiment = -1
    previous = "neutral"
    for piece in re.split(r"(\{[A-Z_]+\})", template):
        slot = _SLOT.fullmatch(piece)
        if not slot:
            words.extend(piece.split())
            continue
        name = slot.group(1)
        if name in PLAIN_SLOTS:
            words.extend(rng.choice(PLAIN_SLOTS[name]).split())
            continue
        if first_sentiment < 0:
            first_sentiment = len(words)
        if name == "ADJ_CONTRAST" and previous != "neutral":
            polarity = "negative" if previous == "positive" else "positive"
        elif rng.random() < cfg.neutral_slot:
            polarity = "neutral"
        else:
            polarity = "positive" if rng.random() < p_positive else "negative"
        previous = polarity
        if name == "VERB":
            phrase = rng.choice(VERBS[polarity])
        elif name == "NOUN":
            phrase = rng.choice(NOUNS[polarity])
        else:
            phrase = rng.choice(ADJECTIVES[polarity])
            if rng.random() < cfg.adverb:
                phrase = f"{rng.choice(ADVERBS)} {phrase}"
        words.extend(phrase.split())
    # Punctuation right after a slot ("{ADJ}.") comes out of the split as a word of its own; reattach it.
    sentence = " ".join(words).replace(" .", ".").replace(" ,", ",")
    return sentence, first_sentiment


def _review(rng: random.Random, cfg: CorpusConfig) -> tuple[str, str]:
    """One review and its prompt (the opener's words before its first sentiment slot, at least one)."""
    kind = rng.choices(range(3), weights=cfg.review_mix)[0]
    p_positive = cfg.slot_positive[kind]
    n = rng.choices((1, 2, 3), weights=cfg.sentences)[0]
    opener, cut = _fill(rng.choice(OPENERS), rng, p_positive, cfg)
    sentences = [opener]
    while len(sentences) < n:
        sentence = _fill(rng.choice(FOLLOWUPS), rng, p_positive, cfg)[0]
        if sentence not in sentences:  # a repeated sentence is what the judge calls disfluent
            sentences.append(sentence)
    # Prompts stop before any sentiment word, so the sentiment is the completion's to choose.
    k = rng.randint(min(2, cut), cut)
    prompt = " ".join(opener.split()[: max(k, 1)])
    return " ".join(sentences), prompt


def sentiment_of(text: str) -> int:
    """Positive minus negative lexicon words in ``text`` (the corpus label and the judge's raw count)."""
    words = re.findall(r"[a-z]+", text.lower())
    return sum(w in POSITIVE_WORDS for w in words) - sum(w in NEGATIVE_WORDS for w in words)


def _reviews_and_prompts(n: int, seed: int, cfg: CorpusConfig) -> tuple[list[str], list[str]]:
    # A private Random instance: the corpus depends on (n, seed, cfg) only, never on global state.
    rng = random.Random(seed)
    pairs = [_review(rng, cfg) for _ in range(n)]
    return [r for r, _ in pairs], [p for _, p in pairs]


def generate_reviews(n: int, seed: int = 0, config: CorpusConfig | None = None):
    """``n`` reviews as a ``datasets.Dataset`` with columns text (str), label (str) and sentiment (int).

    ``label`` is "positive", "negative" or "neutral" by the sign of ``sentiment`` (positive minus
    negative lexicon words). Same ``(n, seed, config)`` -> same dataset.
    """
    from datasets import Dataset

    if n < 1:
        raise ValueError(f"n must be a positive number of reviews, got {n}")
    texts, _ = _reviews_and_prompts(n, seed, config or CorpusConfig())
    scores = [sentiment_of(t) for t in texts]
    labels = ["positive" if s > 0 else "negative" if s < 0 else "neutral" for s in scores]
    return Dataset.from_dict({"text": texts, "label": labels, "sentiment": scores})


def prompt_split(prompt: str, test_fraction: float = 0.2) -> str:
    """"train" or "test" for a prompt, by a stable hash, so the two splits never share a prompt."""
    bucket = int(hashlib.md5(prompt.encode()).hexdigest(), 16) % 1000
    return "test" if bucket < test_fraction * 1000 else "train"


def generate_prompts(n_reviews: int, seed: int = 0, config: CorpusConfig | None = None,
                     test_fraction: float = 0.2) -> dict[str, list[str]]:
    """Distinct review openings ("The thriller about a lonely detective was", "I", ...) by split.

    Drawn from the reviews of ``generate_reviews(n_reviews, seed)``; in order of first appearance.
    """
    _, prompts = _reviews_and_prompts(n_reviews, seed, config or CorpusConfig())
    out: dict[str, list[str]] = {"train": [], "test": []}
    for p in dict.fromkeys(prompts):
        out[prompt_split(p, test_fraction)].append(p)
    return out
