"""Figures. Every function returns a matplotlib Figure; callers decide where to save it."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless by default: CLI, CI and clusters have no display
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..data.concepts import ConceptSpace


def plot_class_grid(space: ConceptSpace, images: dict[str, np.ndarray], title: str = "") -> Figure:
    """One row per class (a few samples each); held-out classes are framed in red and labelled."""
    names = list(images)
    n_cols = max(len(v) for v in images.values())
    fig, axes = plt.subplots(len(names), n_cols, figsize=(1.1 * n_cols + 2.2, 1.1 * len(names) + 0.4), squeeze=False)
    for r, name in enumerate(names):
        held = name in space.held_out
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images[name]):
                ax.imshow(np.clip(images[name][c].transpose(1, 2, 0), 0, 1), interpolation="nearest")
            for spine in ax.spines.values():
                spine.set_color("red" if held else "0.7")
                spine.set_linewidth(2.5 if held else 0.5)
        label = f"{name}\n" + space.describe(name).replace(", ", "\n")
        axes[r, 0].set_ylabel(label + ("\nHELD OUT" if held else ""), rotation=0, ha="right", va="center",
                              fontsize=7, color="red" if held else "black")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def concept_axes(ax, kinds: list[str], three_d: bool) -> None:
    """Concept-space axes: one per concept, P(value 1) in [0, 1] (square in 2-D)."""
    ax.set_xlabel(f"{kinds[0]}: P(value 1)")
    ax.set_ylabel(f"{kinds[1]}: P(value 1)")
    if three_d:
        ax.set_zlabel(f"{kinds[2]}: P(value 1)")
    else:
        ax.set_xlim(-0.05, 1.05)
        ax.set_ylim(-0.05, 1.05)
        ax.set_aspect("equal")


def _colored_line(ax, pts: np.ndarray, steps: np.ndarray, cmap: str, lw: float, ls: str = "-", alpha: float = 1.0):
    from matplotlib.collections import LineCollection

    segs = np.stack([pts[:-1], pts[1:]], axis=1)
    lc = LineCollection(segs, cmap=cmap, linewidths=lw, linestyles=ls, alpha=alpha)
    lc.set_array(np.asarray(steps[1:], dtype=float))
    lc.set_clim(steps[0], steps[-1])
    ax.add_collection(lc)
    return lc


def plot_trajectories(coords: np.ndarray, steps: np.ndarray, class_names: list[str], held_out: list[str],
                      kinds: list[str], turns: dict | None = None, onsets: dict | None = None,
                      title: str = "") -> Figure:
    """Concept-space trajectories (paper style): axes are per-concept coordinates, each class moves from the
    centre to its corner, held-out classes colored by step, training classes in gray; the turn is a star."""
    turns, onsets = turns or {}, onsets or {}
    three_d = coords.shape[-1] >= 3
    fig = plt.figure(figsize=(5.6, 5.8))
    ax = fig.add_subplot(projection="3d") if three_d else fig.add_subplot()
    dims = 3 if three_d else 2
    if coords.shape[-1] == 1:
        coords = np.concatenate([coords, np.broadcast_to(np.linspace(0, 1, len(steps))[:, None, None],
                                                         coords.shape)], axis=-1)
        kinds = [kinds[0], "(checkpoint)"]
    lc = None
    for p, name in enumerate(class_names):
        pts = coords[:, p, :dims]
        corner = [int(ch) for ch in name[:dims]]
        held = name in held_out
        if three_d:
            ax.plot(*pts.T, color="C3" if held else "0.6", lw=2.2 if held else 1.0, ls="-" if held else "--")
            ax.scatter(*pts[-1], color="C3" if held else "0.5", s=18)
            ax.text(*corner, name, fontsize=8, color="C3" if held else "0.3")
        else:
            if held:
                lc = _colored_line(ax, pts, steps, "viridis", 2.4)
            else:
                ax.plot(*pts.T, color="0.55", lw=1.2, ls="--", alpha=0.8)
            ax.scatter(*pts[-1], color="C3" if held else "0.5", s=14, zorder=3)
            ax.scatter(*corner, marker="s", s=60, facecolor="none", edgecolor="C3" if held else "0.4")
            ax.annotate(name + (" (held out)" if held else ""), corner, textcoords="offset points",
                        xytext=(6 if corner[0] == 0 else -8, 6 if corner[1] == 0 else -12),
                        ha="left" if corner[0] == 0 else "right", fontsize=8, color="C3" if held else "0.3")
        turn = turns.get(name, {})
        if turn.get("step") is not None:
            k = int(np.searchsorted(steps, turn["step"]))
            ax.scatter(*pts[k], marker="*", s=220, color="gold", edgecolor="k", zorder=5,
                       label=f"turn {name} @ {turn['step']}")
        for j, (method, step) in enumerate((onsets.get(name) or {}).items()):
            if step is None:
                continue
            k = int(np.searchsorted(steps, step))
            ax.scatter(*pts[min(k, len(pts) - 1)], marker="ovD^P"[j % 5], s=60, facecolor="none",
                       edgecolor=f"C{j}", lw=1.8, zorder=6, label=f"{method} onset @ {step}")
    concept_axes(ax, kinds, three_d)
    if not three_d and lc is not None:
        fig.colorbar(lc, ax=ax, label="training step", shrink=0.8)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    ax.set_title(title or "trajectories in concept space", fontsize=10)
    fig.tight_layout()
    return fig


def plot_accuracy(acc: np.ndarray, steps: np.ndarray, class_names: list[str], held_out: list[str],
                  kinds: list[str], threshold: float = 0.8) -> Figure:
    """Per-concept accuracy over training for every class (held-out classes thick)."""
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.2), squeeze=False)
    for j, kind in enumerate(kinds):
        ax = axes[0, j]
        for p, name in enumerate(class_names):
            held = name in held_out
            ax.plot(steps, acc[:, p, j], lw=2.4 if held else 1.0, ls="-" if held else "--",
                    label=name + (" (held out)" if held else ""), color="C3" if held else None)
        ax.axhline(threshold, color="k", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("training step")
        ax.set_title(f"{kind} accuracy", fontsize=10)
    axes[0, 0].set_ylabel("fraction of samples correct")
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_losses(rows: list[dict]) -> Figure:
    """Training loss (every logged step), validation and held-out (OOD) loss at checkpoints."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["loss"] for r in rows], lw=0.8, alpha=0.7, label="train (batch)")
    ck = [r for r in rows if r.get("val_loss") is not None]
    ax.plot([r["step"] for r in ck], [r["val_loss"] for r in ck], "o-", ms=3, label="validation")
    ood = [r for r in ck if r.get("ood_loss") is not None]
    if ood:
        ax.plot([r["step"] for r in ood], [r["ood_loss"] for r in ood], "s-", ms=3, color="C3",
                label="held-out classes (OOD)")
    ax.set_xscale("log")
    ax.set_yscale("log" if min(r["loss"] for r in rows) > 0 else "linear")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_emergence(rows: list[dict], steps: np.ndarray, acc: np.ndarray, coords: np.ndarray,
                   class_names: list[str], held_out: list[str], held: str, kinds: list[str],
                   turn: dict | None = None, elicitation: dict | None = None) -> Figure:
    """The paper's emergence figure for one held-out class: loss, training vs held-out accuracy, and the held-out
    trajectory, with the sudden turn and the capability marked on all three. The capability (a star) is the
    earliest held onset of an intervention that counts as a hidden capability (ahead of best-of-k naive, control
    passed); without one, the earliest intervention onset is marked as such. `acc` [checkpoints, classes,
    concepts]; accuracy is the product of the per-concept accuracies."""
    turn, elicitation = turn or {}, elicitation or {}
    onsets, hidden = elicitation.get("onset_step") or {}, elicitation.get("hidden") or {}
    shown = [onsets[m] for m, h in hidden.items() if h and onsets.get(m) is not None]
    cap_step = min(shown) if shown else elicitation.get("best_intervention_onset")
    cap_label = "capability (hidden)" if shown else "earliest intervention onset"
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    marks = [(turn.get("step"), "k", ":", f"turn @ {turn.get('step')}"),
             (cap_step, "goldenrod", "-", f"{cap_label} @ {cap_step}")]
    ax = axes[0]
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=0.7, alpha=0.6, label="train (batch)")
    ck = [r for r in rows if r.get("val_loss") is not None]
    ax.plot([r["step"] for r in ck], [r["val_loss"] for r in ck], "o-", ms=2.5, label="validation")
    ood = [r for r in ck if r.get("ood_loss") is not None]
    if ood:
        ax.plot([r["step"] for r in ood], [r["ood_loss"] for r in ood], "s-", ms=2.5, color="C3", label="held-out")
    ax.set_yscale("log" if rows and min(r["loss"] for r in rows) > 0 else "linear")
    ax.set_ylabel("loss")
    joint = acc.prod(axis=-1)  # [checkpoints, classes]
    h = class_names.index(held)
    train = [p for p, n in enumerate(class_names) if n not in held_out]
    axes[1].plot(steps, joint[:, train].mean(axis=1), "o-", ms=2.5, color="0.4", label="training classes (mean)")
    axes[1].plot(steps, joint[:, h], "o-", ms=2.5, color="C3", label=f"held-out {held} (naive prompt)")
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_ylabel("accuracy (product over concepts)")
    for ax in axes[:2]:
        ax.set_xscale("log")
        ax.set_xlabel("training step")
        for step, color, ls, label in marks:
            if step is not None:
                ax.axvline(step, color=color, ls=ls, lw=1.4, label=label)
        ax.legend(fontsize=7)
    ax = axes[2]
    pts = coords[:, h, :2]
    lc = _colored_line(ax, pts, steps, "viridis", 2.4)
    for p in train:
        ax.plot(*coords[:, p, :2].T, color="0.6", lw=1.0, ls="--")
    for step, marker, size, label in [(turn.get("step"), "X", 90, "turn"), (cap_step, "*", 260, cap_label)]:
        if step is not None:
            k = min(int(np.searchsorted(steps, step)), len(pts) - 1)
            ax.scatter(*pts[k], marker=marker, s=size, color="gold" if marker == "*" else "k", edgecolor="k",
                       zorder=5, label=f"{label} @ {step}")
    concept_axes(ax, kinds[:2], False)
    fig.colorbar(lc, ax=ax, label="training step", shrink=0.8)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"held-out {held}: memorisation, sudden turn and the capability", fontsize=10)
    fig.tight_layout()
    return fig


