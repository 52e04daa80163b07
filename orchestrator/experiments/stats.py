"""Interval estimates for rates and their differences: the numbers an experiment report is judged by.

Wilson's score interval for a proportion (good at small counts and near 0 or 1, unlike the Wald interval) and
Newcombe's hybrid score interval for the difference of two independent proportions (Newcombe 1998, method 10),
which is built from the two Wilson intervals.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Final

__all__ = ["Z95", "newcombe_difference", "wilson"]

Z95: Final = NormalDist().inv_cdf(0.975)  # 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``successes / n``; ``(0.0, 1.0)`` when there is nothing to go on."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"successes must be between 0 and n: {successes}/{n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = (z / (1 + z2 / n)) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # At 0 and n the bounds are exactly 0 and 1; floating point would leave a trace of 1e-17.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def newcombe_difference(
    successes_a: int, n_a: int, successes_b: int, n_b: int, z: float = Z95
) -> tuple[float, float, float]:
    """``(difference, low, high)`` of ``p_a - p_b`` with Newcombe's hybrid score interval."""
    if n_a == 0 or n_b == 0:
        return 0.0, -1.0, 1.0
    p_a, p_b = successes_a / n_a, successes_b / n_b
    l_a, u_a = wilson(successes_a, n_a, z)
    l_b, u_b = wilson(successes_b, n_b, z)
    difference = p_a - p_b
    low = difference - math.sqrt((p_a - l_a) ** 2 + (u_b - p_b) ** 2)
    high = difference + math.sqrt((u_a - p_a) ** 2 + (p_b - l_b) ** 2)
    return difference, max(-1.0, low), min(1.0, high)
