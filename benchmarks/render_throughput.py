"""Rendering throughput of G: the vectorised renderer vs a per-image loop in the style of the paper's code.

    python benchmarks/render_throughput.py [--n 20000] [--repeats 5]

Prints the median images/s of each over the repeats, measured side by side in one run, and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from scipy.ndimage import gaussian_filter

from conceptspace.config import load_config
from conceptspace.data.concepts import ConceptSpace, sample_values
from conceptspace.data.render import render_space


def paper_loop(space: ConceptSpace, values, rng: np.random.Generator) -> np.ndarray:
    """One image at a time with a scipy blur per image (the paper's `generate_images_1` structure)."""
    n, w = len(values), space.image_size
    lin = np.linspace(-1, 1, w)
    xx, yy = np.meshgrid(lin, lin, indexing="ij")
    out = np.empty((n, w, w, 3), dtype=np.float32)
    for i in range(n):
        mask = np.sqrt((xx - values.x[i]) ** 2 + (yy - values.y[i]) ** 2) < values.size[i]
        smooth = gaussian_filter(mask.astype(float), sigma=space.blur * w)[..., None]
        img = smooth * values.color[i] + (1 - smooth) * values.bg_color[i]
        img += rng.normal(0, space.noise, img.shape)
        out[i] = np.clip(img, 0, 1)
    return out.transpose(0, 3, 1, 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"{'size':>5} {'vectorised img/s':>17} {'per-image loop img/s':>21} {'ratio':>6}")
    for size in (16, 32):
        space = ConceptSpace.from_config(load_config(None, [f"data.image_size={size}"]).data)
        ids = space.class_ids(space.train_classes * (args.n // 3))
        values = sample_values(space, ids, "train", np.random.default_rng(0))
        fast, slow = [], []
        for r in range(args.repeats):  # interleaved so both see the same machine load
            t = time.perf_counter()
            render_space(values, space, np.random.default_rng(r))
            fast.append(len(ids) / (time.perf_counter() - t))
            n_loop = min(len(ids), 4000)  # the loop is slow; a subset gives its rate
            sub = sample_values(space, ids[:n_loop], "train", np.random.default_rng(0))
            t = time.perf_counter()
            paper_loop(space, sub, np.random.default_rng(r))
            slow.append(n_loop / (time.perf_counter() - t))
        f, s = statistics.median(fast), statistics.median(slow)
        print(f"{size:>5} {f:>17,.0f} {s:>21,.0f} {f / s:>6.1f}")


if __name__ == "__main__":
    main()
