import numpy as np
import pytest

from conceptspace.toy import fit_asymmetry, path_error, plot_toy, simulate


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
