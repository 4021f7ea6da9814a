"""From a run's evaluation arrays to `metrics.json`: the trajectory analysis and the elicitation onsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import ExperimentConfig
from ..data.concepts import ConceptSpace
from ..rundir import RunDir, RunDirError, load_npz, writes_run
from .onsets import hard_accuracy, onset_metrics
from .trajectories import analyze, coordinates, smooth


def probe_agreement(arrays: dict[str, np.ndarray], kinds: list[str]) -> dict[str, float]:
    """Fraction of generated samples on which the learned and analytic probes pick the same value, per concept
    (empty for real data, which has no analytic probe)."""
    if "analytic_probs" not in arrays:
        return {}
    a, b = arrays["probs"].argmax(-1), arrays["analytic_probs"].argmax(-1)
    return {kind: float((a[..., j] == b[..., j]).mean()) for j, kind in enumerate(kinds)}


def run_metrics(cfg: ExperimentConfig, arrays: dict[str, np.ndarray]) -> dict:
    """metrics.json content: the trajectory analysis plus context (steps, probe agreement, signal)."""
    from ..data.signal import normalized_signal, space_signal

    space = ConceptSpace.from_config(cfg.data)
    kinds, n_values = list(space.kinds), [c.n_values for c in space.concepts]
    names = [str(n) for n in arrays["classes"]]
    metrics = analyze(arrays["probs"], arrays["preds"], arrays["steps"], names, list(space.held_out), kinds,
                      n_values, cfg.eval, arrays.get("has_object"))
    signal = space_signal(cfg.data)
    metrics.update({
        "steps": arrays["steps"].tolist(),
        "concepts": kinds,
        "probe": cfg.probe.kind,
        "probe_checksum": str(arrays["probe_checksum"]) if "probe_checksum" in arrays else None,
        "probe_agreement": probe_agreement(arrays, kinds),
        "concept_signal": signal,
        "normalized_signal": normalized_signal(signal),
        "settings": {"threshold": cfg.eval.threshold, "smoothing": cfg.eval.smoothing,
                     "run_length": cfg.eval.run_length, "allowed_dip": cfg.eval.allowed_dip,
                     "drawing_level": cfg.eval.drawing_level, "n_samples": cfg.eval.n_samples},
    })
    return metrics


def trajectory_arrays(cfg: ExperimentConfig, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(smoothed coordinates [K, P, C], hard accuracy [K, P, C]) for plotting."""
    space = ConceptSpace.from_config(cfg.data)
    n_values = [c.n_values for c in space.concepts]
    coords = smooth(coordinates(arrays["probs"], n_values).mean(axis=2), cfg.eval.smoothing)
    names = [str(n) for n in arrays["classes"]]
    return coords, hard_accuracy(arrays["preds"], names, arrays.get("has_object"))


@writes_run
def analyze_run(run_dir: str | Path, cfg: ExperimentConfig, tag: str = "default") -> dict:
    """Compute and write `metrics.json` in the run directory (merged with what other steps wrote there)."""
    rd = RunDir(run_dir, tag)
    if not rd.trajectory_source.is_file():
        raise RunDirError(f"{run_dir}: not evaluated yet (no {rd.concept_probs.relative_to(rd.root)}); run "
                          "`conceptspace evaluate` (or `conceptspace run --resume`) first")
    return rd.update_metrics(run_metrics(cfg, load_npz(rd.trajectory_source)))


@writes_run
def add_onsets_to_metrics(run_dir: str | Path, cfg: ExperimentConfig, tag: str = "default") -> dict:
    """Merge the elicitation onsets into metrics.json, with each onset's distance to the sudden turn."""
    rd = RunDir(run_dir, tag)
    arrays = load_npz(rd.elicitation)
    metrics = rd.read_metrics()
    eval_arrays = load_npz(rd.trajectory_source) if rd.trajectory_source.is_file() else None
    kinds = list(ConceptSpace.from_config(cfg.data).kinds)
    onsets = onset_metrics(arrays, cfg.elicit, kinds, metrics.get("drawing_step"), eval_arrays)
    steps = list(arrays["steps"])
    for held, e in onsets.items():
        turn = metrics.get("turn", {}).get(held, {}).get("step")
        if turn is not None and turn in steps:
            e["turn_distance_checkpoints"] = {m: (steps.index(s) - steps.index(turn) if s is not None else None)
                                              for m, s in e["onset_step"].items()}
    return rd.update_metrics({"elicitation": onsets})


def analyze_run_dir(run_dir: str | Path, cfg: ExperimentConfig, tag: str = "default") -> dict:
    """Recompute every number of a run from its arrays: the trajectory analysis, then (when the run was elicited)
    the elicitation readings, which depend on it (drawing step, turn). Returns metrics.json's content."""
    metrics = analyze_run(run_dir, cfg, tag)
    if RunDir(run_dir, tag).elicitation.is_file():
        metrics = add_onsets_to_metrics(run_dir, cfg, tag)
    return metrics
