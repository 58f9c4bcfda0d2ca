"""The distribution check: a model-free ("blind") attack on the same split.

Das, Zhang & Tramèr 2024, "Blind Baselines Beat Membership Inference Attacks for Foundation
Models", and CopyMark (Ma et al. 2024): published MIA figures on text-to-image models are often
obtained on member and non-member sets drawn from different distributions (LAION vs COCO), and a
classifier that never sees the model separates them as well; on a matched split the attacks fall
to chance (SecMI 0.70 and PIA 0.77 AUC fall to 0.53). Before any MIA figure, this check fits a
classifier on the records alone:

- image features: a joint colour histogram (4 levels per channel, 64 bins) and the image
  downsampled to 8 x 8 (192 values), standardized;
- caption features: word unigrams and bigrams hashed into 2^12 columns (scikit-learn's
  ``HashingVectorizer``), TF-IDF weighted;
- a logistic regression (L2, C = 1), scored by stratified 5-fold cross-validation: every record's
  score comes from the model fitted on the other folds (out-of-fold), so the AUC is honest. Records
  with the same caption are kept in one fold (``StratifiedGroupKFold``): otherwise a caption shared
  by copies on both sides of the split leaks the held-out record's label, inverted (taking a member
  out makes the rest of its group look like non-members), and a matched split scores well below 0.5.

**Rule**: the split is *shifted* when the out-of-fold AUC is at least 0.6 **and** the lower bound
of its 95% bootstrap interval is above 0.5 (clearly better than chance, not a fluctuation of a
small split). A shifted split's MIA AUCs are reported with the warning that they are not
evidence of membership.
"""

from __future__ import annotations

import numpy as np

from ...core.images import resize
from ..stats import bootstrap_interval, roc_auc

SHIFT_AUC, FOLDS = 0.6, 5


def image_features(images: np.ndarray) -> np.ndarray:
    """Colour histogram (64 joint bins, shares) and an 8 x 8 thumbnail (in [0, 1]) per uint8 image."""
    out = []
    for img in images:
        q = (img.astype(np.int32) // 64).reshape(-1, 3)
        hist = np.bincount(q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2], minlength=64) / len(q)
        thumb = np.asarray(resize(img.astype(np.float32), 8), np.float32).reshape(-1) / 255.0
        out.append(np.r_[hist, thumb])
    return np.asarray(out, np.float32)


def caption_features(texts: list[str]):
    """TF-IDF weighted hashed word unigrams and bigrams (a sparse matrix)."""
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

    counts = HashingVectorizer(n_features=2 ** 12, ngram_range=(1, 2), alternate_sign=False, norm=None).transform(texts)
    return TfidfTransformer().fit_transform(counts)


def out_of_fold_scores(features, labels: np.ndarray, groups: np.ndarray, seed: int = 0) -> np.ndarray:
    """Member probability of every record from a logistic regression fitted on the other folds
    (records of one ``groups`` value in one fold)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold

    folds = min(FOLDS, int(labels.sum()), int((~labels).sum()), len(np.unique(groups)))
    scores = np.zeros(len(labels))
    cv = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    for train, test in cv.split(np.zeros(len(labels)), labels, groups):
        clf = LogisticRegression(C=1.0, max_iter=2000).fit(features[train], labels[train])
        scores[test] = clf.predict_proba(features[test])[:, 1]
    return scores


def split_check(images: np.ndarray, texts: list[str], labels: np.ndarray, seed: int = 0, rounds: int = 1000) -> dict:
    """The blind attack's out-of-fold AUC (with its bootstrap interval) on all records, and the
    verdict: ``shifted`` by the rule of the module's docstring. ``images`` uint8 N x H x W x 3."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels, bool)
    _, groups = np.unique([" ".join(t.lower().split()) for t in texts], return_inverse=True)
    img = StandardScaler().fit_transform(image_features(images))
    features = hstack([csr_matrix(img), caption_features(list(texts))]).tocsr()
    scores = out_of_fold_scores(features, labels, groups, seed)
    auc = roc_auc(scores, labels)
    ci = bootstrap_interval(roc_auc, scores, labels, rounds=rounds, seed=seed)
    by_part = {}
    for name, part in (("images", csr_matrix(img)), ("captions", caption_features(list(texts)))):
        s = out_of_fold_scores(part, labels, groups, seed)
        by_part[name] = {"auc": roc_auc(s, labels)}
    shifted = bool(auc >= SHIFT_AUC and ci[0] > 0.5)
    return {"method": "blind: logistic regression on colour histograms, 8x8 thumbnails and hashed TF-IDF captions, "
                      f"stratified {FOLDS}-fold out-of-fold, one caption per fold (Das et al. 2024; CopyMark)",
            "auc": auc, "auc_ci": ci, "by_features": by_part, "shifted": shifted,
            "rule": f"shifted when AUC >= {SHIFT_AUC} and the lower bound of its 95% interval > 0.5",
            "records": int(len(labels)), "members": int(labels.sum()), "nonmembers": int((~labels).sum())}


__all__ = ["SHIFT_AUC", "image_features", "caption_features", "out_of_fold_scores", "split_check"]
