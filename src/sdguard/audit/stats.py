"""Small statistics shared by the audits: Wilson intervals and Fisher's exact test."""

from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default; Wilson 1927).

    Unlike the normal approximation it stays inside [0, 1] and is informative at 0 or n successes,
    the usual case for replication rates.
    """
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def fisher_greater(a_hits: int, a_n: int, b_hits: int, b_n: int) -> float:
    """One-sided p-value of Fisher's exact test that group a's rate exceeds group b's."""
    from scipy.stats import fisher_exact

    table = [[a_hits, a_n - a_hits], [b_hits, b_n - b_hits]]
    return float(fisher_exact(table, alternative="greater")[1])


# ------------------------------------------------------------------------------------------
# detection and membership metrics: ROC, AUC, TPR at a low FPR, thresholds at an FPR, bootstrap
# ------------------------------------------------------------------------------------------
# A score is "higher means positive" (memorized, member) throughout; an attack whose natural score
# is lower for members (a loss) negates it before it reaches these functions.


def _labelled(scores, labels):
    import numpy as np

    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{len(s)} scores for {len(y)} labels")
    if not y.any() or y.all():
        raise ValueError("ROC needs both positives and negatives")
    return s, y


def roc_curve(scores, labels) -> tuple:
    """``(fpr, tpr, thresholds)`` of the rule "positive when score >= threshold", every distinct
    score a threshold, from (0, 0) to (1, 1) (ties move both rates at once, as scikit-learn's
    ``roc_curve`` with ``drop_intermediate=False``)."""
    import numpy as np

    s, y = _labelled(scores, labels)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each run of equal scores
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    tpr = np.r_[0.0, tp / y.sum()]
    fpr = np.r_[0.0, fp / (~y).sum()]
    return fpr, tpr, np.r_[np.inf, s[last]]


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve: the probability that a random positive outscores a random negative
    (ties count one half; the Mann-Whitney U statistic over n+ n-)."""
    from scipy.stats import rankdata

    s, y = _labelled(scores, labels)
    ranks = rankdata(s)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def tpr_at_fpr(scores, labels, fpr: float) -> float:
    """The highest true-positive rate of a threshold whose false-positive rate is at most ``fpr``
    (the low-FPR figure of Carlini et al. 2022, "Membership Inference Attacks From First
    Principles": no interpolation, so 1% of 100 negatives allows exactly one false positive)."""

    f, t, _ = roc_curve(scores, labels)
    return float(t[f <= fpr + 1e-12].max())


def threshold_at_fpr(negative_scores, fpr: float) -> float:
    """The threshold a detector calibrated on negatives (ordinary prompts, known non-members) uses
    to flag at most a ``fpr`` share of them: the smallest value above all but ``floor(fpr * n)``
    of them. Scoring other data with it gives an honest false-positive rate."""
    import numpy as np

    s = np.sort(np.asarray(negative_scores, dtype=np.float64).ravel())
    if not len(s):
        raise ValueError("no negative score to calibrate on")
    allowed = int(math.floor(fpr * len(s) + 1e-9))
    above = s[len(s) - 1 - allowed]  # the largest score that must not be flagged
    return float(np.nextafter(above, np.inf))


def bootstrap_interval(statistic, scores, labels, *, rounds: int = 1000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(scores, labels)`` (Efron & Tibshirani 1993),
    positives and negatives resampled separately (stratified) so every round has both."""
    import numpy as np

    s, y = _labelled(scores, labels)
    pos, neg = s[y], s[~y]
    rng = np.random.default_rng(seed)
    lab = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
    values = []
    for _ in range(rounds):
        values.append(statistic(np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))], lab))
    lo, hi = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def detection_summary(scores, labels, *, fprs=(0.01, 0.001), rounds: int = 1000, seed: int = 0) -> dict:
    """AUC and TPR at each FPR in ``fprs``, each with its bootstrap interval, and the ROC points
    (for a plot): the figures every detection and membership report gives."""
    s, y = _labelled(scores, labels)
    out = {"n_positive": int(y.sum()), "n_negative": int((~y).sum()), "auc": roc_auc(s, y),
           "auc_ci": bootstrap_interval(roc_auc, s, y, rounds=rounds, seed=seed)}
    for f in fprs:
        key = f"tpr_at_{f:g}_fpr".replace(".", "_")
        out[key] = tpr_at_fpr(s, y, f)
        out[key + "_ci"] = bootstrap_interval(lambda a, b, f=f: tpr_at_fpr(a, b, f), s, y, rounds=rounds, seed=seed)
        out[key + "_resolvable"] = bool(f * (~y).sum() >= 1)  # fewer negatives than 1/f: the FPR is not reachable
    fpr, tpr, _ = roc_curve(s, y)
    out["roc"] = {"fpr": [round(float(v), 5) for v in fpr], "tpr": [round(float(v), 5) for v in tpr]}
    return out
