"""The simplified dynamical model of underspecification (the paper's underspecification model).

Concept-space coordinates c = (c1, c2): c1 = color (1 = blue, correct), c2 = the other concept (1 = correct).
Benign gradients (correctly specified prompts) pull toward the target (1, 1); conflicting gradients
(underspecified prompts) pull toward a moving target alpha(t) = 1 / (1 + exp(-k (t - t0))); a >= 1 is the
asymmetry between the two:

    dc1/dt = s [ (1/(2a)) (1 - c1) + (a/2) (alpha(t) - c1) ]
    dc2/dt = s [ (a/2) (1 - c2) + (1/(2a)) (alpha(t) - c2) ]

a = 1 gives the straight diagonal; large a lets c2 converge while c1 is dragged toward alpha (the memorised
"red") before it turns. `fit_asymmetry` finds the a whose path best matches a measured trajectory (least squares);
`fit_toy` fits a together with the time scale that maps training steps onto the model's time.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp
from scipy.optimize import minimize, minimize_scalar

T_END = 25.0


def simulate(a: float, s: float = 3.0, k: float = 0.1, t0: float = 10.0, start: tuple[float, float] = (0.5, 0.5),
             n: int = 200, t_end: float = T_END, times: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(t [n], c [n, 2]) integrated with RK45 on [0, t_end], or at the given increasing `times` from 0."""
    if a <= 0:
        raise ValueError(f"asymmetry a must be positive, got {a}")

    def rhs(t: float, c: np.ndarray) -> list[float]:
        alpha = 1.0 / (1.0 + np.exp(-k * (t - t0)))
        return [s * ((1 / (2 * a)) * (1 - c[0]) + (a / 2) * (alpha - c[0])),
                s * ((a / 2) * (1 - c[1]) + (1 / (2 * a)) * (alpha - c[1]))]

    t = np.linspace(0.0, t_end, n) if times is None else np.asarray(times, dtype=float)
    sol = solve_ivp(rhs, (0.0, max(float(t[-1]), 1e-9)), list(start), method="RK45", t_eval=t, rtol=1e-8,
                    atol=1e-10)
    return sol.t, sol.y.T


def path_error(a: float, measured: np.ndarray, times: np.ndarray | None = None, **kw) -> float:
    """Mean squared distance between a measured trajectory [K, 2] and the toy path for asymmetry a, started where
    the measurement starts; checkpoints at the toy times `times` (default: spread evenly over [0, 25])."""
    measured = np.asarray(measured, dtype=float)
    _, c = simulate(a, start=tuple(measured[0]), n=len(measured), times=times, **kw)
    return float(((c - measured) ** 2).sum(1).mean())


def fit_asymmetry(measured: np.ndarray, bounds: tuple[float, float] = (1.0, 10.0), **kw) -> tuple[float, float]:
    """(a, mean squared error) of the least-squares fit of the toy model to a measured trajectory."""
    res = minimize_scalar(lambda a: path_error(a, measured, **kw), bounds=bounds, method="bounded",
                          options={"xatol": 1e-4})
    return float(res.x), float(res.fun)


def toy_times(steps: np.ndarray, time_scale: float) -> np.ndarray:
    """Toy time of each checkpoint: proportional to the training steps since the first one, the last at
    time_scale x 25 (time_scale 1: the run spans the model's window [0, 25])."""
    steps = np.asarray(steps, dtype=float)
    span = max(steps[-1] - steps[0], 1e-9)
    return time_scale * T_END * (steps - steps[0]) / span


def fit_toy(measured: np.ndarray, steps: np.ndarray, a_bounds: tuple[float, float] = (1.0, 10.0),
            scale_bounds: tuple[float, float] = (0.05, 4.0)) -> dict[str, float]:
    """Least-squares fit of the asymmetry a and the time scale (see `toy_times`) to a measured trajectory [K, 2]
    at checkpoint `steps` [K]: a coarse grid, then Nelder-Mead from its best point. Returns {a, time_scale, mse}."""
    measured, steps = np.asarray(measured, dtype=float), np.asarray(steps, dtype=float)
    if len(measured) != len(steps) or len(steps) < 3:
        raise ValueError(f"need >= 3 checkpoints with one step each, got {len(measured)} points, {len(steps)} steps")

    def loss(x: np.ndarray) -> float:
        return path_error(x[0], measured, times=toy_times(steps, np.exp(x[1])))

    lo, hi = np.log(scale_bounds[0]), np.log(scale_bounds[1])
    grid = [(a, ls) for a in np.linspace(*a_bounds, 13) for ls in np.linspace(lo, hi, 11)]
    best = min(grid, key=lambda x: loss(np.array(x)))
    res = minimize(loss, np.array(best), method="Nelder-Mead", bounds=[a_bounds, (lo, hi)],
                   options={"xatol": 1e-4, "fatol": 1e-9})
    return {"a": float(res.x[0]), "time_scale": float(np.exp(res.x[1])), "mse": float(res.fun)}


def fit_masking_runs(runs: list[dict]) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Fit the model to each masking probability's mean held-out trajectory (run records of a masking sweep).

    The fit starts at the first checkpoint at which every seed draws its training classes (before that the samples
    are noise); with fewer than 3 such checkpoints the whole trajectory is used. Returns ({"p=0.5": trajectory
    [K, 2]}, {"p=0.5": {a, time_scale, mse, steps, n_runs}}); probabilities with fewer than 3 checkpoints are skipped.
    """
    from .masking import held_out_trajectories
    from .trajectories import mean_trajectory

    by_p = {p: [(r["steps"].index(r["drawing_step"]) if r.get("drawing_step") in r["steps"] else 0,
                 t[:, :2], np.array(r["steps"])) for t, r in group]
            for p, group in held_out_trajectories(runs).items()}
    measured, fits = {}, {}
    for p in sorted(by_p):
        k0, k1 = max(k for k, _, _ in by_p[p]), min(len(t) for _, t, _ in by_p[p])
        k0 = k0 if k1 - k0 >= 3 else 0
        traj = mean_trajectory([t[k0:] for _, t, _ in by_p[p]])
        steps = by_p[p][0][2][k0:k0 + len(traj)]
        if len(traj) < 3:
            continue
        fit = fit_toy(traj, steps)
        measured[f"p={p:g}"] = traj
        fits[f"p={p:g}"] = {"a": round(fit["a"], 3), "time_scale": round(fit["time_scale"], 3),
                            "mse": round(fit["mse"], 5), "steps": [int(x) for x in steps], "n_runs": len(by_p[p])}
    return measured, fits
