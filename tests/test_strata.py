"""Parent post-stratification (the estimator `scripts/bench_selection.py --parents` replays): strata and weights
from both parents' whole files, the estimate a hand computation gives, an empty stratum falling back to the plain
mean."""

import pytest

from merger.sweep.strata import Strata, stratum


def test_strata_and_the_estimate_by_hand():
    # parents on 8 items: both right on 0-1, only A on 2-3, only B on 4-5, neither on 6-7 ... and 8 more where both
    # are right, so W = (neither 2, only B 2, only A 2, both 10) / 16
    a = {"t": {str(i): float(i < 4 or i >= 8) for i in range(16)}}
    b = {"t": {str(i): float(i < 2 or 4 <= i < 6 or i >= 8) for i in range(16)}}
    strata = Strata.from_parents(a, b)
    assert [stratum(1, 1), stratum(1, 0), stratum(0, 1), stratum(0, 0)] == [3, 2, 1, 0]
    assert strata.weights["t"] == [2 / 16, 2 / 16, 2 / 16, 10 / 16]
    # a candidate scored on items 0, 2, 4, 6 (one per stratum): right on 0 and 2 only
    values = {"t": {"0": 1.0, "2": 1.0, "4": 0.0, "6": 0.0}}
    assert strata.score(values, "mean") == pytest.approx(10 / 16 * 1 + 2 / 16 * 1 + 2 / 16 * 0 + 2 / 16 * 0)
    # only items of the "both right" stratum scored: the others fall back to the plain mean (1.0 here)
    assert strata.score({"t": {"0": 1.0, "1": 1.0}}, "mean") == pytest.approx(1.0)
    partial = {"t": {"0": 1.0, "1": 0.0}}  # plain mean 0.5, and every empty stratum takes it
    assert strata.score(partial, "mean") == pytest.approx(0.5)
    # a parent scored on any items is estimated at its whole-file score exactly, once every stratum has an item
    assert strata.score({"t": {k: a["t"][k] for k in ("0", "2", "4", "6")}}, "mean") == pytest.approx(12 / 16)
