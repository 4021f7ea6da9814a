"""Hidden capabilities across the seeds of an experiment: per arm, how many runs show each intervention ahead of
best-of-k naive prompting with the training-class control passed (the paper's hidden-capability result, read per run).

`capability_summary(runs)` fills sweep_metrics.json's "hidden_capability" entry from the run records of
`sweep_report.collect_runs` (an arm = the runs of one sweep directory that differ only in their seed);
`report.sweep_figures.plot_capability_onsets` draws every run's held onsets beside best-of-k naive prompting's.
"""

from __future__ import annotations


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
            if e.get("hidden"):  # naive prompting alone: nothing to compare
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


