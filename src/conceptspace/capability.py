"""Elicitation over a run's checkpoints, onset detection and the hidden-capability gap (paper-notes 5).

`elicit_run(run_dir)` writes `eval/<tag>/elicitation.npz`:

    steps    [K]                      checkpoint steps
    names    [E], methods [E]         elicitations ("naive", "overprompt[color x1]", ...) and their method
    held_out [H]                      held-out class names
    probs    [K, E, H, S, C, V]       probe probabilities of every generation
    joint    [K, E, H]                joint accuracy: mean over samples of the product over concepts of P(target)

Onsets (metrics.json "elicitation"): per method, the first step starting `run_length` consecutive checkpoints
whose *best-of-grid* joint accuracy is >= threshold; every grid point's own onset is reported beside it, so a
max over many prompts is never mistaken for one prompt.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch

from .checkpoints import list_checkpoints
from .concepts import ConceptSpace
from .config import ExperimentConfig
from .elicitation import (
    Elicitation,
    ElicitationError,
    best_of_grid,
    build_elicitations,
    joint_accuracy,
    latent_hook,
    latent_rows,
    overprompt_prompt,
    patch_conditioning,
)
from .evaluate import load_eval, open_eval_file, over_new_checkpoints, pad_probs
from .probe import check_probe_space, get_probe
from .prompts import class_prompts
from .samplers import sample
from .train import RunDirError, load_checkpoint, read_run_info
from .trajectories import first_sustained


def _prompt(space: ConceptSpace, held: str, e: Elicitation) -> np.ndarray:
    if e.method == "overprompt":
        return overprompt_prompt(space, held, e.concept, e.scale)
    return class_prompts(space, [held])[0]


def _latent_site(cfg: ExperimentConfig) -> str:
    at = cfg.elicit.latent_at
    if at == "auto":
        at = "shared" if cfg.model.conditioning != "sep_mlp" else "blocks"
    if at == "shared" and cfg.model.conditioning == "sep_mlp":
        raise ElicitationError("elicit.latent_at=shared needs a model with a shared embedding (common_linear)")
    return "hook_embed" if at == "shared" else "*.hook_cond"


def _generate(model, objective, cfg: ExperimentConfig, prompts: torch.Tensor, guidance: float,
              shared: int, hooks: list) -> np.ndarray:
    s, size = cfg.sampler, cfg.data.image_size
    gen = torch.Generator().manual_seed(cfg.eval.seed)
    with model.hooks(hooks):
        x = sample(model, objective, prompts, shape=(3, size, size), n_steps=s.n_steps, method=s.method, eta=s.eta,
                   guidance_scale=guidance, generator=gen, batch_size=cfg.eval.batch_size, shared_noise=shared,
                   clip_x0=s.clip_x0)
    return x.clamp(0, 1).numpy()


def elicit_checkpoint(model, objective, cfg: ExperimentConfig, space: ConceptSpace, probe,
                      elicitations: list[Elicitation], donors: dict[int, torch.nn.Module]) -> np.ndarray:
    """Probabilities [E, H, S, C, V] of every elicitation's generations for every held-out class at one checkpoint."""
    n = cfg.elicit.n_samples
    out = {}
    batched = [e for e in elicitations if e.method in ("naive", "overprompt", "latent")]
    site = _latent_site(cfg) if any(e.method == "latent" for e in batched) else None
    for held in space.held_out:
        # 1. Prompt and latent elicitations in one batch, every group of rows sharing the same noise.
        prompts = torch.from_numpy(np.stack([_prompt(space, held, e) for e in batched for _ in range(n)]))
        hooks = [(site, latent_hook(latent_rows(model, space, held, batched, n, site)))] if site else []
        images = _generate(model, objective, cfg, prompts, cfg.sampler.guidance_scale, n, hooks)
        probs = pad_probs(probe.predict_proba(images)).reshape(len(batched), n, len(space.concepts), -1)
        for k, e in enumerate(batched):
            out[(e.name, held)] = probs[k]
        naive = torch.from_numpy(np.repeat(class_prompts(space, [held]), n, axis=0))
        # 2. Patching: the donor's conditioning path on this checkpoint's body; 3. guidance scales.
        for e in elicitations:
            if e.method == "patch":
                patched = copy.deepcopy(model)
                patch_conditioning(patched, donors[e.donor])
                images = _generate(patched, objective, cfg, naive, cfg.sampler.guidance_scale, n, [])
            elif e.method == "cfg":
                images = _generate(model, objective, cfg, naive, e.guidance, n, [])
            else:
                continue
            out[(e.name, held)] = pad_probs(probe.predict_proba(images)).reshape(n, len(space.concepts), -1)
    return np.stack([np.stack([out[(e.name, h)] for h in space.held_out]) for e in elicitations])


