"""conceptspace: concept-space analysis of how generative models learn concepts (Park et al., NeurIPS 2024).

The names below are imported on first use, so `import conceptspace` is cheap and numpy-only code (the analysis
subpackage) never pulls in torch. Stages live in subpackages: `data` (concept space, G, prompts, signal, real
images), `model` (U-Net, hooks, schedules, objectives, samplers, checkpoints), `readout` (probes, evaluation,
elicitation), `analysis` (trajectories, onsets, sweep statistics, toy model; numpy only), `report` (figures and
pages); `rundir` owns the run directory, `run.Run` opens one.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Run": "run",
    "RunDir": "rundir",
    "load_config": "config",
    "ExperimentConfig": "config",
    "ConceptSpace": "data.concepts",
    "render_space": "data.render",
    "class_prompts": "data.prompts",
    "space_signal": "data.signal",
    "ConditionalUNet": "model.unet",
    "sample": "model.samplers",
    "get_probe": "readout.probe",
    "AnalyticProbe": "readout.probe",
    "LearnedProbe": "readout.probe",
    "Elicitation": "readout.elicitation",
    "build_elicitations": "readout.elicitation",
    "onset_metrics": "analysis.onsets",
    "censored_summary": "analysis.sweep_stats",
    "run_sweep": "sweeps",
    "sweep_report": "report.sweep_page",
}
__all__ = ["__version__", "Run", "RunDir", "load_config", "ExperimentConfig", "ConceptSpace", "render_space",
           "class_prompts", "space_signal", "ConditionalUNet", "sample", "get_probe", "AnalyticProbe", "LearnedProbe",
           "Elicitation", "build_elicitations", "onset_metrics", "censored_summary", "run_sweep", "sweep_report"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'conceptspace' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .analysis.onsets import onset_metrics
    from .analysis.sweep_stats import censored_summary
    from .config import ExperimentConfig, load_config
    from .data.concepts import ConceptSpace
    from .data.prompts import class_prompts
    from .data.render import render_space
    from .data.signal import space_signal
    from .model.samplers import sample
    from .model.unet import ConditionalUNet
    from .readout.elicitation import Elicitation, build_elicitations
    from .readout.probe import AnalyticProbe, LearnedProbe, get_probe
    from .report.sweep_page import sweep_report
    from .run import Run
    from .rundir import RunDir
    from .sweeps import run_sweep
