"""Evaluation speed of a trained run's checkpoints, and whether faster settings read the same.

    python benchmarks/eval_speed.py RUN_DIR [--variants fp32-25 bf16-25 fp32-15] [--repeats 3] [--threads 2]

For each variant (sampler precision and DDIM steps) it evaluates every checkpoint of a copy of RUN_DIR (the run
itself is not touched), `--repeats` times, and prints the median wall time and the agreement of the per-sample
probe predictions with the run's own evaluation (the arrays `conceptspace evaluate` wrote with the run's config).
The probe comes from the cache and is loaded once, outside the timing (as the main job does).
Target: the demo's 30 checkpoints in at most 30 s on 2 cores, with at least 99% agreement.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from conceptspace.readout.evaluate import evaluate_run
from conceptspace.readout.probe import get_probe
from conceptspace.rundir import RunDir, load_npz
from conceptspace.train import load_run_config


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--variants", nargs="+", default=["fp32-25", "bf16-25"],
                    help="PRECISION-STEPS, e.g. fp32-25 (the default sampler), bf16-25, fp32-15")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run_dir)
    reference = RunDir(run).concept_probs
    if not reference.is_file():
        raise SystemExit(f"{run}: evaluate it first (conceptspace evaluate {run})")
    ref = load_npz(reference)
    base = load_run_config(run)
    probe = get_probe(base)
    print(f"{run}: {len(ref['steps'])} checkpoints x {ref['preds'].shape[1]} classes x {ref['preds'].shape[2]} "
          f"samples; threads={args.threads}; reference: {reference.relative_to(run)} "
          f"({base.sampler.precision}, {base.sampler.n_steps} steps)")
    print(f"{'variant':<10} {'median s':>9} {'runs (s)':>22} {'agreement':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns("eval", "figures", "*.html", "resume*"))
        for variant in args.variants:
            precision, steps = variant.split("-")
            cfg = base.model_copy(update={"sampler": base.sampler.model_copy(
                update={"precision": precision, "n_steps": int(steps)})})
            times = []
            for r in range(args.repeats):
                t = time.perf_counter()
                path = evaluate_run(copy, cfg, tag=f"bench{r}", force=True, progress=False, probe=probe)
                times.append(time.perf_counter() - t)
            preds = load_npz(path)["preds"]
            agree = float(np.mean(preds == ref["preds"])) if preds.shape == ref["preds"].shape else float("nan")
            runs = ", ".join(f"{x:.1f}" for x in times)
            print(f"{variant:<10} {statistics.median(times):>9.1f} {runs:>22} {100 * agree:>9.2f}%")


if __name__ == "__main__":
    main()
