"""How cost grows: training steps/s and evaluation time against image size, model width, number of concepts and
number of checkpoints, on this machine.

    python benchmarks/scaling.py [--threads 2] [--steps 10] [--out docs/scaling.png]

Each row is measured (median of 3 repeats of `--steps` training steps at batch 64, and of one checkpoint's
evaluation: every class x 32 samples x 25 DDIM steps, sampling only); evaluation time for K checkpoints
is K times the per-checkpoint time, measured at K = 1 and printed for the demo's 30. Prints a table and draws
`--out` (four panels).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from conceptspace.config import load_config
from conceptspace.data.concepts import ConceptSpace
from conceptspace.data.prompts import class_prompts
from conceptspace.model.samplers import sample
from conceptspace.train import build_model, build_objective

CONCEPTS = ["color", "size", "bg_color", "shape", "x"]


def case(image_size: int = 16, widths: tuple[int, ...] = (16, 32, 64), n_concepts: int = 2):
    """configs/2x2.yaml at another image size, widths or number of concepts (color, size, bg_color, shape, x)."""
    parts = ", ".join(f"{c}: {{}}" if c == "shape" else f"{c}: {{sep: 0.4}}" for c in CONCEPTS[:n_concepts])
    over = [f"data.image_size={image_size}", f"model.widths=[{', '.join(map(str, widths))}]",
            f"data.concepts={{{parts}}}"]
    return load_config("configs/2x2.yaml", over)


def measure(cfg, steps: int) -> tuple[float, float, int]:
    """(training steps/s, seconds per checkpoint's evaluation, classes)."""
    space = ConceptSpace.from_config(cfg.data)
    torch.manual_seed(0)
    model, objective = build_model(cfg, space), build_objective(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    size = cfg.data.image_size
    prompts = torch.from_numpy(class_prompts(space, space.class_names)).float()
    x = torch.rand(64, 3, size, size)
    p = prompts[torch.arange(64) % len(prompts)]
    gen = torch.Generator().manual_seed(0)

    def step():
        loss = objective.loss(model, x, p, generator=gen)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    rates = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps / (time.perf_counter() - t))
    eval_prompts = prompts.repeat_interleave(32, 0)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        sample(model, objective, eval_prompts, shape=(3, size, size), n_steps=25, method="ddim", clip_x0=True,
               batch_size=256, generator=torch.Generator().manual_seed(0))
        times.append(time.perf_counter() - t)
    return statistics.median(rates), statistics.median(times), len(space.class_names)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", default="docs/scaling.png")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for px in (8, 16, 32, 64):
        rows.append(("image size", px, *measure(case(image_size=px), args.steps)))
    for w in (8, 16, 32, 64):
        rows.append(("width (base)", w, *measure(case(widths=(w, 2 * w, 4 * w)), args.steps)))
    for n in (2, 3, 4, 5):
        rows.append(("concepts", n, *measure(case(n_concepts=n), max(2, args.steps // 2)), ))
    print(f"threads={args.threads}; training at batch 64; evaluation = classes x 32 samples x 25 DDIM steps")
    print(f"{'axis':<13} {'value':>6} {'classes':>8} {'train steps/s':>14} {'eval s/ckpt':>12} {'eval s, 30 ckpts':>17}")
    for axis, value, rate, per_ckpt, classes in rows:
        print(f"{axis:<13} {value:>6} {classes:>8} {rate:>14.2f} {per_ckpt:>12.2f} {30 * per_ckpt:>17.1f}")
    draw(rows, args.out)
    print(f"figure: {args.out}")


def draw(rows, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    for ax, axis in zip(axes[:3], ("image size", "width (base)", "concepts")):
        sel = [r for r in rows if r[0] == axis]
        xs = [r[1] for r in sel]
        ax.plot(xs, [r[2] for r in sel], "o-", label="train steps/s")
        ax2 = ax.twinx()
        ax2.plot(xs, [r[3] for r in sel], "s--", color="C1", label="eval s / checkpoint")
        ax.set_xlabel(axis)
        ax.set_ylabel("train steps/s", color="C0")
        ax2.set_ylabel("eval s / checkpoint", color="C1")
        if axis != "concepts":
            ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax2.set_yscale("log")
    default = next(r for r in rows if r[0] == "image size" and r[1] == 16)
    ks = np.array([10, 30, 100, 300])
    axes[3].plot(ks, ks * default[3], "o-", color="C1")
    axes[3].set_xscale("log")
    axes[3].set_yscale("log")
    axes[3].set_xlabel("checkpoints (default model)")
    axes[3].set_ylabel("evaluation s")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
