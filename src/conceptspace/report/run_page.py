"""The run report: figures saved under `figures/` and one self-contained `report.html` (images inlined)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib.pyplot as plt

from ..analysis.run_metrics import trajectory_arrays
from ..config import ExperimentConfig, config_to_yaml
from ..errors import ConceptspaceError
from ..report import plots
from .explorer import explorer_data, explorer_html
from ..rundir import RunDir, atomic_write, load_npz, write_text, writes_run


def reading(metrics: dict) -> list[str]:
    """A short plain-language reading of metrics.json."""
    lines = []
    kinds = metrics.get("concepts", [])
    for name, c in metrics["classes"].items():
        if c["held_out"]:
            continue
        parts = [f"{k} at step {s}" if s is not None else f"{k} never" for k, s in c["learning_step"].items()]
        lines.append(f"Training class {name}: learned " + ", ".join(parts) + ".")
    sat = metrics.get("training_saturation_step")
    lines.append(f"The training classes saturated (all near their corners) at step {sat}." if sat is not None
                 else "The training classes did not all reach their corners within the run.")
    for name, c in metrics["classes"].items():
        if not c["held_out"]:
            continue
        learned = [f"{k} at step {s}" for k, s in c["learning_step"].items() if s is not None]
        never = [k for k, s in c["learning_step"].items() if s is None]
        text = f"Held-out class {name}: "
        text += ("learned " + ", ".join(learned)) if learned else "no concept reached the threshold"
        text += (f"; never reached it on {', '.join(never)}" if never and learned else "") + "."
        turn = metrics.get("turn", {}).get(name, {})
        if turn.get("memorised_toward"):
            text += (f" It first moved toward the training corner {turn['memorised_toward']} (closest distance "
                     f"{turn['closest_distance']:.2f}, reached at step {turn['memorisation_step']})")
            text += (f" and turned most sharply at step {turn['step']} ({turn['angle_deg']:.0f} degrees)."
                     if turn.get("step") is not None else ".")
        elif turn.get("step") is not None:
            text += (f" It did not pass near any training corner; its sharpest turn was at step {turn['step']} "
                     f"({turn['angle_deg']:.0f} degrees).")
        final = c.get("final_accuracy", {})
        if final:
            text += " Final accuracy: " + ", ".join(f"{k} {v:.2f}" for k, v in final.items()) + "."
        lines.append(text)
    for name, e in metrics.get("elicitation", {}).items():
        lines.extend(elicitation_reading(name, e))
    agree = metrics.get("probe_agreement")
    if agree:
        lines.append("Learned and analytic probes agree on " + ", ".join(f"{k} {v:.1%}" for k, v in agree.items())
                     + " of generated samples.")
    if kinds and metrics.get("normalized_signal"):
        sig = metrics["normalized_signal"]
        lines.append("Normalised concept signal: " + ", ".join(f"{k} {sig[k]:.2f}" for k in kinds) + ".")
    return lines


def _step(s: int | None) -> str:
    return "never" if s is None else str(s)


def elicitation_reading(name: str, e: dict) -> list[str]:
    """Plain-language reading of one held-out class's elicitation metrics (held onsets, matched naive, control)."""
    first = e.get("first_reached_step", {})
    on = ", ".join(f"{m} {_step(s)}" + (f" (first reached {_step(first[m])})" if first.get(m) != s and m in first
                                        else "") for m, s in e.get("onset_step", {}).items())
    start = e.get("start_step")
    lines = [f"Elicitation of {name}: held onsets (joint accuracy at or above the threshold to the end of the run, "
             f"read from step {_step(start)}, when the training classes are drawn): {on}."]
    k = e.get("naive_tries", 1)
    if k > 1:
        held = e.get("naive_best_of_k_onset")
        lines.append(f"Naive prompting given {k} tries (initial-noise seeds, as many as the largest intervention "
                     f"grid) {'never holds the threshold' if held is None else f'holds from step {held}'}; "
                     "interventions are compared with that.")
    for m, passed in (e.get("hidden") or {}).items():
        lead, ctl = e["lead_steps"].get(m), e["control"].get(m, {})
        if lead is None:
            continue
        acc = "; ".join(f"class {c} {', '.join(f'{k2} {v:.2f}' for k2, v in per.items())}"
                        for c, per in ctl.get("accuracy", {}).items())
        lines.append(f"{m}: {lead} steps ahead of best-of-{k} naive prompting"
                     + (" (naive never holds: a lower bound)" if e.get("naive_never_reached") else "")
                     + f"; control at its onset: {acc or 'no reading'} -> "
                     + ("a hidden capability." if passed else "not counted as hidden (" + (
                         "control failed" if not ctl.get("passed") else "lead below the required fraction") + ")."))
    dist = {m: d for m, d in (e.get("turn_distance_checkpoints") or {}).items() if d is not None}
    if dist:
        lines.append("Onset minus sudden turn, in checkpoints: " + ", ".join(f"{m} {d:+d}" for m, d in dist.items())
                     + " (|d| <= 2: they coincide).")
    return lines