def elicit_run(run_dir: str | Path, cfg: ExperimentConfig, tag: str = "default", force: bool = False,
               progress: bool | None = None) -> Path:
    """Evaluate every (new) checkpoint under every elicitation; returns the path of elicitation.npz."""
    run_dir = Path(run_dir)
    read_run_info(run_dir)
    space = ConceptSpace.from_config(cfg.data)
    if not space.held_out:
        raise ElicitationError("the space has no held-out class to elicit")
    elicitations = build_elicitations(space, cfg.elicit)
    if any(e.method == "cfg" for e in elicitations) and cfg.diffusion.cond_drop_p == 0:
        raise ElicitationError("cfg elicitation needs a model trained with prompt dropout (diffusion.cond_drop_p > 0)")
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise RunDirError(f"{run_dir}: no checkpoints yet; train first")
    path = run_dir / "eval" / tag / "elicitation.npz"
    settings = {"elicit": cfg.elicit.model_dump(mode="json"), "sampler": cfg.sampler.model_dump(mode="json"),
                "probe": cfg.probe.model_dump(mode="json", exclude={"cache_dir"}), "seed": cfg.eval.seed}
    arrays = open_eval_file(path, settings, force)
    probe = get_probe(cfg, progress)
    check_probe_space(probe, space)
    donors = {}
    steps_all = [s for s, _ in ckpts]
    for e in elicitations:
        if e.method == "patch":
            step = steps_all[-1] if e.donor == -1 else e.donor
            match = [p for s, p in ckpts if s == step]
            if not match:
                raise ElicitationError(f"patch donor step {step} is not a checkpoint (have {steps_all})")
            donors[e.donor] = load_checkpoint(match[0])[1]

    def read(model, objective) -> dict[str, np.ndarray]:
        probs = elicit_checkpoint(model, objective, cfg, space, probe, elicitations, donors)  # [E, H, S, C, V]
        joint = np.stack([joint_accuracy(probs[:, h], name) for h, name in enumerate(space.held_out)], axis=1)
        return {"probs": probs[None], "joint": joint[None]}

    static = {"names": np.array([e.name for e in elicitations]), "methods": np.array([e.method for e in elicitations]),
              "held_out": np.array(space.held_out)}
    over_new_checkpoints(run_dir, path, arrays, read, static, "elicit", progress)
    return path


def onset_metrics(arrays: dict[str, np.ndarray], threshold: float = 0.8, run_length: int = 3) -> dict:
    """metrics.json "elicitation": onsets per method (best of grid), per grid point, and the gap."""
    steps, names, methods = arrays["steps"], [str(n) for n in arrays["names"]], [str(m) for m in arrays["methods"]]
    out = {}
    for h, held in enumerate(str(x) for x in arrays["held_out"]):
        joint = arrays["joint"][:, :, h]  # [K, E]
        per_method = {m: first_sustained(best, steps, threshold, run_length)
                      for m, best in best_of_grid(joint, methods).items()}
        grid = {names[i]: first_sustained(joint[:, i], steps, threshold, run_length) for i in range(len(names))}
        naive = per_method.get("naive")
        others = [v for m, v in per_method.items() if m != "naive" and v is not None]
        best_other = min(others) if others else None
        gap = naive - best_other if naive is not None and best_other is not None else None
        out[held] = {
            "onset_step": per_method,
            "grid_onset_step": grid,
            "gap_steps": gap,
            "naive_never_reached": naive is None,
            "best_intervention_onset": best_other,
            "final_joint": {names[i]: round(float(joint[-1, i]), 4) for i in range(len(names))},
        }
    return out


def add_onsets_to_metrics(run_dir: str | Path, cfg: ExperimentConfig, tag: str = "default") -> dict:
    """Merge the elicitation onsets into metrics.json, with each onset's distance to the sudden turn."""
    run_dir = Path(run_dir)
    arrays = load_eval(run_dir / "eval" / tag / "elicitation.npz")
    onsets = onset_metrics(arrays, cfg.elicit.threshold, cfg.elicit.run_length)
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    steps = list(arrays["steps"])
    for held, e in onsets.items():
        turn = metrics.get("turn", {}).get(held, {}).get("step")
        if turn is not None and turn in steps:
            e["turn_distance_checkpoints"] = {m: (steps.index(s) - steps.index(turn) if s is not None else None)
                                              for m, s in e["onset_step"].items()}
    metrics["elicitation"] = onsets
    path.write_text(json.dumps(metrics, indent=2))
    return metrics