def plot_sample_grid(samples: np.ndarray, steps: np.ndarray, class_names: list[str], held_out: list[str],
                     max_cols: int = 10, per_cell: int = 2) -> Figure:
    """Generations across checkpoints: one row per class, one column per (selected) checkpoint."""
    cols = np.unique(np.linspace(0, len(steps) - 1, min(max_cols, len(steps))).round().astype(int))
    fig, axes = plt.subplots(len(class_names), len(cols), squeeze=False,
                             figsize=(1.0 * per_cell * len(cols) + 1, 1.05 * len(class_names) + 0.6))
    for r, name in enumerate(class_names):
        for c, k in enumerate(cols):
            cell = samples[k, r, :per_cell]  # [n, 3, H, W] uint8
            ax = axes[r, c]
            ax.imshow(np.concatenate(list(cell.transpose(0, 2, 3, 1)), axis=1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"{int(steps[k])}", fontsize=7)
            if name in held_out:
                for spine in ax.spines.values():
                    spine.set_color("red")
                    spine.set_linewidth(2)
        axes[r, 0].set_ylabel(name + ("\nheld out" if name in held_out else ""), fontsize=8, rotation=0,
                              ha="right", va="center", color="red" if name in held_out else "black")
    fig.suptitle("generations across checkpoints (column = training step)", fontsize=9)
    fig.tight_layout()
    return fig


def trajectory_gif_frames(coords: np.ndarray, steps: np.ndarray, samples: np.ndarray, class_names: list[str],
                          held_out: list[str], kinds: list[str]) -> list:
    """PIL frames: the held-out trajectories drawn up to each checkpoint, with their samples beside."""
    from PIL import Image

    held_idx = [i for i, n in enumerate(class_names) if n in held_out] or [0]
    frames = []
    for k in range(len(steps)):
        fig, (ax, ax_img) = plt.subplots(1, 2, figsize=(6.4, 3.2), gridspec_kw={"width_ratios": [1, 1]})
        for p, name in enumerate(class_names):
            pts = coords[:k + 1, p, :2]
            held = name in held_out
            ax.plot(*pts.T, color="C3" if held else "0.6", lw=2 if held else 1, ls="-" if held else "--")
            ax.scatter(*pts[-1], color="C3" if held else "0.5", s=16)
            ax.scatter(*[int(ch) for ch in name[:2]], marker="s", s=50, facecolor="none", edgecolor="0.4")
        ax.set_xlim(-0.05, 1.05)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel(kinds[0])
        ax.set_ylabel(kinds[1] if len(kinds) > 1 else "")
        ax.set_title(f"step {int(steps[k])}", fontsize=9)
        imgs = samples[k, held_idx[0], :4].transpose(0, 2, 3, 1)
        ax_img.imshow(np.concatenate(list(imgs), axis=1), interpolation="nearest")
        ax_img.set_axis_off()
        ax_img.set_title(f"class {class_names[held_idx[0]]} samples", fontsize=9)
        fig.tight_layout()
        fig.canvas.draw()
        frames.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3]))
        plt.close(fig)
    return frames


