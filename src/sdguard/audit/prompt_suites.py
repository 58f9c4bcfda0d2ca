"""Prompt suites for the generation replication audit, built from a cluster's captions.

Somepalli et al. 2023 ("Understanding and Mitigating Copying in Diffusion Models") show that
replication depends on how a prompt relates to the duplicated image's captions. For each
near-duplicate cluster this module builds the five kinds of their study from the data, with no
external service:

- ``keywords``: the cluster's most frequent caption words alone;
- ``short_related``: the cluster's shortest caption (it holds the keywords);
- ``long_related``: the cluster's longest caption;
- ``unrelated_with_keywords``: captions from outside the cluster (four by default), with the
  keywords after the caption in the first, third, ... and before it in the others (on a causal
  text encoder such as CLIP's the order matters: appended keywords are read in the context of
  the caption, prepended ones as the training captions that start with them were);
- ``long_without_keyword``: the cluster's longest caption with its main keywords (those in at
  least 90% of the cluster's captions) removed;

plus ``control`` prompts: captions of other images that share no keyword with the cluster, which
should replicate at about 0, and ``reference`` prompts (other such captions, not audited) whose
generations calibrate the clique distance of the extraction test.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..core.errors import InputError
from ..core.io import read_text
from ..data.captions import without_word, words

KINDS = ("keywords", "short_related", "long_related", "unrelated_with_keywords", "long_without_keyword")


@dataclass
class PromptSpec:
    prompt: str
    kind: str
    cluster: int | None = None
    keywords: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _reading_order(keywords: list[str], captions: Sequence[str]) -> list[str]:
    """Keywords in the order the captions use them ("van gogh starry night", not alphabetical):
    their order in the shortest caption holding the most of them, the others after."""
    if not captions:
        return keywords
    best = min(captions, key=lambda c: (-len(set(keywords) & set(words(c))), len(c.split()), c))
    ws = words(best)
    return sorted(keywords, key=lambda k: (ws.index(k) if k in ws else len(ws), keywords.index(k)))


def cluster_suite(cluster: int, captions: Sequence[str], top_words: Sequence[str], outside: Sequence[str],
                  rng: np.random.Generator, n_keywords: int = 4, fits: Callable[[str], bool] | None = None,
                  unrelated: int = 4) -> list[PromptSpec]:
    """The five prompt kinds for one cluster (see the module docstring), with ``unrelated``
    unrelated captions, the keywords alternately after and before them. How much the keywords
    pull depends on the caption and on where they stand: on builtin:tiny (32 seeds each)
    "a blue cross over a white background van gogh starry night" replicated in every seed,
    "a red ring at the bottom van gogh starry night" in none and "van gogh starry night a red
    ring at the bottom" in every one, so one prompt alone would say little.

    ``fits(prompt)`` says whether the model reads the whole prompt (its text encoder truncates
    long ones): the unrelated caption is drawn among those that still fit with the keywords,
    or the keywords would be cut off and the prompt would not be of its kind.
    """
    keywords = _reading_order(list(top_words[:n_keywords]), captions)
    if not keywords or not captions:
        return []
    kw_set = set(keywords)
    by_len = sorted(set(captions), key=lambda c: (len(c.split()), c))
    unrelated_pool = [c for c in outside if not kw_set & set(words(c))]
    specs = [PromptSpec(" ".join(keywords), "keywords", cluster, keywords),
             PromptSpec(by_len[0], "short_related", cluster, keywords),
             PromptSpec(by_len[-1], "long_related", cluster, keywords)]
    tail = " ".join(keywords)
    chosen: list[str] = []
    for j in rng.permutation(len(unrelated_pool)) if unrelated_pool else []:  # random captions that fit
        caption = unrelated_pool[j]
        text = f"{caption} {tail}" if len(chosen) % 2 == 0 else f"{tail} {caption}"
        if text not in chosen and (fits is None or fits(text)):
            chosen.append(text)
            if len(chosen) == unrelated:
                break
    specs += [PromptSpec(text, "unrelated_with_keywords", cluster, keywords) for text in chosen]
    # the main keywords: those in at least 90% of the cluster's captions (else the most frequent)
    share = {k: np.mean([k in words(c) for c in captions]) for k in keywords}
    main = [k for k in keywords if share[k] >= 0.9] or [max(keywords, key=lambda k: share[k])]
    without = by_len[-1]
    for k in main:
        without = without_word(without, k)
    if without.strip() and without != by_len[-1]:
        specs.append(PromptSpec(without, "long_without_keyword", cluster, keywords))
    return specs


def control_prompts(outside: Sequence[str], exclude_words: set[str], count: int, rng: np.random.Generator,
                    taken: Sequence[str] = (), kind: str = "control") -> list[PromptSpec]:
    """``count`` distinct captions sharing no word of ``exclude_words`` and not in ``taken``."""
    pool = sorted({c for c in outside if not exclude_words & set(words(c))} - set(taken))
    if not pool or count <= 0:
        return []
    pick = rng.choice(len(pool), size=min(count, len(pool)), replace=False)
    return [PromptSpec(pool[i], kind) for i in sorted(pick)]


def reference_prompts(outside: Sequence[str], exclude_words: set[str], taken: Sequence[str], count: int,
                      rng: np.random.Generator) -> list[PromptSpec]:
    """Control-like captions not among the audited prompts (``taken``): ordinary prompts whose
    generations show how diverse the model is."""
    return control_prompts(outside, exclude_words, count, rng, taken=taken, kind="reference")


def read_prompt_file(path: str | Path, argument: str = "--prompts") -> list[PromptSpec]:
    """One prompt per line (blank lines and ``#`` comments skipped); ``KIND<TAB>PROMPT`` sets a kind.

    UTF-8 (a byte-order mark is dropped). Raises :class:`InputError` naming the file (and the
    line) when it is missing, not UTF-8, holds a ``KIND<TAB>`` line without a prompt or no prompt.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError.bad(argument, str(path), "does not exist or is not a file")
    text = read_text(p, argument)
    specs = []
    for number, raw in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        kind, tab, prompt = raw.partition("\t")
        if not tab:
            specs.append(PromptSpec(line, "user"))
            continue
        if not prompt.strip():
            raise InputError.bad(argument, str(path), f"line {number} is {kind.strip()!r} and a tab with no prompt after it "
                                 "(write KIND<TAB>PROMPT, or the prompt alone)")
        specs.append(PromptSpec(prompt.strip(), kind.strip() or "user"))
    if not specs:
        raise InputError.bad(argument, str(path), "holds no prompt (one prompt per line)")
    return specs
