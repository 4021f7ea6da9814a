"""Underspecification in a sweep (the paper's underspecification experiments): the held-out class vs masking probability p.

`masking_metrics(runs)` fills sweep_metrics.json's "masking" entry from the run records of `collect_runs`:
learning time (steps to the threshold on every concept; a concept never learned counts as twice the run, i.e.
slowest) and its Spearman correlation with p, per-concept learning steps and speeds, the probe's final P(blue) and
the mean RGB of the generated held-out objects. `report.sweep_figures` draws steps-to-80% vs p, held-out trajectories
colored by p, and the final generations at the smallest and largest p.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from ..analysis.sweep_stats import censored_summary

OBJECT_DIFF = 0.15  # a pixel belongs to the object when a channel differs this much from the background


def _first_held_out(run: dict) -> tuple[str, dict] | None:
    """(name, metrics) of the run's first held-out class (the masking space has one: the blue triangle)."""
    return next(((n, c) for n, c in run["classes"].items() if c["held_out"]), None)


def held_out_trajectories(runs: list[dict]) -> dict[float, list[tuple[np.ndarray, dict]]]:
    """{p: [(held-out trajectory [K, C], run record) per seed]} of the masked runs that have trajectories."""
    groups: dict[float, list[tuple[np.ndarray, dict]]] = {}
    for r in runs:
        if r.get("masking") is not None and "trajectories" in r and (held := _first_held_out(r)):
            groups.setdefault(r["masking"], []).append((np.array(r["trajectories"][held[0]]), r))
    return groups


def learning_time(run: dict, cls: dict) -> float:
    """Steps until every concept of a class is learned; a concept never learned = twice the run (slowest)."""
    never = (run["steps"][-1] if run["steps"] else 0) * 2
    return float(max((s if s is not None else never) for s in cls["learning_step"].values()))


def object_rgb(samples: np.ndarray) -> list[float] | None:
    """Mean RGB in [0, 1] of the object pixels of uint8 generations [n, 3, H, W] (background = border median)."""
    x = samples.astype(np.float32) / 255.0
    border = np.concatenate([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], axis=-1)  # [n, 3, 4W]
    bg = np.median(border, axis=-1)[:, :, None, None]
    obj = (np.abs(x - bg).max(axis=1) > OBJECT_DIFF)  # [n, H, W]
    if not obj.any():
        return None
    return [float(x[:, ch][obj].mean()) for ch in range(3)]


def masking_metrics(runs: list[dict]) -> dict | None:
    """sweep_metrics.json "masking" (None unless the sweep varies a masking probability)."""
    runs = [r for r in runs if r.get("masking") is not None and _first_held_out(r)]
    if len({r["masking"] for r in runs}) < 2:
        return None
    by_p: dict[float, list[tuple[dict, str, dict]]] = {}
    for r in runs:
        by_p.setdefault(r["masking"], []).append((r, *_first_held_out(r)))
    ps = sorted(by_p)
    key = [f"{p:g}" for p in ps]
    mean_t = [float(np.mean([learning_time(r, c) for r, _, c in by_p[p]])) for p in ps]
    rho = float(spearmanr(ps, mean_t).statistic) if len(ps) >= 3 and len(set(mean_t)) > 1 else None
    concepts = list(by_p[ps[0]][0][2]["learning_step"])
    steps = {k: {c: [cl["learning_step"][c] for _, _, cl in by_p[p]] for c in concepts} for k, p in zip(key, ps)}
    speeds = {k: {c: float(np.mean([0.0 if s is None else 1.0 / s for s in v])) for c, v in steps[k].items()}
              for k in key}
    rgb = {}
    for k, p in zip(key, ps):
        per_run = [object_rgb(r["final_samples"][n]) for r, n, _ in by_p[p] if "final_samples" in r]
        per_run = [v for v in per_run if v is not None]
        rgb[k] = np.mean(per_run, axis=0).round(4).tolist() if per_run else None
    return {"spearman_time_vs_p": rho, "mean_time": dict(zip(key, mean_t)),
            "learning_step": steps, "mean_speed": speeds,
            "final_p_blue": {k: float(np.mean([c["final_coords"][0] for _, _, c in by_p[p] if c.get("final_coords")]))
                             for k, p in zip(key, ps)},
            "final_object_rgb": rgb, "n_runs": {k: len(by_p[p]) for k, p in zip(key, ps)},
            "per_run": masking_per_run(by_p)}


def masking_per_run(by_p: dict[float, list[tuple[dict, str, dict]]]) -> dict:
    """Per-run statistics of the held-out learning time (the later concept; never learned = censored at the run's
    end) against -p (more masking: expected later), over runs, with bootstrap intervals over seeds."""
    neg_p, times, horizon, groups = [], [], [], []
    for p, members in by_p.items():
        for r, _, c in members:
            steps = list(c["learning_step"].values())
            neg_p.append(-p)
            times.append(None if any(s is None for s in steps) else max(steps))
            horizon.append(r["steps"][-1] if r["steps"] else 0)
            groups.append(p)
    out = censored_summary(neg_p, times, horizon, groups)
    out["covariate"] = "-p"
    return out
