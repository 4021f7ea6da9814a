"""Trajectory analysis: pure functions from evaluation arrays to the paper's readings of learning dynamics.

Coordinates: for each concept, the probe's expected value index divided by (n_values - 1), averaged over samples;
for binary concepts that is P(value 1), the paper's axes ("Color" = P(blue), "Size" = P(small)). A class's corner
is its digits divided by (n_values - 1): 00 -> (0, 0), 11 -> (1, 1).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .onsets import first_reached, hard_accuracy, held_from, onset


def coordinates(probs: np.ndarray, n_values: list[int]) -> np.ndarray:
    """[..., C, Vmax] per-sample probabilities -> [..., C] concept-space coordinates in [0, 1]."""
    out = np.empty(probs.shape[:-1], dtype=np.float64)
    for j, n in enumerate(n_values):
        idx = np.arange(probs.shape[-1]) / max(n - 1, 1)
        out[..., j] = (probs[..., j, :] * idx).sum(-1)
    return out


def corners(class_names: list[str], n_values: list[int]) -> np.ndarray:
    """[P, C] concept-space corner of each class."""
    return np.array([[int(ch) / (n - 1) for ch, n in zip(name, n_values)] for name in class_names], dtype=np.float64)


def mean_trajectory(trajs: list[np.ndarray]) -> np.ndarray:
    """Mean over seeds of trajectories [K_i, C], truncated to the shortest (a run may have fewer checkpoints)."""
    k = min(len(t) for t in trajs)
    return np.mean([np.asarray(t)[:k] for t in trajs], axis=0)


def smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along the checkpoint axis (axis 0); sigma in checkpoints, 0 = none."""
    if sigma <= 0 or len(x) < 2:
        return np.asarray(x, dtype=np.float64)
    return gaussian_filter1d(np.asarray(x, dtype=np.float64), sigma, axis=0, mode="nearest")


def learning_step(accuracy: np.ndarray, steps: np.ndarray, threshold: float = 0.8, sigma: float = 1.5,
                  run_length: int = 3, allowed_dip: int | None = None, start: int = 0) -> int | None:
    """Learning time of one concept for one class, from its smoothed accuracy: the held onset (above the threshold
    to the end of the run but for `allowed_dip` checkpoints) from checkpoint `start` on; with allowed_dip None,
    the first checkpoint starting `run_length` in a row above it (first reached)."""
    smoothed = smooth(accuracy, sigma)
    i = (first_reached(smoothed, threshold, run_length, start) if allowed_dip is None
         else held_from(smoothed, threshold, allowed_dip, start))
    return None if i is None else int(steps[i])


def drawing_index(train_acc: np.ndarray, n_values: list[int], level: float, sigma: float) -> int | None:
    """First checkpoint at which the training classes are drawn: their smoothed mean accuracy (train_acc [K, P, C]
    averaged over classes and concepts) is `level` of the way from chance to perfect; None if never."""
    chance = float(np.mean([1 / n for n in n_values]))
    hit = np.nonzero(smooth(train_acc.mean(axis=(1, 2)), sigma) >= chance + level * (1 - chance))[0]
    return int(hit[0]) if len(hit) else None


def memorisation(traj: np.ndarray, own: int, train_idx: list[int], corner: np.ndarray,
                 radius: float = 0.5) -> tuple[int | None, float | None, int | None]:
    """The training corner a held-out trajectory approaches first.

    Returns (class index, closest distance to it, checkpoint index of that closest approach), where the visit
    starts when the trajectory first comes within `radius` of a training corner while nearer to it than to every
    other corner and lasts while that corner stays the nearest; (None, None, None) if it never did.
    """
    dist = np.linalg.norm(traj[:, None, :] - corner[None], axis=2)  # [K, P]
    nearest = dist.argmin(1)
    for k in range(len(traj)):
        c = int(nearest[k])
        if c != own and c in train_idx and dist[k, c] < radius:
            # Closest approach during this visit: until the trajectory stops being nearest to that corner.
            end = k
            while end + 1 < len(traj) and nearest[end + 1] == c:
                end += 1
            closest = k + int(dist[k:end + 1, c].argmin())
            return c, float(dist[closest, c]), closest
    return None, None, None


def heading_change(traj: np.ndarray, window: int = 2, min_move: float = 0.03) -> np.ndarray:
    """[K] angle in degrees between the displacement over the `window` checkpoints before and after each one.

    NaN where either displacement is shorter than `min_move` (heading is undefined when the trajectory rests).
    """
    out = np.full(len(traj), np.nan)
    for k in range(window, len(traj) - window):
        a, b = traj[k] - traj[k - window], traj[k + window] - traj[k]
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        if na >= min_move and nb >= min_move:
            out[k] = np.degrees(np.arccos(np.clip(a @ b / (na * nb), -1.0, 1.0)))
    return out


