"""Somepalli et al.'s replication rule, a named mode of ``sdguard audit generations --rule somepalli``.

Somepalli et al. 2023, "Understanding and Mitigating Copying in Diffusion Models" (NeurIPS),
measure copying as follows, in the official code (github.com/somepago/DCR, ``diff_retrieval.py``):

- every image (generations and training set) is embedded with SSCD (``--pt_style sscd``, the
  released ``sscd_disc_large`` / ``sscd_disc_mixup`` TorchScript files) after
  ``Resize(256)``, ``CenterCrop(224)``, ``ToTensor()``, ``Normalize([0.5], [0.5])``
  (:func:`sdguard.embed.sscd.dcr_preprocess`);
- the features are L2-normalized and compared by dot product (cosine similarity);
- each generation's score is its top-1 similarity over the *whole* training set;
- the reported rate is the share of generations whose score is strictly above 0.5
  (``sim_gt_05pc = sum(x0 > 0.5) / N``).

This module holds that rule; the audit (:mod:`sdguard.audit.generation_replication`) calls it per
prompt with the top-1 search it already runs (faiss ``IndexFlatIP``: exact inner product, as
DCR's ``torch.mm``). The default rule of the audit stays ``calibrated`` (a threshold per training
cluster, :func:`~sdguard.audit.generation_replication.calibrate_threshold`): on the synthetic
world and its pixel embeddings 0.5 means nothing.

Deviations: the SSCD weights are not shipped (pass the released TorchScript file as
``--embedder sscd:FILE``); unreadable training images are left out of the search (they score 0);
``--threshold T`` replaces 0.5 (an extension, recorded in the report as ``threshold_source:
given``). The CVPR 2023 companion paper's other copy detectors (DINO, CLIP, split-product
similarity) are not part of this mode.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.errors import InputError

RULES = ("calibrated", "somepalli")
THRESHOLD = 0.5  # Somepalli et al.: a generation replicates when its top-1 SSCD similarity is > 0.5
PAPER = ("Somepalli et al. 2023, Understanding and Mitigating Copying in Diffusion Models "
         "(github.com/somepago/DCR, diff_retrieval.py)")


def somepalli_embedder(spec: str):
    """The SSCD embedder of ``--embedder sscd:FILE`` with DCR's preprocessing; any other
    embedder is refused (the 0.5 threshold is a threshold on SSCD similarity)."""
    from ..embed import create_embedder, parse_spec

    name, _ = parse_spec(spec)
    if name != "sscd":
        raise InputError.bad("--rule", "somepalli", f"is defined on SSCD similarity and --embedder is {spec!r}; pass "
                             "--embedder sscd:FILE (the released SSCD TorchScript file)")
    return create_embedder(spec, preprocessing="dcr")


def replicated(similarity: np.ndarray, threshold: float | None = None) -> tuple[np.ndarray, float]:
    """The rule on each generation's top-1 similarity to the training set: replicated when strictly
    above 0.5 (or ``threshold``); returns the flags and the threshold used."""
    t = THRESHOLD if threshold is None else float(threshold)
    return np.asarray(similarity) > t, t


def rule_entry(rule: str, embedder, threshold: float | None) -> dict[str, Any]:
    """``results.rule`` of the report: which rule produced every replication rate."""
    if rule == "somepalli":
        return {"name": "somepalli", "source": PAPER, "embedder": embedder.config(),
                "similarity": "top-1 cosine similarity of each generation over the whole training set",
                "comparison": ">", "threshold": THRESHOLD if threshold is None else threshold,
                "threshold_source": "published" if threshold is None else "given"}
    return {"name": "calibrated", "embedder": embedder.config(), "comparison": ">=",
            "similarity": "largest cosine similarity to a member of the prompt's training cluster (prompts without "
                          "a cluster: to the nearest training image)",
            "threshold_source": "given" if threshold is not None else "calibrated per training cluster"}


def rule_sentence(entry: dict[str, Any]) -> str:
    """The rule in words, for the HTML report."""
    if entry["name"] == "somepalli":
        return (f"rule somepalli (Somepalli et al. 2023): {entry['similarity']} {entry['comparison']} "
                f"{entry['threshold']} ({entry['threshold_source']}), SSCD with DCR's preprocessing")
    return f"rule calibrated: {entry['similarity']} {entry['comparison']} a threshold {entry['threshold_source']}"


__all__ = ["RULES", "THRESHOLD", "somepalli_embedder", "replicated", "rule_entry", "rule_sentence"]
