"""Extraction without training data: cliques of near-identical generations (Carlini et al. 2023).

Carlini et al. ("Extracting Training Data from Diffusion Models", USENIX Security 2023, Sec. 4;
no official code was released, this follows the paper's text) generate 500 images per prompt and
flag a prompt when at least 10 of its generations are all within a small distance of each other:
a model that reproduces a training image does so for many seeds, while fresh generations differ.
Their distance is the *tiled* l2: images are cut into 4x4 = 16 non-overlapping tiles (128 pixels
on their 512-pixel images) and the distance of two images is the largest normalized l2 (root mean
square, on [0, 1] pixels) between corresponding tiles, so that a single matching region cannot
hide a difference elsewhere. Here the tiles are taken at the generations' own resolution (a
512-pixel model gets the paper's 128-pixel tiles, a 32-pixel one 8-pixel tiles): comparing
downsampled thumbnails would average differences away and shrink every distance.

Three rules are measured on every prompt; the report says which one flagged it:

- ``published``: a clique of >= 10 at Carlini et al.'s 0.15. Always reported; it decides only when
  asked for (``--clique-delta 0.15``): on small or low-diversity models it over-flags, since a
  32-pixel model draws a fully specified scene nearly the same from every seed.
- ``calibrated`` (or ``given``, with ``--clique-delta``): a clique of >= 10 at a distance set from
  the model itself (:func:`calibrate_delta`): for each of a few reference prompts (ordinary
  training captions, not audited) the 1% quantile of the pairwise distances among its generations;
  the smallest of these (the least diverse ordinary prompt's closest pairs), never above 0.15.
- ``copies`` (an extension, on whenever the distance is calibrated): a clique of >= 10 among the
  generations that replicate one training cluster of copies, at the distance the copies lie apart
  (:func:`copy_spread`: their median pairwise tiled l2). The calibrated distance follows the most
  uniform ordinary prompt; a memorized image's generations vary as its jittered copies do, and on
  a world of flat-background shapes (a plain ring drawn alike from every seed: 1% quantile 0.016)
  they formed cliques of only 3-4 of 64 at it although every generation's nearest training image
  was the artwork. A cluster whose members lie 0.15 or more apart holds look-alikes, not copies,
  and is left out. The training image is only the anchor: the generations are compared with each
  other, not with it (the model's autoencoder renders a copy differently: on ``builtin:tiny`` the
  memorized starry night's generations lie 0.14 from the nearest training copy, 0.016 from each
  other).

Measured on ``builtin:tiny`` (``make demo``, 32 seeds): the starry night copies lie a median 0.028
apart, its generations 0.016 (they reach a clique of 10 at 0.015); the look-alike clusters of plain
scenes and astronauts 0.25-0.42 (left out); the controls need 0.043-0.24 for a clique of 10, the
reference prompts 0.076-0.38 (calibrated distance 0.037).
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from ..core.errors import InputError

CLIQUE_FLAG = 10
DEFAULT_DELTA = 0.15
CALIBRATION_QUANTILE = 0.01
COPY_TWIN = DEFAULT_DELTA / 2  # a cluster of copies: each member this near another (median)


def _as_chunks(images) -> list[np.ndarray]:
    """One array (N x H x W x 3) or a list of such chunks (arrays or read-only memory maps)."""
    if isinstance(images, (list, tuple)):
        return [c for c in images if len(c)]
    return [np.asarray(images)]


def tiled_l2(images, grid: int = 4) -> np.ndarray:
    """Pairwise tiled l2 distances (N x N) of uint8 or [0, 1] float images N x H x W x 3, at
    their own resolution (Carlini et al.: a ``grid`` x ``grid`` split, the largest normalized l2
    over corresponding tiles; 512-pixel images give their 128-pixel tiles).

    ``images`` may be a list of chunks (e.g. memory maps of the stored generations): one tile of
    every image is read at a time, so memory holds N tiles in float32 (N x H x W x 3 / grid^2 x 4
    bytes: 98 MB for 500 images of 512 pixels), never all the images in float.
    """
    chunks = _as_chunks(images)
    n = sum(len(c) for c in chunks)
    if n == 0:
        return np.zeros((0, 0), np.float32)
    h, w = chunks[0].shape[1:3]
    th, tw = h // grid, w // grid
    out = np.zeros((n, n), np.float32)
    for ty in range(grid):
        for tx in range(grid):
            x = np.empty((n, th * tw * chunks[0].shape[3]), np.float32)
            k = 0
            for c in chunks:
                tile = np.asarray(c[:, ty * th:(ty + 1) * th, tx * tw:(tx + 1) * tw])
                x[k:k + len(c)] = tile.reshape(len(c), -1)
                k += len(c)
            if chunks[0].dtype == np.uint8:
                x /= 255.0
            sq = (x * x).sum(1)
            dist2 = np.maximum(sq[:, None] + sq[None, :] - 2 * (x @ x.T), 0) / x.shape[1]
            np.maximum(out, np.sqrt(dist2), out=out)
    np.fill_diagonal(out, 0.0)
    return out


def largest_clique(adjacency: np.ndarray, budget: int = 20_000, seconds: float = 2.0) -> tuple[list[int], bool]:
    """Largest clique of an undirected graph (boolean N x N), and whether it is proven maximum.

    Bron-Kerbosch with pivoting (Tomita et al. 2006) over a greedy lower bound, pruning branches
    that cannot beat the best clique found; after ``budget`` recursive calls or ``seconds`` it
    returns the best clique so far (``exact=False``), which is still a valid clique and a lower
    bound (memorized prompts give near-complete graphs, where the greedy start is already maximum).
    """
    adj = np.asarray(adjacency, bool).copy()
    np.fill_diagonal(adj, False)
    n = adj.shape[0]
    if n == 0:
        return [], True
    neighbours = [set(np.flatnonzero(adj[i]).tolist()) for i in range(n)]
    # greedy start: repeatedly add the candidate with the most neighbours among the candidates
    best: list[int] = []
    adj_f = adj.astype(np.float32)
    for start in np.argsort(-adj.sum(1))[: min(n, 10)]:
        clique, cand = [int(start)], adj[start].copy()
        while cand.any():
            score = adj_f[cand] @ cand.astype(np.float32)  # degree inside the candidate set
            v = int(np.flatnonzero(cand)[np.argmax(score)])
            clique.append(v)
            cand &= adj[v]
        if len(clique) > len(best):
            best = clique
    calls = 0
    exact = True
    deadline = time.perf_counter() + seconds

    def expand(r: list[int], p: set[int], x: set[int]) -> None:
        nonlocal best, calls, exact
        calls += 1
        if calls > budget or time.perf_counter() > deadline:
            exact = False
            return
        if not p and not x:
            if len(r) > len(best):
                best = list(r)
            return
        if len(r) + len(p) <= len(best):
            return
        pivot = max(p | x, key=lambda u: len(neighbours[u] & p))
        for v in list(p - neighbours[pivot]):
            expand(r + [v], p & neighbours[v], x & neighbours[v])
            if not exact:
                return
            p.discard(v)
            x.add(v)

    candidates = {i for i in range(n) if len(neighbours[i]) + 1 > len(best)}
    expand([], candidates, set())
    return sorted(best), exact


def _count(images) -> int:
    return sum(len(c) for c in _as_chunks(images))


def extraction_clique(images, delta: float = DEFAULT_DELTA, grid: int = 4, dist: np.ndarray | None = None) -> dict:
    """The largest clique of generations within tiled-l2 ``delta`` of each other (``dist``: their
    distance matrix, when already computed)."""
    dist = tiled_l2(images, grid=grid) if dist is None else dist
    members, exact = largest_clique(dist < delta)
    return {"clique_size": len(members), "members": members, "exact": exact,
            "flagged": len(members) >= CLIQUE_FLAG, "delta": delta}


def calibrate_delta(reference: list, quantile: float = CALIBRATION_QUANTILE, cap: float = DEFAULT_DELTA,
                    grid: int = 4) -> dict:
    """A clique distance calibrated on the model's own diversity (see the module docstring).

    ``reference`` holds, per reference prompt, that prompt's generations (N x H x W x 3, N >= 2,
    or a list of chunks). For each prompt, the ``quantile``-quantile of the pairwise tiled-l2
    distances among its generations (never across prompts: two prompts differ by construction);
    the distance is the smallest of these, capped at ``cap``.
    """
    if not 0.0 < quantile < 0.5:
        raise InputError.bad("quantile", quantile, "must lie in (0, 0.5)")
    per_prompt, medians = [], []
    for images in reference:
        n = _count(images)
        if n < 2:
            continue
        d = tiled_l2(images, grid=grid)[np.triu_indices(n, 1)]
        per_prompt.append(float(np.quantile(d, quantile)))
        medians.append(float(np.median(d)))
    if not per_prompt:
        raise InputError.bad("--n", min((_count(r) for r in reference), default=0),
                             "is too few generations per reference prompt to calibrate the clique distance (two or more "
                             "are needed); raise --n, or give --clique-delta or --reference-prompts 0")
    q = min(per_prompt)
    return {"value": round(min(q, cap), 4), "source": "calibrated" if q < cap else "published (Carlini et al.)",
            "quantile": quantile, "cap": cap, "reference_prompts": len(per_prompt),
            "reference_quantiles": [round(v, 4) for v in per_prompt],
            "reference_medians": [round(v, 4) for v in medians]}


def copy_spread(images, grid: int = 4) -> dict | None:
    """How far apart the members of one training cluster lie, at the generations' resolution:
    ``spread``, their median pairwise tiled l2 (the copies rule's distance), and ``twin``, the
    median distance of each to its nearest other member; the cluster holds copies of one image when
    ``twin`` is under COPY_TWIN (``copies``). None for fewer than two members."""
    n = _count(images)
    if n < 2:
        return None
    d = tiled_l2(images, grid=grid)
    spread = float(np.median(d[np.triu_indices(n, 1)]))
    np.fill_diagonal(d, np.inf)
    twin = float(np.median(d.min(1)))
    return {"spread": round(spread, 4), "twin": round(twin, 4), "copies": twin < COPY_TWIN}


def judge_extraction(dist: np.ndarray, delta: dict, landing: np.ndarray, spread: Callable[[int], dict | None],
                     rules: Sequence[str] = ("calibrated", "copies")) -> dict:
    """Every extraction rule on one prompt's generations (see the module docstring).

    ``dist``: their tiled-l2 distances; ``delta``: the clique distance (:func:`calibrate_delta`,
    or ``{"value": x, "source": "given"}``); ``landing``: per generation, the training cluster it
    replicates (-1: none); ``spread(c)``: :func:`copy_spread` of cluster ``c``. ``rules``: those
    that decide ``flagged`` (the published rule is always measured, and decides only when named).
    Returns ``{"rules": {name: {...}}, "flagged_by": [...], "flagged": bool}``.
    """
    out = {"published": {**_clique_row(dist, DEFAULT_DELTA), "delta": DEFAULT_DELTA}}
    name = "given" if delta.get("source") == "given" else "calibrated"
    out[name] = {**_clique_row(dist, delta["value"]), "delta": delta["value"]}
    if "copies" in rules:
        out["copies"] = _copies_rule(dist, landing, spread)
    used = [r for r in out if r in rules or r == "given"]
    flagged_by = [r for r in used if out[r]["flagged"]]
    return {"rules": out, "flagged_by": flagged_by, "flagged": bool(flagged_by)}


def _clique_row(dist: np.ndarray, delta: float) -> dict:
    members, exact = largest_clique(dist < delta)
    return {"clique_size": len(members), "exact": exact, "flagged": len(members) >= CLIQUE_FLAG}


def _copies_rule(dist: np.ndarray, landing: np.ndarray, spread: Callable[[int], dict | None]) -> dict:
    """The largest clique among the generations that replicate one cluster of copies, at the
    copies' own spread (at most DEFAULT_DELTA); clusters of look-alikes rather than copies (see
    :func:`copy_spread`) are listed in ``skipped``."""
    best = {"cluster": None, "delta": None, "clique_size": 0, "exact": True, "flagged": False, "skipped": []}
    labels, counts = np.unique(landing[landing >= 0], return_counts=True)
    for c in labels[counts >= CLIQUE_FLAG]:
        s = spread(int(c))
        if s is None or not s["copies"]:
            best["skipped"].append({"cluster": int(c), **(s or {})})
            continue
        idx = np.flatnonzero(landing == c)
        delta = min(s["spread"], DEFAULT_DELTA)
        row = _clique_row(dist[np.ix_(idx, idx)], delta)
        if row["clique_size"] > best["clique_size"]:
            best.update(row, cluster=int(c), delta=delta, twin=s["twin"])
    return best
