"""Training and sampling speed of the denoiser on this CPU, with diffusers' UNet2DModel as a reference.

    python benchmarks/train_speed.py [--repeats 5] [--steps 20] [--threads 2] [--skip-paper]

For each model: parameters, FLOPs per training step (torch's FLOP counter, forward + backward), median
training steps/s at batch 64 (DDPM loss, AdamW; models measured interleaved so they see the same load), the
achieved fraction of this machine's peak, and sampling images/s (DDIM, 50 steps, 256 images, 16 px models only).
Ours trains as the package does (fused AdamW); diffusers' UNet2DModel at the same widths and depth is timed with
the per-tensor AdamW loop (PyTorch's default on CPU, what a diffusers training script gets) and with the fused
one, so the ratio is given both for the training step and for the model alone.
diffusers is an optional extra (`pip install -e .[bench]`); without it the reference rows are skipped.
The peak is measured: the best fp32 GFLOP/s of a 2048 x 2048 matmul or a 256-channel 3x3 convolution on the same
threads, each probed 5 times after every round of the interleaved timings (the best of all of them; both are printed).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from conceptspace.config import load_config
from conceptspace.model.objectives import DDPMObjective
from conceptspace.model.samplers import sample
from conceptspace.train import build_model


class DiffusersReference(torch.nn.Module):
    """diffusers' UNet2DModel at the same widths and depth, behind our (x, t, prompt) signature."""

    def __init__(self, image_size: int, widths: list[int], res_blocks: int, norm_groups: int):
        super().__init__()
        from diffusers import UNet2DModel

        n = len(widths)
        self.net = UNet2DModel(
            sample_size=image_size, in_channels=3, out_channels=3, block_out_channels=tuple(widths),
            layers_per_block=res_blocks, norm_num_groups=norm_groups, down_block_types=("DownBlock2D",) * n,
            up_block_types=("UpBlock2D",) * n, add_attention=True,
        )

    def forward(self, x, t, prompt):
        return self.net(x, t * 1000).sample


def measured_peak_gflops(n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Best fp32 GFLOP/s on the current threads of an n x n matmul (BLAS) and of a large 3x3 convolution (oneDNN,
    the kernels the models train with; on some CPUs it beats the matmul)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    x, w = torch.randn(64, 256, 8, 8), torch.randn(256, 256, 3, 3)
    conv_flop = 2 * 64 * 8 * 8 * 256 * 256 * 9
    probes = {"matmul": (lambda: a @ b, 2 * n**3),
              "convolution": (lambda: torch.nn.functional.conv2d(x, w, padding=1), conv_flop)}
    best = {}
    with torch.no_grad():
        for name, (run, flop) in probes.items():
            run()
            for _ in range(repeats):
                t = time.perf_counter()
                run()
                best[name] = max(best.get(name, 0.0), flop / (time.perf_counter() - t) / 1e9)
    return best


def make_step(model, objective, batch: int, image_size: int, prompt_dim: int, fused: bool):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, fused=fused or None)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, image_size, image_size, generator=gen)
    p = torch.rand(batch, prompt_dim, generator=gen)

    def step():
        loss = objective.loss(model, x, p, generator=gen)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def flops_per_step(step) -> float:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def timed(fn, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="training steps per repeat")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--skip-paper", action="store_true", help="skip the 32 px paper-width models (slow)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    objective = DDPMObjective()
    configs = {"default 16px": load_config("configs/2x2.yaml")}
    if not args.skip_paper:
        configs["paper 32px"] = load_config("configs/paper_2x2.yaml", ["model.dropout=0.0"])
    models = {}  # name -> (model, cfg, fused optimizer)
    for name, cfg in configs.items():
        torch.manual_seed(0)
        models[name] = (build_model(cfg), cfg, True)
        try:
            m = cfg.model
            for fused, suffix in ((False, " diffusers"), (True, " diffusers fused")):
                models[name + suffix] = (DiffusersReference(cfg.data.image_size, m.widths, m.res_blocks,
                                                            m.norm_groups), cfg, fused)
        except ImportError:
            print("diffusers not installed: reference rows skipped (pip install -e .[bench])")
    steps = {}
    for name, (model, cfg, fused) in models.items():
        steps[name] = make_step(model, objective, args.batch, cfg.data.image_size, 11, fused)
        steps[name]()  # warm-up
    rates = {name: [] for name in models}
    peaks = []  # probed after every round too, so a machine whose speed drifts gets its best, not its worst
    for _ in range(args.repeats):  # interleaved: every model sees the same machine load
        for name, fn in steps.items():
            n = args.steps if "paper" not in name else max(2, args.steps // 10)
            rates[name].append(timed(fn, n))
        peaks.append(measured_peak_gflops())
    probe = {name: max(p[name] for p in peaks) for name in peaks[0]}
    peak = max(probe.values())
    print(f"threads={args.threads} batch={args.batch} repeats={args.repeats}; measured peak {peak:.0f} GFLOP/s "
          f"(fp32, best of matmul {probe['matmul']:.0f} and convolution {probe['convolution']:.0f})")
    print(f"{'model':<28} {'params':>8} {'GFLOP/step':>11} {'steps/s':>8} {'% peak':>7} {'sample img/s':>13}")
    for name, (model, cfg, _) in models.items():
        median = statistics.median(rates[name])
        gflop = flops_per_step(steps[name]) / 1e9
        img_s = ""
        if cfg.data.image_size <= 16:
            prompts = torch.rand(256, 11)
            t = time.perf_counter()
            sample(model, objective, prompts, shape=(3, cfg.data.image_size, cfg.data.image_size), n_steps=50,
                   method="ddim", generator=torch.Generator().manual_seed(0))
            img_s = f"{256 / (time.perf_counter() - t):.0f}"
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name:<28} {params:>7.2f}M {gflop:>11.2f} {median:>8.2f} {100 * gflop * median / peak:>6.1f}% "
              f"{img_s:>13}")
    for name in configs:
        if name + " diffusers" in rates:
            ours = statistics.median(rates[name])
            step = ours / statistics.median(rates[name + " diffusers"])
            model = ours / statistics.median(rates[name + " diffusers fused"])
            print(f"{name}: ours / diffusers steps/s = {step:.2f}x (training step; target >= 2x), "
                  f"{model:.2f}x (model alone, both with fused AdamW)")


if __name__ == "__main__":
    main()
