"""Aggregation of a sweep: the concept-signal law (learning speed vs signal), learning order, trajectories.

`sweep_report(sweep_dir)` reads every run's `metrics.json`, `config.yaml` and evaluation arrays and writes
`sweep_metrics.json` and a self-contained `sweep_report.html`. Statistics are over runs, not over means: a concept
never learned within a run is censored at the run's last step (`sweep_stats.py`: Kaplan-Meier curves, Harrell's C,
Spearman over runs with never = speed 0, bootstrap intervals over seeds). Learning speed = 1 / learning step.
"""

from __future__ import annotations

import html
import io
import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import spearmanr

from .analysis import trajectory_arrays
from .capability_sweep import capability_sentences, capability_summary, plot_capability_onsets
from .trajectories import corners, mean_trajectory
from .plots import concept_axes
from .concepts import ConceptSpace
from .config import load_config
from .evaluate import load_eval
from .masking_report import masking_figures, masking_metrics
from .report import STYLE, _img
from .sweep_stats import censored_summary, kaplan_meier, observed_order, order_accuracy
from .sweeps import SweepError, point_name


def collect_runs(sweep_dir: str | Path) -> list[dict]:
    """One record per finished run: separations, seed, signal, learning steps, trajectories of held-out classes."""
    sweep_dir = Path(sweep_dir)
    manifest = sweep_dir / "sweep.json"
    if not manifest.is_file():
        raise SweepError(f"{sweep_dir}: not a sweep directory (no sweep.json); run `conceptspace sweep` first")
    runs = []
    for point in json.loads(manifest.read_text())["points"]:
        run_dir = sweep_dir / point["name"]
        if not (run_dir / "metrics.json").is_file():
            continue
        cfg = load_config(run_dir / "config.yaml")
        metrics = json.loads((run_dir / "metrics.json").read_text())
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
                  "elicitation": metrics.get("elicitation", {}), "masking": _masking(cfg)}
        names = list(metrics["classes"])
        record["corners"] = dict(zip(names, corners(names, [c.n_values for c in space.concepts]).tolist()))
        probs = run_dir / "eval" / "default" / "concept_probs.npz"
        if probs.is_file():
            arrays = load_eval(probs)
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
    """(separation, signal, speed) of `concept` for the held-out classes (or the training classes whose value of
    the concept is not the first one: the classes that must move away from value 0 to learn it), every run."""
    out = []
    for r in runs:
        if concept not in r["sep"]:
            continue
        for name, c in r["classes"].items():
            if concept not in c["learning_step"] or c["held_out"] != held_out:
                continue
            if held_out or name[list(c["learning_step"]).index(concept)] != "0":
                out.append((r["sep"][concept], r["signal"].get(concept, np.nan), speed(c["learning_step"][concept])))
    return out


def class_learning(runs: list[dict], concept: str, held_out: bool = True) -> list[dict]:
    """Per run and class (held-out, or training classes that must move off value 0 of the concept): separation,
    signal, learning step (None = never) and the run's last step (where a never-learned concept is censored)."""
    out = []
    for r in runs:
        if concept not in r["sep"] or not r["steps"]:
            continue
        for name, c in r["classes"].items():
            if concept not in c["learning_step"] or c["held_out"] != held_out:
                continue
            if held_out or name[list(c["learning_step"]).index(concept)] != "0":
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
    stats["points"] = [{k: p[k] for k in ("run", "class", "sep", "signal", "step", "horizon")} for p in points]
    return stats


