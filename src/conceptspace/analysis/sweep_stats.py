"""Per-run statistics of learning times with censoring, and intervals over seeds (numpy only).

A concept never learned within a run is *censored* at the run's last step: it was not learned by then, which is
neither "learned at the end" nor "missing". Statistics here use every run and treat such runs that way:

- `kaplan_meier`: the fraction of runs that have learned by step t (one minus the survival curve);
- `concordance`: Harrell's C between a covariate (the concept signal) and censored learning times: over the pairs
  whose order is known, how often the run with the larger signal learns first (0.5 = no relation, 1 = always);
- `rank_correlation`: Spearman correlation over runs of the signal with the learning *speed*, never learned = speed
  0 (all runs of one sweep share the horizon, so censored runs tie below every learned one);
- `bootstrap`: a percentile interval over seeds, resampling runs within each group (separation) with replacement;
- `order_accuracy`: how often the concept with the larger signal is learned first, with a Wilson interval;
- `distance_vs_time`: Harrell's C of closeness to the corner vs learning time over held-out readings, with an
  interval that resamples whole runs (the classes of one run are not independent).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def kaplan_meier(times: Sequence[float], learned: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """(event steps [T], fraction learned by each of them [T]) from learning times and whether each was learned
    (a run not learned carries its censoring step, the run's last step, as its time)."""
    t, e = np.asarray(times, dtype=float), np.asarray(learned, dtype=bool)
    steps = np.unique(t[e])
    surv, out = 1.0, []
    for s in steps:
        at_risk = (t >= s).sum()
        surv *= 1 - ((t == s) & e).sum() / at_risk
        out.append(1 - surv)
    return steps, np.asarray(out)


def concordance(signal: Sequence[float], times: Sequence[float], learned: Sequence[bool]) -> float | None:
    """Harrell's C: the fraction of comparable pairs where the larger signal has the earlier learning time.

    A pair is comparable when the earlier time is a learning event (a censored run only says "later than its
    horizon"). Ties in the signal count one half. None when no pair is comparable."""
    x, t, e = (np.asarray(a, dtype=float) for a in (signal, times, learned))
    num = den = 0.0
    for i in range(len(t)):
        if not e[i]:
            continue
        later = (t > t[i]) | ((t == t[i]) & (e == 0))  # j is known to learn after i (or never within the run)
        den += later.sum()
        num += (x[i] > x[later]).sum() + 0.5 * (x[i] == x[later]).sum()
    return None if den == 0 else float(num / den)


def _ranks(a: np.ndarray) -> np.ndarray:
    order = np.argsort(a, kind="stable")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(len(a), dtype=float)
    for v in np.unique(a):  # average ranks of ties
        ranks[a == v] = ranks[a == v].mean()
    return ranks


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman correlation (average ranks for ties); None when either side is constant."""
    rx, ry = _ranks(np.asarray(x, dtype=float)), _ranks(np.asarray(y, dtype=float))
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def bootstrap(stat: Callable[[np.ndarray], float | None], groups: Sequence[object], n_boot: int = 2000,
              seed: int = 0, level: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile interval of `stat(indices)` over resamples of the runs, with replacement within each group (so
    every separation keeps its number of seeds). Resamples where the statistic is undefined are skipped."""
    g = np.asarray([str(x) for x in groups])
    members = [np.nonzero(g == v)[0] for v in np.unique(g)]
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(m, size=len(m), replace=True) for m in members])
        v = stat(idx)
        if v is not None:
            vals.append(v)
    if len(vals) < n_boot / 2:
        return None, None
    lo, hi = np.quantile(vals, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float | None, float | None]:
    """Wilson score interval of a proportion (95% by default)."""
    if n == 0:
        return None, None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def observed_order(t_a: int | None, t_b: int | None) -> str | None:
    """Which of two concepts was learned first ("a", "b", "tie"), from learning steps (None = never, censored);
    None when neither is learned (the order is unknown)."""
    if t_a is None and t_b is None:
        return None
    if t_b is None or (t_a is not None and t_a < t_b):
        return "a"
    if t_a is None or t_b < t_a:
        return "b"
    return "tie"


