"""Onsets of a reading along checkpoints, gated and lasting; the hidden-capability test (numpy only).

A reading (a class's accuracy on a concept, or an elicitation's joint accuracy) is a series over checkpoints. Two
onsets are read from it, both only from a start index on (the checkpoint at which the training classes are drawn:
before that the samples are noise and a probe's reading of them is arbitrary):

- *first reached*: the first checkpoint starting `run_length` consecutive checkpoints at or above the threshold;
- *held*: the first checkpoint from which the series stays at or above the threshold to the end of the run, with
  at most `allowed_dip` checkpoints below it (never the last one). An excursion that falls back is not held.

Headline numbers use the held onset. A series that never holds is censored at the run's end, never dropped.
The two are not ordered: a dip right after a held onset puts first reached later than held, and a series held
over its last two checkpoints only has a held onset and no first reached.
"""

from __future__ import annotations

import numpy as np


def hard_accuracy(preds: np.ndarray, class_names: list[str], has_object: np.ndarray | None = None) -> np.ndarray:
    """[K, P, S, C] argmax predictions -> [K, P, C] fraction of samples with the class's value (a sample without an
    object, has_object [K, P, S] false, counts as wrong whatever the probe reads)."""
    digits = np.array([[int(ch) for ch in name] for name in class_names])  # [P, C]
    right = preds == digits[None, :, None, :]
    if has_object is not None:
        right = right & np.asarray(has_object, dtype=bool)[..., None]
    return right.mean(axis=2)


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
    k = steps.index(step)
    found = eval_arrays.get("has_object")
    acc = hard_accuracy(eval_arrays["preds"][k:k + 1], names, None if found is None else found[k:k + 1])[0]  # [P, C]
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
