import numpy as np
import pytest

from conceptspace.analysis.onsets import first_reached
from conceptspace.analysis.trajectories import (
    coordinates,
    corners,
    heading_change,
    learning_step,
    memorisation,
    saturation_step,
    smooth,
    sudden_turn,
)

STEPS = np.arange(1, 41) * 100


def l_path(n_leg=20):
    """(0.5, 0.5) -> (0.5, 0.95) (toward corner 01) -> (0.95, 0.95): an L with its corner at index n_leg."""
    up = np.stack([np.full(n_leg, 0.5), np.linspace(0.5, 0.95, n_leg)], 1)
    right = np.stack([np.linspace(0.5, 0.95, n_leg + 1)[1:], np.full(n_leg, 0.95)], 1)
    return np.concatenate([up, right])


def test_coordinates_and_corners():
    probs = np.array([[[0.2, 0.8], [1.0, 0.0]]])  # one sample, two binary concepts
    np.testing.assert_allclose(coordinates(probs, [2, 2]), [[0.8, 0.0]])
    three = np.array([[[0.0, 1.0, 0.0]]])
    np.testing.assert_allclose(coordinates(three, [3]), [[0.5]])
    np.testing.assert_allclose(corners(["01", "21"], [3, 2]), [[0, 1], [1, 1]])


def test_threshold_crossing_at_known_step():
    acc = np.clip((np.arange(40) - 10) / 10, 0, 1)  # reaches 0.8 at index 18
    assert STEPS[first_reached(acc, 0.8, 3)] == STEPS[18]
    assert learning_step(acc, STEPS, 0.8, sigma=0.0, run_length=3) == STEPS[18]
    assert learning_step(np.full(40, 0.5), STEPS) is None


def test_run_length_ignores_a_single_spike():
    acc = np.zeros(40)
    acc[5] = 1.0
    acc[30:] = 1.0
    assert STEPS[first_reached(acc, 0.8, 3)] == STEPS[30]


def test_l_shaped_path_turns_at_the_corner():
    path = l_path()
    change = heading_change(path, window=2)
    assert np.nanargmax(change) == 19 or np.nanargmax(change) == 20
    step, angle = sudden_turn(path, STEPS, window=2)
    assert step in (STEPS[19], STEPS[20]) and angle == pytest.approx(90, abs=10)


def test_memorisation_toward_training_corner_then_turn():
    # Centre -> near corner 01 (0.1, 0.9) -> own corner 11: memorised toward 01, turn of 135 degrees at index 19.
    a = np.stack([np.linspace(0.5, 0.1, 20), np.linspace(0.5, 0.9, 20)], 1)
    b = np.stack([np.linspace(0.1, 0.95, 21)[1:], np.full(20, 0.9)], 1)
    path = np.concatenate([a, b])
    corner = corners(["00", "01", "10", "11"], [2, 2])
    c, closest, k = memorisation(path, own=3, train_idx=[0, 1, 2], corner=corner, radius=0.5)
    assert c == 1  # 01
    assert closest == pytest.approx(np.hypot(0.1, 0.1), abs=0.01)
    step, angle = sudden_turn(path, STEPS, start=k)
    assert step == STEPS[19] and angle == pytest.approx(135, abs=5)


def test_straight_path_has_no_memorisation():
    diag = np.stack([np.linspace(0.5, 1, 40)] * 2, 1)
    c, _, _ = memorisation(diag, own=3, train_idx=[0, 1, 2], corner=corners(["00", "01", "10", "11"], [2, 2]))
    assert c is None
    assert sudden_turn(np.zeros((40, 2)), STEPS) == (None, None)


def test_saturation_step():
    corner = np.array([[0, 0], [0, 1]])
    t = np.linspace(1, 0, 40)[:, None, None]
    traj = corner[None] * (1 - t) + 0.5 * t  # every class moves from the centre to its corner
    step = saturation_step(traj, corner, STEPS, msd=0.01)
    d = ((traj - corner[None]) ** 2).sum(-1).mean(-1)
    assert step == STEPS[np.argmax(d < 0.01)]


def test_smooth_keeps_constant_and_length():
    x = np.ones((10, 3))
    np.testing.assert_allclose(smooth(x, 1.5), x)
    assert smooth(x, 0).shape == x.shape
