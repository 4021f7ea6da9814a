"""A sweep's runs and their aggregate numbers (numpy only): the concept-signal law per run with censoring, the
learning order, first corners, held-out classes learned vs distance, where never-held readings were heading when
their runs ended, masking and hidden capabilities.

`collect_runs(sweep_dir)` reads every finished run's `metrics.json`, `config.yaml` and evaluation arrays into one
record per run; `sweep_metrics(runs)` is the content of `sweep_metrics.json`. Learning speed = 1 / learning step;
a concept never learned within a run is censored at the run's last step (`sweep_stats.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from ..config import load_config
from ..data.concepts import ConceptSpace
from ..rundir import RunDir, load_npz, read_json, write_json
from ..sweeps import SweepError, point_name
from .capability import capability_sentences, capability_summary
from .masking import masking_metrics
from .representation import representation_sentences, representation_summary
from .run_metrics import trajectory_arrays
from .sweep_stats import censored_summary, distance_vs_time, kaplan_meier, observed_order, order_accuracy, wilson
from .trajectories import corners


def collect_runs(sweep_dir: str | Path) -> list[dict]:
    """One record per finished run: separations, seed, signal, learning steps, trajectories of held-out classes."""
    sweep_dir = Path(sweep_dir)
    manifest = sweep_dir / "sweep.json"
    if not manifest.is_file():
        raise SweepError(f"{sweep_dir}: not a sweep directory (no sweep.json); run `conceptspace sweep` first")
    runs = []
    for point in read_json(manifest)["points"]:
        run_dir = sweep_dir / point["name"]
        rd = RunDir(run_dir)
        if not rd.metrics.is_file():
            continue
        cfg = load_config(rd.config, saved_run=True)
        metrics = rd.read_metrics()
        space = ConceptSpace.from_config(cfg.data)
        seps = {}
        for c in space.concepts:
            if c.kind == "shape":
                continue
            ends = c.means[[0, -1]]
            seps[c.kind] = float(np.abs(ends[1] - ends[0]).max())  # the separation along the concept's axis
        arm = {k: v for k, v in point["overrides"].items() if k != "seed"}
        record = {"name": point["name"], "dir": str(run_dir), "overrides": point["overrides"], "seed": cfg.seed,
                  # the runs that differ only in their seed: one arm of an experiment (per sweep directory)
                  "arm": f"{sweep_dir.name}: {point_name(arm) if arm else 'all'}",
                  "sep": seps,
                  "signal": metrics.get("concept_signal", {}),
                  "normalized_signal": metrics.get("normalized_signal", {}),
                  "classes": metrics["classes"], "turn": metrics.get("turn", {}),
                  "saturation": metrics.get("training_saturation_step"),
                  "drawing_step": metrics.get("drawing_step"), "steps": metrics.get("steps", []),
                  "elicitation": metrics.get("elicitation", {}), "masking": _masking(cfg),
                  "representation": metrics.get("representation")}
        names = list(metrics["classes"])
        record["corners"] = dict(zip(names, corners(names, [c.n_values for c in space.concepts]).tolist()))
        if rd.concept_probs.is_file():
            arrays = load_npz(rd.concept_probs)
            coords, _ = trajectory_arrays(cfg, arrays)
            record["trajectories"] = {n: coords[:, i].tolist() for i, n in enumerate(names)}
            # uint8 generations of every class at the last checkpoint: small, kept for sample figures
            record["final_samples"] = {str(n): arrays["samples"][-1, i] for i, n in enumerate(arrays["classes"])}
        runs.append(record)
    if not runs:
        raise SweepError(f"{sweep_dir}: no finished run yet")
    return runs


def _masking(cfg) -> float | None:
    """The masking probability of a run (None when its config has no mask rule)."""
    return max((r.p for r in cfg.data.mask), default=None)


def speed(step: int | None) -> float:
    return 0.0 if step is None else 1.0 / step


def class_speeds(runs: list[dict], concept: str, held_out: bool = True) -> list[tuple[float, float, float]]:
    """(separation, signal, speed) of `concept` for the classes of `class_learning`, every run (never = speed 0)."""
    return [(p["sep"], p["signal"], speed(p["step"])) for p in class_learning(runs, concept, held_out)]


def class_learning(runs: list[dict], concept: str, held_out: bool = True) -> list[dict]:
    """Per run and class (held-out or training, those that must move off value 0 of the concept): separation,
    signal, learning step (None = never) and the run's last step (where a never-learned concept is censored)."""
    out = []
    for r in runs:
        if concept not in r["sep"] or not r["steps"]:
            continue
        for name, c in r["classes"].items():
            if concept not in c["learning_step"] or c["held_out"] != held_out:
                continue
            # classes whose value of the concept is 0 (the base value) need not move on it: not a learning event
            if name[list(c["learning_step"]).index(concept)] != "0":
                out.append({"run": r["name"], "class": name, "sep": r["sep"][concept],
                            "signal": r["signal"].get(concept, float("nan")),
                            "step": c["learning_step"][concept], "horizon": r["steps"][-1]})
    return out


