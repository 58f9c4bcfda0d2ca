"""What a generation replication audit measured, typed, and the ``results`` of ``report.json``
made from it (``sdguard audit generations``, :mod:`sdguard.audit.generation_replication`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .prompt_suites import KINDS


@dataclass
class PromptResult:
    """One audited prompt over its seeds: an entry of ``results.prompts``, and the generations
    with their nearest training images that the report shows."""

    prompt: str
    kind: str
    cluster: int | None
    n: int
    replication_rate: float
    ci_low: float
    ci_high: float
    threshold: float
    max_similarity: float
    median_similarity: float
    clique_size: int
    clique_exact: bool
    extraction_flagged: bool
    nearest_in_cluster_share: float | None
    caption_similarity: float | None = None  # None: captions not compared (a very large dataset)
    nearest_caption: str | None = None
    tokens: int | None = None  # the prompt's tokens (start and end included)
    truncated: bool = False  # longer than the text encoder reads
    rule: str = "calibrated"  # the rule behind replication_rate (results.rule; audit/somepalli.py)
    flagged_by: list[str] = field(default_factory=list)  # the extraction rules that flag it
    extraction: dict = field(default_factory=dict)  # per rule: delta, clique_size, flagged (extraction.py)
    replicated_clusters: list[dict] = field(default_factory=list)  # per cluster: share, words, example
    own_cluster_share: float | None = None  # of a prompt built from a cluster: share replicating it
    index: int = field(default=-1, repr=False)  # in prompts.json
    images: np.ndarray | None = field(default=None, repr=False)  # the generations' thumbnails
    nearest_rows: np.ndarray | None = field(default=None, repr=False)  # dataset row of each one's nearest image
    similarity: np.ndarray | None = field(default=None, repr=False)  # each one's similarity to it

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in _PROMPT_KEYS}
        if self.caption_similarity is not None:
            out["caption_similarity"] = self.caption_similarity
            out["nearest_caption"] = self.nearest_caption
        return out


_PROMPT_KEYS = ("prompt", "kind", "cluster", "n", "replication_rate", "ci_low", "ci_high", "threshold",
                "max_similarity", "median_similarity", "clique_size", "clique_exact", "extraction_flagged",
                "nearest_in_cluster_share", "own_cluster_share", "replicated_clusters", "flagged_by", "extraction",
                "tokens", "truncated", "rule")


@dataclass
class GenerationAuditResult:
    """What one ``sdguard audit generations`` run measured; :meth:`to_dict` is ``results`` of
    ``report.json``."""

    clique: dict  # the clique distance: value, source (and the calibration)
    cluster_info: dict  # where the training clusters came from
    thresholds: dict[int, dict]  # per training cluster judged against, in the order first needed
    global_threshold: float  # outside clusters
    prompts: list[PromptResult]
    kinds: dict[str, dict]  # per prompt kind: prompts, mean_replication, flagged_by_clique
    object: dict | None  # object-level replication; None without an object keyword
    generation: dict  # generated_now, reused
    images_per_second: float
    rule: dict  # the replication rule (audit/somepalli.py:rule_entry)

    def to_dict(self) -> dict[str, Any]:
        out = {"rule": self.rule, "clique": self.clique,
               "clusters": {**self.cluster_info, "thresholds": {str(c): v for c, v in self.thresholds.items()},
                            "global_threshold": float(self.global_threshold)},
               "prompts": [p.to_dict() for p in self.prompts], "kinds": self.kinds}
        if self.object is not None:
            out["object"] = self.object
        out["generation"] = self.generation
        out["images_per_second"] = self.images_per_second
        return out


def kind_means(prompts: list[PromptResult]) -> dict[str, dict]:
    """``results.kinds``: per prompt kind (in the study's order, then objects, controls, the user's),
    its number of prompts, mean replication rate and prompts flagged by a clique."""
    kinds = {}
    for kind in list(KINDS) + ["object", "control", "user"]:
        sel = [p for p in prompts if p.kind == kind]
        if sel:
            kinds[kind] = {"prompts": len(sel), "mean_replication": float(np.mean([p.replication_rate for p in sel])),
                           "flagged_by_clique": sum(p.extraction_flagged for p in sel)}
    return kinds


__all__ = ["GenerationAuditResult", "PromptResult", "kind_means"]