def plot_elicitation(steps: np.ndarray, joint: np.ndarray, names: list[str], methods: list[str], held: str,
                     onsets: dict | None = None, turn_step: int | None = None, threshold: float = 0.8) -> Figure:
    """Held-out joint accuracy over training for each way of asking: best of grid thick, grid points thin."""
    from ..analysis.onsets import best_of_grid

    fig, ax = plt.subplots(figsize=(6.2, 3.6))
    for c, (m, best) in enumerate(best_of_grid(joint, methods).items()):
        cols = [i for i, mm in enumerate(methods) if mm == m]
        color = "k" if m == "naive" else "0.45" if m == "naive_k" else f"C{c}"
        if len(cols) > 1:
            for i in cols:
                ax.plot(steps, joint[:, i], color=color, lw=0.6, alpha=0.35)
        label = (f"naive, best of {len(cols)} noise seeds" if m == "naive_k" else
                 m if len(cols) == 1 else f"{m} (best of {len(cols)})")
        ax.plot(steps, best, color=color, lw=2.2, ls=":" if m == "naive_k" else "-", label=label)
        onset = (onsets or {}).get(m)
        if onset is not None:
            ax.axvline(onset, color=color, lw=0.8, ls="--")
    if turn_step is not None:
        ax.axvline(turn_step, color="gold", lw=2, alpha=0.8, label=f"sudden turn ({turn_step})")
    _accuracy_axes(ax, threshold, f"joint accuracy of {held}", f"eliciting held-out class {held} (dashed: held onsets)")
    fig.tight_layout()
    return fig