def order_accuracy(log_ratio: Sequence[float], orders: Sequence[str | None], n_boot: int = 2000) -> dict:
    """How often the concept with the larger signal (log σ_a / σ_b > 0: a) is learned first.

    Pairs where neither concept is learned, ties in learning step and equal signals are counted, not scored.
    When most pairs predict the same concept, always guessing it scores high without following the signal, so
    the accuracy is also given per predicted concept (`by_prediction`) and as their mean (`balanced_accuracy`,
    0.5 = no better than a constant guess), with a bootstrap interval resampling pairs within each side."""
    scored = [(r, o) for r, o in zip(log_ratio, orders) if o in ("a", "b") and r != 0]
    right = int(sum(bool(r > 0) == (o == "a") for r, o in scored))
    lo, hi = wilson(right, len(scored))
    side = np.array(["a" if r > 0 else "b" for r, _ in scored])
    hit = np.array([bool(r > 0) == (o == "a") for r, o in scored], dtype=float)
    by = {}
    for v in ("a", "b"):
        k, n = int(hit[side == v].sum()), int((side == v).sum())
        by[v] = {"n": n, "correct": k, "accuracy": k / n if n else None, "interval": list(wilson(k, n))}

    def balanced(idx: np.ndarray) -> float | None:
        accs = [hit[idx][side[idx] == v].mean() for v in ("a", "b") if (side[idx] == v).any()]
        return float(np.mean(accs)) if len(accs) == 2 else None

    both = by["a"]["n"] > 0 and by["b"]["n"] > 0
    return {"n": len(orders), "n_scored": len(scored), "correct": right,
            "accuracy": right / len(scored) if scored else None, "interval": [lo, hi],
            "by_prediction": by, "balanced_accuracy": balanced(np.arange(len(scored))) if both else None,
            "balanced_interval": list(bootstrap(balanced, side, n_boot)) if both else [None, None],
            "unknown": sum(o is None for o in orders), "ties": sum(o == "tie" for o in orders)}


def distance_vs_time(distance: Sequence[float], times: Sequence[float], learned: Sequence[bool],
                     run: Sequence[object], n_boot: int = 2000) -> dict:
    """Are held-out classes that are closer to their corner learned sooner? Harrell's C of closeness (-distance) vs
    censored learning time over the readings, with a bootstrap interval that resamples whole runs (a run's
    readings together: they are not independent); 0.5 = no relation."""
    d, t, e = np.asarray(distance, dtype=float), np.asarray(times, dtype=float), np.asarray(learned, dtype=bool)
    r = np.asarray([str(x) for x in run])
    names = list(dict.fromkeys(r.tolist()))
    rows = [np.nonzero(r == n)[0] for n in names]

    def c_index(run_idx: np.ndarray) -> float | None:
        idx = np.concatenate([rows[i] for i in run_idx]) if len(run_idx) else np.array([], dtype=int)
        return concordance(-d[idx], t[idx], e[idx])

    lo, hi = bootstrap(c_index, np.zeros(len(names)), n_boot) if names else (None, None)
    return {"n": len(d), "n_learned": int(e.sum()), "n_runs": len(names),
            "concordance": c_index(np.arange(len(names))), "interval": [lo, hi]}


def censored_summary(signal: Sequence[float], steps: Sequence[int | None], horizon: Sequence[int],
                     groups: Sequence[object], n_boot: int = 2000) -> dict:
    """Per-run statistics of one concept's learning steps (None = never) against its signal, over runs."""
    x = np.asarray(signal, dtype=float)
    learned = np.array([s is not None for s in steps])
    t = np.array([s if s is not None else h for s, h in zip(steps, horizon)], dtype=float)
    speed = np.where(learned, 1 / np.maximum(t, 1), 0.0)

    def c_index(idx: np.ndarray) -> float | None:
        return concordance(x[idx], t[idx], learned[idx])

    def rho(idx: np.ndarray) -> float | None:
        return rank_correlation(x[idx], speed[idx])

    everything = np.arange(len(x))
    return {"n_runs": len(x), "n_learned": int(learned.sum()),
            "concordance": c_index(everything), "concordance_interval": list(bootstrap(c_index, groups, n_boot)),
            "spearman_runs": rho(everything), "spearman_runs_interval": list(bootstrap(rho, groups, n_boot))}
