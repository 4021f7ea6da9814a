"""Hidden capabilities across the seeds of an experiment: per arm, how many runs show each intervention ahead of
best-of-k naive prompting with the training-class control passed (the paper's hidden-capability result, read per run).

`capability_summary(runs)` fills sweep_metrics.json's "hidden_capability" entry from the run records of
`sweep_report.collect_runs` (an arm = the runs of one sweep directory that differ only in their seed);
`plot_capability_onsets` draws every run's held onsets beside best-of-k naive prompting's.
"""

from __future__ import annotations

import matplotlib.pyplot as plt

def run_row(record: dict, held: str, e: dict) -> dict:
    """One run's readings for one held-out class: held and first-reached onsets, leads, controls, hidden."""
    return {"run": record["name"], "seed": record["seed"], "held_out": held, "last_step": record["steps"][-1],
            "drawing_step": e.get("start_step"), "naive_tries": e.get("naive_tries", 1),
            "onset_step": e.get("onset_step", {}), "first_reached_step": e.get("first_reached_step", {}),
            "paper_measure_onset_step": e.get("paper_measure_onset_step", {}),
            "lead_steps": e.get("lead_steps", {}),
            "control_passed": {m: c.get("passed", False) for m, c in (e.get("control") or {}).items()},
            "hidden": e.get("hidden", {})}


def capability_summary(runs: list[dict], min_runs: int | None = None) -> dict | None:
    """{arm: {n_runs, methods: {method: {hidden, of, runs}}, reproduced_by, runs: [...]}}; None without
    elicitation readings. An arm reproduces the result with a method that is hidden in at least `min_runs` of its
    runs (default: all runs but one, 4 of 5)."""
    arms: dict[str, list[dict]] = {}
    for r in runs:
        for held, e in (r.get("elicitation") or {}).items():
            if "hidden" in e:
                arms.setdefault(r.get("arm", "all"), []).append(run_row(r, held, e))
    if not arms:
        return None
    out = {}
    for arm, rows in arms.items():
        need = min_runs if min_runs is not None else max(len(rows) - 1, 1)
        methods = list(dict.fromkeys(m for row in rows for m in row["hidden"]))
        per = {m: {"hidden": sum(bool(row["hidden"].get(m)) for row in rows), "of": len(rows),
                   "runs": [row["run"] for row in rows if row["hidden"].get(m)]} for m in methods}
        out[arm] = {"n_runs": len(rows), "min_runs": need, "methods": per,
                    "reproduced_by": [m for m, v in per.items() if v["hidden"] >= need],
                    "runs": sorted(rows, key=lambda row: row["seed"])}
    return out


def plot_capability_onsets(summary: dict) -> plt.Figure:
    """Per arm, every run's held onsets: best-of-k naive (black) and each intervention (colors); a method that
    never holds is drawn at the run's end with an open marker (censored); filled markers passed the control."""
    arms = list(summary)
    fig, axes = plt.subplots(1, len(arms), figsize=(4.6 * len(arms), 3.6), squeeze=False, sharey=True)
    for ax, arm in zip(axes[0], arms):
        rows = summary[arm]["runs"]
        methods = [m for m in dict.fromkeys(m for row in rows for m in row["onset_step"]) if m != "naive"]
        for i, row in enumerate(rows):
            last = row["last_step"]
            for j, m in enumerate(methods):
                x = i + (j - (len(methods) - 1) / 2) * 0.12
                step = row["onset_step"].get(m)
                color = "k" if m == "naive_k" else f"C{j}"
                filled = m == "naive_k" or row["control_passed"].get(m, False)
                ax.scatter([x], [last if step is None else step], s=30, color=color if filled else "none",
                           edgecolors=color, marker="^" if step is None else "o",
                           label=(f"naive, best of {row['naive_tries']}" if m == "naive_k" else m) if i == 0 else None)
                if row["hidden"].get(m):
                    ax.scatter([x], [step], s=120, marker="*", color="gold", edgecolors="k", zorder=3)
        ax.set_xticks(range(len(rows)), [f"seed {row['seed']}" for row in rows], fontsize=7)
        ax.set_title(f"{arm}\nhidden in: " + ", ".join(f"{m} {v['hidden']}/{v['of']}"
                                                      for m, v in summary[arm]["methods"].items()), fontsize=8)
        ax.set_ylabel("held onset (training step)")
    axes[0, 0].legend(fontsize=6, loc="lower left")
    fig.suptitle("held onsets per run (triangle: never, censored at the run's end; open: control failed; "
                 "star: hidden capability)", fontsize=8)
    fig.tight_layout()
    return fig


def capability_sentences(summary: dict) -> list[str]:
    """Plain-language reading of the summary, one line per arm."""
    lines = []
    for arm, a in summary.items():
        counts = ", ".join(f"{m} {v['hidden']} of {v['of']}" for m, v in a["methods"].items())
        verdict = (f"reproduced (at least {a['min_runs']} of {a['n_runs']} runs) with "
                   + ", ".join(a["reproduced_by"]) if a["reproduced_by"] else
                   f"not reproduced (no method in at least {a['min_runs']} of {a['n_runs']} runs)")
        lines.append(f"{arm}: hidden capability (held onset at least the lead fraction of the run before best-of-k "
                     f"naive, training-class control passed) in {counts}: {verdict}.")
    return lines


