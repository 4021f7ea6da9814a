"""Tracking: callbacks that receive every metrics row of a run, and the built-in writers.

A callback is any object with `on_row(row: dict)` (and optionally `close()`). Training sends each logged row of
metrics.jsonl (step, loss and its parts, grad_norm, lr, steps_per_s; val_loss, ood_loss at checkpoints);
evaluation sends one row per checkpoint with the concept-space readings (`eval/<class>/<concept>`: accuracy).

    from conceptspace.tracking import PrintRows
    run.train(callbacks=[PrintRows()])

Built in, chosen by `train.tracking` (nothing is contacted unless asked):
- `tensorboard`: event files under `<run_dir>/tensorboard/` (`pip install conceptspace[tracking]`, tensorboardX);
- `wandb`: Weights & Biases (`pip install wandb`; project `train.wandb_project`; off by default).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from .errors import ConceptspaceError

log = logging.getLogger(__name__)


class Callback(Protocol):
    """Receives metrics rows as they are written."""

    def on_row(self, row: dict[str, Any]) -> None: ...


class PrintRows:
    """Logs every row at INFO level (an example callback)."""

    def on_row(self, row: dict[str, Any]) -> None:
        log.info("%s", {k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()})


class TensorBoardWriter:
    """Writes every numeric value of a row as a scalar at the row's step."""

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ConceptspaceError("train.tracking=[tensorboard] needs tensorboardX: pip install "
                                    "'conceptspace[tracking]' (or pip install tensorboardX)") from None
        self.writer = SummaryWriter(str(log_dir))

    def on_row(self, row: dict[str, Any]) -> None:
        step = int(row["step"])
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(k, float(v), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbWriter:
    """Logs every row to a Weights & Biases run (only when asked for: it contacts the W&B service)."""

    def __init__(self, project: str | None, name: str, config: dict) -> None:
        try:
            import wandb
        except ImportError:
            raise ConceptspaceError("train.tracking=[wandb] needs wandb: pip install wandb") from None
        self.run = wandb.init(project=project or "conceptspace", name=name, config=config, reinit=True)

    def on_row(self, row: dict[str, Any]) -> None:
        self.run.log({k: v for k, v in row.items() if k != "step"}, step=int(row["step"]))

    def close(self) -> None:
        self.run.finish()


def build_callbacks(cfg, run_dir: str | Path) -> list:
    """The writers named by cfg.train.tracking for this run."""
    out: list = []
    for kind in cfg.train.tracking:
        if kind == "tensorboard":
            out.append(TensorBoardWriter(Path(run_dir) / "tensorboard"))
        elif kind == "wandb":
            out.append(WandbWriter(cfg.train.wandb_project, Path(run_dir).name, cfg.model_dump(mode="json")))
    return out


def send(callbacks: list, row: dict[str, Any]) -> None:
    """Give a row to every callback; a failing callback is logged once per row, never stops the run."""
    for cb in callbacks:
        try:
            cb.on_row(row)
        except Exception as exc:  # tracking must not end a measurement
            log.warning("callback %s failed on step %s: %s", type(cb).__name__, row.get("step"), exc)


def close(callbacks: list) -> None:
    for cb in callbacks:
        if hasattr(cb, "close"):
            cb.close()
