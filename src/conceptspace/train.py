"""Training engine: `train(run_dir, cfg)` trains a conditional diffusion model on the training classes and leaves
checkpoints and metrics behind; `resume=True` continues a killed run bit-exactly.

Determinism: the data come from the config's seed; each step's batch order, noise, timesteps, prompt masking and
dropout come from generators seeded by (seed, step), so nothing but the weights and the optimizer state needs to be
saved for an exact resume.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import signal
import sys
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from tqdm import tqdm

from . import __version__
from .config import ExperimentConfig, config_from_dict, config_to_yaml, load_config
from .data.concepts import ConceptSpace
from .data.datasets import ConceptImages, check_memory, make_dataset
from .data.prompts import PromptLayout, mask_prompts
from .errors import ConceptspaceError
from .kernels import configure_torch, kernel_record
from .model.checkpoints import (
    CheckpointError,
    checkpoint_steps,
    load_tensors,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_tensors,
    split_prefix,
)
from .model.objectives import DDPMObjective, Objective, VDMObjective
from .model.unet import ConditionalUNet
from .rundir import (  # noqa: F401  (RunDirError re-exported)
    RunDir,
    RunDirError,
    read_json,
    read_jsonl,
    write_json,
    write_text,
    writes_run,
)
from .tracking import Callback, build_callbacks, close, send

logger = logging.getLogger(__name__)


class TrainingDiverged(ConceptspaceError):
    """The loss or gradient became NaN or infinite."""


class Interrupted(ConceptspaceError):
    """Training stopped on SIGTERM; the run is resumable."""


class _StopRequest:
    """Turns SIGTERM into a request the training loop honours after the current step (main thread only)."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._old = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.requested = "SIGTERM"

    def restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)

# ------------------------------------------------------------------------------------------ building


def build_model(cfg: ExperimentConfig, space: ConceptSpace | None = None) -> ConditionalUNet:
    """The denoiser described by `cfg.model` for the space's prompt layout."""
    space = space or ConceptSpace.from_config(cfg.data)
    m = cfg.model
    return ConditionalUNet(
        image_size=cfg.data.image_size, prompt_dim=PromptLayout.for_space(space).dim, widths=m.widths,
        res_blocks=m.res_blocks, attention=m.attention, norm_groups=m.norm_groups, conditioning=m.conditioning,
        embed_dim=m.embed_dim, time_embed_dim=m.time_embed_dim, dropout=m.dropout,
    )


def build_objective(cfg: ExperimentConfig) -> Objective:
    """DDPM or VDM objective from `cfg.diffusion`."""
    d = cfg.diffusion
    if d.objective == "vdm":
        return VDMObjective(gamma_min=d.gamma_min, gamma_max=d.gamma_max, data_noise=d.data_noise,
                            cond_drop_p=d.cond_drop_p, null_value=d.null_value)
    return DDPMObjective(schedule=d.schedule, n_timesteps=d.n_timesteps, cond_drop_p=d.cond_drop_p,
                         null_value=d.null_value)


