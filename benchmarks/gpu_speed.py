"""Training and evaluation speed on a CUDA GPU; prints "skipped" and exits 0 on a machine without one.

    python benchmarks/gpu_speed.py [--steps 50] [--share 1 2 4] [--device cpu]

Rows: the paper-sized model (configs/paper_2x2.yaml, 32 px), the default model (configs/2x2.yaml) and the CelebA
model (configs/celeba_gender_hat.yaml, 64 px; random images of its size, so no data is needed), fp32 and bf16
autocast (train.precision): median training steps/s at the config's batch size, the implied time of the paper's
20,000-step run and of the config's own run length (train.steps); one checkpoint's evaluation (4 classes x 32
samples x 25 DDIM steps); and the aggregate steps/s of N default-model runs sharing the GPU as separate processes
(a local sweep with --workers N on a GPU machine puts N runs on it). `--device cpu` runs the same rows on the CPU
(a check of this script; the CPU's own figures are in train_speed.py).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time

import torch

from conceptspace.config import load_config
from conceptspace.data.concepts import ConceptSpace
from conceptspace.data.prompts import PromptLayout
from conceptspace.model.samplers import sample
from conceptspace.train import build_model, build_objective, precision_context


def prompt_dim(cfg) -> int:
    """Numbers in a prompt of the config's concept space."""
    return PromptLayout.for_space(ConceptSpace.from_config(cfg.data)).dim


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timings on a GPU end when its kernels do)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def steps_per_s(cfg, steps: int, precision: str, device: torch.device, barrier=None) -> float:
    """Median training steps/s of 3 timed blocks of `steps` (after 5 warm-up steps) at the config's batch size."""
    torch.manual_seed(0)
    model, objective = build_model(cfg).to(device), build_objective(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    size, b = cfg.data.image_size, cfg.train.batch_size
    x, p = torch.rand(b, 3, size, size, device=device), torch.rand(b, prompt_dim(cfg), device=device)
    gen = torch.Generator(device=device).manual_seed(0)

    def step():
        with precision_context(device, precision):
            loss = objective.loss(model, x, p, generator=gen)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    if barrier is not None:  # runs sharing the GPU start their timing together
        barrier.wait()
    rates = []
    for _ in range(3):
        synchronize(device)
        t = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        rates.append(steps / (time.perf_counter() - t))
    return statistics.median(rates)


def eval_seconds(cfg, precision: str, device: torch.device) -> float:
    """Seconds for one checkpoint's evaluation: 4 classes x 32 samples x 25 DDIM steps (after a warm-up)."""
    model, objective = build_model(cfg).to(device), build_objective(cfg).to(device)
    size = cfg.data.image_size
    prompts = torch.rand(4 * 32, prompt_dim(cfg), device=device)
    with precision_context(device, precision):
        sample(model, objective, prompts, shape=(3, size, size), n_steps=25, clip_x0=True)
        synchronize(device)
        t = time.perf_counter()
        sample(model, objective, prompts, shape=(3, size, size), n_steps=25, clip_x0=True)
        synchronize(device)
    return time.perf_counter() - t


def _shared(steps: int, queue, barrier, device: str) -> None:
    """One of several processes training the default model on the same GPU."""
    cfg = load_config("configs/2x2.yaml")
    queue.put(steps_per_s(cfg, steps, "fp32", torch.device(device), barrier))


ROWS = (("paper 32px", "configs/paper_2x2.yaml"), ("default 16px", "configs/2x2.yaml"),
        ("celeba 64px", "configs/celeba_gender_hat.yaml"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--share", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--device", default="cuda", help="cuda (default), or cpu to check this script without a GPU")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU on this machine: GPU benchmark skipped")
        return
    device = torch.device(args.device)
    name_of = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name_of}; torch {torch.__version__}; {args.steps} steps per timed block")
    print(f"{'model':<14} {'precision':>9} {'batch':>5} {'steps/s':>8} {'20,000 steps':>13} {'its run':>18} "
          f"{'eval s/ckpt':>12}")
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    for name, path in ROWS:
        cfg = load_config(path, ["model.dropout=0.0"])
        for precision in ("fp32", "bf16") if bf16 else ("fp32",):
            rate = steps_per_s(cfg, args.steps, precision, device)
            hours = cfg.train.steps / rate / 3600
            own = f"{cfg.train.steps:,} in " + (f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.1f} min")
            print(f"{name:<14} {precision:>9} {cfg.train.batch_size:>5} {rate:>8.1f} {20000 / rate / 60:>9.1f} min "
                  f"{own:>18} {eval_seconds(cfg, precision, device):>12.2f}", flush=True)
    ctx = mp.get_context("spawn")
    for n in args.share:
        queue, barrier = ctx.Queue(), ctx.Barrier(n)
        procs = [ctx.Process(target=_shared, args=(args.steps, queue, barrier, args.device)) for _ in range(n)]
        for proc in procs:
            proc.start()
        rates = [queue.get() for _ in procs]
        for proc in procs:
            proc.join()
        print(f"{n} default runs sharing the GPU: {sum(rates):.1f} steps/s in all ({min(rates):.1f}-{max(rates):.1f} "
              "each)", flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
