"""From a run's evaluation arrays to `metrics.json` and the figures of its report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .concepts import ConceptSpace
from .config import ExperimentConfig
from .evaluate import load_eval
from .trajectories import analyze, coordinates, hard_accuracy, smooth


def read_metrics_log(run_dir: str | Path) -> list[dict]:
    """Rows of metrics.jsonl (training log)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def probe_agreement(arrays: dict[str, np.ndarray], kinds: list[str]) -> dict[str, float]:
    """Fraction of generated samples on which the learned and analytic probes pick the same value, per concept
    (empty for real data, which has no analytic probe)."""
    if "analytic_probs" not in arrays:
        return {}
    a, b = arrays["probs"].argmax(-1), arrays["analytic_probs"].argmax(-1)
    return {kind: float((a[..., j] == b[..., j]).mean()) for j, kind in enumerate(kinds)}


def run_metrics(cfg: ExperimentConfig, arrays: dict[str, np.ndarray]) -> dict:
    """metrics.json content: the trajectory analysis plus context (steps, probe agreement, signal)."""
    from .signal import normalized_signal, space_signal

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


def analyze_run(run_dir: str | Path, cfg: ExperimentConfig, tag: str = "default") -> dict:
    """Compute and write `metrics.json` in the run directory (merged with what other steps wrote there)."""
    run_dir = Path(run_dir)
    arrays = load_eval(run_dir / "eval" / tag / "concept_probs.npz")
    metrics = run_metrics(cfg, arrays)
    path = run_dir / "metrics.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    old.update(metrics)
    path.write_text(json.dumps(old, indent=2))
    return old