def _accuracy_axes(ax, threshold: float, ylabel: str, title: str) -> None:
    """Shared styling of accuracy-over-training axes: log steps, [0, 1], the threshold dotted."""
    ax.axhline(threshold, color="0.5", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)


def plot_elicitation_seeds(runs: dict[str, dict], held: str, threshold: float = 0.8) -> Figure:
    """Held-out joint accuracy per method over training across runs (seeds): thin lines per run (best of each
    method's grid), thick line their mean (on the first run's checkpoints)."""
    from ..analysis.onsets import best_of_grid

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ref = next(iter(runs.values()))["steps"]  # the mean is taken on the first run's checkpoints
    bests = [best_of_grid(r["joint"], r["methods"]) for r in runs.values()]
    methods = list(dict.fromkeys(m for b in bests for m in b))
    for c, m in enumerate(methods):
        color = "k" if m == "naive" else f"C{c}"
        curves = []
        for r, b in zip(runs.values(), bests):
            if m in b:
                ax.plot(r["steps"], b[m], color=color, lw=0.7, alpha=0.45)
                curves.append(np.interp(np.log(ref), np.log(r["steps"]), b[m]))
        ax.plot(ref, np.mean(curves, 0), color=color, lw=2.4, label=f"{m} (mean of {len(curves)})")
    _accuracy_axes(ax, threshold, f"joint accuracy of {held} (best of grid)", f"eliciting {held}: runs thin, mean thick")
    fig.tight_layout()
    return fig