def plot_kaplan_meier(stats: dict, concept: str) -> plt.Figure:
    """Fraction of runs whose held-out class has learned the concept by step t, one step curve per separation."""
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    cmap = plt.get_cmap("plasma")
    curves = stats["kaplan_meier"]
    for i, (sep, c) in enumerate(curves.items()):
        xs = [0, *c["steps"], c["horizon"]]
        ys = [0, *c["learned_fraction"], c["learned_fraction"][-1] if c["learned_fraction"] else 0]
        ax.step(xs, ys, where="post", color=cmap(i / max(len(curves) - 1, 1) * 0.9), lw=2,
                label=f"Δ{concept}={sep} (n={c['n']})")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"fraction of runs that learned {concept}")
    ci = stats.get("concordance_interval") or [None, None]
    cs = "n/a" if stats.get("concordance") is None else f"{stats['concordance']:.2f}"
    if ci[0] is not None:
        cs += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    ax.set_title(f"held-out class, {concept}: learned by step t (Kaplan-Meier; never = censored)\n"
                 f"Harrell's C of signal vs time {cs}, {stats['n_runs']} runs", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


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


def plot_speed(runs: list[dict], concepts: list[str]) -> plt.Figure:
    """Learning speed of each concept vs separation and vs measured signal; seeds as points, mean line."""
    fig, axes = plt.subplots(2, len(concepts), figsize=(4.2 * len(concepts), 6.6), squeeze=False)
    for j, kind in enumerate(concepts):
        for row, (idx, label) in enumerate([(0, "separation"), (1, "concept signal σ")]):
            ax = axes[row, j]
            for held, style in ((True, "C3"), (False, "C0")):
                pts = [(p[idx], p[2]) for p in class_speeds(runs, kind, held)]
                if not pts:
                    continue
                pts = np.array(pts)
                ax.scatter(pts[:, 0], pts[:, 1], s=12, alpha=0.5, color=style)
                xs = np.unique(pts[:, 0])
                m = np.array([pts[pts[:, 0] == x, 1].mean() for x in xs])
                sd = np.array([pts[pts[:, 0] == x, 1].std() for x in xs])
                ax.plot(xs, m, color=style, lw=2, ls="-" if held else "--",
                        label="held-out class" if held else "training classes")
                ax.fill_between(xs, m - sd, m + sd, color=style, alpha=0.12)
            ax.set_xlabel(f"{kind} {label}")
            ax.set_ylabel("learning speed (1 / steps)")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    fig.suptitle("learning speed vs concept signal (0 = never learned within the run)", fontsize=10)
    fig.tight_layout()
    return fig


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
                out.append({"run": r["name"], "class": n, "distance": round(dist, 4),
                            "learned": all(s is not None for s in c["learning_step"].values()),
                            "saturated": r.get("saturation") is not None})
    return out


def plot_learned_vs_distance(points: list[dict]) -> plt.Figure:
    """Held-out classes learned within the run (1) or not (0) vs their distance at training saturation."""
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    rng = np.random.default_rng(0)  # jitter only, for overlapping points
    classes = sorted({p["class"] for p in points})
    for i, cls in enumerate(classes):
        pts = [p for p in points if p["class"] == cls]
        ax.scatter([p["distance"] for p in pts], [p["learned"] + rng.uniform(-0.08, 0.08) for p in pts],
                   s=18, color=f"C{i}", label=f"held-out {cls}")
    ax.set_yticks([0, 1], ["not learned", "learned"])
    ax.set_xlabel("distance to its own corner at the training-saturation step")
    ax.legend(fontsize=7)
    ax.set_title("which held-out classes are learned within the run", fontsize=9)
    fig.tight_layout()
    return fig


def plot_order(xs: list, ys: list, grid: np.ndarray, a: str, b: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5, 4))
    lim = np.nanmax(np.abs(grid)) or 1
    im = ax.imshow(grid, origin="lower", cmap="coolwarm", vmin=-lim, vmax=lim, aspect="auto",
                   extent=[-0.5, len(xs) - 0.5, -0.5, len(ys) - 0.5])
    if np.nanmin(grid) < 0 < np.nanmax(grid):
        ax.contour(np.arange(len(xs)), np.arange(len(ys)), grid, levels=[0], colors="k", linewidths=2)
    ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
    ax.set_yticks(range(len(ys)), [f"{y:g}" for y in ys])
    ax.set_xlabel(f"Δ{a}")
    ax.set_ylabel(f"Δ{b}")
    fig.colorbar(im, label=f"T_{b} - T_{a} (steps; > 0: {a} learned first)")
    ax.set_title("learning order of the held-out class (black: order flips)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_held_out_trajectories(runs: list[dict], concept: str, kinds: list[str]) -> plt.Figure:
    """Held-out trajectories of every separation (mean over seeds), colored by the normalised signal."""
    groups: dict[float, list] = {}
    for r in runs:
        if "trajectories" not in r or concept not in r["sep"]:
            continue
        held = [n for n, c in r["classes"].items() if c["held_out"]]
        for n in held[:1]:
            groups.setdefault(r["sep"][concept], []).append((np.array(r["trajectories"][n]),
                                                             r["normalized_signal"].get(concept, 0.0)))
    three = len(kinds) >= 3
    fig = plt.figure(figsize=(5.4, 4.6))
    ax = fig.add_subplot(projection="3d") if three else fig.add_subplot()
    cmap = plt.get_cmap("plasma")
    for sep in sorted(groups):
        trajs = groups[sep]
        mean = mean_trajectory([t for t, _ in trajs])
        color = cmap(float(np.mean([s for _, s in trajs])))
        dims = 3 if three else 2
        ax.plot(*mean[:, :dims].T, color=color, lw=2, label=f"Δ{concept}={sep:g}")
        ax.scatter(*mean[-1, :dims], color=color, s=15)
    concept_axes(ax, kinds, three)
    if not three:
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
        fig.colorbar(sm, ax=ax, label=f"normalised {concept} signal", shrink=0.8)
    ax.legend(fontsize=7)
    ax.set_title("held-out trajectories by separation (mean over seeds)", fontsize=9)
    fig.tight_layout()
    return fig


def _fmt_ci(value: float | None, interval: list | None) -> str:
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
            f"{_fmt_ci(stats['concordance'], stats['concordance_interval'])}, Spearman of signal vs speed over runs "
            f"(never = 0) {_fmt_ci(stats['spearman_runs'], stats['spearman_runs_interval'])} (95% bootstrap "
            "intervals over seeds).")


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


