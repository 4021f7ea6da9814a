"""The model's internal representation of every class's prompt at every checkpoint, for read-outs that need no
sampling (`analysis/representation.py` fits them and finds when the held-out prompt is decoded as its own class).

`represent_run(run_dir, cfg)` writes `eval/<tag>/representation.npz`:

    steps     [K]                  checkpoint steps
    classes   [P], held_out [P]    class names (training and held-out) and which are held out
    sites     [S]                  "cond": every ResBlock's concept embedding (hook_cond), concatenated;
                                   "body": the mid-block's output (mid2.hook_out) at noise level t = 0.5 from one
                                   fixed pure-noise input, averaged over pixels
    cond      [K, P, n, F_cond]    float32 features of n prompts per class (train-mode concept values: the
    body      [K, P, n, F_body]    within-class variation a training prompt has)
    prompts   [P, n, D]            those prompts (the model's input: the read-outs' reference)

One forward pass per checkpoint (P x n prompts): seconds per run, against minutes of sampling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import ExperimentConfig
from ..data.concepts import ConceptSpace, sample_values
from ..data.prompts import encode_prompt, onehot_prompts
from ..rundir import RunDir, load_npz, read_json, write_json, writes_run
from ..train import read_run_info, resolve_device
from .evaluate import over_new_checkpoints

SITES = ("cond", "body")
NOISE_LEVEL = 0.5  # the diffusion time t in [0, 1] at which the body's features are read
BODY_HOOK = "mid2.hook_out"


def class_prompt_samples(space: ConceptSpace, n: int, seed: int) -> np.ndarray:
    """Prompts [P, n, D]: n per class with train-mode concept values (real data: the class code, n times)."""
    rng = np.random.default_rng(seed)
    names = space.class_names
    ids = np.repeat(space.class_ids(names), n, axis=0)
    if space.is_real:
        h = onehot_prompts(space, ids)
    else:
        h = encode_prompt(space, sample_values(space, ids, "train", rng))
    return h.reshape(len(names), n, -1)


@torch.no_grad()
def representation_features(model, objective, prompts: np.ndarray, image_size: int,
                            seed: int) -> dict[str, np.ndarray]:
    """{"cond": [P, n, F], "body": [P, n, C]} for prompts [P, n, D] at one checkpoint."""
    P, n, D = prompts.shape
    device = next(model.parameters()).device
    h = torch.from_numpy(prompts.reshape(P * n, D)).to(device)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((1, 3, image_size, image_size), generator=gen).expand(P * n, -1, -1, -1).to(device)
    t = objective.net_time(torch.full((P * n,), NOISE_LEVEL)).to(device)
    names = [*model.cond_hook_names(), BODY_HOOK]
    _, cache = model.run_with_cache(x, t, h, names=names)
    cond = torch.cat([cache[k].reshape(P * n, -1) for k in model.cond_hook_names()], dim=1)
    body = cache[BODY_HOOK].mean(dim=(2, 3))
    return {"cond": cond.reshape(P, n, -1).float().cpu().numpy(),
            "body": body.reshape(P, n, -1).float().cpu().numpy()}


@writes_run
def represent_run(run_dir: str | Path, cfg: ExperimentConfig, tag: str = "default", n: int = 16,
                  progress: bool | None = None) -> Path:
    """Read every (new) checkpoint's representation of every class; returns the path of representation.npz."""
    run_dir = Path(run_dir)
    read_run_info(run_dir)
    space = ConceptSpace.from_config(cfg.data)
    rd = RunDir(run_dir, tag)
    path = rd.representation
    settings = {"n": n, "seed": cfg.eval.seed, "noise_level": NOISE_LEVEL, "body_hook": BODY_HOOK}
    settings_path = RunDir.settings_of(path)
    arrays: dict[str, np.ndarray] = {}
    if path.is_file() and settings_path.is_file() and read_json(settings_path) == settings:
        arrays = dict(load_npz(path))  # other settings: read again from scratch (features only, no results)
    write_json(settings_path, settings)
    prompts = class_prompt_samples(space, n, cfg.eval.seed)
    device = resolve_device(cfg.train.device)

    def read(model, objective) -> dict[str, np.ndarray]:
        feats = representation_features(model, objective, prompts, cfg.data.image_size, cfg.eval.seed)
        return {k: v[None] for k, v in feats.items()}

    static = {"classes": np.array(space.class_names), "held_out": np.array([c in space.held_out
                                                                            for c in space.class_names]),
              "sites": np.array(SITES), "prompts": prompts}
    over_new_checkpoints(run_dir, path, arrays, read, static, "represent", progress, device)
    return path