def sudden_turn(traj: np.ndarray, steps: np.ndarray, start: int = 0, window: int = 2,
                target: np.ndarray | None = None, arrived: float = 0.15) -> tuple[int | None, float | None]:
    """(step, angle in degrees) of the largest heading change at or after checkpoint index `start`.

    With a `target` corner, only checkpoints before the trajectory first comes within `arrived` of it count: once
    there, what remains is sampling jitter around the corner, not a turn.
    """
    change = heading_change(traj, window)
    change[:start] = np.nan
    if target is not None:
        near = np.nonzero(np.linalg.norm(traj - target, axis=1) < arrived)[0]
        if len(near):
            change[near[0]:] = np.nan
    if np.isnan(change).all():
        return None, None
    k = int(np.nanargmax(change))
    return int(steps[k]), float(change[k])


def saturation_step(train_traj: np.ndarray, train_corners: np.ndarray, steps: np.ndarray,
                    msd: float = 0.01) -> int | None:
    """First step where the training classes' mean squared distance to their corners falls below `msd`."""
    d = ((train_traj - train_corners[None]) ** 2).sum(-1).mean(-1)  # [K]
    hit = np.nonzero(d < msd)[0]
    return int(steps[hit[0]]) if len(hit) else None


def analyze(probs: np.ndarray, preds: np.ndarray, steps: np.ndarray, class_names: list[str], held_out: list[str],
            kinds: list[str], n_values: list[int], eval_cfg, has_object: np.ndarray | None = None) -> dict:
    """metrics.json content from one evaluation (probs [K, P, S, C, V], preds [K, P, S, C], has_object [K, P, S])."""
    e = eval_cfg
    coords = smooth(coordinates(probs, n_values).mean(axis=2), e.smoothing)  # [K, P, C]
    corner = corners(class_names, n_values)
    acc = hard_accuracy(preds, class_names, has_object)  # [K, P, C]
    train_idx = [i for i, n in enumerate(class_names) if n not in held_out]
    # Before the model draws its training classes at all, its samples are noise and the probe's reading of them
    # is arbitrary (at the first checkpoints every class reads bluish): no reading is taken before that. Corners,
    # turns and elicitation onsets start at the checkpoint where the training classes are drawn on all concepts;
    # a concept's learning steps start where they are drawn on that concept (so a fast concept is not held back
    # by a slow one).
    k_draw = drawing_index(acc[:, train_idx], n_values, e.drawing_level, e.smoothing)
    never_drawn = k_draw is None
    k_draw = len(steps) - 1 if never_drawn else k_draw
    k_concept = [drawing_index(acc[:, train_idx, j:j + 1], [n], e.drawing_level, e.smoothing)
                 for j, n in enumerate(n_values)]
    out: dict = {"classes": {}, "turn": {}, "drawing_step": None if never_drawn else int(steps[k_draw]),
                 "concept_drawing_step": {kind: None if k is None else int(steps[k]) for kind, k in zip(kinds, k_concept)}}
    for p, name in enumerate(class_names):
        readings = {kind: onset(smooth(acc[:, p, j], e.smoothing), steps, e.threshold, e.run_length, e.allowed_dip,
                                len(steps) if k_concept[j] is None else k_concept[j])
                    for j, kind in enumerate(kinds)}
        out["classes"][name] = {
            "held_out": name in held_out,
            "learning_step": {kind: r["held"] for kind, r in readings.items()},
            "learning_step_first": {kind: r["first"] for kind, r in readings.items()},
            "final_coords": coords[-1, p].round(4).tolist(),
            "final_accuracy": {kind: float(acc[-1, p, j]) for j, kind in enumerate(kinds)},
        }
    for p, name in enumerate(class_names):
        if name not in held_out:
            continue
        # The turn is searched from the closest approach to the memorised corner on (the memorisation phase).
        c, closest, k_mem = memorisation(coords[k_draw:, p], p, train_idx, corner, e.memorisation_radius)
        k_mem = None if k_mem is None else k_mem + k_draw
        step, angle = sudden_turn(coords[:, p], steps, k_draw if k_mem is None else k_mem, e.turn_window, corner[p])
        out["turn"][name] = {"step": step, "angle_deg": None if angle is None else round(angle, 2),
                             "memorised_toward": None if c is None else class_names[c],
                             "memorisation_step": None if k_mem is None else int(steps[k_mem]),
                             "closest_distance": None if closest is None else round(closest, 4)}
    out["training_saturation_step"] = saturation_step(coords[:, train_idx], corner[train_idx], steps,
                                                      e.saturation_msd)
    return out
