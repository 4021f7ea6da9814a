"""Is the held-out class in the model's representation before it is in the samples? (numpy only)

At every checkpoint and for every site of `readout/representation.py` (concept embeddings, body features), a
linear read-out of each concept is fitted on the *training* classes' prompts (ridge regression of "has the
held-out class's value of this concept" on standardised features) and applied to the held-out prompts. The
held-out class is *decoded* at a checkpoint when a sample's every concept is read as its own value; the
representation onset is the step from which the fraction of such samples stays at or above the threshold (held,
as the elicitation onsets), compared with the naive and intervention onsets of the same run.

A reference reading from the raw prompts (the model's input, constant over training) says how much a linear
read-out gets for free: a site that is decodable no better than its input, or from the first checkpoint on, says
nothing about learning. With three training classes the read-out extrapolates to the fourth corner only as far as
the representation is additive in the concepts, and how far it does depends on the ridge strength, so every
reading is given for three strengths (`RIDGES`); the headline uses the middle one.
"""

from __future__ import annotations

import numpy as np

from .onsets import first_reached, held_from

RIDGES = (0.01, 1.0, 100.0)  # ridge strengths relative to the number of training samples (standardised features)
HEADLINE_RIDGE = 1.0


def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, ridge: float = HEADLINE_RIDGE
                ) -> np.ndarray:
    """Ridge regression of y [N] on x [N, F] (standardised with the training statistics, intercept free);
    returns the scores of x_test [M]. Solved in whichever of the primal or dual form is smaller."""
    mu, sd = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    a, b = (x_train - mu) / sd, (x_test - mu) / sd
    ym = y_train.mean()
    lam = ridge * len(a)
    if a.shape[1] <= a.shape[0]:
        w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ (y_train - ym))
    else:
        w = a.T @ np.linalg.solve(a @ a.T + lam * np.eye(a.shape[0]), y_train - ym)
    return b @ w + ym


def decode_held_out(features: np.ndarray, classes: list[str], held_out: list[bool],
                    ridge: float = HEADLINE_RIDGE) -> tuple[np.ndarray, np.ndarray]:
    """From features [P, n, F] of one checkpoint: (per-concept fraction of each held-out class's samples read as
    its own value [H, C], fraction read right on every concept [H]), read-outs fitted on the training classes."""
    train = [p for p, h in enumerate(held_out) if not h]
    held = [p for p, h in enumerate(held_out) if h]
    n_concepts = len(classes[0])
    x_train = features[train].reshape(-1, features.shape[-1]).astype(np.float64)
    per, joint = np.zeros((len(held), n_concepts)), np.zeros(len(held))
    for i, p in enumerate(held):
        right = np.ones(features.shape[1], dtype=bool)
        for j in range(n_concepts):
            y = np.repeat([float(classes[q][j] == classes[p][j]) for q in train], features.shape[1])
            ok = fit_predict(x_train, y, features[p].astype(np.float64), ridge) > 0.5
            per[i, j] = ok.mean()
            right &= ok
        joint[i] = right.mean()
    return per, joint


def representation_readings(arrays: dict[str, np.ndarray], threshold: float = 0.8, run_length: int = 3,
                            allowed_dip: int = 1) -> dict:
    """{held-out class: {site: {onset_step, first_reached_step, joint [K], per_concept [K, C], first, final,
    by_ridge: {strength: {onset_step, first, final}}}}} from representation.npz arrays (headline: the middle
    ridge strength), plus the raw-prompt reference under site "prompt"."""
    steps = arrays["steps"]
    classes = [str(c) for c in arrays["classes"]]
    held_out = [bool(h) for h in arrays["held_out"]]
    held_names = [c for c, h in zip(classes, held_out) if h]
    feats = {str(s): arrays[str(s)] for s in arrays["sites"]}
    if "prompts" in arrays:  # the model's input: the same at every checkpoint
        feats["prompt"] = np.broadcast_to(arrays["prompts"], (len(steps), *arrays["prompts"].shape))
    out: dict = {h: {} for h in held_names}
    for site, f in feats.items():
        for ridge in RIDGES:
            per_k = [decode_held_out(f[k], classes, held_out, ridge) for k in range(len(steps))]
            per = np.stack([r[0] for r in per_k])  # [K, H, C]
            joint = np.stack([r[1] for r in per_k])  # [K, H]
            for i, h in enumerate(held_names):
                held_k = held_from(joint[:, i], threshold, allowed_dip)
                reading = {"onset_step": int(steps[held_k]) if held_k is not None else None,
                           "first": round(float(joint[0, i]), 4), "final": round(float(joint[-1, i]), 4)}
                entry = out[h].setdefault(site, {"by_ridge": {}})
                entry["by_ridge"][f"{ridge:g}"] = reading
                if ridge == HEADLINE_RIDGE:
                    first_k = first_reached(joint[:, i], threshold, run_length)
                    entry.update(reading, threshold=threshold,
                                 first_reached_step=int(steps[first_k]) if first_k is not None else None,
                                 joint=np.round(joint[:, i], 4).tolist(), per_concept=np.round(per[:, i], 4).tolist())
    return out


