"""Anytime-valid confidence sequences for the mean of bounded values.

A confidence sequence covers the mean at every sample size at once with probability at least 1 - alpha, so a race
may look after every slice, as often as it likes, and stop whenever it says so, at the stated confidence; a
fixed-n interval (a bootstrap, a t-interval) re-checked at each look does not keep it.

This is the predictable plug-in empirical-Bernstein sequence of Waudby-Smith & Ramdas ("Estimating means of
bounded random variables by betting", JRSS-B 2024, Theorem 2), in its form for sampling without replacement from a
finite population ("Confidence sequences for sampling without replacement", NeurIPS 2020): items are drawn from a
task file of N items, so the mean of the whole file is pinned down exactly once all N are seen, and the sequence
narrows faster than an infinite-population one as n approaches N. The variance is estimated as it goes, so paired
differences between sibling models (mostly zero) give narrow sequences.
"""

from __future__ import annotations

import math

import numpy as np

LAMBDA_CAP = 0.5  # the bet size's ceiling, as in the paper


def confidence_sequence(
    values, alpha: float, population: int | None = None, low: float = -1.0, high: float = 1.0, sides: int = 2
) -> tuple[float, float]:
    """The (1 - alpha) confidence sequence for the mean, after `values` (in [low, high], in the order they were
    drawn); `population`: the items there are to draw from, without replacement (None: with replacement). The
    bounds are intersected over every earlier look, as a confidence sequence allows, and clipped to [low, high].
    `sides=1`: a caller that reads only one of the bounds; each bound then holds alone at 1 - alpha (the constant
    ln(1/alpha) instead of the two-sided ln(2/alpha)), the pair together only at 1 - 2 alpha."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        return low, high
    if population is not None and population < n:
        raise ValueError(f"{n} values drawn without replacement from a population of {population}")
    y = (x - low) / (high - low)
    t = np.arange(1, n + 1, dtype=float)
    total = np.cumsum(y)
    mean = (0.5 + total) / (t + 1)  # after item t
    variance = (0.25 + np.cumsum((y - mean) ** 2)) / (t + 1)
    mean_before = np.concatenate([[0.5], mean[:-1]])
    variance_before = np.concatenate([[0.25], variance[:-1]])
    bound = math.log(sides / alpha)
    lam = np.minimum(np.sqrt(2 * bound / (variance_before * t * np.log(t + 1))), LAMBDA_CAP)
    penalty = np.cumsum(4 * (y - mean_before) ** 2 * (-np.log1p(-lam) - lam) / 4)
    if population is None:
        weight = np.cumsum(lam)
        center = np.cumsum(lam * y) / weight
    else:
        left = population - t + 1  # items not yet drawn before item t
        weight = np.cumsum(lam * (1 + (t - 1) / left))
        center = np.cumsum(lam * (y + (total - y) / left)) / weight
    width = (bound + penalty) / weight
    if population is not None and n == population:  # every item seen: the mean is known
        return float(x.mean()), float(x.mean())
    lower = max(0.0, float(np.max(center - width)))
    upper = min(1.0, float(np.min(center + width)))
    if lower > upper:  # the running intersection can cross only on a miss; report the last look's point
        lower = upper = float(center[-1])
    return low + lower * (high - low), low + upper * (high - low)
