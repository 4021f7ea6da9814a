"""The sweep page: `sweep_report(out_dir)` draws, from `sweep_metrics.json` (computed by `analysis.sweep`) and the
runs it covers, a self-contained `sweep_report.html` with its figures (Kaplan-Meier curves, speed vs signal, learning order,
held-out trajectories, learned vs distance, masking, hidden capabilities per run), each with its n.
"""

from __future__ import annotations

import html
import io
import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ..analysis.sweep import (
    analyze_sweep,
    class_speeds,
    pooled_runs,
    sweep_reading,
)
from ..analysis.trajectories import mean_trajectory
from ..rundir import atomic_write, read_json, write_text
from .explorer import sweep_explorer_html
from .plots import concept_axes
from .run_page import STYLE, _img
from .sweep_figures import masking_figures, plot_capability_onsets


def plot_kaplan_meier(stats: dict, concept: str) -> plt.Figure:
    """Fraction of runs whose held-out class has learned the concept by step t, one step curve per separation."""
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    cmap = plt.get_cmap("plasma")
    curves = stats["kaplan_meier"]
    for i, (sep, c) in enumerate(curves.items()):
        xs = [0, *c["steps"], c["horizon"]]
        ys = [0, *c["learned_fraction"], c["learned_fraction"][-1] if c["learned_fraction"] else 0]
        ax.step(xs, ys, where="post", color=cmap(i / max(len(curves) - 1, 1) * 0.9), lw=2,
                label=f"Δ{concept}={sep} (n={c['n']})")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"fraction of runs that learned {concept}")
    ci = stats.get("concordance_interval") or [None, None]
    cs = "n/a" if stats.get("concordance") is None else f"{stats['concordance']:.2f}"
    if ci[0] is not None:
        cs += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    ax.set_title(f"held-out class, {concept}: learned by step t (Kaplan-Meier; never = censored)\n"
                 f"Harrell's C of signal vs time {cs}, {stats['n_runs']} runs", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_speed(runs: list[dict], concepts: list[str]) -> plt.Figure:
    """Learning speed of each concept vs separation and vs measured signal; seeds as points, mean line."""
    fig, axes = plt.subplots(2, len(concepts), figsize=(4.2 * len(concepts), 6.6), squeeze=False)
    for j, kind in enumerate(concepts):
        for row, (idx, label) in enumerate([(0, "separation"), (1, "concept signal σ")]):
            ax = axes[row, j]
            for held, style in ((True, "C3"), (False, "C0")):
                pts = [(p[idx], p[2]) for p in class_speeds(runs, kind, held)]
                if not pts:
                    continue
                pts = np.array(pts)
                ax.scatter(pts[:, 0], pts[:, 1], s=12, alpha=0.5, color=style)
                xs = np.unique(pts[:, 0])
                m = np.array([pts[pts[:, 0] == x, 1].mean() for x in xs])
                sd = np.array([pts[pts[:, 0] == x, 1].std() for x in xs])
                ax.plot(xs, m, color=style, lw=2, ls="-" if held else "--",
                        label="held-out class" if held else "training classes")
                ax.fill_between(xs, m - sd, m + sd, color=style, alpha=0.12)
            ax.set_xlabel(f"{kind} {label}")
            ax.set_ylabel("learning speed (1 / steps)")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    fig.suptitle("learning speed vs concept signal (0 = never learned within the run)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_learned_vs_distance(points: list[dict]) -> plt.Figure:
    """Held-out classes learned within the run (1) or not (0) vs their distance at training saturation."""
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    rng = np.random.default_rng(0)  # jitter only, for overlapping points
    classes = sorted({p["class"] for p in points})
    for i, cls in enumerate(classes):
        pts = [p for p in points if p["class"] == cls]
        ax.scatter([p["distance"] for p in pts], [p["learned"] + rng.uniform(-0.08, 0.08) for p in pts],
                   s=18, color=f"C{i}", label=f"held-out {cls}")
    ax.set_yticks([0, 1], ["not learned", "learned"])
    ax.set_xlabel("distance to its own corner at the training-saturation step")
    ax.legend(fontsize=7)
    ax.set_title("which held-out classes are learned within the run", fontsize=9)
    fig.tight_layout()
    return fig


def plot_order(xs: list, ys: list, grid: np.ndarray, a: str, b: str, ratio: np.ndarray | None = None) -> plt.Figure:
    """Heat map of T_b - T_a over (Δa, Δb): the measured flip (solid) and, given the mean log(σ_a / σ_b) per cell,
    the flip the concept-signal law predicts where the two signals are equal (dashed)."""
    fig, ax = plt.subplots(figsize=(5, 4))
    lim = np.nanmax(np.abs(grid)) or 1
    im = ax.imshow(grid, origin="lower", cmap="coolwarm", vmin=-lim, vmax=lim, aspect="auto",
                   extent=[-0.5, len(xs) - 0.5, -0.5, len(ys) - 0.5])
    if np.nanmin(grid) < 0 < np.nanmax(grid):
        ax.contour(np.arange(len(xs)), np.arange(len(ys)), grid, levels=[0], colors="k", linewidths=2)
        ax.plot([], [], "k-", label="measured flip")
    if ratio is not None and np.nanmin(ratio) < 0 < np.nanmax(ratio):
        ax.contour(np.arange(len(xs)), np.arange(len(ys)), ratio, levels=[0], colors="k", linewidths=1.5,
                   linestyles="--")
        ax.plot([], [], "k--", label=f"predicted: σ_{a} = σ_{b}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left")
    ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
    ax.set_yticks(range(len(ys)), [f"{y:g}" for y in ys])
    ax.set_xlabel(f"Δ{a}")
    ax.set_ylabel(f"Δ{b}")
    fig.colorbar(im, label=f"T_{b} - T_{a} (steps; > 0: {a} learned first)")
    ax.set_title("learning order of the held-out class (black: order flips)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_held_out_trajectories(runs: list[dict], concept: str, kinds: list[str]) -> plt.Figure:
    """Held-out trajectories of every separation (mean over seeds), colored by the normalised signal."""
    groups: dict[float, list] = {}
    for r in runs:
        if "trajectories" not in r or concept not in r["sep"]:
            continue
        held = [n for n, c in r["classes"].items() if c["held_out"]]
        for n in held[:1]:
            groups.setdefault(r["sep"][concept], []).append((np.array(r["trajectories"][n]),
                                                             r["normalized_signal"].get(concept, 0.0)))
    three = len(kinds) >= 3
    fig = plt.figure(figsize=(5.4, 4.6))
    ax = fig.add_subplot(projection="3d") if three else fig.add_subplot()
    cmap = plt.get_cmap("plasma")
    for sep in sorted(groups):
        trajs = groups[sep]
        mean = mean_trajectory([t for t, _ in trajs])
        color = cmap(float(np.mean([s for _, s in trajs])))
        dims = 3 if three else 2
        ax.plot(*mean[:, :dims].T, color=color, lw=2, label=f"Δ{concept}={sep:g}")
        ax.scatter(*mean[-1, :dims], color=color, s=15)
    concept_axes(ax, kinds, three)
    if not three:
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
        fig.colorbar(sm, ax=ax, label=f"normalised {concept} signal", shrink=0.8)
    ax.legend(fontsize=7)
    ax.set_title("held-out trajectories by separation (mean over seeds)", fontsize=9)
    fig.tight_layout()
    return fig


def sweep_report(out_dir: str | Path) -> Path:
    """Draw sweep_report.html from the sweep_metrics.json in `out_dir` (written by `analysis.sweep.analyze_sweep`;
    computed first when absent) and the runs it was computed from."""
    out_dir = Path(out_dir)
    if not (out_dir / "sweep_metrics.json").is_file():
        analyze_sweep(out_dir)
    metrics = read_json(out_dir / "sweep_metrics.json")
    sources = [Path(d) for d in metrics.get("sources", [out_dir])]
    pool = sources[1:]
    runs = pooled_runs(sources)
    kinds, varied = metrics["concepts"], metrics["varied"]
    figs = {"learning speed vs concept signal": plot_speed(runs, kinds)}
    for kind in varied:
        if metrics["speed_vs_signal"][kind]["per_run"]:
            figs[f"held-out {kind} learned by step t"] = plot_kaplan_meier(
                metrics["speed_vs_signal"][kind]["per_run"], kind)
    order = metrics.get("learning_order", {})
    if "t_diff" in order:
        grid = np.array([[np.nan if v is None else v for v in row] for row in order["t_diff"]])
        ratio = (np.array([[np.nan if v is None else v for v in row] for row in order["log_signal_ratio"]])
                 if "log_signal_ratio" in order else None)
        figs["learning order"] = plot_order(order["x"], order["y"], grid, kinds[0], kinds[1], ratio)
    for concept in varied[:2]:
        figs[f"held-out trajectories by {concept} separation"] = plot_held_out_trajectories(runs, concept, kinds)
    if "held_out_learned_vs_distance" in metrics:
        figs["held-out classes learned vs distance at training saturation"] = plot_learned_vs_distance(
            metrics["held_out_learned_vs_distance"])
    masking, capability = metrics.get("masking"), metrics.get("hidden_capability")
    if masking:
        figs.update(masking_figures(runs, masking, kinds))
    if capability:
        figs["hidden capability: held onsets per run"] = plot_capability_onsets(capability)
    body = [f"<h1>Sweep: {html.escape(out_dir.name)} ({len(runs)} finished runs)</h1>"]
    if pool:
        body.append(f"<p>Pooled from {html.escape(', '.join(map(str, sources)))}.</p>")
    body += [f"<p>{html.escape(line)}</p>" for line in sweep_reading(metrics)]
    body.append(sweep_explorer_html(runs, kinds))
    fig_dir = out_dir / "figures"  # the same figures as files, for papers and READMEs
    fig_dir.mkdir(exist_ok=True)
    for name, fig in figs.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
        atomic_write(fig_dir / f"{slug}.png", lambda f, data=buf.getvalue(): f.write(data))
        body.append(f"<h2>{html.escape(name)}</h2>" + _img(buf.getvalue()))
    body.append("<h2>sweep_metrics.json</h2><pre>" + html.escape(json.dumps(metrics, indent=1)) + "</pre>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(out_dir.name)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")
    return write_text(out_dir / "sweep_report.html", page)
