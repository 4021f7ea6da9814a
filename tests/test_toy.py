import numpy as np
import pytest

from conceptspace.analysis.toy import (
    fit_asymmetry,
    fit_toy,
    path_error,
    simulate,
    toy_times,
)
from conceptspace.report.sweep_figures import plot_toy


def test_a_equal_one_is_the_straight_diagonal():
    t, c = simulate(1.0)
    np.testing.assert_allclose(c[:, 0], c[:, 1], atol=1e-9)
    assert c[-1, 0] > 0.9 and t[-1] == pytest.approx(25.0)


def test_large_a_learns_the_other_concept_first_and_drags_color():
    _, c = simulate(5.0)
    mid = len(c) // 4
    assert c[mid, 1] > 0.9 and c[mid, 0] < 0.5  # c2 converged, c1 held near alpha ("red")


def test_fit_recovers_a_known_asymmetry():
    _, c = simulate(3.3, n=30)
    noisy = c + np.random.default_rng(0).normal(0, 0.005, c.shape)
    a, err = fit_asymmetry(noisy)
    assert a == pytest.approx(3.3, abs=0.15) and err < 1e-3
    assert path_error(1.0, noisy) > err


def test_bad_a_and_plot():
    with pytest.raises(ValueError, match="positive"):
        simulate(0.0)
    fig = plot_toy([1, 3, 5], {"p=0": simulate(1, n=10)[1]}, {"p=0": {"a": 1.0}})
    assert len(fig.axes) == 2


def test_fit_recovers_asymmetry_and_time_scale_at_uneven_checkpoints():
    steps = 50 + 4000 * np.linspace(0, 1, 25) ** 2  # quadratic checkpoint spacing, as the runs
    _, c = simulate(2.5, times=toy_times(steps, 0.6))
    noisy = c + np.random.default_rng(1).normal(0, 0.005, c.shape)
    fit = fit_toy(noisy, steps)
    assert fit["a"] == pytest.approx(2.5, abs=0.15) and fit["time_scale"] == pytest.approx(0.6, rel=0.1)
    assert fit["mse"] < 1e-3 and fit["mse"] < path_error(2.5, noisy)  # the fixed time scale fits worse
    with pytest.raises(ValueError, match="checkpoints"):
        fit_toy(noisy[:2], steps[:2])
