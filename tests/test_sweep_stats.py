"""Censored per-run statistics on data with known answers."""

import numpy as np
import pytest

from conceptspace.analysis.sweep_stats import (
    bootstrap,
    censored_summary,
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


def test_distance_vs_time_resamples_runs():
    from conceptspace.analysis.sweep_stats import distance_vs_time

    # closer readings learn sooner in every comparable pair; the farthest never learns (censored at 9,000)
    d, t, e = [0.1, 0.4, 0.2, 0.9], [1000, 4000, 2000, 9000], [True, True, True, False]
    out = distance_vs_time(d, t, e, ["A", "A", "B", "B"], n_boot=200)
    assert out["concordance"] == 1.0 and out["n"] == 4 and out["n_learned"] == 3 and out["n_runs"] == 2
    assert out["interval"] == [1.0, 1.0]
    rev = distance_vs_time([0.9, 0.4, 0.6, 0.1], t, e, ["A", "A", "B", "B"], n_boot=200)
    assert rev["concordance"] == 0.0


def test_distance_time_summary_leaves_out_classes_learned_before_saturation():
    from conceptspace.analysis.sweep import distance_time_summary

    pts = [{"run": "A", "distance": 0.1, "learning_step": 500, "horizon": 4000, "saturated": True,
            "saturation_step": 1000},  # learned before saturation: near its corner by construction, left out
           {"run": "A", "distance": 0.3, "learning_step": 2000, "horizon": 4000, "saturated": True,
            "saturation_step": 1000},
           {"run": "B", "distance": 0.8, "learning_step": None, "horizon": 4000, "saturated": True,
            "saturation_step": 1500},
           {"run": "C", "distance": 0.2, "learning_step": 3000, "horizon": 4000, "saturated": False,
            "saturation_step": None}]
    out = distance_time_summary(pts, n_boot=50)
    assert (out["n"], out["excluded_learned_by_saturation"], out["excluded_not_saturated"]) == (2, 1, 1)
    assert out["concordance"] == 1.0


def test_order_accuracy_is_balanced_against_a_constant_guess():
    from conceptspace.analysis.sweep_stats import order_accuracy

    # 8 pairs where b's signal is larger and b comes first; 2 where a's is larger but b still comes first:
    # "b always first" scores 80% without following the signal; balanced accuracy says 0.5.
    out = order_accuracy([-1.0] * 8 + [1.0] * 2, ["b"] * 10, n_boot=200)
    assert out["accuracy"] == pytest.approx(0.8) and out["balanced_accuracy"] == pytest.approx(0.5)
    assert out["by_prediction"]["a"] == {"n": 2, "correct": 0, "accuracy": 0.0, "interval": list(wilson(0, 2))}
    out = order_accuracy([-1.0] * 8 + [1.0] * 2, ["b"] * 8 + ["a"] * 2, n_boot=200)
    assert out["balanced_accuracy"] == 1.0 and out["balanced_interval"] == [1.0, 1.0]
    assert order_accuracy([-1.0, -2.0], ["b", "a"])["balanced_accuracy"] is None  # one side only: undefined