def resolve_device(name: str) -> torch.device:
    """train.device -> a torch device; asking for a device that is not there is an error, never a fallback."""
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConceptspaceError(f"train.device={name} but no CUDA GPU is available (use auto or cpu)")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConceptspaceError(f"train.device={name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if name == "mps" and not mps:
        raise ConceptspaceError("train.device=mps but Apple's mps backend is not available (use auto or cpu)")
    return torch.device(name)


def precision_context(device: torch.device, precision: Literal["fp32", "bf16"]) -> AbstractContextManager:
    """bfloat16 autocast on `device` for precision "bf16"; nothing at all for "fp32" (so fp32 works on any device,
    whether or not torch can autocast there)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def optimizer_impl(fused: bool) -> dict[str, bool]:
    """AdamW keyword arguments: one fused kernel, or the per-tensor loop (not the multi-tensor path that PyTorch
    picks on CUDA by default), so `fused_optimizer: false` means the same arithmetic on every device."""
    return {"fused": True} if fused else {"foreach": False}


def versions() -> dict[str, object]:
    """What produced a run: enough to reproduce it."""
    return {"conceptspace": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "platform": platform.platform(), "kernels": kernel_record()}


def _check_same_kernels(rd: RunDir) -> None:
    """A run begun with --pin-kernels resumes only with them, and one begun without them only without: half a
    pinned run is no longer reproducible on another machine, and run.json would say it was."""
    before = (read_json(rd.info).get("versions") or {}).get("kernels", {}).get("pinned") if rd.info.is_file() else None
    now = kernel_record()["pinned"]
    if before is not None and before != now:
        raise RunDirError(f"{rd.root} was trained {'with' if before else 'without'} --pin-kernels; resume it the "
                          "same way")


# ------------------------------------------------------------------------------------------ run directory


def read_run_info(run_dir: str | Path) -> dict:
    """run.json of a run directory (RunDirError when it is not a run)."""
    return RunDir(run_dir).read_info()


PLACEMENT = ("threads", "device")  # train.* keys that say where a run computes, not what it computes
_PLACED = {f"train.{k}" for k in PLACEMENT}


def load_run_config(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = (),
                    rebuild: bool = False) -> ExperimentConfig:
    """The run's config: config.yaml, checked against the config embedded in its last checkpoint (the truth), then
    `--set` overrides. A missing, empty, damaged or different config.yaml is an error naming the keys that differ;
    `rebuild=True` writes config.yaml anew from the checkpoint first."""
    from .model.checkpoints import list_checkpoints, read_meta

    rd = RunDir(run_dir)
    ckpts = list_checkpoints(run_dir)
    truth = config_from_dict(read_meta(ckpts[-1][1])["config"], str(ckpts[-1][1]), saved_run=True) if ckpts else None
    if rebuild:
        if truth is None:
            raise RunDirError(f"{run_dir}: no checkpoint to rebuild config.yaml from")
        write_text(rd.config, config_to_yaml(truth))
        logger.info("%s: config.yaml rebuilt from %s", run_dir, ckpts[-1][1].name)
    if not rd.config.is_file():
        raise RunDirError(f"{rd.config}: missing" + ("; --rebuild-config restores it from the last checkpoint"
                                                       if truth is not None else ""))
    try:
        saved = load_config(rd.config, saved_run=True)
    except ConceptspaceError as exc:
        raise RunDirError(f"{exc}" + ("; --rebuild-config restores it from the last checkpoint" if truth else ""))
    if truth is not None:
        diff = config_differences(saved, truth)
        if diff:
            raise RunDirError(f"{rd.config} differs from the config its checkpoints were trained with in "
                              f"{', '.join(diff[:6])}{' ...' if len(diff) > 6 else ''}; --rebuild-config restores "
                              "it from the last checkpoint")
    return load_config(rd.config, overrides, saved_run=True) if overrides else saved


def config_differences(a: ExperimentConfig, b: ExperimentConfig) -> list[str]:
    """Dotted keys whose values differ between two configs, placement (threads, device) aside."""
    fa, fb = _flat(a.model_dump(mode="json")), _flat(b.model_dump(mode="json"))
    return sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k) and k not in _PLACED)


TRAINING_SECTIONS = ("seed", "data", "model", "diffusion", "train")  # what the weights depend on


def check_same_run(run_dir: str | Path, cfg: ExperimentConfig, training_only: bool = False) -> ExperimentConfig:
    """The run's saved config, refusing to continue (or re-read) the run under a config other than the one it was
    trained with; with `training_only`, only what the weights depend on counts (evaluation settings are checked by
    the arrays' own settings files, and another probe or sampler is a new evaluation, not another run)."""
    saved = load_run_config(run_dir)
    diff = config_differences(saved, cfg)
    if training_only:
        diff = [k for k in diff if k.split(".")[0] in TRAINING_SECTIONS]
    if diff:
        raise RunDirError(f"{run_dir} was trained with another config (differs in {', '.join(diff[:6])}"
                          f"{' ...' if len(diff) > 6 else ''}); use a new run directory, --overwrite, or omit CONFIG "
                          "to continue it as it was")
    return saved


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _prepare_run_dir(cfg: ExperimentConfig, run_dir: Path, resume: bool, overwrite: bool) -> ExperimentConfig:
    rd = RunDir(run_dir)
    ours = [p for p in (rd.config, rd.info, rd.log, rd.resume, rd.resume_prev) if p.exists()]
    if resume:
        if not rd.config.is_file():
            raise RunDirError(f"{run_dir}: nothing to resume (no config.yaml); start it without --resume")
        # Thread count and device are placement, not the run: a killed run may resume on other cores or another GPU.
        saved = check_same_run(run_dir, cfg)
        return saved.model_copy(update={"train": saved.train.model_copy(
            update={k: getattr(cfg.train, k) for k in PLACEMENT})})
    if ours:
        if not overwrite:
            raise RunDirError(f"{run_dir} already holds a run ({ours[0].name}); pass --resume to continue it "
                              "or --overwrite to replace it")
        # A fresh run: everything the previous one wrote goes (its evaluation and report too, which would
        # otherwise be taken for the new run's); files the tool did not write stay, wherever they are.
        removed = rd.clear()
        logger.info("--overwrite: removed %d file(s) of the previous run: %s", len(removed),
                    ", ".join(str(p.relative_to(run_dir)) for p in removed[:8]) + (" ..." if len(removed) > 8 else ""))
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(rd.config, config_to_yaml(cfg))
    return cfg


# ------------------------------------------------------------------------------------------ the loop


class BatchOrder:
    """Epoch-wise shuffles seeded by (seed, epoch): the batch of any step is known without saved state."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if n < batch_size:
            raise ConceptspaceError(f"train.batch_size={batch_size} exceeds the {n} training images")
        self.n, self.bs, self.seed = n, batch_size, seed
        self.per_epoch = n // batch_size  # drop the last partial batch
        self._epoch, self._perm = -1, None

    def __call__(self, step: int) -> torch.Tensor:
        epoch, k = divmod(step - 1, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_033 + epoch)  # no hash(): it varies per process
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return self._perm[k * self.bs:(k + 1) * self.bs]


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7_919) % (2**63)


@torch.no_grad()
def evaluate_loss(objective: Objective, model: torch.nn.Module, data: ConceptImages, seed: int,
                  device: torch.device, batch_size: int = 512) -> float | None:
    """Mean loss over a fixed image set with fixed noise (comparable across checkpoints)."""
    if len(data) == 0:
        return None
    was = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for i in range(0, len(data), batch_size):
        x, p = data.images[i:i + batch_size].to(device), data.prompts[i:i + batch_size].to(device)
        total += float(objective.loss(model, x, p, generator=gen)["loss"]) * len(x)
    model.train(was)
    return total / len(data)


def _state_tensors(model: torch.nn.Module, objective: Objective) -> dict[str, torch.Tensor]:
    out = {f"model.{k}": v for k, v in model.state_dict().items()}
    out.update({f"objective.{k}": v for k, v in objective.state_dict().items()})
    return out


def _load_resume_state(run_dir: Path, model, objective, opt) -> int:
    errors = []
    rd = RunDir(run_dir)
    for path in (rd.resume, rd.resume_prev):
        try:
            tensors, meta = load_tensors(path)
        except CheckpointError as exc:
            errors.append(str(exc))
            continue
        model.load_state_dict(split_prefix(tensors, "model"))
        objective.load_state_dict(split_prefix(tensors, "objective"))
        optimizer_from_tensors(opt, tensors)
        if errors:
            logger.warning("%s; resuming from the previous state (step %s)", errors[0], meta["step"])
        return int(meta["step"])
    if not rd.resume.exists() and not rd.resume_prev.exists():
        return 0  # killed before its first checkpoint: start over
    raise RunDirError(f"{run_dir}: no usable resume state ({'; '.join(errors)})")


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop log lines past the resume point so a resumed run's log has no duplicate steps."""
    if not path.is_file():
        return
    keep = [row for row in read_jsonl(path) if row["step"] <= last_step]
    write_text(path, "".join(json.dumps(row) + "\n" for row in keep))


@writes_run
def train(
    run_dir: str | Path,
    cfg: ExperimentConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    on_step: Callable[[int], None] | None = None,
    callbacks: list[Callback] | None = None,
) -> Path:
    """Train a run to `cfg.train.steps`; returns the run directory.

    `on_step(step)` is called after every optimizer step (tests use it to simulate a kill); every logged metrics
    row goes to `callbacks` (objects with `on_row(row)`) and to the writers of `cfg.train.tracking`.
    """
    run_dir = Path(run_dir)
    check_memory(cfg, ConceptSpace.from_config(cfg.data))  # before anything is written: a refusal leaves no trace
    cfg = _prepare_run_dir(cfg, run_dir, resume, overwrite)
    t = cfg.train
    configure_torch(t.threads)
    if resume:
        _check_same_kernels(RunDir(run_dir))
    device = resolve_device(t.device)

    data = make_dataset(cfg)
    torch.manual_seed(cfg.seed)  # weight init
    model = build_model(cfg, data.space).to(device)
    objective = build_objective(cfg).to(device)
    opt = torch.optim.AdamW(list(model.parameters()) + list(objective.parameters()), lr=t.lr,
                            weight_decay=t.weight_decay, **optimizer_impl(t.fused_optimizer))
    start = _load_resume_state(run_dir, model, objective, opt) if resume else 0
    rd = RunDir(run_dir)
    for tmp in rd.stale_temp_files():  # a killed atomic write leaves its temporary file: never read, removed
        tmp.unlink()
    metrics_path = rd.log
    _truncate_metrics(metrics_path, start)

    callbacks = list(callbacks or []) + build_callbacks(cfg, run_dir)
    info = {"seed": cfg.seed, "status": "running", "step": start, "steps": t.steps, "versions": versions(),
            "command": sys.argv, "device": str(device), "pid": os.getpid(), "started": time.time()}
    write_json(rd.info, info)
    save_at = set(checkpoint_steps(t.steps, t.n_checkpoints, t.checkpoint_spacing, t.first_checkpoint))
    order = BatchOrder(len(data.train), t.batch_size, cfg.seed)
    space, masks = data.space, list(cfg.data.mask)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=t.steps, initial=start, disable=not show, desc="train", dynamic_ncols=True)
    model.train()
    tick, tick_step = time.perf_counter(), start
    nonfinite = 0
    stop = _StopRequest()
    try:
        with open(metrics_path, "a", buffering=1) as log:
            for step in range(start + 1, t.steps + 1):
                # 1. The batch, its prompts (masked: underspecification M) and this step's randomness.
                idx = order(step)
                x = data.train.images[idx].to(device)
                prompt = data.train.prompts[idx]
                seed = _step_seed(cfg.seed, step)
                if masks:
                    masked, _ = mask_prompts(space, prompt.numpy(), data.train.class_ids[idx.numpy()], masks,
                                             cfg.data.mask_value, np.random.default_rng(seed))
                    prompt = torch.from_numpy(masked)
                prompt = prompt.to(device)
                gen = torch.Generator().manual_seed(seed)
                torch.manual_seed(seed)  # dropout
                # 2. Loss, gradient, (optional) global-norm clip, update.
                with precision_context(device, t.precision):
                    parts = objective.loss(model, x, prompt, generator=gen)
                opt.zero_grad(set_to_none=True)
                parts["loss"].backward()
                params = [p for g in opt.param_groups for p in g["params"]]
                max_norm = t.grad_clip if t.grad_clip is not None else float("inf")
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
                if not (math.isfinite(float(parts["loss"].detach())) and math.isfinite(grad_norm)):
                    nonfinite += 1
                    if nonfinite > t.max_nonfinite:
                        raise TrainingDiverged(
                            f"{run_dir}: training diverged at step {step} (loss {float(parts['loss'].detach())}, "
                            f"gradient norm {grad_norm}); the checkpoints before it are kept. Likely cause: the "
                            f"learning rate (train.lr={t.lr}) or another setting is too large; lower it, set "
                            f"train.grad_clip, or allow a few bad batches with train.max_nonfinite")
                    logger.warning("step %d: non-finite loss or gradient (%d of %d allowed); batch skipped", step,
                                   nonfinite, t.max_nonfinite)
                    opt.zero_grad(set_to_none=True)
                else:
                    opt.step()
                bar.update(1)
                if on_step is not None:
                    on_step(step)
                # 3. Logs and checkpoints.
                if step % t.log_every == 0 or step in save_at:
                    now = time.perf_counter()
                    row = {"step": step, **{k: float(v.detach()) for k, v in parts.items()}, "grad_norm": grad_norm,
                           "lr": opt.param_groups[0]["lr"], "steps_per_s": (step - tick_step) / max(now - tick, 1e-9)}
                    tick, tick_step = now, step
                    if step in save_at:
                        row["val_loss"] = evaluate_loss(objective, model, data.val, cfg.seed + 1, device)
                        row["ood_loss"] = evaluate_loss(objective, model, data.ood, cfg.seed + 2, device)
                        row["checkpoint"] = rd.checkpoint(step).name
                    # The row goes to disk before its checkpoint: a kill in between resumes from the previous
                    # checkpoint, which drops this row and writes it again, so no checkpoint is ever without its row.
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    if step in save_at:
                        os.fsync(log.fileno())
                        _save_checkpoint(run_dir, cfg, step, model, objective, opt)
                        if not show:
                            logger.info("step %d/%d  loss %.4g  val %.4g  %.1f steps/s", step, t.steps, row["loss"],
                                        row["val_loss"], row["steps_per_s"])
                    send(callbacks, row)
                    bar.set_postfix(loss=f"{row['loss']:.4g}")
                if stop.requested:  # SIGTERM: stop between steps, resumable from the last checkpoint
                    raise Interrupted(f"{run_dir}: stopped by {stop.requested} at step {step}; continue with "
                                      "--resume (from the last checkpoint)")
    except BaseException as exc:
        info.update(status="interrupted" if isinstance(exc, (KeyboardInterrupt, Interrupted)) else "failed")
        write_json(rd.info, info)
        raise
    finally:
        bar.close()
        close(callbacks)
        stop.restore()
    info.update(status="done", step=t.steps, finished=time.time())
    write_json(rd.info, info)
    return run_dir


def _save_checkpoint(run_dir: Path, cfg: ExperimentConfig, step: int, model, objective, opt) -> None:
    meta = {"step": step, "config": cfg.model_dump(mode="json")}
    weights = _state_tensors(model, objective)
    rd = RunDir(run_dir)
    save_tensors(rd.checkpoint(step), weights, meta)
    rd.rotate_resume()
    save_tensors(rd.resume, {**weights, **optimizer_to_tensors(opt)}, meta)
    if rd.info.is_file():
        info = read_json(rd.info)
        info["step"] = step
        write_json(rd.info, info)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[ExperimentConfig, ConditionalUNet,
                                                                                Objective, int]:
    """(config, model, objective, step) from one checkpoint file; nothing is unpickled."""
    tensors, meta = load_tensors(path)
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"{path}: non-finite weights ({bad[0]} and {len(bad) - 1} more): the run diverged; "
                              "its readings would be meaningless")
    cfg = config_from_dict(meta["config"], str(path), saved_run=True)
    model = build_model(cfg)
    objective = build_objective(cfg)
    model.load_state_dict(split_prefix(tensors, "model"))
    objective.load_state_dict(split_prefix(tensors, "objective"))
    return cfg, model.to(device).eval(), objective.to(device), int(meta["step"])