def per_run_statistics(points: list[dict], n_boot: int = 2000) -> dict:
    """Censored per-run statistics of one concept's learning steps vs its signal, and Kaplan-Meier curves per
    separation ("fraction of runs that have learned by step t"), each with its n."""
    if not points:
        return {}
    stats = censored_summary([p["signal"] for p in points], [p["step"] for p in points],
                             [p["horizon"] for p in points], [p["sep"] for p in points], n_boot)
    curves = {}
    for sep in sorted({p["sep"] for p in points}):
        grp = [p for p in points if p["sep"] == sep]
        t, f = kaplan_meier([p["step"] if p["step"] is not None else p["horizon"] for p in grp],
                            [p["step"] is not None for p in grp])
        curves[f"{sep:g}"] = {"n": len(grp), "steps": t.tolist(), "learned_fraction": f.round(4).tolist(),
                              "horizon": max(p["horizon"] for p in grp)}
    stats["kaplan_meier"] = curves
    # how many (class, run) readings learned the concept within the run, per separation (classes of one run are
    # not independent: the interval is descriptive)
    stats["learned_by_separation"] = {}
    for sep in sorted({p["sep"] for p in points}):
        grp = [p for p in points if p["sep"] == sep]
        k = sum(p["step"] is not None for p in grp)
        stats["learned_by_separation"][f"{sep:g}"] = {"n": len(grp), "learned": k,
                                                       "interval": list(wilson(k, len(grp)))}
    stats["points"] = [{k: p[k] for k in ("run", "class", "sep", "signal", "step", "horizon")} for p in points]
    return stats


def order_prediction(runs: list[dict], a: str, b: str) -> dict:
    """Does the concept with the larger signal get learned first? One point per (run, held-out class), from
    log(σ_a / σ_b) and the observed order of the held learning steps (never = censored)."""
    ratios, orders = [], []
    for r in runs:
        sa, sb = r["signal"].get(a), r["signal"].get(b)
        if not sa or not sb:
            continue
        for c in r["classes"].values():
            if c["held_out"] and a in c["learning_step"] and b in c["learning_step"]:
                ratios.append(float(np.log(sa / sb)))
                orders.append(observed_order(c["learning_step"][a], c["learning_step"][b]))
    out = order_accuracy(ratios, orders)
    out["points"] = [[round(x, 4), o] for x, o in zip(ratios, orders)]
    return out


def _rank_trend(pts: list[tuple[float, float, float]]) -> tuple[list[float], list[float], float | None]:
    """(separations, mean speed per separation, Spearman of the means vs separation; None if undefined)."""
    seps = sorted({p[0] for p in pts})
    means = [float(np.mean([p[2] for p in pts if p[0] == s])) for s in seps]
    rho = float(spearmanr(seps, means).statistic) if len(seps) >= 3 and len(set(means)) > 1 else None
    return seps, means, rho


