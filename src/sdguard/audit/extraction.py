"""Extraction without training data: cliques of near-identical generations (Carlini et al. 2023).

Carlini et al. ("Extracting Training Data from Diffusion Models", USENIX Security 2023) generate
500 images per prompt and flag a prompt when at least 10 of its generations are all within a
small distance of each other: a model that reproduces a training image does so for many seeds,
while fresh generations differ. Their distance is the *tiled* l2: images are cut into a grid of
non-overlapping tiles (4x4 = 16 tiles) and the distance of two images is the largest normalized
l2 (root mean square) distance between corresponding tiles, so that a single matching region
cannot hide a difference elsewhere. We use their clique size of 10; their distance threshold
is stated for 512x512 generations (0.15 on [0, 1] pixels).

That threshold does not carry over to small or low-diversity models: a 32-pixel model draws a
fully specified scene ("an orange triangle at the bottom over a white background") nearly the
same from every seed, and all the generations of such an ordinary prompt fall within 0.15 of
each other. :func:`calibrate_delta` sets the distance from the model itself: for each of a few
reference prompts (ordinary training captions, not audited) the 1% quantile of the pairwise
distances among its generations; the distance is the smallest of these (the least diverse
ordinary prompt's closest pairs), and never looser than Carlini et al.'s 0.15. Measured on
``builtin:tiny`` (demo, 32 seeds): generations of the memorized artwork lie a median 0.03 apart,
those of the simplest control scenes 0.07-0.09.
"""

from __future__ import annotations

import time

import numpy as np

from ..core.errors import InputError
from ..core.images import resize_batch

CLIQUE_FLAG = 10
DEFAULT_DELTA = 0.15
CALIBRATION_QUANTILE = 0.01


def tiled_l2(images: np.ndarray, grid: int = 4, size: int = 64) -> np.ndarray:
    """Pairwise tiled l2 distances (N x N) of uint8 or [0, 1] float images N x H x W x 3."""
    x = np.asarray(images)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    n, h, w = x.shape[:3]
    if min(h, w) > size:  # compare at most size x size pixels (area downsampling)
        x = resize_batch((x * 255).round().astype(np.uint8), size).astype(np.float32) / 255.0
        h = w = size
    th, tw = h // grid, w // grid
    tiles = x[:, : th * grid, : tw * grid].reshape(n, grid, th, grid, tw, -1).transpose(0, 1, 3, 2, 4, 5)
    tiles = tiles.reshape(n, grid * grid, -1)
    d = tiles.shape[-1]
    out = np.zeros((n, n), np.float32)
    sq = (tiles ** 2).sum(-1)  # n x T
    for t in range(grid * grid):
        g = tiles[:, t] @ tiles[:, t].T
        dist2 = np.maximum(sq[:, t, None] + sq[None, :, t] - 2 * g, 0) / d
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


def extraction_clique(images: np.ndarray, delta: float = DEFAULT_DELTA, grid: int = 4) -> dict:
    """The largest clique of generations within tiled-l2 ``delta`` of each other."""
    dist = tiled_l2(images, grid=grid)
    members, exact = largest_clique(dist < delta)
    return {"clique_size": len(members), "members": members, "exact": exact,
            "flagged": len(members) >= CLIQUE_FLAG, "delta": delta}


def calibrate_delta(reference: list[np.ndarray], quantile: float = CALIBRATION_QUANTILE, cap: float = DEFAULT_DELTA,
                    grid: int = 4) -> dict:
    """A clique distance calibrated on the model's own diversity (see the module docstring).

    ``reference`` holds, per reference prompt, that prompt's generations (N x H x W x 3, N >= 2).
    For each prompt, the ``quantile``-quantile of the pairwise tiled-l2 distances among its
    generations (never across prompts: two prompts differ by construction); the distance is the
    smallest of these, capped at ``cap``.
    """
    if not 0.0 < quantile < 0.5:
        raise InputError.bad("quantile", quantile, "must lie in (0, 0.5)")
    per_prompt, medians = [], []
    for images in reference:
        if len(images) < 2:
            continue
        d = tiled_l2(images, grid=grid)[np.triu_indices(len(images), 1)]
        per_prompt.append(float(np.quantile(d, quantile)))
        medians.append(float(np.median(d)))
    if not per_prompt:
        raise InputError.bad("--n", min((len(r) for r in reference), default=0),
                             "is too few generations per reference prompt to calibrate the clique distance (two or more "
                             "are needed); raise --n, or give --clique-delta or --reference-prompts 0")
    q = min(per_prompt)
    return {"value": round(min(q, cap), 4), "source": "calibrated" if q < cap else "published (Carlini et al.)",
            "quantile": quantile, "cap": cap, "reference_prompts": len(per_prompt),
            "reference_quantiles": [round(v, 4) for v in per_prompt],
            "reference_medians": [round(v, 4) for v in medians]}
