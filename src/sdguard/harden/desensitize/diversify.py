"""Caption diversification of the near-duplicates that stay (Somepalli et al. 2023b).

Somepalli, Singla, Goldblum, Geiping, Goldstein, "Understanding and Mitigating Copying in
Diffusion Models" (NeurIPS 2023) found that a model copies its duplicated training images less
when their captions vary; their training-time interventions (official code: ``somepago/DCR``,
``datasets.py``: ``--trainspecial randwordadd | wordrepeat``, ``insert_rand_word``; and
``diff_inference.py``: ``rand_numb_add``) insert two words into the caption at random positions:

- ``word-add``: random words (theirs: random CLIP token ids, decoded);
- ``word-repeat``: words of the caption itself, repeated;
- ``number-add``: random numbers below 100000.

Deviations: the insertion is made once per record, in the dataset (each copy of a cluster gets
its own draw), not anew at every training step with probability ``--trainspecial_prob``, since a
desensitized dataset is trained on by any trainer; ``word-add`` draws from the dataset's own
caption vocabulary (its frequent words) instead of CLIP's 49,400 token ids, so no tokenizer is
needed and the words are ones the text encoder has seen. ``--diversify-words`` sets how many are
inserted (two by default, as theirs).
"""

from __future__ import annotations

import random
from typing import Sequence

DIVERSIFY_METHODS = ("off", "word-add", "word-repeat", "number-add")


def insert_word(caption: str, word: str, rng: random.Random) -> str:
    """``caption`` with ``word`` inserted between two of its words (or at an end), chosen by ``rng``."""
    words = caption.split(" ")
    words.insert(rng.randint(0, len(words)), word)
    return " ".join(words)


def diversify(caption: str, method: str, rng: random.Random, *, vocabulary: Sequence[str] = (),
              insertions: int = 2) -> str:
    """``caption`` with ``insertions`` words inserted by ``method`` (a name of :data:`DIVERSIFY_METHODS`)."""
    if method == "off" or not caption.strip():
        return caption
    for _ in range(insertions):
        if method == "word-add":
            word = rng.choice(vocabulary) if len(vocabulary) else str(rng.randrange(100000))
        elif method == "word-repeat":
            word = rng.choice(caption.split())
        elif method == "number-add":
            word = str(rng.randrange(100000))
        else:
            raise ValueError(f"unknown diversification {method!r}")
        caption = insert_word(caption, word, rng)
    return caption
