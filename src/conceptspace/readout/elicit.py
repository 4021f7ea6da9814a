"""Elicitation over a run's checkpoints, onset detection and the hidden-capability gap.

`elicit_run(run_dir)` writes `eval/<tag>/elicitation.npz`:

    steps    [K]                      checkpoint steps
    names    [E], methods [E]         elicitations ("naive", "overprompt[color x1]", ...) and their method
    concepts [E]                      the concept each one pushes ("" for none)
    held_out [H]                      held-out class names
    probs    [K, E, H, S, C, V]       probe probabilities of every generation
    has_object [K, E, H, S] bool      the generation contains an object (always true for real data)
    samples  [K, E, H, n_show, 3, h, w] uint8  the first generations of each (files from before this key lack it)
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
from pathlib import Path

import numpy as np
import torch

from ..analysis.onsets import joint_accuracy
from ..config import ExperimentConfig
from ..data.concepts import ConceptSpace
from ..data.prompts import class_prompts
from ..model.checkpoints import list_checkpoints
from ..readout.elicitation import (
    PROMPT_METHODS,
    Elicitation,
    ElicitationError,
    LatentRows,
    build_elicitations,
    ladder_prompt,
    latent_hook,
    latent_rows,
    overprompt_prompt,
    patch_conditioning,
)
from ..readout.evaluate import (
    EVAL_FORMAT,
    generate,
    object_mask,
    open_eval_file,
    over_new_checkpoints,
    pad_probs,
    sampler_settings,
)
from ..readout.probe import check_probe_space, get_probe
from ..rundir import RunDir, RunDirError, writes_run
from ..train import load_checkpoint, read_run_info, resolve_device

# Elicit settings that only the analysis reads: changing them re-reads the arrays, it does not regenerate them.
ANALYSIS_SETTINGS = {"threshold", "run_length", "allowed_dip", "lead_fraction", "control_threshold"}
N_SHOW_ELICIT = 4  # generations kept per elicitation, held-out class and checkpoint (for the report's explorer)


def elicitation_prompt(space: ConceptSpace, held: str, e: Elicitation) -> np.ndarray:
    """The prompt vector [D] that asks for held-out class `held` with a prompt-level elicitation."""
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


def elicitation_batch(model, cfg: ExperimentConfig, space: ConceptSpace, held_names: list[str], name: str,
                      n: int) -> tuple[torch.Tensor, list]:
    """(prompts [len(held_names) * n, D], hooks) that ask for each class with the elicitation called `name`
    (one of `build_elicitations(space, cfg.elicit)`; prompt and latent methods only)."""
    known = {e.name: e for e in build_elicitations(space, cfg.elicit)}
    if name not in known:
        raise ElicitationError(f"unknown elicitation {name!r} for this run (known: {', '.join(known)})")
    e = known[name]
    if e.method not in PROMPT_METHODS:
        raise ElicitationError(f"{name}: only prompt and latent elicitations can be sampled this way")
    prompts = torch.from_numpy(np.stack([elicitation_prompt(space, h, e) for h in held_names for _ in range(n)]))
    if not e.method.startswith("latent"):
        return prompts, []
    site = _latent_site(cfg)
    rows = [latent_rows(model, space, h, [e], n, site, cfg.elicit.paper_latent_values) for h in held_names]
    merged = LatentRows(torch.cat([r.alpha for r in rows]), torch.cat([r.beta for r in rows]),
                        {k: torch.cat([r.boost[k] for r in rows]) for k in rows[0].boost},
                        {k: torch.cat([r.compete[k] for r in rows]) for k in rows[0].compete})
    return prompts, [(site, latent_hook(merged))]


def elicit_checkpoint(model, objective, cfg: ExperimentConfig, space: ConceptSpace, probe,
                      elicitations: list[Elicitation],
                      donors: dict[int, torch.nn.Module]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probabilities [E, H, S, C, V], has_object [E, H, S], the first generations [E, H, n_show, 3, h, w] uint8)
    of every elicitation's generations for every held-out class at one checkpoint."""
    n, C = cfg.elicit.n_samples, len(space.concepts)
    out: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def read(images: np.ndarray, groups: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        probs = pad_probs(probe.predict_proba(images)).reshape(groups, n, C, -1)
        found = object_mask(images, space).reshape(groups, n)
        shown = (images.reshape(groups, n, *images.shape[1:])[:, :N_SHOW_ELICIT] * 255).round().astype(np.uint8)
        return list(zip(probs, found, shown))

    batched = [e for e in elicitations if e.method in PROMPT_METHODS]
    site = _latent_site(cfg) if any(e.method.startswith("latent") for e in batched) else None
    for held in space.held_out:
        # 1. Prompt and latent elicitations in one batch, every group of rows sharing the same noise.
        prompts = torch.from_numpy(np.stack([elicitation_prompt(space, held, e) for e in batched for _ in range(n)]))
        rows = latent_rows(model, space, held, batched, n, site, cfg.elicit.paper_latent_values) if site else None
        hooks = [(site, latent_hook(rows))] if site else []
        images = generate(model, objective, cfg, prompts, cfg.sampler.guidance_scale, n, hooks)
        for e, r in zip(batched, read(images, len(batched))):
            out[(e.name, held)] = r
        naive = torch.from_numpy(np.repeat(class_prompts(space, [held]), n, axis=0))
        # 2. More tries of naive prompting: independent initial noise for every try but the first (= naive).
        tries = [e for e in elicitations if e.method == "naive_k" and e.noise > 0]
        if tries:
            images = generate(model, objective, cfg, naive.repeat(len(tries), 1), cfg.sampler.guidance_scale,
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
                out[(e.name, held)] = read(generate(patched, objective, cfg, naive, cfg.sampler.guidance_scale, n,
                                                     []), 1)[0]
            elif e.method == "cfg":
                out[(e.name, held)] = read(generate(model, objective, cfg, naive, e.guidance, n, []), 1)[0]
    probs, found, shown = (np.stack([np.stack([out[(e.name, h)][i] for h in space.held_out]) for e in elicitations])
                           for i in range(3))
    return probs, found, shown


@writes_run
def elicit_run(run_dir: str | Path, cfg: ExperimentConfig, tag: str = "default", force: bool = False,
               progress: bool | None = None, probe=None) -> Path:
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
    path = RunDir(run_dir, tag).elicitation
    # Analysis settings (thresholds, criteria) do not change the arrays, so they may change without a new --tag.
    settings = {"elicit": cfg.elicit.model_dump(mode="json", exclude=ANALYSIS_SETTINGS),
                "sampler": sampler_settings(cfg), "format": EVAL_FORMAT,
                "probe": cfg.probe.model_dump(mode="json", exclude={"cache_dir"}), "seed": cfg.eval.seed}
    arrays = open_eval_file(path, settings, force)
    device = resolve_device(cfg.train.device)
    probe = (probe or get_probe(cfg, progress)).to(device)  # the main job passes the probe it already holds
    check_probe_space(probe, space)
    donors = {}
    steps_all = [s for s, _ in ckpts]
    for e in elicitations:
        if e.method == "patch":
            step = steps_all[-1] if e.donor == -1 else e.donor
            match = [p for s, p in ckpts if s == step]
            if not match:
                raise ElicitationError(f"patch donor step {step} is not a checkpoint (have {steps_all})")
            donors[e.donor] = load_checkpoint(match[0], device)[1]

    def read(model, objective) -> dict[str, np.ndarray]:
        probs, found, shown = elicit_checkpoint(model, objective, cfg, space, probe, elicitations, donors)
        joint = np.stack([joint_accuracy(probs[:, h], name, found[:, h]) for h, name in enumerate(space.held_out)],
                         axis=1)
        paper = np.stack([joint_accuracy(probs[:, h], name, found[:, h], "paper")
                          for h, name in enumerate(space.held_out)], axis=1)
        return {"probs": probs[None], "has_object": found[None], "joint": joint[None], "joint_paper": paper[None],
                "samples": shown[None]}

    static = {"names": np.array([e.name for e in elicitations]), "methods": np.array([e.method for e in elicitations]),
              "concepts": np.array([e.concept or "" for e in elicitations]),
              "held_out": np.array(space.held_out), "probe_checksum": np.array(probe.checksum)}
    over_new_checkpoints(run_dir, path, arrays, read, static, "elicit", progress, device)
    return path
