"""Censored per-run statistics on data with known answers."""

import numpy as np
import pytest

from conceptspace.analysis.sweep_stats import (
    bootstrap,
    censored_summary,
    closer_when_learned,
    concordance,
    kaplan_meier,
    observed_order,
    rank_correlation,
    wilson,
)


def test_kaplan_meier_counts_censored_runs_at_risk():
    steps, frac = kaplan_meier([100, 200, 300, 300], [True, True, True, False])
    assert steps.tolist() == [100, 200, 300]
    assert frac == pytest.approx([0.25, 0.5, 0.75])  # the censored run stays at risk until 300
    steps, frac = kaplan_meier([6000, 6000], [False, False])
    assert len(steps) == 0  # nobody learned: an empty curve, not a curve at zero time


def test_concordance_with_censoring():
    assert concordance([3, 2, 1], [100, 200, 300], [True] * 3) == 1.0  # larger signal, earlier: always
    assert concordance([1, 2, 3], [100, 200, 300], [True] * 3) == 0.0
    # Run 1 never learned (censored at 400): it is known to be later than 0 and than 2, not the other way round.
    assert concordance([3, 2, 1], [100, 400, 200], [True, False, True]) == pytest.approx(2 / 3)
    assert concordance([1, 2], [400, 400], [False, False]) is None  # no pair's order is known
    assert concordance([1, 1], [100, 200], [True, True]) == 0.5  # tied signal


def test_rank_correlation_and_bootstrap_over_seeds():
    assert rank_correlation([1, 2, 3, 4], [0, 0, 0.1, 0.2]) == pytest.approx(0.9486832980505138)
    assert rank_correlation([1, 1], [0, 1]) is None
    x = np.repeat([1.0, 2.0, 3.0], 3)
    y = x + np.tile([0.0, 0.1, 0.2], 3)
    lo, hi = bootstrap(lambda idx: rank_correlation(x[idx], y[idx]), x, n_boot=200)
    assert 0.8 < lo <= hi <= 1.0  # ties within a separation keep it just under 1
    noise = np.random.default_rng(0).normal(size=30)
    lo, hi = bootstrap(lambda idx: rank_correlation(np.arange(30)[idx], noise[idx]), np.zeros(30), n_boot=300)
    assert lo < 0 < hi  # no relation: the interval covers 0


def test_wilson_and_observed_order():
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert wilson(0, 0) == (None, None)
    assert observed_order(100, 200) == "a" and observed_order(None, 200) == "b" and observed_order(300, None) == "a"
    assert observed_order(None, None) is None and observed_order(100, 100) == "tie"


def test_censored_summary_on_a_sweep_like_table():
    # 3 separations x 3 seeds; stronger signal learns earlier; the weakest never within 6,000 steps.
    signal = np.repeat([0.01, 0.05, 0.1], 3)
    steps = [None, None, None, 4000, 5000, None, 900, 1200, 1500]
    s = censored_summary(signal, steps, [6000] * 9, signal, n_boot=300)
    assert s["n_runs"] == 9 and s["n_learned"] == 5
    # 30 comparable pairs, none discordant; the 6 pairs of seeds at one separation tie on the signal (1/2 each)
    assert s["concordance"] == pytest.approx(27 / 30)
    assert s["spearman_runs"] > 0.8 and s["spearman_runs_interval"][0] is not None


def test_closer_when_learned_counts_pairs_and_resamples_runs():
    # run A: learned class at 0.2, unlearned at 0.9; run B: learned at 0.5, unlearned at 0.4
    out = closer_when_learned([0.2, 0.9, 0.5, 0.4], [True, False, True, False], ["A", "A", "B", "B"], [1, 1, 1, 1],
                              n_boot=200)
    # pairs (learned, unlearned): (0.2, 0.9) yes, (0.2, 0.4) yes, (0.5, 0.9) yes, (0.5, 0.4) no -> 3/4
    assert out["closer_fraction"] == pytest.approx(0.75) and out["n"] == 4 and out["n_learned"] == 2
    assert out["n_runs"] == 2 and out["interval"][0] <= 0.75 <= out["interval"][1]
    assert closer_when_learned([0.3, 0.3], [True, False], ["A", "A"], [0, 0], n_boot=50)["closer_fraction"] == 0.5
    # every learned reading closer than every unlearned one, over 6 runs: 1, interval at 1
    d = [0.1, 0.8] * 6
    e = [True, False] * 6
    runs = np.repeat(np.arange(6), 2)
    out = closer_when_learned(d, e, runs, runs % 2, n_boot=100)
    assert out["closer_fraction"] == 1.0 and out["interval"] == [1.0, 1.0]
    assert closer_when_learned([0.1], [True], ["A"], [0], n_boot=20)["closer_fraction"] is None  # nothing unlearned
