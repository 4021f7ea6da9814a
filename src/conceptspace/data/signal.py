"""Concept signal σ_i = |∂G/∂z_i|, as a finite difference in pixel space (the paper's Definition 3).

For concept i: render 128 test-mode images of the base class (all digits 0) and of the class that differs only in
concept i (digit i = 1), with identical positions and pixel noise, and take the mean squared pixel difference
(mean over pixels, channels and pairs). The normalised signal is the vector of σ_i divided by its L2 norm.
"""

from __future__ import annotations

import numpy as np

from ..data.concepts import ConceptSpace, sample_values
from ..data.render import render_space


def concept_signal(space: ConceptSpace, n_pairs: int = 128, seed: int = 42) -> dict[str, float]:
    """σ per concept kind, from paired test-mode images that differ only in that concept."""
    base = np.zeros((n_pairs, len(space.concepts)), dtype=np.int64)

    def images(ids: np.ndarray) -> np.ndarray:
        # Re-seeding per class is what makes the pairs share positions and noise (as the paper's script does).
        rng = np.random.default_rng(seed)
        return render_space(sample_values(space, ids, "test", rng), space, rng)

    x0 = images(base)
    out = {}
    for j, c in enumerate(space.concepts):
        other = base.copy()
        other[:, j] = 1
        out[c.kind] = float(np.mean((images(other) - x0) ** 2))
    return out


def normalized_signal(signal: dict[str, float]) -> dict[str, float]:
    """The concept-signal vector scaled to unit L2 norm (the paper's "relative concept signal")."""
    norm = float(np.sqrt(sum(v * v for v in signal.values())))
    return {k: (v / norm if norm > 0 else 0.0) for k, v in signal.items()}


def space_signal(data) -> dict[str, float]:
    """The concept signal of a data config: paired renders of G, or class-mean images for real data."""
    space = ConceptSpace.from_config(data)
    if space.is_real:
        from ..data.sources import class_mean_signal, load_real

        return class_mean_signal(space, load_real(data))
    return concept_signal(space)
