"""A preview of a concept space: a grid of every class (held-out classes framed) and its concept signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import ExperimentConfig, save_config
from ..errors import ConceptspaceError
from ..rundir import write_json
from .concepts import ConceptSpace, sample_values
from .render import render_space
from .signal import normalized_signal, space_signal


def write_preview(cfg: ExperimentConfig, out: str | Path, n_per_class: int = 8, overwrite: bool = False,
                  title: str = "") -> tuple[ConceptSpace, dict[str, float], dict[str, float], list[Path]]:
    """Write preview.png, signal.json and config.yaml into `out` (refusing to replace them without `overwrite`);
    returns (space, signal, normalised signal, written paths)."""
    from ..report.plots import plot_class_grid

    space = ConceptSpace.from_config(cfg.data)
    out = Path(out)
    targets = [out / "preview.png", out / "signal.json", out / "config.yaml"]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise ConceptspaceError(f"{existing[0]} exists; pass --overwrite to replace it, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    images = {}
    for name in space.class_names:
        if space.is_real:
            from .datasets import real_classes

            images[name] = real_classes(cfg, space, [name], n_per_class, rng).images.numpy()
            continue
        ids = space.class_ids([name] * n_per_class)
        # Held-out classes are shown as the model would be asked for them: test mode, at the class means.
        mode = "test" if name in space.held_out else "train"
        images[name] = render_space(sample_values(space, ids, mode, rng), space, rng)
    plot_class_grid(space, images, title=title).savefig(targets[0], dpi=110)
    sig = space_signal(cfg.data)
    norm = normalized_signal(sig)
    write_json(targets[1], {"signal": sig, "normalized": norm})
    save_config(cfg, targets[2])
    return space, sig, norm, targets