def _img(fig_or_bytes, mime: str = "image/png") -> str:
    if isinstance(fig_or_bytes, bytes):
        data = fig_or_bytes
    else:
        buf = io.BytesIO()
        fig_or_bytes.savefig(buf, format="png", dpi=100)
        data = buf.getvalue()
    return f'<img src="data:{mime};base64,{base64.b64encode(data).decode()}">'


def make_figures(run_dir: Path, cfg: ExperimentConfig, metrics: dict, tag: str = "default") -> dict[str, bytes]:
    """Render every figure of a run to PNG/GIF bytes and save them under `figures/`."""
    rd = RunDir(run_dir, tag)
    arrays = load_npz(rd.trajectory_source)
    coords, acc = trajectory_arrays(cfg, arrays)
    steps, names = arrays["steps"], [str(n) for n in arrays["classes"]]
    held = [n for n, h in zip(names, arrays["held_out"]) if h]
    kinds = metrics["concepts"]
    onsets = {n: e.get("onset_step") for n, e in metrics.get("elicitation", {}).items()}
    figs = {
        "trajectories": plots.plot_trajectories(coords, steps, names, held, kinds, metrics.get("turn"), onsets),
        "accuracy": plots.plot_accuracy(acc, steps, names, held, kinds, cfg.eval.threshold),
        "samples": plots.plot_sample_grid(arrays["samples"], steps, names, held),
    }
    if rd.elicitation.is_file():
        e = load_npz(rd.elicitation)
        for h, held_name in enumerate(str(x) for x in e["held_out"]):
            em = metrics.get("elicitation", {}).get(held_name, {})
            figs[f"elicitation_{held_name}"] = plots.plot_elicitation(
                e["steps"], e["joint"][:, :, h], [str(n) for n in e["names"]], [str(m) for m in e["methods"]],
                held_name, em.get("onset_step"), metrics.get("turn", {}).get(held_name, {}).get("step"),
                cfg.elicit.threshold)
    rows = rd.read_log()
    if rows:
        figs["losses"] = plots.plot_losses(rows)
        if coords.shape[-1] >= 2:  # the emergence figure needs a 2-D (or more) concept space
            for held_name in held:
                figs[f"emergence_{held_name}"] = plots.plot_emergence(
                    rows, steps, acc, coords, names, held, held_name, kinds, metrics.get("turn", {}).get(held_name),
                    metrics.get("elicitation", {}).get(held_name))
    out = {}
    folder = rd.figures
    folder.mkdir(exist_ok=True)
    for name, fig in figs.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        out[name + ".png"] = buf.getvalue()
    frames = plots.trajectory_gif_frames(coords, steps, arrays["samples"], names, held, kinds)
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=250, loop=0)
    out["trajectory.gif"] = buf.getvalue()
    for name, data in out.items():
        atomic_write(folder / name, lambda fh, d=data: fh.write(d))
    return out


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
img{max-width:100%;border:1px solid #ddd;margin:.3em 0}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}pre{background:#f6f6f6;padding:1em;overflow:auto}
.figs{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}"""


@writes_run
def write_report(run_dir: str | Path, cfg: ExperimentConfig, tag: str = "default",
                 extra_figures: dict[str, bytes] | None = None) -> Path:
    """Write `report.html` (self-contained: every image inlined, no network) from metrics.json and the arrays."""
    run_dir = Path(run_dir)
    rd = RunDir(run_dir, tag)
    metrics = rd.read_metrics()
    figs = make_figures(run_dir, cfg, metrics, tag)
    figs.update(extra_figures or {})
    esc = html.escape
    rows = []
    for name, c in metrics["classes"].items():
        cells = "".join(f"<td>{s if s is not None else 'never'}</td>" for s in c["learning_step"].values())
        fin = " ".join(f"{v:.2f}" for v in c.get("final_accuracy", {}).values())
        rows.append(f"<tr><th>{esc(name)}{' (held out)' if c['held_out'] else ''}</th>{cells}<td>{fin}</td></tr>")
    heads = "".join(f"<th>{esc(k)} learned at</th>" for k in metrics["concepts"])
    body = [
        f"<h1>conceptspace run: {esc(run_dir.name)}</h1>",
        "<h2>Reading</h2><ul>" + "".join(f"<li>{esc(s)}</li>" for s in reading(metrics)) + "</ul>",
        f"<h2>Learning steps</h2><table><tr><th>class</th>{heads}<th>final accuracy</th></tr>{''.join(rows)}</table>",
        f"<p>Learning step: the checkpoint from which the smoothed (sigma {cfg.eval.smoothing}) accuracy stays at or "
        f"above {cfg.eval.threshold} to the end of the run, with at most {cfg.eval.allowed_dip} checkpoint(s) below "
        f"(held), read only once the training classes draw that concept (a sample without an object counts as "
        f"wrong); metrics.json also gives the first checkpoint starting {cfg.eval.run_length} in a row above it "
        f"(learning_step_first). {cfg.eval.n_samples} samples per class and checkpoint, sampler "
        f"{esc(cfg.sampler.method)} with {cfg.sampler.n_steps} steps, probe {esc(cfg.probe.kind)} (weights "
        f"{esc(str(metrics.get('probe_checksum')))}).</p>",
        "<h2>Concept space</h2><div class='figs'>" + _img(figs["trajectories.png"])
        + _img(figs["trajectory.gif"], "image/gif") + "</div>",
        explorer_html(explorer_data(rd, *trajectory_arrays(cfg, load_npz(rd.trajectory_source)), metrics)),
    ]
    for name, data in figs.items():
        if name not in ("trajectories.png", "trajectory.gif"):
            body.append(f"<h2>{esc(name.rsplit('.', 1)[0].replace('_', ' '))}</h2>" + _img(data))
    body.append("<h2>metrics.json</h2><pre>" + esc(json.dumps(metrics, indent=1)) + "</pre>")
    body.append("<h2>Config</h2><pre>" + esc(config_to_yaml(cfg)) + "</pre>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(run_dir.name)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")
    return write_text(rd.report, page)


def summary_table(run_dirs: list[str], tag: str = "default") -> str:
    """A Markdown table of the key numbers of several runs (e.g. seeds), from their metrics.json."""
    head = ("| run | held-out | learned at (held-out) | final accuracy | memorised toward | turn step (angle) | "
            "held onsets | gap vs best-of-k naive | hidden capability |\n|---|---|---|---|---|---|---|---|---|")
    rows = [head]
    for d in run_dirs:
        m = RunDir(d, tag).read_metrics()
        if "classes" not in m:
            raise ConceptspaceError(f"{d}: no metrics yet (not evaluated, or not a run directory); run "
                                    "`conceptspace evaluate` or `conceptspace run` first")
        for name, c in m["classes"].items():
            if not c["held_out"]:
                continue
            learned = ", ".join(f"{k} {v if v is not None else 'never'}" for k, v in c["learning_step"].items())
            final = ", ".join(f"{k} {v:.2f}" for k, v in c["final_accuracy"].items())
            t = m.get("turn", {}).get(name, {})
            turn = f"{t['step']} ({t['angle_deg']:.0f}°)" if t.get("step") is not None else "none"
            e = m.get("elicitation", {}).get(name, {})
            onsets = ", ".join(f"{k} {v if v is not None else 'never'}" for k, v in e.get("onset_step", {}).items())
            gap = e.get("gap_steps")
            gap = gap if gap is not None else ("naive never" if e.get("naive_never_reached") else "-")
            hidden = ", ".join(k for k, v in (e.get("hidden") or {}).items() if v) or ("none" if e else "-")
            rows.append(f"| {Path(d).name} | {name} | {learned} | {final} | {t.get('memorised_toward') or '-'} | "
                        f"{turn} | {onsets or '-'} | {gap} | {hidden} |")
    return "\n".join(rows)


def seeds_figure(run_dirs: list[str], tag: str = "default"):
    """Held-out joint accuracy per elicitation across runs (e.g. seeds): each run's best of grid, and the mean."""
    runs = {}
    for d in run_dirs:
        path = RunDir(d, tag).elicitation
        if path.is_file():
            e = load_npz(path)
            runs[d] = {"steps": e["steps"], "methods": [str(m) for m in e["methods"]], "joint": e["joint"][:, :, 0],
                       "held": str(e["held_out"][0])}
    if not runs:
        raise ConceptspaceError(f"no eval/{tag}/elicitation.npz in these runs: run `conceptspace elicit` first")
    return plots.plot_elicitation_seeds(runs, next(iter(runs.values()))["held"])
