"""Rendering throughput of G against the paper's own per-image algorithm, side by side in one process.

    python benchmarks/render_throughput.py [--n 12000] [--repeats 5] [--sizes 16 32]

Both render the same concept values (circles and triangles, the paper's shapes); G on one thread and on two (the
pixel noise drawn on a second thread), the paper's loop on one (it is one Python loop); with noise off
their pixels must agree to 1e-6 (asserted here, and in tests/test_render.py), with noise on each draws its own
(ours: NumPy's Generator, the paper: the legacy `np.random.randn`). Prints median images/s over the repeats
(interleaved, so both see the same machine load), the ratio, and the target (at least 5x at 32 px). "noise
img/s" is the pixel-noise draws alone (one generator, one thread): the most G can reach on two threads with its
default single noise stream, since its second thread does those draws while the first draws the objects.
"per-block" is G with `data.noise_streams: per_block` (a noise stream per 256 images, whole blocks rendered by
each of two threads; other noise, the same objects): the ratio is printed for both.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from conceptspace.config import load_config
from conceptspace.data.concepts import ConceptSpace, sample_values
from conceptspace.data.render import paper_render, render, render_space

TARGET = {32: 5.0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=12000, help="images per repeat for G")
    ap.add_argument("--n-paper", type=int, default=3000, help="images per repeat for the paper's (slow) loop")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32])
    args = ap.parse_args()
    print(f"{'size':>5} {'G 1 thread':>11} {'G 2 threads':>12} {'per-block 2':>12} {'paper img/s':>12} "
          f"{'ratios (1, 2 threads, per-block)':>33} {'target':>7} {'max |diff|, noise off':>22} {'noise img/s':>12}")
    for size in args.sizes:
        # The 2x2x2 shape space (circle vs triangle) so both of the paper's masks are timed.
        over = [f"data.image_size={size}", "data.concepts={color: {sep: 0.8}, shape: {}}"]
        space = ConceptSpace.from_config(load_config(None, over).data)
        sigma = space.blur * size
        ids = space.class_ids(list(space.class_names) * (args.n // len(space.class_names)))
        values = sample_values(space, ids, "train", np.random.default_rng(0))
        sub = sample_values(space, ids[: args.n_paper], "train", np.random.default_rng(1))
        diff = float(np.abs(render_space(sub, space, None) - paper_render(sub, size, 0.0, None, sigma)).max())
        assert diff < 1e-6, f"G and the paper's algorithm disagree by {diff} at {size} px"
        one, two, block, paper, draws = [], [], [], [], []
        for r in range(args.repeats):
            for threads, streams, rates in ((1, "one", one), (2, "one", two), (2, "per_block", block)):
                t = time.perf_counter()
                render(values, size, space.blur, space.noise, np.random.default_rng(r), threads=threads,
                       noise_streams=streams)
                rates.append(len(ids) / (time.perf_counter() - t))
            legacy = np.random.RandomState(r)  # the legacy generator behind the paper's np.random.randn
            t = time.perf_counter()
            paper_render(sub, size, space.noise, legacy, sigma)
            paper.append(len(sub) / (time.perf_counter() - t))
            gen, buf = np.random.default_rng(r), np.empty((256, 3, size, size), dtype=np.float32)
            t = time.perf_counter()
            for _ in range(len(ids) // 256):
                gen.standard_normal(buf.shape, dtype=np.float32, out=buf)
            draws.append(len(ids) // 256 * 256 / (time.perf_counter() - t))
        o1, o2, ob, p = (statistics.median(x) for x in (one, two, block, paper))
        target = f">= {TARGET[size]:.0f}x" if size in TARGET else "-"
        ratios = f"{o1 / p:.1f}x, {o2 / p:.1f}x, {ob / p:.1f}x"
        print(f"{size:>5} {o1:>11,.0f} {o2:>12,.0f} {ob:>12,.0f} {p:>12,.0f} {ratios:>33} {target:>7} {diff:>22.1e} "
              f"{statistics.median(draws):>12,.0f}")


if __name__ == "__main__":
    main()