def sweep_report(sweep_dir: str | Path, pool: Sequence[str | Path] = (), out: str | Path | None = None) -> Path:
    """Write sweep_metrics.json and sweep_report.html for a sweep directory, or for it pooled with others into out."""
    sources = [Path(sweep_dir), *map(Path, pool)]
    if pool and out is None:
        raise SweepError("a pooled report needs an output directory (--out), so no sweep's own report is replaced")
    out_dir = Path(out) if out is not None else sources[0]
    if pool and (out_dir / "sweep.json").is_file():
        raise SweepError(f"{out_dir} is a sweep directory; write the pooled report to a new directory")
    runs = pooled_runs(sources)
    out_dir.mkdir(parents=True, exist_ok=True)
    kinds = [k for k in runs[0]["classes"][next(iter(runs[0]["classes"]))]["learning_step"]]
    varied = [k for k in kinds if len({r["sep"].get(k) for r in runs}) > 1]
    metrics: dict = {"n_runs": len(runs), "concepts": kinds, "varied": varied,
                     "speed_vs_signal": speed_vs_signal(runs, kinds)}
    if pool:
        metrics["pooled_from"] = [str(d) for d in sources]
    figs = {"learning speed vs concept signal": plot_speed(runs, kinds)}
    for kind in varied:
        if metrics["speed_vs_signal"][kind]["per_run"]:
            figs[f"held-out {kind} learned by step t"] = plot_kaplan_meier(
                metrics["speed_vs_signal"][kind]["per_run"], kind)
    if len(kinds) >= 2:
        grid = order_grid(runs, kinds[0], kinds[1])
        prediction = order_prediction(runs, kinds[0], kinds[1])
        if grid is not None or prediction["n"]:
            metrics["learning_order"] = {"prediction": prediction}
        if grid is not None:
            metrics["learning_order"].update({"x": grid[0], "y": grid[1], "t_diff": np.where(
                np.isnan(grid[2]), None, grid[2]).tolist()})
            figs["learning order"] = plot_order(*grid, kinds[0], kinds[1])
    for concept in varied[:2]:
        figs[f"held-out trajectories by {concept} separation"] = plot_held_out_trajectories(runs, concept, kinds)
    learned = learned_vs_distance(runs)
    if learned:
        metrics["held_out_learned_vs_distance"] = learned
        figs["held-out classes learned vs distance at training saturation"] = plot_learned_vs_distance(learned)
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
    masking = masking_metrics(runs)
    if masking:
        metrics["masking"] = masking
        figs.update(masking_figures(runs, masking, kinds))
    capability = capability_summary(runs)
    if capability:
        metrics["hidden_capability"] = capability
        figs["hidden capability: held onsets per run"] = plot_capability_onsets(capability)
    (out_dir / "sweep_metrics.json").write_text(json.dumps(metrics, indent=2))
    body = [f"<h1>Sweep: {html.escape(out_dir.name)} ({len(runs)} finished runs)</h1>"]
    if pool:
        body.append(f"<p>Pooled from {html.escape(', '.join(map(str, sources)))}.</p>")
    for kind, m in metrics["speed_vs_signal"].items():
        body.append(f"<p>{html.escape(per_run_sentence(kind, m['per_run']))}</p>")
    pred = metrics.get("learning_order", {}).get("prediction")
    if pred and pred["n_scored"]:
        lo, hi = pred["interval"]
        body.append(f"<p>Learning order: the concept with the larger signal is learned first in {pred['correct']} of "
                    f"{pred['n_scored']} (run, held-out class) pairs ({pred['accuracy']:.0%}, 95% interval "
                    f"{lo:.0%}-{hi:.0%}); {pred['unknown']} pairs learned neither concept, {pred['ties']} tied.</p>")
    if masking:
        rho = "n/a" if masking["spearman_time_vs_p"] is None else f"{masking['spearman_time_vs_p']:.2f}"
        blue = ", ".join(f"p={k}: {v:.2f}" for k, v in masking["final_p_blue"].items())
        pr = masking["per_run"]
        body.append(f"<p>Masking, over {pr['n_runs']} runs ({pr['n_learned']} learned the held-out class on every "
                    f"concept, the others censored at the run's end): Harrell's C of -p vs learning time "
                    f"<b>{_fmt_ci(pr['concordance'], pr['concordance_interval'])}</b> (1: more masking, always "
                    f"later; 0.5: no relation); Spearman of the per-p mean times (never = twice the run) {rho}; "
                    f"final probe P(blue) of the held-out class: {blue}.</p>")
    for line in capability_sentences(capability) if capability else []:
        body.append(f"<p>{html.escape(line)}</p>")
    for name, fig in figs.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        body.append(f"<h2>{html.escape(name)}</h2>" + _img(buf.getvalue()))
    body.append("<h2>sweep_metrics.json</h2><pre>" + html.escape(json.dumps(metrics, indent=1)) + "</pre>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(out_dir.name)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")
    path = out_dir / "sweep_report.html"
    path.write_text(page)
    return path
