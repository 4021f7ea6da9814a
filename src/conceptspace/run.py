"""`Run`: one run directory as an object, for notebooks and scripts.

```python
import conceptspace as cs

run = cs.Run.create("configs/micro.yaml", "runs/nb")   # or cs.Run("runs/demo") for an existing run
run.train().evaluate().elicit()
images = run.sample(["11"], n=8)                        # [8, 3, H, W] in [0, 1], the run's own sampler settings
run.trajectories()["coords"]                            # [checkpoint, class, concept]
run.metrics["elicitation"]["11"]["onset_step"]
```
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .config import ExperimentConfig, load_config
from .data.concepts import ConceptSpace
from .errors import ConceptspaceError
from .rundir import RunDir, RunDirError, load_npz


class Run:
    """A run directory: its config, concept space, checkpoints, models, samples, metrics and trajectories."""

    def __init__(self, path: str | Path, tag: str = "default", config: ExperimentConfig | None = None) -> None:
        self.dir = RunDir(path, tag)
        self._config = config
        self._models: dict[int, Any] = {}

    @classmethod
    def create(cls, config: ExperimentConfig | str | Path, path: str | Path, overrides: list[str] | None = None,
               tag: str = "default") -> "Run":
        """A run to be trained in `path` from a config (an ExperimentConfig or a YAML file, with `--set`-style
        overrides); nothing is written until `.train()`."""
        cfg = config if isinstance(config, ExperimentConfig) else load_config(config, overrides or [])
        return cls(path, tag, cfg)

    def __repr__(self) -> str:
        status = self.info.get("status", "new") if self.dir.info.is_file() else "new"
        return f"Run({str(self.path)!r}, {status}, {len(self.checkpoints)} checkpoints)"

    # ---------------------------------------------------------------------------------- what it is

    @property
    def path(self) -> Path:
        return self.dir.root

    @property
    def config(self) -> ExperimentConfig:
        """The run's resolved config (config.yaml once trained; the given one before)."""
        if self._config is None:
            if not self.dir.config.is_file():
                raise RunDirError(f"{self.path}: not a run directory (no config.yaml); use Run.create(config, path)")
            self._config = load_config(self.dir.config, saved_run=True)
        return self._config

    @cached_property
    def space(self) -> ConceptSpace:
        return ConceptSpace.from_config(self.config.data)

    @property
    def info(self) -> dict:
        return self.dir.read_info()

    @property
    def checkpoints(self) -> list[int]:
        """Steps of the checkpoints on disk."""
        from .model.checkpoints import list_checkpoints

        return [s for s, _ in list_checkpoints(self.path)]

    @property
    def metrics(self) -> dict:
        """metrics.json ({} before evaluation)."""
        return self.dir.read_metrics()

    # ---------------------------------------------------------------------------------- stages

    def train(self, resume: bool = False, overwrite: bool = False, progress: bool | None = None) -> "Run":
        """Train to `config.train.steps` (resume=True continues a killed run)."""
        from .train import train

        train(self.path, self.config, resume=resume, overwrite=overwrite, progress=progress)
        return self

    def evaluate(self, force: bool = False, progress: bool | None = None) -> "Run":
        """Generate and read every checkpoint into concept space, then write metrics.json."""
        from .analysis.run_metrics import analyze_run
        from .readout.evaluate import evaluate_run

        evaluate_run(self.path, self.config, tag=self.dir.tag, force=force, progress=progress)
        analyze_run(self.path, self.config, tag=self.dir.tag)
        return self

    def elicit(self, methods: list[str] | None = None, force: bool = False, progress: bool | None = None) -> "Run":
        """Ask every checkpoint for the held-out classes with each elicitation and add the onsets to metrics.json."""
        from .analysis.run_metrics import add_onsets_to_metrics
        from .readout.elicit import elicit_run

        cfg = self.config
        if methods is not None:
            cfg = cfg.model_copy(update={"elicit": cfg.elicit.model_copy(update={"methods": list(methods)})})
        elicit_run(self.path, cfg, tag=self.dir.tag, force=force, progress=progress)
        add_onsets_to_metrics(self.path, cfg, tag=self.dir.tag)
        return self

    def report(self) -> Path:
        """Write report.html (and figures/) from metrics.json and the arrays; returns its path."""
        from .report.run_page import write_report

        return write_report(self.path, self.config, tag=self.dir.tag)

    # ---------------------------------------------------------------------------------- models and samples

    def _step(self, step: int) -> int:
        steps = self.checkpoints
        if not steps:
            raise RunDirError(f"{self.path}: no checkpoints yet; train first")
        if step < 0:
            return steps[step]
        if step not in steps:
            raise ConceptspaceError(f"{self.path}: no checkpoint at step {step} (have {steps})")
        return step

    def model(self, step: int = -1):
        """(denoiser, objective) at a checkpoint step (-1: the last), in eval mode on the run's device; cached."""
        from .train import load_checkpoint, resolve_device

        step = self._step(step)
        if step not in self._models:
            _, model, objective, _ = load_checkpoint(self.dir.checkpoint(step), resolve_device(self.config.train.device))
            self._models[step] = (model, objective)
        return self._models[step]

    def sample(self, classes_or_prompts: list[str] | np.ndarray, n: int = 16, step: int = -1,
               elicitation: str | None = None, seed: int | None = None) -> np.ndarray:
        """Generate `n` images per class name (or one per prompt row [N, D]) with the run's own sampler settings
        (method, steps, eta, clip, guidance) and evaluation seed; `elicitation` names one of the run's
        elicitations ("latent[color a=3 b=0.1]", see `elicitations()`), applied to held-out class names.
        Returns [N, 3, H, W] in [0, 1]."""
        import torch

        from .data.prompts import class_prompts
        from .readout.elicit import elicitation_batch
        from .readout.evaluate import generate

        model, objective = self.model(step)
        cfg = self.config
        if seed is not None:
            cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"seed": seed})})
        if isinstance(classes_or_prompts, np.ndarray):
            prompts, hooks = torch.from_numpy(classes_or_prompts.astype(np.float32)), []
        elif elicitation is None:
            prompts, hooks = torch.from_numpy(np.repeat(class_prompts(self.space, list(classes_or_prompts)), n, 0)), []
        else:
            prompts, hooks = elicitation_batch(model, cfg, self.space, list(classes_or_prompts), elicitation, n)
        return generate(model, objective, cfg, prompts, cfg.sampler.guidance_scale, None, hooks)

    def elicitations(self) -> list[str]:
        """Names of the elicitations the run's config defines (for `sample(..., elicitation=...)`)."""
        from .readout.elicitation import build_elicitations

        return [e.name for e in build_elicitations(self.space, self.config.elicit)]

    # ---------------------------------------------------------------------------------- readings

    def trajectories(self) -> dict[str, Any]:
        """{"steps" [K], "classes" [P], "held_out" [P], "concepts" [C], "coords" [K, P, C] (smoothed concept-space
        coordinates), "accuracy" [K, P, C]} from the evaluation arrays."""
        from .analysis.run_metrics import trajectory_arrays

        if not self.dir.trajectory_source.is_file():
            raise RunDirError(f"{self.path}: not evaluated yet; call .evaluate() (or `conceptspace evaluate`)")
        arrays = load_npz(self.dir.trajectory_source)
        coords, acc = trajectory_arrays(self.config, arrays)
        return {"steps": arrays["steps"], "classes": [str(c) for c in arrays["classes"]],
                "held_out": arrays["held_out"], "concepts": list(self.space.kinds), "coords": coords, "accuracy": acc}

    def trajectories_frame(self):
        """The trajectories as a long pandas DataFrame (step, class, held_out, concept, coord, accuracy)."""
        try:
            import pandas as pd
        except ImportError:
            raise ConceptspaceError("trajectories_frame needs pandas (pip install pandas); "
                                    "trajectories() gives the same numbers as arrays") from None
        t = self.trajectories()
        rows = [{"step": int(s), "class": c, "held_out": bool(t["held_out"][p]), "concept": k,
                 "coord": float(t["coords"][i, p, j]), "accuracy": float(t["accuracy"][i, p, j])}
                for i, s in enumerate(t["steps"]) for p, c in enumerate(t["classes"])
                for j, k in enumerate(t["concepts"])]
        return pd.DataFrame(rows)
