"""Onsets of a reading along checkpoints, gated and lasting; the hidden-capability test (numpy only).

A reading (a class's accuracy on a concept, or an elicitation's joint accuracy) is a series over checkpoints. Two
onsets are read from it, both only from a start index on (the checkpoint at which the training classes are drawn:
before that the samples are noise and a probe's reading of them is arbitrary):

- *first reached*: the first checkpoint starting `run_length` consecutive checkpoints at or above the threshold;
- *held*: the first checkpoint from which the series stays at or above the threshold to the end of the run, with
  at most `allowed_dip` checkpoints below it (never the last one). An excursion that falls back is not held.

Headline numbers use the held onset. A series that never holds is censored at the run's end, never dropped.
"""

from __future__ import annotations

import numpy as np


def first_reached(values: np.ndarray, threshold: float, run_length: int, start: int = 0) -> int | None:
    """Index of the first checkpoint (>= start) that starts `run_length` consecutive values >= threshold."""
    above = np.asarray(values) >= threshold
    for i in range(start, len(above) - run_length + 1):
        if above[i:i + run_length].all():
            return i
    return None


def held_from(values: np.ndarray, threshold: float, allowed_dip: int = 1, start: int = 0) -> int | None:
    """Index of the first checkpoint (>= start) at or above the threshold from which at most `allowed_dip` later
    checkpoints fall below it and the last one does not."""
    above = np.asarray(values) >= threshold
    if len(above) == 0 or not above[-1]:
        return None
    below_after = np.cumsum(~above[::-1])[::-1]  # [K] checkpoints below the threshold from i to the end
    for i in range(start, len(above)):
        if above[i] and below_after[i] <= allowed_dip:
            return i
    return None


def onset(values: np.ndarray, steps: np.ndarray, threshold: float, run_length: int, allowed_dip: int,
          start: int = 0) -> dict[str, int | None]:
    """{"first": step, "held": step} of one series (None: never within the run)."""
    first = first_reached(values, threshold, run_length, start)
    held = held_from(values, threshold, allowed_dip, start)
    return {"first": None if first is None else int(steps[first]), "held": None if held is None else int(steps[held])}


def target_probs(probs: np.ndarray, held_name: str, has_object: np.ndarray | None = None) -> np.ndarray:
    """[..., S, C, V] probabilities -> [..., S, C] P(target value of each concept); 0 for a sample with no object."""
    digits = [int(ch) for ch in held_name]
    p = np.stack([probs[..., j, d] for j, d in enumerate(digits)], axis=-1)
    if has_object is not None:
        p = p * np.asarray(has_object, dtype=p.dtype)[..., None]
    return p


def joint_accuracy(probs: np.ndarray, held_name: str, has_object: np.ndarray | None = None,
                   measure: str = "per_sample") -> np.ndarray:
    """[..., S, C, V] -> [...] joint accuracy of the target class.

    per_sample (ours): mean over samples of the product over concepts of P(target);
    paper: product over concepts of the mean over samples (at least as large; much larger when concepts are right
    on different samples: half blue-and-large, half red-and-small gives 0.25 against 0).
    """
    p = target_probs(probs, held_name, has_object)
    if measure == "per_sample":
        return p.prod(-1).mean(-1)
    if measure == "paper":
        return p.mean(-2).prod(-1)
    raise ValueError(f"unknown joint measure {measure!r} (per_sample or paper)")


def best_of_grid(joint: np.ndarray, methods: list[str]) -> dict[str, np.ndarray]:
    """[K, E] joint accuracy -> {method: [K] max over that method's grid points}, methods in first-seen order."""
    return {m: joint[:, [i for i, mm in enumerate(methods) if mm == m]].max(axis=1) for m in dict.fromkeys(methods)}


def control_classes(class_names: list[str], held_out: list[str], held_name: str, concept: int) -> list[str]:
    """Training classes that share the held-out class's value of one concept (for 11 and color: 10)."""
    return [n for n in class_names if n not in held_out and n[concept] == held_name[concept]]


def censored_lead(intervention: int | None, naive: int | None, last_step: int) -> int | None:
    """Steps by which an intervention's held onset precedes naive prompting's (naive never = the run's end)."""
    if intervention is None:
        return None
    return (last_step if naive is None else naive) - intervention
