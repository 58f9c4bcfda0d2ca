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