def compare_onsets(readings: dict, elicitation: dict, last_step: int) -> dict:
    """Per held-out class and site: steps by which the representation onset precedes best-of-k naive prompting
    and the earliest intervention onset (never = the run's last step; None when the representation never holds,
    and for interventions when none was run)."""
    out: dict = {}
    for h, sites in readings.items():
        e = elicitation.get(h, {})
        naive = e.get("naive_best_of_k_onset", (e.get("onset_step") or {}).get("naive"))
        intervention = e.get("best_intervention_onset")
        ran = any(m not in ("naive", "naive_k") for m in (e.get("onset_step") or {}))
        out[h] = {}
        for site, r in sites.items():
            rep = r["onset_step"]
            out[h][site] = {
                "lead_vs_naive": None if rep is None else (naive if naive is not None else last_step) - rep,
                "lead_vs_intervention": (None if rep is None or not ran else
                                         (intervention if intervention is not None else last_step) - rep)}
    return out


def representation_summary(runs: list[dict], threshold: float = 0.8) -> dict | None:
    """Per arm (runs differing only in their seed) and site: in how many runs the held-out class is decoded (held)
    at all, already at the first checkpoint (joint >= threshold there: no learning to warn of), before best-of-k
    naive prompting, before the earliest intervention, with the leads in steps; None without readings."""
    arms: dict[str, dict] = {}
    for r in runs:
        for held, sites in (r.get("representation") or {}).items():
            for site, x in sites.items():
                a = arms.setdefault(r.get("arm", "all"), {}).setdefault(site, {
                    "n_runs": 0, "decoded": 0, "at_first_checkpoint": 0, "before_naive": 0,
                    "before_intervention": 0, "early_warning": 0, "runs": []})
                a["n_runs"] += 1
                at_first = x["first"] >= x.get("threshold", threshold)  # the run's own threshold
                ahead = x["lead_vs_naive"] is not None and x["lead_vs_naive"] > 0
                a["decoded"] += x["onset_step"] is not None
                a["at_first_checkpoint"] += at_first
                a["before_naive"] += ahead
                a["before_intervention"] += x["lead_vs_intervention"] is not None and x["lead_vs_intervention"] > 0
                a["early_warning"] += ahead and not at_first
                a["runs"].append({"run": r["name"], "held_out": held, "onset_step": x["onset_step"],
                                  "first": x["first"], "lead_vs_naive": x["lead_vs_naive"],
                                  "lead_vs_intervention": x["lead_vs_intervention"],
                                  "by_ridge": x.get("by_ridge", {})})
    return arms or None


def representation_sentences(summary: dict) -> list[str]:
    lines = []
    for arm, sites in summary.items():
        for site, a in sites.items():
            lines.append(f"{arm}, representation at {site}: the held-out class is decoded (held) in {a['decoded']} "
                         f"of {a['n_runs']} runs, already at the first checkpoint in {a['at_first_checkpoint']}, "
                         f"before best-of-k naive prompting in {a['before_naive']}, before the earliest "
                         f"intervention in {a['before_intervention']}; an early warning (before naive, not at the "
                         f"first checkpoint) in {a['early_warning']}.")
    return lines