def speed_vs_signal(runs: list[dict], concepts: list[str]) -> dict:
    """sweep_metrics.json "speed_vs_signal": per-run censored statistics of the held-out class's learning steps vs
    the signal (the headline), the Spearman of the per-separation mean speeds (for comparison only: it hides the
    spread and ties never-learned runs at 0), every (signal, speed) point, and the same for the training classes."""
    out = {}
    for kind in concepts:
        pts = class_speeds(runs, kind)
        seps, means, rho = _rank_trend(pts)
        _, train_means, train_rho = _rank_trend(class_speeds(runs, kind, held_out=False))
        out[kind] = {"per_run": per_run_statistics(class_learning(runs, kind)),
                     "spearman_of_means": rho, "separations": seps, "mean_speed": means,
                     "points": [[float(p[1]), float(p[2])] for p in pts],
                     "training": {"per_run": {k: v for k, v in per_run_statistics(
                                      class_learning(runs, kind, held_out=False)).items() if k != "points"},
                                  "spearman_of_means": train_rho, "mean_speed": train_means}}
    return out


def order_grid(runs: list[dict], a: str = "color", b: str = "size") -> tuple[list, list, np.ndarray] | None:
    """Mean over seeds of T_b - T_a for the held-out class on the (sep_a, sep_b) grid (never = last step)."""
    cells: dict[tuple[float, float], list[float]] = {}
    for r in runs:
        if a not in r["sep"] or b not in r["sep"]:
            continue
        last = r["steps"][-1] if r["steps"] else 0
        for c in r["classes"].values():
            if c["held_out"]:
                ta = c["learning_step"].get(a) or last
                tb = c["learning_step"].get(b) or last
                cells.setdefault((r["sep"][a], r["sep"][b]), []).append(tb - ta)
    xs, ys = sorted({k[0] for k in cells}), sorted({k[1] for k in cells})
    if len(xs) < 2 or len(ys) < 2:
        return None
    grid = np.full((len(ys), len(xs)), np.nan)
    for (x, y), v in cells.items():
        grid[ys.index(y), xs.index(x)] = np.mean(v)
    return xs, ys, grid


def signal_ratio_grid(runs: list[dict], xs: list, ys: list, a: str = "color", b: str = "size") -> np.ndarray:
    """Mean log(σ_a / σ_b) per (Δa, Δb) cell [len(ys), len(xs)] (NaN where no run has both signals): its zero
    line is where the concept-signal law predicts the learning order to flip."""
    grid = np.full((len(ys), len(xs)), np.nan)
    cells: dict[tuple, list[float]] = {}
    for r in runs:
        sa, sb = r["signal"].get(a), r["signal"].get(b)
        if sa and sb and r["sep"].get(a) in xs and r["sep"].get(b) in ys:
            cells.setdefault((r["sep"][a], r["sep"][b]), []).append(float(np.log(sa / sb)))
    for (x, y), v in cells.items():
        grid[ys.index(y), xs.index(x)] = np.mean(v)
    return grid


def learned_vs_distance(runs: list[dict]) -> list[dict]:
    """Per held-out class and run: its concept-space distance to its own corner at the training-saturation step
    (the last checkpoint if training never saturates) and whether it is learned (every concept) within the run."""
    out = []
    for r in runs:
        if "trajectories" not in r or not r["steps"]:
            continue
        k = r["steps"].index(r["saturation"]) if r.get("saturation") in r["steps"] else len(r["steps"]) - 1
        for n, c in r["classes"].items():
            if c["held_out"]:
                dist = float(np.linalg.norm(np.array(r["trajectories"][n][k]) - np.array(r["corners"][n])))
                steps = list(c["learning_step"].values())
                learned = all(s is not None for s in steps)
                out.append({"run": r["name"], "class": n, "distance": round(dist, 4), "learned": learned,
                            "learning_step": max(steps) if learned else None, "horizon": r["steps"][-1],
                            "saturated": r.get("saturation") is not None,
                            "saturation_step": r.get("saturation")})
    return out


