"""The preserve set ``sdguard erase`` uses when the user gives none.

Erasure methods with a preserve term (UCE's, ESD's retain term) only keep what they are told to
keep; told nothing, a closed-form edit of the cross-attention moves every concept whose tokens
share directions with the erased one. On ``builtin:tiny``, ``sdguard erase --concept "van gogh
starry night" --method uce`` with no preserve list (and no empty prompt retained) took munch
scream from 97% to 0% of its presence and the scene attributes from 64% to 34% (issue 14's
measurement, ``sdguard audit erasure --keep "munch scream"``). The paper's code preserves a list of
1734 artists for art erasure; sdguard knows instead the data the model was trained on when the
user says which (``--dataset``), or, for ``builtin:tiny``, the default world it was trained on:

- the dataset's most frequent concepts (:func:`~sdguard.data.captions.frequent_phrases`: half
  two-word collocations such as "munch scream", half single words, each found in the most
  captions), and
- a sample of its captions (distinct, drawn with the run's seed),

both taken from the captions that share no content word with an erased concept (keeping a token
that the edit must move holds the erased concept back; a phrase of the erased concept's own
captions, "famous oil" of "starry night van gogh famous oil painting", would too). With neither, the preserve set is
empty and the command warns that unrelated concepts will move. Named in the report
(``results.preserve_source``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ...data.captions import frequent_phrases
from .uce import COMMON_WORDS, conflicting

#: phrases and captions of the default preserve set
DEFAULT_CONCEPTS = 60
DEFAULT_CAPTIONS = 40

#: the warning when the command knows nothing to preserve
NOTHING_KNOWN = ("--preserve: none given and no --dataset to build a preserve set from: the edit keeps only what "
                 "the method keeps by itself, and unrelated concepts will move (on builtin:tiny, UCE without a "
                 "preserve list took munch scream from 97% to 0% of its presence); pass --preserve or --dataset")


def known_texts(model_spec: str, dataset: str | None) -> tuple[list[str], str] | None:
    """The captions erase can build a preserve set from, and where they come from: ``dataset``
    when given, the default world for ``builtin:tiny``, otherwise None."""
    if dataset is not None:
        from ...data.datasets import open_dataset

        return list(open_dataset(dataset).texts), f"the captions of --dataset {dataset}"
    if str(model_spec) == "builtin:tiny":
        from ...audit.erasure.concepts import load_or_make_default_world

        return list(load_or_make_default_world().texts), "the default world builtin:tiny was trained on"
    return None


def default_preserve(concepts: Sequence[str], texts: Sequence[str], *, n_concepts: int = DEFAULT_CONCEPTS,
                     n_captions: int = DEFAULT_CAPTIONS, seed: int = 0) -> dict[str, list[str]]:
    """``{"concepts": [...], "captions": [...]}``: the frequent concepts and a caption sample of
    ``texts`` that share no content word with ``concepts`` (see the module docstring)."""
    distinct = sorted(set(" ".join(t.split()) for t in texts) - {""})
    clash = conflicting(concepts, distinct)
    pool = [t for t in distinct if t not in clash]  # captions that name none of the erased words
    others = [t for t in texts if " ".join(t.split()) not in clash]
    phrases = [r["phrase"] for r in frequent_phrases(others, 20 * n_concepts, stop_words=COMMON_WORDS)]
    clash = conflicting(concepts, phrases)
    phrases = [p for p in phrases if p not in clash]
    # half names of two words (collocations: "munch scream", "pearl earring"), half single words, each
    # by frequency: single words (colours, shapes) are far more frequent and would crowd the names out
    pairs, singles = [p for p in phrases if " " in p], [p for p in phrases if " " not in p]
    half = n_concepts // 2
    kept = pairs[:half] + singles[:n_concepts - min(half, len(pairs))]
    kept = kept + [p for p in pairs[half:] if p not in kept][:n_concepts - len(kept)]
    pool = [t for t in pool if t not in kept]
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(pool), min(n_captions, len(pool)), replace=False) if pool else []
    return {"concepts": kept, "captions": [pool[i] for i in sorted(pick)]}


__all__ = ["DEFAULT_CAPTIONS", "DEFAULT_CONCEPTS", "NOTHING_KNOWN", "default_preserve", "known_texts"]
