"""The ground truth of a world (``ground_truth.json``), computed from its captions and labels as written."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .artworks import ARTWORKS, COOCCURRENCE, SPREAD_KEYWORD, Artwork
from .captions import MAX_CAPTION_WORDS, TERSE_TEMPLATES, caption_contains, tokenize
from .palette import (
    ASTRONAUT_X,
    BACKGROUNDS,
    COLORS,
    KINDS,
    OBJECT_BOX,
    OBJECT_KEYWORD,
    OBJECT_NAME,
    POSITIONS,
    SHAPES,
    STYLES,
)

if TYPE_CHECKING:
    from .api import Record

__all__ = ["WORLD_FORMAT_VERSION", "ground_truth"]

WORLD_FORMAT_VERSION = 2  # 2: under-described scene captions, 6% per style

Labels = Sequence[Mapping[str, Any]]


def ground_truth(
    seed: int, size: int, image_size: int, records: Sequence["Record"], labels: Labels,
    held: Sequence[tuple[str, str, str]],
) -> dict[str, Any]:
    """The planted cases of a world of ``size`` images, from its ``records`` and ``labels`` (file
    order) and its held-out combinations ``held``."""
    texts = [r.text for r in records]
    files = [r.file_name for r in records]
    vocabulary = sorted({w for t in texts for w in tokenize(t)})
    kinds = {k: sum(1 for lab in labels if lab["kind"] == k) for k in KINDS}
    return {
        "format": "sdguard-world",
        "version": WORLD_FORMAT_VERSION,
        "seed": seed,
        "size": size,
        "image_size": image_size,
        "counts": kinds,
        "duplicates": _duplicates(texts, files, labels, vocabulary, size),
        "cooccurrence": _cooccurrence(texts, labels),
        "spread": _spread(texts, labels),
        "objects": _objects(texts, files, labels),
        "styles": _styles(files, labels, size),
        "held_out": [{"shape": s, "color": c, "position": p} for s, c, p in held],
        "under_described": _under_described(labels, kinds),
        "vocabulary": vocabulary,
        "max_caption_words": max(len(tokenize(t)) for t in texts),
        "attributes": {
            "shape": list(SHAPES),
            "color": list(COLORS),
            "position": list(POSITIONS),
            "background": list(BACKGROUNDS),
        },
        "kinds": list(KINDS),
        "style_names": list(STYLES),
        "artwork_names": [a.name for a in ARTWORKS],
        "object_backgrounds": ["space", "moon"],
        "object_positions": list(ASTRONAUT_X),
    }


def _entries_with(texts: Sequence[str], keywords: Sequence[str]) -> list[int]:
    return [i for i, t in enumerate(texts) if all(caption_contains(t, k) for k in keywords)]


def _dominant_cluster(labels: Labels, idx: Sequence[int]) -> tuple[str | None, int, int]:
    """Largest artwork cluster among ``idx``; other images are singleton clusters."""
    by_art: dict[str, int] = {}
    for i in idx:
        art = labels[i]["artwork"]
        if art is not None:
            by_art[art] = by_art.get(art, 0) + 1
    n_clusters = len(by_art) + sum(1 for i in idx if labels[i]["artwork"] is None)
    if not by_art:
        return None, min(1, len(idx)), n_clusters
    name = max(sorted(by_art), key=lambda a: by_art[a])
    return name, by_art[name], n_clusters


def _prompts(art: Artwork, related: str, scene_example: str, vocabulary: Sequence[str]) -> dict[str, str]:
    """The four prompts of an artwork (``duplicates[*].prompts``), checked against the vocabulary."""
    prompts = {
        "keywords": " ".join(art.keywords),
        "related": related,
        "unrelated_with_keywords": f"{scene_example} {' '.join(art.keywords)}",
        "long_without_keywords": art.description,
    }
    for kind, prompt in prompts.items():
        missing = sorted(set(tokenize(prompt)) - set(vocabulary))
        if missing or len(tokenize(prompt)) > MAX_CAPTION_WORDS:  # pragma: no cover - a bug in the tables
            raise RuntimeError(f"prompt {kind!r} of {art.name} is not in the closed vocabulary: {missing}")
    return prompts


def _duplicates(
    texts: Sequence[str], files: Sequence[str], labels: Labels, vocabulary: Sequence[str], size: int
) -> list[dict[str, Any]]:
    # an unrelated training caption: the first plain scene of the world
    scene_example = next(
        texts[i] for i, lab in enumerate(labels) if lab["kind"] == "scene" and lab["decoration"] is None
    )
    duplicates = []
    for art in ARTWORKS:
        idx = [i for i, lab in enumerate(labels) if lab["artwork"] == art.name]
        duplicates.append({
            "name": art.name,
            "keywords": list(art.keywords),
            "files": [files[i] for i in idx],
            "count": len(idx),
            "exact_copies": sum(1 for i in idx if labels[i]["exact_copy"]),
            "rate": len(idx) / size,
            "target_rate": art.rate,
            "prompts": _prompts(art, texts[idx[0]], scene_example, vocabulary),
        })
    return duplicates


def _cooccurrence(texts: Sequence[str], labels: Labels) -> list[dict[str, Any]]:
    cooccurrence = []
    for keywords, dominant, target in COOCCURRENCE:
        idx = _entries_with(texts, keywords)
        name, top, n_clusters = _dominant_cluster(labels, idx)
        cooccurrence.append({
            "keywords": list(keywords), "dominant": name, "dominant_share": top / max(1, len(idx)),
            "target_share": target, "entries": len(idx), "dominant_entries": top, "clusters": n_clusters,
            "single_keyword_entries": {k: len(_entries_with(texts, [k])) for k in keywords},
        })
    return cooccurrence


def _spread(texts: Sequence[str], labels: Labels) -> list[dict[str, Any]]:
    idx = _entries_with(texts, [SPREAD_KEYWORD])
    name, top, n_clusters = _dominant_cluster(labels, idx)
    return [{"keyword": SPREAD_KEYWORD, "dominant": name, "dominant_share": top / max(1, len(idx)),
             "entries": len(idx), "dominant_entries": top, "clusters": n_clusters}]


def _objects(texts: Sequence[str], files: Sequence[str], labels: Labels) -> list[dict[str, Any]]:
    idx = _entries_with(texts, [OBJECT_KEYWORD])
    with_object = [files[i] for i in idx if labels[i]["has_object"]]
    return [{
        "keyword": OBJECT_KEYWORD, "object": OBJECT_NAME, "files_with_object": with_object,
        "entries": len(idx), "share": len(with_object) / max(1, len(idx)), "box": list(OBJECT_BOX),
        "object_named_in_captions": sum(1 for t in texts if OBJECT_NAME in tokenize(t)),
    }]


def _styles(files: Sequence[str], labels: Labels, size: int) -> list[dict[str, Any]]:
    styles = []
    for style in STYLES:
        idx = [i for i, lab in enumerate(labels) if lab["style"] == style]
        styles.append({"name": style, "keywords": [style], "files": [files[i] for i in idx],
                       "rate": len(idx) / size})
    return styles


def _under_described(labels: Labels, kinds: Mapping[str, int]) -> dict[str, Any]:
    count = sum(1 for lab in labels if lab["under_described"])
    return {"count": count, "share_of_scenes": count / max(1, kinds["scene"]), "templates": list(TERSE_TEMPLATES)}