def distance_time_summary(points: list[dict], n_boot: int = 2000) -> dict:
    """Harrell's C of closeness at training saturation vs the held-out class's learning time (the later of its
    concepts; never = censored at the run's end), over the readings of runs that saturated and that were not
    already learned by then (a class learned before saturation sits near its corner by construction)."""
    use = [p for p in points if p["saturated"] and (p["learning_step"] is None
                                                    or p["learning_step"] > p["saturation_step"])]
    out = distance_vs_time([p["distance"] for p in use],
                           [p["learning_step"] if p["learning_step"] is not None else p["horizon"] for p in use],
                           [p["learning_step"] is not None for p in use], [p["run"] for p in use], n_boot)
    out["excluded_learned_by_saturation"] = sum(p["saturated"] and p["learning_step"] is not None
                                                and p["learning_step"] <= p["saturation_step"] for p in points)
    out["excluded_not_saturated"] = sum(not p["saturated"] for p in points)
    return out


def format_interval(value: float | None, interval: list | None) -> str:
    if value is None:
        return "n/a"
    if not interval or interval[0] is None:
        return f"{value:.2f}"
    return f"{value:.2f} [{interval[0]:.2f}, {interval[1]:.2f}]"


def per_run_sentence(kind: str, stats: dict) -> str:
    """One sentence of the per-run statistics of a concept (held-out class)."""
    if not stats:
        return f"{kind}: no run varies this concept."
    return (f"{kind}, held-out class, over {stats['n_runs']} runs ({stats['n_learned']} learned within the run, the "
            f"others censored at the run's end): Harrell's C of signal vs learning time "
            f"{format_interval(stats['concordance'], stats['concordance_interval'])}, Spearman of signal vs speed over runs "
            f"(never = 0) {format_interval(stats['spearman_runs'], stats['spearman_runs_interval'])} (95% bootstrap "
            "intervals over seeds).")


FLAT_SLOPE = 0.02  # |slope| per 1,000 steps below which a never-held reading counts as flat at the end of the run
MIN_TAIL = 3  # the slope is fitted to at least this many of the last checkpoints


def unlearned_trends(runs: list[dict], concepts: Sequence[str], flat_slope: float = FLAT_SLOPE) -> list[dict]:
    """What a censored reading was doing when its run ended: for every held-out class and concept in `concepts` that
    the class must move on (its value is not 0) but never holds within the run, the probe coordinate (the run's
    smoothed trajectory, as the held onsets read it) at the checkpoints nearest 25%, 50%, 75% and 100% of the run's
    steps, its distance to the class's own value, and the least-squares slope (per 1,000 steps) over the
    checkpoints in the last quarter of the run (at least the last `MIN_TAIL`), signed toward the class's value:
    "toward" (still approaching it: the run may be too short), "away" or "flat" (|slope| < `flat_slope`: a plateau
    at that level). Runs with fewer than 4 checkpoints are skipped."""
    out = []
    for r in runs:
        traj, steps = r.get("trajectories"), np.asarray(r["steps"], dtype=float)
        if not traj or len(steps) < 4:
            continue
        at = [int(np.abs(steps - f * steps[-1]).argmin()) for f in (0.25, 0.5, 0.75, 1.0)]
        tail = np.nonzero(steps >= 0.75 * steps[-1])[0]
        if len(tail) < MIN_TAIL:
            tail = np.arange(len(steps) - MIN_TAIL, len(steps))
        for name, c in r["classes"].items():
            if not c["held_out"]:
                continue
            kinds = list(c["learning_step"])
            for kind in concepts:
                if kind not in kinds or c["learning_step"][kind] is not None:
                    continue
                j = kinds.index(kind)
                target = float(r["corners"][name][j])  # the class's own value on the concept's [0, 1] axis
                if target == 0:  # the base value: nothing to learn
                    continue
                y = np.asarray(traj[name], dtype=float)[:, j]  # [T] probe coordinate along the concept
                slope = float(np.polyfit(steps[tail], y[tail], 1)[0] * 1000)
                toward = slope if y[-1] <= target else -slope  # positive: moving toward the class's value
                trend = "flat" if abs(toward) < flat_slope else ("toward" if toward > 0 else "away")
                out.append({"run": r["name"], "class": name, "concept": kind, "steps": [int(steps[i]) for i in at],
                            "coordinate": [round(float(y[i]), 4) for i in at], "target": target,
                            "distance_at_end": round(abs(target - float(y[-1])), 4),
                            "slope_toward_per_1k": round(toward, 4), "trend": trend})
    return out


