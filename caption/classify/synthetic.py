"""The built-in review set: short made-up film reviews whose label is decided by known words.

A review is a few neutral sentences (about a film, what happened around seeing it) with one to
three verdict sentences put among them, "the acting was superb". The verdicts' adjectives are the
deciding words: every one in a review has the review's polarity, and no other word of the review
belongs to either list, so a classifier that is right must read them, and attention correctness can
be measured as the alpha mass on them against chance (their share of the tokens), as for scenes.

Every word is lower-case ASCII without punctuation, so the Treebank tokenizer (caption.vocab.tokenize)
gives back exactly the generator's tokens and `deciding` indexes them.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

TRAIN_SEED, TEST_SEED = 1, 2             # the built-in training and test reviews (`caption classify`)
LABELS = ("neg", "pos")                       # the order of aclImdb's folders, sorted
POSITIVE = ("great", "wonderful", "superb", "brilliant", "excellent", "delightful", "moving", "masterful",
            "charming", "gripping", "beautiful", "terrific")
NEGATIVE = ("awful", "boring", "terrible", "dreadful", "clumsy", "tedious", "lifeless", "dull", "painful",
            "mediocre", "horrible", "bland")
SUBJECTS = ("the acting", "the plot", "the film", "the ending", "the music", "the dialogue", "the direction",
            "the second half", "the story", "this movie", "the cast", "the photography")
VERBS = ("was", "is", "felt", "seemed", "looked")
# neutral sentences; {x} slots take NOUNS
NEUTRAL = ("i saw it on a {x} with my {y}", "we watched the {x} version at home", "it runs for about two hours",
           "the {x} was filmed in a small town", "my {y} had read the book first", "there is a long scene in a {x}",
           "the trailer shows the {x} and the {y}", "it came out the same year as the sequel",
           "most of it takes place at night", "the lead plays a {y} who lives by a {x}",
           "i bought the ticket on a {x}", "it was shown in the big room of the cinema",
           "the {x} appears near the start", "we talked about the {x} on the way back")
NOUNS = ("sunday", "train", "station", "farm", "lake", "kitchen", "river", "market", "hotel", "school",
         "brother", "sister", "friend", "neighbour", "teacher", "doctor", "uncle", "cousin")


@dataclass(frozen=True)
class Review:
    text: str
    label: str                    # "neg" or "pos"
    deciding: tuple[int, ...]     # the token positions of its verdict adjectives


def _neutral(rng: random.Random) -> list[str]:
    return rng.choice(NEUTRAL).format(x=rng.choice(NOUNS), y=rng.choice(NOUNS)).split()


def review(rng: random.Random) -> Review:
    """One review: 3 to 7 neutral sentences and 1 to 3 verdicts of one polarity among them."""
    label = rng.choice(LABELS)
    words = POSITIVE if label == "pos" else NEGATIVE
    sentences = [_neutral(rng) for _ in range(rng.randint(3, 7))]
    for _ in range(rng.randint(1, 3)):
        verdict = [*rng.choice(SUBJECTS).split(), rng.choice(VERBS), rng.choice(words)]
        sentences.insert(rng.randint(0, len(sentences)), verdict)
    tokens = [t for s in sentences for t in s]
    deciding = tuple(i for i, t in enumerate(tokens) if t in words)
    return Review(" ".join(tokens), label, deciding)


def generate_reviews(n: int, seed: int = 0) -> list[Review]:
    rng = random.Random(seed)
    return [review(rng) for _ in range(n)]
