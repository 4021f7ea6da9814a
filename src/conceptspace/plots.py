"""Figures. Every function returns a matplotlib Figure; callers decide where to save it."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless by default: CLI, CI and clusters have no display
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .concepts import ConceptSpace


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
