"""Training and sampling speed of the denoiser on this CPU, with diffusers' UNet2DModel as a reference.

    python benchmarks/train_speed.py [--repeats 5] [--steps 20] [--threads 2] [--skip-paper]

For each model: parameters, FLOPs per training step (torch's FLOP counter, forward + backward), median
training steps/s at batch 64 (DDPM loss, AdamW; models measured interleaved so they see the same load), the
achieved fraction of the CPU's peak, and sampling images/s (DDIM, 50 steps, 256 images, 16 px models only).
diffusers is an optional extra (`pip install -e .[bench]`); without it the reference rows are skipped.
The peak assumes 32 fp32 FLOP/cycle/core (two 256-bit FMA pipes) at the clock from /proc/cpuinfo.
"""

from __future__ import annotations

import argparse
import re
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


def cpu_peak_gflops(threads: int) -> float:
    text = open("/proc/cpuinfo").read()
    mhz = re.search(r"cpu MHz\s*:\s*([\d.]+)", text)
    ghz = float(mhz.group(1)) / 1000 if mhz else float(re.search(r"bogomips\s*:\s*([\d.]+)", text).group(1)) / 2000
    return threads * ghz * 32


def make_step(model, objective, batch: int, image_size: int, prompt_dim: int):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
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
    models = {}
    for name, cfg in configs.items():
        torch.manual_seed(0)
        models[name] = (build_model(cfg), cfg)
        try:
            m = cfg.model
            models[name + " diffusers"] = (DiffusersReference(cfg.data.image_size, m.widths, m.res_blocks,
                                                              m.norm_groups), cfg)
        except ImportError:
            print("diffusers not installed: reference rows skipped (pip install -e .[bench])")
    steps = {}
    for name, (model, cfg) in models.items():
        steps[name] = make_step(model, objective, args.batch, cfg.data.image_size, 11)
        steps[name]()  # warm-up
    rates = {name: [] for name in models}
    for _ in range(args.repeats):  # interleaved: every model sees the same machine load
        for name, fn in steps.items():
            n = args.steps if "paper" not in name else max(2, args.steps // 10)
            rates[name].append(timed(fn, n))
    peak = cpu_peak_gflops(args.threads)
    print(f"threads={args.threads} batch={args.batch} repeats={args.repeats}; assumed peak {peak:.0f} GFLOP/s")
    print(f"{'model':<22} {'params':>8} {'GFLOP/step':>11} {'steps/s':>8} {'% peak':>7} {'sample img/s':>13}")
    for name, (model, cfg) in models.items():
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
        print(f"{name:<22} {params:>7.2f}M {gflop:>11.2f} {median:>8.2f} {100 * gflop * median / peak:>6.1f}% "
              f"{img_s:>13}")
    for name in configs:
        if name + " diffusers" in rates:
            ratio = statistics.median(rates[name]) / statistics.median(rates[name + " diffusers"])
            print(f"{name}: ours / diffusers steps/s = {ratio:.2f}x")


if __name__ == "__main__":
    main()