def sweep_reading(metrics: dict) -> list[str]:
    """The sweep's headline numbers as sentences (plain text): per-run statistics per concept, learning order,
    closeness at training saturation, learned counts per separation, masking and hidden capabilities."""
    lines = [per_run_sentence(kind, m["per_run"]) for kind, m in metrics["speed_vs_signal"].items()]
    pred = metrics.get("learning_order", {}).get("prediction")
    if pred and pred["n_scored"]:
        lo, hi = pred["interval"]
        sides = "; ".join(f"where {v} has the larger signal, {v} first in {b['correct']} of {b['n']}"
                          for v, b in zip(metrics["concepts"][:2], pred["by_prediction"].values()))
        lines.append(f"Learning order: the concept with the larger signal is learned first in {pred['correct']} of "
                     f"{pred['n_scored']} (run, held-out class) pairs ({pred['accuracy']:.0%}, 95% interval "
                     f"{lo:.0%}-{hi:.0%}; {sides}; balanced accuracy "
                     f"{format_interval(pred['balanced_accuracy'], pred['balanced_interval'])}, 0.5 = a constant "
                     f"guess); {pred['unknown']} pairs learned neither concept, {pred['ties']} tied.")
    dist = metrics.get("held_out_distance_vs_time")
    if dist and dist["n"]:
        lines.append(f"Held-out classes closer to their own corner when the training classes saturated are learned "
                     f"sooner: Harrell's C {format_interval(dist['concordance'], dist['interval'])} (0.5 = no "
                     f"relation; 95% bootstrap interval resampling runs) over {dist['n']} (class, run) readings of "
                     f"{dist['n_runs']} runs, {dist['n_learned']} learned within the run; left out: "
                     f"{dist['excluded_learned_by_saturation']} learned by saturation, "
                     f"{dist['excluded_not_saturated']} in runs that never saturated.")
    for kind, m in metrics["speed_vs_signal"].items():
        counts = m["per_run"].get("learned_by_separation") if m["per_run"] and kind in metrics["varied"] else None
        if counts:
            per_sep = ", ".join(f"{sep}: {c['learned']} of {c['n']}" for sep, c in counts.items())
            lines.append(f"{kind}, held-out classes learned within the run, per separation: {per_sep}.")
    for t in metrics.get("unlearned_trends", []):
        values = ", ".join(f"{v:.2f}" for v in t["coordinate"])
        lines.append(f"{t['concept']} of {t['class']} never held in {t['run']}: probe coordinate {values} at steps "
                     f"{', '.join(map(str, t['steps']))} (its value: {t['target']:g}); {t['trend']} at the end "
                     f"({t['slope_toward_per_1k']:+.3f} per 1,000 steps toward its value, last quarter of the run).")
    masking = metrics.get("masking")
    if masking:
        rho = "n/a" if masking["spearman_time_vs_p"] is None else f"{masking['spearman_time_vs_p']:.2f}"
        blue = ", ".join(f"p={k}: {v:.2f}" for k, v in masking["final_p_blue"].items())
        pr = masking["per_run"]
        lines.append(f"Masking, over {pr['n_runs']} runs ({pr['n_learned']} learned the held-out class on every "
                     f"concept, the others censored at the run's end): Harrell's C of -p vs learning time "
                     f"{format_interval(pr['concordance'], pr['concordance_interval'])} (1: more masking, always "
                     f"later; 0.5: no relation); Spearman of the per-p mean times (never = twice the run) {rho}; "
                     f"final probe P(blue) of the held-out class: {blue}.")
    if metrics.get("hidden_capability"):
        lines += capability_sentences(metrics["hidden_capability"])
    if metrics.get("representation"):
        lines += representation_sentences(metrics["representation"])
    return lines


