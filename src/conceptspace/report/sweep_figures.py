"""Figures of a sweep's analysis: masking, hidden capabilities per run, the simplified model's fit."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ..analysis.masking import held_out_trajectories
from ..analysis.toy import fit_masking_runs, simulate, toy_times
from ..analysis.trajectories import mean_trajectory
from ..config import load_config
from ..data.concepts import ConceptSpace
from ..rundir import RunDir, atomic_write, write_json
from .plots import concept_axes, plot_class_grid


def plot_time_vs_p(metrics: dict, runs: list[dict]) -> plt.Figure:
    """Steps to the threshold on each concept vs masking fraction; seeds as points (never = top band)."""
    concepts = list(next(iter(metrics["learning_step"].values())))
    last = max(r["steps"][-1] for r in runs if r["steps"])
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for j, c in enumerate(concepts):
        xs, ys, never = [], [], []
        for k, per in metrics["learning_step"].items():
            for s in per[c]:
                (xs if s is not None else never).append(float(k))
                if s is not None:
                    ys.append(s)
        off = (j - (len(concepts) - 1) / 2) * 0.015
        ax.scatter(np.array(xs) + off, ys, s=14, alpha=0.6, color=f"C{j}")
        ax.scatter(np.array(never) + off, [last * 1.08] * len(never), marker="x", color=f"C{j}")
        means = [(float(k), np.mean([s for s in per[c] if s is not None]))
                 for k, per in metrics["learning_step"].items() if any(s is not None for s in per[c])]
        if means:
            ax.plot(*np.array(means).T, color=f"C{j}", lw=2, label=f"{c} (mean of learned seeds)")
    # Mean learning time counts "never" as twice the run: drawn capped at the never band so it stays visible.
    ax.plot([float(k) for k in metrics["mean_time"]], np.minimum(list(metrics["mean_time"].values()), last * 1.08),
            "k--", lw=1, label="held-out mean learning time (never = 2x run, capped)")
    ax.axhline(last * 1.08, color="0.7", lw=0.5)
    ax.set_ylim(0, last * 1.15)
    ax.set_xlabel("masking probability p")
    ax.set_ylabel("steps to 80% (x: never within the run)")
    ax.legend(fontsize=7)
    ax.set_title("held-out class: learning time vs underspecification", fontsize=9)
    fig.tight_layout()
    return fig


def plot_trajectories_by_p(runs: list[dict], kinds: list[str]) -> plt.Figure:
    """Held-out trajectories (mean over seeds) in concept space, colored by masking probability."""
    groups = held_out_trajectories(runs)
    fig, ax = plt.subplots(figsize=(5.0, 4.4))
    cmap = plt.get_cmap("viridis")
    top = max(groups) or 1.0
    for p in sorted(groups):
        mean = mean_trajectory([t for t, _ in groups[p]])
        ax.plot(mean[:, 0], mean[:, 1], color=cmap(p / top), lw=2, label=f"p={p:g}")
        ax.scatter(*mean[-1, :2], color=cmap(p / top), s=15)
    concept_axes(ax, kinds, False)
    ax.legend(fontsize=7)
    ax.set_title("held-out trajectories by masking probability", fontsize=9)
    fig.tight_layout()
    return fig


def masking_figures(runs: list[dict], metrics: dict, kinds: list[str]) -> dict[str, plt.Figure]:
    """Figures of the masking section of sweep_report.html."""
    figs = {"steps to 80% vs masking probability": plot_time_vs_p(metrics, runs),
            "held-out trajectories by masking probability": plot_trajectories_by_p(runs, kinds)}
    shown = [r for r in runs if r.get("masking") is not None and "final_samples" in r]
    ps = sorted({r["masking"] for r in shown})
    for p in dict.fromkeys(ps[:1] + ps[-1:]):  # the smallest and the largest p
        run = min((r for r in shown if r["masking"] == p), key=lambda r: r["seed"])
        space = ConceptSpace.from_config(load_config(RunDir(run["dir"]).config, saved_run=True).data)
        figs[f"final generations at p={p:g} (seed {run['seed']})"] = plot_class_grid(
            space, {n: s.astype(np.float32) / 255.0 for n, s in run["final_samples"].items()},
            title=f"masking p={p:g}, seed {run['seed']}, step {run['steps'][-1]}")
    return figs


def plot_capability_onsets(summary: dict) -> plt.Figure:
    """Per arm, every run's held onsets: best-of-k naive (black) and each intervention (colors); a method that
    never holds is drawn at the run's end with an open marker (censored); filled markers passed the control; a star
    in the method's color marks a hidden capability."""
    arms = list(summary)
    # constrained layout, so the legend sits below the panels (inside, it covered the earliest onsets) and the three-line
    # title is not cut at the figure's edge
    fig, axes = plt.subplots(1, len(arms), figsize=(max(4.6 * len(arms), 6.0), 4.0), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, arm in zip(axes[0], arms):
        rows = summary[arm]["runs"]
        methods = [m for m in dict.fromkeys(m for row in rows for m in row["onset_step"]) if m != "naive"]
        for i, row in enumerate(rows):
            last = row["last_step"]
            for j, m in enumerate(methods):
                x = i + (j - (len(methods) - 1) / 2) * 0.12
                step = row["onset_step"].get(m)
                color = "k" if m == "naive_k" else f"C{j}"
                filled = m == "naive_k" or row["control_passed"].get(m, False)
                ax.scatter([x], [last if step is None else step], s=30, color=color if filled else "none",
                           edgecolors=color, marker="^" if step is None else "o",
                           label=(f"naive, best of {row['naive_tries']}" if m == "naive_k" else m) if i == 0 else None)
                if row["hidden"].get(m):  # in the method's color, so a reader can tell which method it is
                    ax.scatter([x], [step], s=150, marker="*", color=color, edgecolors="k", zorder=3)
        ax.set_xticks(range(len(rows)), [f"seed {row['seed']}" for row in rows], fontsize=7)
        ax.set_title(f"{arm}\nhidden in: " + ", ".join(f"{m} {v['hidden']}/{v['of']}"
                                                      for m, v in summary[arm]["methods"].items()), fontsize=8)
        ax.set_ylabel("held onset (training step)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=6, loc="outside lower center", ncols=len(handles))
    fig.suptitle("held onsets per run\n(triangle: never, censored at the run's end; open: control failed;\n"
                 "star, in the method's color: hidden capability)", fontsize=8)
    return fig


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
                fit = fits[label]
                times = toy_times(fit["steps"], fit["time_scale"]) if "steps" in fit else None
                _, c = simulate(fit["a"], start=tuple(traj[0]), n=len(traj), times=times)
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


def write_toy_model(out: Path, a_values: list[float], runs: list[dict] | None = None) -> dict[str, dict]:
    """toy_model.png (toy paths for `a_values`; with a masking sweep's run records, the measured trajectories and
    fitted paths too) and, with runs, toy_fit.json; returns the fits per masking probability."""
    out.mkdir(parents=True, exist_ok=True)
    measured, fits = fit_masking_runs(runs) if runs else ({}, {})
    if runs:
        write_json(out / "toy_fit.json", fits)
    fig = plot_toy(a_values, measured or None, fits)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(out / "toy_model.png", lambda f: f.write(buf.getvalue()))
    return fits
