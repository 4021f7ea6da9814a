"""Elicitation over a run's checkpoints, onset detection and the hidden-capability gap.

`elicit_run(run_dir)` writes `eval/<tag>/elicitation.npz`:

    steps    [K]                      checkpoint steps
    names    [E], methods [E]         elicitations ("naive", "overprompt[color x1]", ...) and their method
    concepts [E]                      the concept each one pushes ("" for none)
    held_out [H]                      held-out class names
    probs    [K, E, H, S, C, V]       probe probabilities of every generation
    has_object [K, E, H, S] bool      the generation contains an object (always true for real data)
    joint    [K, E, H]                joint accuracy: mean over samples of the product over concepts of P(target)
    joint_paper [K, E, H]             the paper's measure: product over concepts of the mean over samples
    probe_checksum []                 checksum of the probe's weights

Onsets (metrics.json "elicitation", `onsets.py`): per method, from the *best-of-grid* joint accuracy, both the
first step starting `run_length` checkpoints at or above the threshold and the step from which it holds to the end
of the run; every grid point's own onsets are reported beside it, and naive prompting is also read as the best of
as many tries (initial-noise seeds) as the largest grid, so a max over many prompts is never compared with one try.
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
    PROMPT_METHODS,
    Elicitation,
    ElicitationError,
    build_elicitations,
    ladder_prompt,
    latent_hook,
    latent_rows,
    overprompt_prompt,
    patch_conditioning,
)
from .evaluate import EVAL_FORMAT, load_eval, object_mask, open_eval_file, over_new_checkpoints, pad_probs
from .probe import check_probe_space, get_probe
from .prompts import class_prompts
from .samplers import sample
from .train import RunDirError, load_checkpoint, read_run_info
from .onsets import best_of_grid, censored_lead, control_classes, joint_accuracy, onset
from .trajectories import hard_accuracy

# Elicit settings that only the analysis reads: changing them re-reads the arrays, it does not regenerate them.
ANALYSIS_SETTINGS = {"threshold", "run_length", "allowed_dip", "lead_fraction", "control_threshold"}


def _prompt(space: ConceptSpace, held: str, e: Elicitation) -> np.ndarray:
    if e.method == "overprompt":
        return overprompt_prompt(space, held, e.concept, e.scale)
    if e.method == "ladder":
        return ladder_prompt(space, held, e.concept, e.value)
    return class_prompts(space, [held])[0]


def _latent_site(cfg: ExperimentConfig) -> str:
    at = cfg.elicit.latent_at
    if at == "auto":
        at = "shared" if cfg.model.conditioning != "sep_mlp" else "blocks"
    if at == "shared" and cfg.model.conditioning == "sep_mlp":
        raise ElicitationError("elicit.latent_at=shared needs a model with a shared embedding (common_linear)")
    return "hook_embed" if at == "shared" else "*.hook_cond"


def _generate(model, objective, cfg: ExperimentConfig, prompts: torch.Tensor, guidance: float,
              shared: int | None, hooks: list, noise: int = 0) -> np.ndarray:
    s, size = cfg.sampler, cfg.data.image_size
    gen = torch.Generator().manual_seed(cfg.eval.seed + noise)
    # A latent hook holds one row of parameters per prompt, so every prompt must be in the same forward pass.
    batch_size = len(prompts) if hooks else cfg.eval.batch_size
    with model.hooks(hooks):
        x = sample(model, objective, prompts, shape=(3, size, size), n_steps=s.n_steps, method=s.method, eta=s.eta,
                   guidance_scale=guidance, generator=gen, batch_size=batch_size, shared_noise=shared,
                   clip_x0=s.clip_x0)
    return x.clamp(0, 1).numpy()


def elicit_checkpoint(model, objective, cfg: ExperimentConfig, space: ConceptSpace, probe,
                      elicitations: list[Elicitation],
                      donors: dict[int, torch.nn.Module]) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities [E, H, S, C, V], has_object [E, H, S]) of every elicitation's generations for every held-out
    class at one checkpoint."""
    n, C = cfg.elicit.n_samples, len(space.concepts)
    out: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

    def read(images: np.ndarray, groups: int) -> list[tuple[np.ndarray, np.ndarray]]:
        probs = pad_probs(probe.predict_proba(images)).reshape(groups, n, C, -1)
        found = object_mask(images, space).reshape(groups, n)
        return list(zip(probs, found))

    batched = [e for e in elicitations if e.method in PROMPT_METHODS]
    site = _latent_site(cfg) if any(e.method.startswith("latent") for e in batched) else None
    for held in space.held_out:
        # 1. Prompt and latent elicitations in one batch, every group of rows sharing the same noise.
        prompts = torch.from_numpy(np.stack([_prompt(space, held, e) for e in batched for _ in range(n)]))
        rows = latent_rows(model, space, held, batched, n, site, cfg.elicit.paper_latent_values) if site else None
        hooks = [(site, latent_hook(rows))] if site else []
        images = _generate(model, objective, cfg, prompts, cfg.sampler.guidance_scale, n, hooks)
        for e, r in zip(batched, read(images, len(batched))):
            out[(e.name, held)] = r
        naive = torch.from_numpy(np.repeat(class_prompts(space, [held]), n, axis=0))
        # 2. More tries of naive prompting: independent initial noise for every try but the first (= naive).
        tries = [e for e in elicitations if e.method == "naive_k" and e.noise > 0]
        if tries:
            images = _generate(model, objective, cfg, naive.repeat(len(tries), 1), cfg.sampler.guidance_scale,
                               None, [], noise=1)
            for e, r in zip(tries, read(images, len(tries))):
                out[(e.name, held)] = r
        # 3. Patching: the donor's conditioning path on this checkpoint's body; 4. guidance scales.
        for e in elicitations:
            if e.method == "naive_k" and e.noise == 0:
                out[(e.name, held)] = out[("naive", held)]
            elif e.method == "patch":
                patched = copy.deepcopy(model)
                patch_conditioning(patched, donors[e.donor])
                out[(e.name, held)] = read(_generate(patched, objective, cfg, naive, cfg.sampler.guidance_scale, n,
                                                     []), 1)[0]
            elif e.method == "cfg":
                out[(e.name, held)] = read(_generate(model, objective, cfg, naive, e.guidance, n, []), 1)[0]
    probs = np.stack([np.stack([out[(e.name, h)][0] for h in space.held_out]) for e in elicitations])
    found = np.stack([np.stack([out[(e.name, h)][1] for h in space.held_out]) for e in elicitations])
    return probs, found


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
    # Analysis settings (thresholds, criteria) do not change the arrays, so they may change without a new --tag.
    settings = {"elicit": cfg.elicit.model_dump(mode="json", exclude=ANALYSIS_SETTINGS),
                "sampler": cfg.sampler.model_dump(mode="json"), "format": EVAL_FORMAT,
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
        probs, found = elicit_checkpoint(model, objective, cfg, space, probe, elicitations, donors)  # [E, H, S, ...]
        joint = np.stack([joint_accuracy(probs[:, h], name, found[:, h]) for h, name in enumerate(space.held_out)],
                         axis=1)
        paper = np.stack([joint_accuracy(probs[:, h], name, found[:, h], "paper")
                          for h, name in enumerate(space.held_out)], axis=1)
        return {"probs": probs[None], "has_object": found[None], "joint": joint[None], "joint_paper": paper[None]}

    static = {"names": np.array([e.name for e in elicitations]), "methods": np.array([e.method for e in elicitations]),
              "concepts": np.array([e.concept or "" for e in elicitations]),
              "held_out": np.array(space.held_out), "probe_checksum": np.array(probe.checksum)}
    over_new_checkpoints(run_dir, path, arrays, read, static, "elicit", progress)
    return path


def _pushed_concepts(arrays: dict[str, np.ndarray], i: int, kinds: list[str]) -> list[str]:
    """The concept elicitation i pushes (from the `concepts` array, or its name "latent[color a=1 b=0.1]" in files
    written before that array existed); every concept for those that push none (naive, patch, cfg)."""
    if "concepts" in arrays:
        c = str(arrays["concepts"][i])
    else:
        c = str(arrays["names"][i]).partition("[")[2].split(" ", 1)[0].rstrip("]")
    return [c] if c in kinds else list(kinds)


def control_reading(eval_arrays: dict[str, np.ndarray] | None, held: str, concepts: list[str], kinds: list[str],
                    step: int | None, threshold: float) -> dict:
    """Naive accuracy, at one checkpoint, of the training classes sharing the held-out value of each pushed concept
    (for 11 and color: class 10's color). A capability counts as hidden only where these are drawn correctly."""
    out: dict = {"step": step, "accuracy": {}, "passed": False}
    if step is None or eval_arrays is None:
        return out
    steps = eval_arrays["steps"].tolist()
    if step not in steps:
        out["note"] = "no evaluation at this checkpoint"
        return out
    names = [str(n) for n in eval_arrays["classes"]]
    held_out = [n for n, h in zip(names, eval_arrays["held_out"]) if h]
    acc = hard_accuracy(eval_arrays["preds"], names, eval_arrays.get("has_object"))[steps.index(step)]  # [P, C]
    for kind in concepts:
        j = kinds.index(kind)
        for cls in control_classes(names, held_out, held, j):
            out["accuracy"].setdefault(cls, {})[kind] = round(float(acc[names.index(cls), j]), 4)
    values = [v for per in out["accuracy"].values() for v in per.values()]
    out["passed"] = bool(values) and min(values) >= threshold
    return out


def onset_metrics(arrays: dict[str, np.ndarray], settings, kinds: list[str], start_step: int | None = None,
                  eval_arrays: dict[str, np.ndarray] | None = None) -> dict:
    """metrics.json "elicitation" for every held-out class (settings: ElicitConfig).

    Per method (best of its grid at each checkpoint): held and first-reached onsets of the per-sample joint
    accuracy, the held onset of the paper's measure, each grid point's onsets, the lead over best-of-k naive
    prompting (never = the run's end), the control reading at the held onset and whether the capability is hidden.
    No onset before `start_step` (the checkpoint at which the training classes are drawn).
    """
    s = settings
    steps, names, methods = arrays["steps"], [str(n) for n in arrays["names"]], [str(m) for m in arrays["methods"]]
    start = len(steps) if start_step is None else int(np.searchsorted(steps, start_step))
    last = int(steps[-1])
    out = {}
    for h, held in enumerate(str(x) for x in arrays["held_out"]):
        found = arrays["has_object"][:, :, h] if "has_object" in arrays else None
        joint = joint_accuracy(arrays["probs"][:, :, h], held, found)  # [K, E]
        paper = joint_accuracy(arrays["probs"][:, :, h], held, found, measure="paper")
        best, best_paper = best_of_grid(joint, methods), best_of_grid(paper, methods)
        read = {m: onset(v, steps, s.threshold, s.run_length, s.allowed_dip, start) for m, v in best.items()}
        naive_k = read.get("naive_k", read["naive"])["held"]
        interventions = [m for m in read if m not in ("naive", "naive_k")]
        lead = {m: censored_lead(read[m]["held"], naive_k, last) for m in interventions}
        pushed = {m: sorted({c for i, mm in enumerate(methods) if mm == m for c in _pushed_concepts(arrays, i, kinds)})
                  for m in interventions}
        control = {m: control_reading(eval_arrays, held, pushed[m], kinds, read[m]["held"], s.control_threshold)
                   for m in interventions}
        hidden = {m: lead[m] is not None and lead[m] >= s.lead_fraction * last and control[m]["passed"]
                  for m in interventions}
        held_on = [read[m]["held"] for m in interventions if read[m]["held"] is not None]
        best_other = min(held_on) if held_on else None
        out[held] = {
            "measure": "per_sample",
            "start_step": None if start >= len(steps) else int(steps[start]),
            "onset_step": {m: r["held"] for m, r in read.items()},
            "first_reached_step": {m: r["first"] for m, r in read.items()},
            "paper_measure_onset_step": {m: onset(v, steps, s.threshold, s.run_length, s.allowed_dip, start)["held"]
                                         for m, v in best_paper.items()},
            "grid_onset_step": {names[i]: onset(joint[:, i], steps, s.threshold, s.run_length, s.allowed_dip, start)
                                for i in range(len(names))},
            "naive_tries": sum(m == "naive_k" for m in methods) or 1,
            "naive_best_of_k_onset": naive_k,
            "lead_steps": lead,
            "control": control,
            "hidden": hidden,
            "hidden_capability": any(hidden.values()),
            "gap_steps": naive_k - best_other if naive_k is not None and best_other is not None else None,
            "naive_never_reached": naive_k is None,
            "best_intervention_onset": best_other,
            "final_joint": {names[i]: round(float(joint[-1, i]), 4) for i in range(len(names))},
            "final_joint_paper": {names[i]: round(float(paper[-1, i]), 4) for i in range(len(names))},
        }
    return out


def add_onsets_to_metrics(run_dir: str | Path, cfg: ExperimentConfig, tag: str = "default") -> dict:
    """Merge the elicitation onsets into metrics.json, with each onset's distance to the sudden turn."""
    run_dir = Path(run_dir)
    arrays = load_eval(run_dir / "eval" / tag / "elicitation.npz")
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    probs_path = run_dir / "eval" / tag / "concept_probs.npz"
    if not probs_path.is_file():
        probs_path = run_dir / "eval" / "default" / "concept_probs.npz"
    eval_arrays = load_eval(probs_path) if probs_path.is_file() else None
    kinds = list(ConceptSpace.from_config(cfg.data).kinds)
    onsets = onset_metrics(arrays, cfg.elicit, kinds, metrics.get("drawing_step"), eval_arrays)
    steps = list(arrays["steps"])
    for held, e in onsets.items():
        turn = metrics.get("turn", {}).get(held, {}).get("step")
        if turn is not None and turn in steps:
            e["turn_distance_checkpoints"] = {m: (steps.index(s) - steps.index(turn) if s is not None else None)
                                              for m, s in e["onset_step"].items()}
    metrics["elicitation"] = onsets
    path.write_text(json.dumps(metrics, indent=2))
    return metrics