def pooled_runs(sweep_dirs: list[Path]) -> list[dict]:
    """The finished runs of several sweep directories (e.g. more seeds added later), each run counted once."""
    runs, seen = [], {}
    for d in sweep_dirs:
        for r in collect_runs(d):
            if r["name"] in seen:
                raise SweepError(f"run {r['name']} is in both {seen[r['name']]} and {d}: pooling would count it twice")
            seen[r["name"]] = d
            runs.append(r)
    if not runs:
        raise SweepError(f"no finished runs in {', '.join(map(str, sweep_dirs))}")
    return runs


def sweep_metrics(runs: list[dict]) -> dict:
    """sweep_metrics.json content from the run records (per-run statistics, learning order, corners, masking,
    hidden capabilities)."""
    kinds = [k for k in runs[0]["classes"][next(iter(runs[0]["classes"]))]["learning_step"]]
    varied = [k for k in kinds if len({r["sep"].get(k) for r in runs}) > 1]
    metrics: dict = {"n_runs": len(runs), "concepts": kinds, "varied": varied,
                     "speed_vs_signal": speed_vs_signal(runs, kinds)}
    if len(kinds) >= 2:
        grid = order_grid(runs, kinds[0], kinds[1])
        prediction = order_prediction(runs, kinds[0], kinds[1])
        if grid is not None or prediction["n"]:
            metrics["learning_order"] = {"prediction": prediction}
        if grid is not None:
            ratio = signal_ratio_grid(runs, grid[0], grid[1], kinds[0], kinds[1])
            metrics["learning_order"].update({"x": grid[0], "y": grid[1], "t_diff": np.where(
                np.isnan(grid[2]), None, grid[2]).tolist(), "log_signal_ratio": np.where(
                np.isnan(ratio), None, np.round(ratio, 4)).tolist()})
    learned = learned_vs_distance(runs)
    if learned:
        metrics["held_out_learned_vs_distance"] = learned
        metrics["held_out_distance_vs_time"] = distance_time_summary(learned)
    # Which training corner each held-out trajectory moved toward first: the run analysis's memorisation corner
    # (the first training corner it came within eval.memorisation_radius of, once training classes are drawn).
    if varied:
        first: dict[str, list] = {}
        for r in runs:
            for n, c in r["classes"].items():
                if c["held_out"]:
                    first.setdefault(f"{r['sep'][varied[0]]:g}", []).append(
                        r["turn"].get(n, {}).get("memorised_toward"))
        metrics["first_corner_by_separation"] = {varied[0]: first}
    trends = unlearned_trends(runs, varied)
    if trends:
        metrics["unlearned_trends"] = trends
    masking = masking_metrics(runs)
    if masking:
        metrics["masking"] = masking
    capability = capability_summary(runs)
    if capability:
        metrics["hidden_capability"] = capability
    representation = representation_summary(runs)
    if representation:
        metrics["representation"] = representation
    return metrics


def analyze_sweep(sweep_dir: str | Path, pool: Sequence[str | Path] = (), out: str | Path | None = None) -> Path:
    """Write sweep_metrics.json for a sweep directory, or for it pooled with others (more seeds run later) into a
    new directory `out`; returns the output directory."""
    sources = [Path(sweep_dir), *map(Path, pool)]
    if pool and out is None:
        raise SweepError("a pooled report needs an output directory (--out), so no sweep's own report is replaced")
    out_dir = Path(out) if out is not None else sources[0]
    if pool and (out_dir / "sweep.json").is_file():
        raise SweepError(f"{out_dir} is a sweep directory; write the pooled report to a new directory")
    metrics = sweep_metrics(pooled_runs(sources))
    metrics["sources"] = [str(d) for d in sources]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "sweep_metrics.json", metrics)
    return out_dir
