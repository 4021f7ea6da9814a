"""Evaluation of a run: generate at every checkpoint, read the generations with the probe, store the arrays.

`evaluate_run(run_dir)` writes `eval/<tag>/concept_probs.npz` next to the run:

    steps          [K]                    checkpoint steps
    classes        [P]                    class names (training and held-out), prompted at their class means
    held_out       [P] bool
    probs          [K, P, S, C, V]        probe probabilities per sample and concept (V = most values of a concept)
    preds          [K, P, S, C]           argmax of probs
    analytic_probs [K, P, S, C, V]        the analytic probe's reading of the same images (a cross-check)
    has_object     [K, P, S] bool         the generation contains an object (always true for real data)
    probe_checksum []                     checksum of the probe's weights (the same probe reads the same)
    samples        [K, P, n_show, 3, H, W] uint8, the first generations of each class (for figures)

The file is rewritten atomically after every checkpoint, so an interrupted evaluation keeps what it did, and a
re-run only evaluates the checkpoints that are new (a run still training can be evaluated and caught up later).
Settings that change what the arrays mean (sampler, eval, probe) are stored beside it; evaluating again with
other settings needs another --tag (or --force to replace).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..config import ExperimentConfig
from ..data.concepts import ConceptSpace
from ..data.prompts import class_prompts
from ..errors import ConceptspaceError
from ..kernels import in_pinned_process
from ..model.checkpoints import CheckpointError, list_checkpoints
from ..model.samplers import sample
from ..readout.probe import AnalyticProbe, check_probe_space, get_probe, has_object
from ..rundir import (
    RunDir,
    RunDirError,
    load_npz,
    read_json,
    save_npz,
    write_json,
    writes_run,
)
from ..train import load_checkpoint, precision_context, read_run_info

logger = logging.getLogger(__name__)

N_SHOW = 8  # generations kept as images per class and checkpoint
EVAL_FORMAT = 2  # bump when the arrays change (2: has_object, probe_checksum); older files need --force or --tag


def sampler_settings(cfg: ExperimentConfig) -> dict:
    """The sampler settings the arrays depend on (fp32 precision left out: files made before it existed match)."""
    out = cfg.sampler.model_dump(mode="json")
    if out.get("precision") == "fp32":
        del out["precision"]
    return out


def eval_settings(cfg: ExperimentConfig) -> dict:
    """What the evaluation arrays depend on besides the checkpoints."""
    return {"sampler": sampler_settings(cfg), "eval": cfg.eval.model_dump(mode="json",
            include={"n_samples", "seed"}), "probe": cfg.probe.model_dump(mode="json", exclude={"cache_dir"}),
            "format": EVAL_FORMAT}


def pad_probs(per_concept: list[np.ndarray]) -> np.ndarray:
    """list over concepts of [N, V_c] -> [N, C, Vmax] (zero-padded)."""
    vmax = max(p.shape[1] for p in per_concept)
    out = np.zeros((len(per_concept[0]), len(per_concept), vmax), dtype=np.float32)
    for j, p in enumerate(per_concept):
        out[:, j, :p.shape[1]] = p
    return out


@torch.no_grad()
def generate(model, objective, cfg: ExperimentConfig, prompts: torch.Tensor, guidance: float | None = None,
             shared: int | None = None, hooks: list | None = None, noise: int = 0) -> np.ndarray:
    """Images [N, 3, H, W] in [0, 1] (G's range, so probes read clipped images) for prompts [N, D], with the run's
    sampler settings and initial noise seeded by eval.seed + noise, on the model's device, under `hooks`.

    The noise is drawn on the CPU and moved, so a GPU run starts from the same noise as a CPU one. A latent hook
    holds one row of parameters per prompt, so with hooks every prompt goes through one forward pass."""
    s, size = cfg.sampler, cfg.data.image_size
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(cfg.eval.seed + noise)
    with model.hooks(hooks or []), precision_context(device, s.precision):
        x = sample(model, objective, prompts.to(device), shape=(3, size, size), n_steps=s.n_steps, method=s.method,
                   eta=s.eta, guidance_scale=s.guidance_scale if guidance is None else guidance, generator=gen,
                   batch_size=len(prompts) if hooks else cfg.eval.batch_size, shared_noise=shared,
                   clip_x0=s.clip_x0)
    return x.clamp(0, 1).cpu().numpy()


def object_mask(images: np.ndarray, space: ConceptSpace) -> np.ndarray:
    """[N] bool: which generations contain an object (G's images always have one; real images are not checked)."""
    return np.ones(len(images), dtype=bool) if space.is_real else has_object(images)


def check_same_probe(path: Path, stored: np.ndarray | None, checksum: str) -> None:
    """Refuse to add readings to `path` with a probe other than the one whose checksum it stores. The probe is not
    part of the stored settings (it is retrained per machine or probe version): without this check new checkpoints
    would be read by another probe than the old ones, in one file."""
    if stored is not None and str(stored) != checksum:
        raise ConceptspaceError(f"{path} was read by another probe (checksum {stored}, now {checksum}); read every "
                                "checkpoint again with this probe (--force) or into a new evaluation (--tag NAME)")


def check_run_probe(run_dir: Path, tag: str, checksum: str) -> None:
    """Before a run's long work: its evaluation files, if any, were read by the probe with this checksum."""
    rd = RunDir(run_dir, tag)
    for path in (rd.concept_probs, rd.elicitation):
        if path.is_file():
            check_same_probe(path, load_npz(path).get("probe_checksum"), checksum)


def open_eval_file(path: Path, settings: dict, force: bool) -> dict[str, np.ndarray]:
    """The arrays already in `path` (empty with --force); refuses a file made with other settings. Pinned kernels
    count as a setting, so a file is never extended half pinned (unpinned files keep the settings they had)."""
    if in_pinned_process():
        settings = {**settings, "kernels": "pinned"}
    settings_path = RunDir.settings_of(path)
    arrays: dict[str, np.ndarray] = {}
    if path.is_file() and not force:
        old = read_json(settings_path) if settings_path.is_file() else None
        if old != settings:
            keys = sorted(k for k in set(old or {}) | set(settings) if (old or {}).get(k) != settings.get(k))
            raise ConceptspaceError(f"{path} was made with other settings ({', '.join(keys)}); use --tag NAME for a "
                                    "new evaluation or --force to replace it")
        arrays = load_npz(path)
    write_json(settings_path, settings)
    return arrays


def _load_own(ckpt: Path, device: str | torch.device) -> tuple:
    """(model, objective) of one of the run's checkpoints; a damaged one stops the reading."""
    try:
        _, model, objective, _ = load_checkpoint(ckpt, device)
    except CheckpointError as exc:  # a reading without this checkpoint would quietly shift every onset
        raise RunDirError(f"{exc}; the readings need every checkpoint (train --resume rewrites the last ones, "
                          "or move the file away to evaluate without it)") from None
    return model, objective


def over_new_checkpoints(run_dir: Path, path: Path, arrays: dict[str, np.ndarray], per_checkpoint, static: dict,
                         desc: str, progress: bool | None, device: str | torch.device = "cpu",
                         checkpoints: list[tuple[int, Callable[[], tuple]]] | None = None) -> dict[str, np.ndarray]:
    """Call `per_checkpoint(model, objective) -> {name: [1, ...] array}` on every checkpoint missing from `arrays`,
    merge by step and rewrite `path` atomically after each one (an interrupted evaluation keeps its work).
    `checkpoints`: (step, load) pairs where load() returns what per_checkpoint takes (default: the run's own)."""
    done = set(arrays.get("steps", np.array([], dtype=np.int64)).tolist())
    if checkpoints is None:
        checkpoints = [(s, lambda p=p: _load_own(p, device)) for s, p in list_checkpoints(run_dir)]
    todo = [(s, load) for s, load in checkpoints if s not in done]
    if todo and "probe_checksum" in static:
        check_same_probe(path, arrays.get("probe_checksum"), str(static["probe_checksum"]))
    show = sys.stderr.isatty() if progress is None else progress
    for i, (step, load) in enumerate(tqdm(todo, disable=not show, desc=desc)):
        if not show:  # progress visible in logs when not on a terminal
            logger.info("%s: checkpoint %d of %d (step %d)", desc, i + 1, len(todo), step)
        new = {"steps": np.array([step]), **per_checkpoint(*load())}
        if arrays:
            # a file written before a key existed (e.g. elicitation samples) keeps its keys when it is extended
            new = {k: v for k, v in new.items() if k in arrays}
            order = np.argsort(np.concatenate([arrays["steps"], new["steps"]]), kind="stable")
            arrays = {k: np.concatenate([arrays[k], new[k]])[order] for k in new}
        else:
            arrays = new
        arrays.update(static)
        save_npz(path, arrays)
    if not arrays:
        raise RunDirError(f"{run_dir}: no readable checkpoint to evaluate")
    return arrays


@writes_run
def evaluate_run(run_dir: str | Path, cfg: ExperimentConfig | None = None, tag: str = "default",
                 force: bool = False, progress: bool | None = None, probe=None) -> Path:
    """Evaluate every (new) checkpoint of a run; returns the path of the arrays file."""
    from ..train import load_run_config, resolve_device

    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    cfg = cfg or load_run_config(run_dir)
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise RunDirError(f"{run_dir}: no checkpoints yet (status: {info.get('status')}); train first")
    if info.get("status") == "running":
        logger.info("note: %s is still training; evaluating the %d checkpoints present (run evaluate again to "
                    "catch up)", run_dir, len(ckpts))
    path = RunDir(run_dir, tag).concept_probs
    arrays = open_eval_file(path, eval_settings(cfg), force)
    space = ConceptSpace.from_config(cfg.data)
    device = resolve_device(cfg.train.device)
    probe = (probe or get_probe(cfg, progress)).to(device)  # the main job passes the probe it already holds
    check_probe_space(probe, space)
    # The analytic probe inverts G: a cross-check for synthetic data only.
    analytic = None if space.is_real else probe if isinstance(probe, AnalyticProbe) else AnalyticProbe.calibrate(space)
    names = space.class_names
    n, P, C = cfg.eval.n_samples, len(names), len(space.concepts)
    prompts = torch.from_numpy(np.repeat(class_prompts(space, names), n, axis=0))  # [P * S, D]

    def read(model, objective) -> dict[str, np.ndarray]:
        images = generate(model, objective, cfg, prompts)
        probs = pad_probs(probe.predict_proba(images)).reshape(1, P, n, C, -1)
        out = {
            "probs": probs,
            "preds": probs.argmax(-1).astype(np.int8),
            "samples": (images.reshape(P, n, *images.shape[1:])[None, :, :N_SHOW] * 255).round().astype(np.uint8),
            "has_object": object_mask(images, space).reshape(1, P, n),
        }
        if analytic is not None:
            out["analytic_probs"] = pad_probs(analytic.predict_proba(images)).reshape(1, P, n, C, -1)
        return out

    static = {"classes": np.array(names), "held_out": np.array([nm in space.held_out for nm in names]),
              "probe_checksum": np.array(probe.checksum)}
    over_new_checkpoints(run_dir, path, arrays, read, static, "evaluate", progress, device)
    return path
