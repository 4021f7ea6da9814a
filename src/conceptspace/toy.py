"""The simplified dynamical model of underspecification (paper-notes 6.2, the paper's `sim.ipynb`).

Concept-space coordinates c = (c1, c2): c1 = color (1 = blue, correct), c2 = the other concept (1 = correct).
Benign gradients (correctly specified prompts) pull toward the target (1, 1); conflicting gradients
(underspecified prompts) pull toward a moving target alpha(t) = 1 / (1 + exp(-k (t - t0))); a >= 1 is the
asymmetry between the two:

    dc1/dt = s [ (1/(2a)) (1 - c1) + (a/2) (alpha(t) - c1) ]
    dc2/dt = s [ (a/2) (1 - c2) + (1/(2a)) (alpha(t) - c2) ]

a = 1 gives the straight diagonal; large a lets c2 converge while c1 is dragged toward alpha (the memorised
"red") before it turns. `fit_asymmetry` finds the a whose path best matches a measured trajectory (least squares).
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp
from scipy.optimize import minimize_scalar

T_END = 25.0


def simulate(a: float, s: float = 3.0, k: float = 0.1, t0: float = 10.0, start: tuple[float, float] = (0.5, 0.5),
             n: int = 200, t_end: float = T_END) -> tuple[np.ndarray, np.ndarray]:
    """(t [n], c [n, 2]) integrated with RK45 on [0, t_end]."""
    if a <= 0:
        raise ValueError(f"asymmetry a must be positive, got {a}")

    def rhs(t: float, c: np.ndarray) -> list[float]:
        alpha = 1.0 / (1.0 + np.exp(-k * (t - t0)))
        return [s * ((1 / (2 * a)) * (1 - c[0]) + (a / 2) * (alpha - c[0])),
                s * ((a / 2) * (1 - c[1]) + (1 / (2 * a)) * (alpha - c[1]))]

    t = np.linspace(0.0, t_end, n)
    sol = solve_ivp(rhs, (0.0, t_end), list(start), method="RK45", t_eval=t, rtol=1e-8, atol=1e-10)
    return sol.t, sol.y.T


def path_error(a: float, measured: np.ndarray, **kw) -> float:
    """Mean squared distance between a measured trajectory [K, 2] (checkpoints spread evenly over the toy's time)
    and the toy path for asymmetry a, started where the measurement starts."""
    measured = np.asarray(measured, dtype=float)
    _, c = simulate(a, start=tuple(measured[0]), n=len(measured), **kw)
    return float(((c - measured) ** 2).sum(1).mean())


def fit_asymmetry(measured: np.ndarray, bounds: tuple[float, float] = (1.0, 10.0), **kw) -> tuple[float, float]:
    """(a, mean squared error) of the least-squares fit of the toy model to a measured trajectory."""
    res = minimize_scalar(lambda a: path_error(a, measured, **kw), bounds=bounds, method="bounded",
                          options={"xatol": 1e-4})
    return float(res.x), float(res.fun)


def plot_toy(a_values: list[float], measured: dict[str, np.ndarray] | None = None, fits: dict | None = None):
    """Toy trajectories for a range of a (left) beside measured trajectories and their fitted toy paths (right)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if measured else 1, figsize=(10 if measured else 5, 4.6), squeeze=False)
    cmap = plt.get_cmap("Spectral_r")
    ax = axes[0, 0]
    for i, a in enumerate(a_values):
        _, c = simulate(a)
        ax.plot(c[:, 0], c[:, 1], color=cmap(i / max(len(a_values) - 1, 1)), label=f"a={a:.2g}")
    ax.set_title("simplified model: trajectories for a range of a", fontsize=9)
    if measured:
        ax2 = axes[0, 1]
        for i, (label, traj) in enumerate(measured.items()):
            color = cmap(i / max(len(measured) - 1, 1))
            ax2.plot(traj[:, 0], traj[:, 1], color=color, lw=2, label=f"measured {label}")
            if fits and label in fits:
                _, c = simulate(fits[label]["a"], start=tuple(traj[0]), n=len(traj))
                ax2.plot(c[:, 0], c[:, 1], color=color, ls="--", lw=1, label=f"toy a={fits[label]['a']:.2f}")
        ax2.set_title("measured masking trajectories (solid) and fitted toy paths (dashed)", fontsize=9)
    for a in axes[0]:
        a.set_xlim(0, 1.02)
        a.set_ylim(0, 1.02)
        a.set_xlabel("color: P(blue)")
        a.set_ylabel("other concept: P(correct)")
        a.set_aspect("equal")
        a.legend(fontsize=6)
    fig.tight_layout()
    return fig
