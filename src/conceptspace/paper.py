"""The paper's results as a catalogue: one entry per figure or table, each with the command that reproduces it at
CPU scale, its measured wall time on 2 cores and the status of our last result (`configs/paper.yaml`).

`load_catalogue()` reads and checks the catalogue; `run_entry` runs an entry into `<out>/<name>` (sweeps and runs
resume where they stopped; the wall time of every piece is recorded in `paper_run.json`); `report_entry` draws
its figures and returns its reading as sentences; `catalogue_table` is what `conceptspace paper list` prints.
"""

from __future__ import annotations

import datetime as _dt
import subprocess
import time
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import Field, ValidationError, field_validator

from .config import StrictModel, load_config
from .errors import ConceptspaceError
from .rundir import RunDir, read_json, write_json, write_text

ROOT = Path(__file__).resolve().parents[2]  # the repository, for a clone (editable install)
RECORD = "paper_run.json"  # per entry directory: the wall time of every `paper run` piece
Status = Literal["reproduced", "partly", "not reproduced", "not run"]


class Entry(StrictModel):
    """One result of the paper and how we reproduce it."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    paper: str  # which figure or table, and where in the paper
    finding: str  # the paper's finding, in our words
    kind: Literal["signal", "run", "sweep"]
    specs: list[str] = Field(min_length=1)  # configs (run, signal) or sweep specs (sweep), relative to configs/
    seeds: list[int] = Field(default_factory=lambda: [0])  # run entries: one run per seed
    toy_model: bool = False  # sweep entries: fit the simplified dynamical model of underspecification too
    requires: str = ""  # what a user needs beyond this machine (data, a GPU)
    args: str = ""  # extra arguments of its command, e.g. "--set data.real.path=/path/to/celeba"
    setting: str  # our CPU-scale setting and what differs from the paper's
    minutes_2cores: float | None = Field(None, gt=0)  # measured wall time on 2 cores; None = not measured yet
    time_note: str = ""
    status: Status
    result: str = ""  # our last result, with n and intervals where there are any
    figure: str | None = None  # docs/<file>.png

    @field_validator("specs")
    @classmethod
    def _relative(cls, v: list[str]) -> list[str]:
        if any(Path(s).is_absolute() for s in v):
            raise ValueError("specs are relative to configs/")
        return v


class Catalogue(StrictModel):
    entries: list[Entry] = Field(min_length=1)


def configs_dir() -> Path:
    """configs/ of the repository this package runs from, else of the working directory."""
    for base in (ROOT, Path.cwd()):
        if (base / "configs" / "paper.yaml").is_file():
            return base / "configs"
    raise ConceptspaceError("configs/paper.yaml not found: run from a clone of the repository")


def load_catalogue(path: str | Path | None = None) -> list[Entry]:
    """The checked entries of the catalogue (default: configs/paper.yaml); every spec must exist."""
    path = Path(path) if path is not None else configs_dir() / "paper.yaml"
    try:
        cat = Catalogue.model_validate(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ConceptspaceError(f"{path}: {exc}") from exc
    names = [e.name for e in cat.entries]
    if len(set(names)) != len(names):
        raise ConceptspaceError(f"{path}: entry names repeat")
    for e in cat.entries:
        for s in e.specs:
            if not (path.parent / s).is_file():
                raise ConceptspaceError(f"{path}: entry {e.name}: {s} not found under {path.parent}")
    # specs resolved against the catalogue's folder, so a catalogue of one's own can sit anywhere
    return [e.model_copy(update={"specs": [str((path.parent / s).resolve()) for s in e.specs]})
            for e in cat.entries]


def find_entry(entries: list[Entry], name: str) -> Entry:
    for e in entries:
        if e.name == name:
            return e
    raise ConceptspaceError(f"no entry {name!r}; entries: {', '.join(e.name for e in entries)}")


def command(e: Entry) -> str:
    return f"conceptspace paper run {e.name} {e.args}".strip()


def _minutes(m: float | None) -> str:
    if m is None:
        return "not measured"
    return f"{m:.0f} min" if m >= 1 else f"{m * 60:.0f} s"


def local_minutes(out_root: str | Path, name: str) -> float | None:
    """Wall minutes of this machine's `paper run` of an entry, when its last piece finished."""
    path = Path(out_root) / name / RECORD
    if not path.is_file():
        return None
    pieces = read_json(path).get("pieces", [])
    if not pieces or not pieces[-1].get("finished"):
        return None
    return sum(p["seconds"] for p in pieces) / 60


def catalogue_table(entries: list[Entry], out_root: str | Path = "runs/paper") -> str:
    """A Markdown table: paper result, command, time on 2 cores, our status (and this machine's time if any)."""
    rows = ["| entry | paper result | command | time on 2 cores | status |", "|---|---|---|---|---|"]
    for e in entries:
        here = local_minutes(out_root, e.name)
        t = f"needs {e.requires}" if e.requires else _minutes(e.minutes_2cores)
        t += f" (here: {_minutes(here)})" if here is not None else ""
        rows.append(f"| {e.name} | {e.paper} | `{command(e)}` | {t} | {e.status} |")
    measured = [e.minutes_2cores for e in entries if e.minutes_2cores is not None and not e.requires]
    rows.append("")
    rows.append(f"{len(entries)} entries; measured CPU entries total {sum(measured) / 60:.1f} hours on 2 cores "
                f"({len(measured)} of {sum(not e.requires for e in entries)} measured).")
    return "\n".join(rows)


def _commit() -> str | None:
    """The repository's commit, with "-dirty" when the working tree has changes (None outside a git clone)."""
    try:
        head, status = (subprocess.run(["git", "-C", str(ROOT), *cmd], capture_output=True, text=True, timeout=10,
                                       check=False) for cmd in (["rev-parse", "HEAD"], ["status", "--porcelain"]))
    except OSError:
        return None
    if head.returncode != 0 or not head.stdout.strip():
        return None
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def entry_dir(out_root: str | Path, e: Entry, create: bool = False) -> Path:
    """`<out_root>/<name>`; a directory there that a `paper run` did not make is refused, never written into."""
    d = Path(out_root) / e.name
    if d.exists() and any(d.iterdir()) and not (d / RECORD).is_file():
        raise ConceptspaceError(f"{d} exists and was not made by `conceptspace paper run`; choose another --out")
    if create:
        d.mkdir(parents=True, exist_ok=True)
    return d


def run_entry(e: Entry, out_root: str | Path = "runs/paper", executor: str | None = None,
              workers: int | None = None, overrides: list[str] | None = None) -> Path:
    """Run an entry into `<out_root>/<name>` (resuming what is there) and record the piece's wall time."""
    if overrides and e.kind != "run":
        raise ConceptspaceError(f"{e.name}: --set applies to run entries; a sweep's settings live in its spec")
    d = entry_dir(out_root, e, create=True)
    record = read_json(d / RECORD) if (d / RECORD).is_file() else {"entry": e.name, "pieces": []}
    piece = {"started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "commit": _commit(),
             "seconds": 0.0, "finished": False}
    record["pieces"].append(piece)
    write_json(d / RECORD, record)
    t0 = time.time()
    try:
        ok = _run(e, d, executor, workers, overrides or [])
    finally:
        piece["seconds"] = round(time.time() - t0, 1)
        write_json(d / RECORD, record)
    piece["finished"] = ok
    write_json(d / RECORD, record)
    if not ok:
        raise ConceptspaceError(f"{e.name}: some runs failed (see above); rerun the same command to resume them")
    return d


def _run(e: Entry, d: Path, executor: str | None, workers: int | None, overrides: list[str]) -> bool:
    if e.kind == "signal":
        signal_entry(Path(e.specs[0]), d)
        return True
    if e.kind == "sweep":
        from .sweeps import run_sweep

        ok = True
        for spec in e.specs:
            results = run_sweep(spec, d / Path(spec).stem, executor, workers)
            ok &= all(r["status"] == "done" for r in results)
        return ok
    from .pipeline import run_pipeline

    for seed in e.seeds:
        cfg = load_config(e.specs[0], [*overrides, f"seed={seed}"])
        run_dir = d / f"seed={seed}"
        run_pipeline(run_dir, cfg, resume=RunDir(run_dir).config.is_file())
    return True


def report_entry(e: Entry, out_root: str | Path = "runs/paper") -> list[str]:
    """Draw an entry's figures from its results under `<out_root>/<name>` and return its reading."""
    d = entry_dir(out_root, e)
    if not (d / RECORD).is_file():
        raise ConceptspaceError(f"{d}: no results yet; run `conceptspace paper run {e.name}` first")
    lines = [f"{e.name}: {e.paper}", f"paper: {e.finding}", f"setting: {e.setting}"]
    if e.kind == "signal":
        lines += [ln for ln in (d / "signal_table.md").read_text().splitlines() if ln]
        lines.append(f"figures: {d / 'signal.png'}, {d / 'strong_color' / 'preview.png'}, "
                     f"{d / 'weak_color' / 'preview.png'}")
    elif e.kind == "sweep":
        lines += _report_sweep(e, d)
    else:
        lines += _report_runs(e, d)
    here = local_minutes(out_root, e.name)
    if here is not None:
        lines.append(f"wall time of this machine's run: {_minutes(here)}")
    write_text(d / "reading.txt", "\n".join(lines) + "\n")
    return lines


def _report_sweep(e: Entry, d: Path) -> list[str]:
    from .analysis.sweep import analyze_sweep, sweep_reading
    from .report.sweep_page import sweep_report

    dirs = [d / Path(s).stem for s in e.specs]
    have = [x for x in dirs if (x / "sweep.json").is_file()]
    if not have:
        raise ConceptspaceError(f"{d}: no sweep results yet; run `conceptspace paper run {e.name}`")
    out = analyze_sweep(have[0], pool=have[1:], out=d / "pooled" if len(have) > 1 else None)
    page = sweep_report(out)
    lines = sweep_reading(read_json(out / "sweep_metrics.json"))
    if e.toy_model:
        from .analysis.sweep import collect_runs
        from .analysis.toy import fit_masking_runs
        from .report.sweep_figures import plot_toy

        measured, fits = fit_masking_runs(collect_runs(have[0]))
        (d / "toy").mkdir(exist_ok=True)
        write_json(d / "toy" / "toy_fit.json", fits)
        plot_toy(list(np.linspace(1, 5, 9)), measured or None, fits).savefig(d / "toy" / "toy_model.png", dpi=110)
        lines += [f"toy model, masking {k}: fitted a = {f['a']:.2f} (time scale {f['time_scale']:.2f}, mean squared "
                  f"error {f['mse']:.4f}, {f['n_runs']} seeds)" for k, f in fits.items()]
    lines.append(f"report: {page}; figures: {out / 'figures'}")
    return lines


def _report_runs(e: Entry, d: Path) -> list[str]:
    from .report.run_page import seeds_figure, summary_table, write_report

    done = [d / f"seed={s}" for s in e.seeds if RunDir(d / f"seed={s}").metrics.is_file()]
    if not done:
        raise ConceptspaceError(f"{d}: no finished run yet; run `conceptspace paper run {e.name}`")
    for run_dir in done:
        write_report(run_dir, load_config(RunDir(run_dir).config, saved_run=True))
    lines = summary_table([str(x) for x in done]).splitlines()
    if any(RunDir(x).elicitation.is_file() for x in done):
        seeds_figure([str(x) for x in done]).savefig(d / "elicitation_seeds.png", dpi=110)
        lines.append(f"figure: {d / 'elicitation_seeds.png'}")
    lines.append("reports: " + ", ".join(str(RunDir(x).report) for x in done))
    return lines


# The concept-signal entry: σ over a grid of separations at our and the paper's image size, and example images.
SIGNAL_COLOR = (0.1, 0.2, 0.3, 0.4, 0.6, 0.8)
SIGNAL_SIZE = (0.2, 0.4)
EXAMPLES = {"strong_color": (0.8, 0.2), "weak_color": (0.1, 0.4)}  # (Δcolor, Δsize)


def signal_entry(config: Path, out: Path) -> Path:
    """signal_table.{json,md}, signal.png (σ vs Δcolor per Δsize, 16 and 32 px) and the two example previews."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .data.preview import write_preview
    from .data.signal import space_signal

    table = []
    for px in (16, 32):
        for ds in SIGNAL_SIZE:
            for dc in SIGNAL_COLOR:
                cfg = load_config(config, [f"data.image_size={px}", f"data.concepts.color.sep={dc}",
                                           f"data.concepts.size.sep={ds}"])
                sig = space_signal(cfg.data)
                table.append({"image_size": px, "color_sep": dc, "size_sep": ds, "sigma_color": sig["color"],
                              "sigma_size": sig["size"]})
    write_json(out / "signal_table.json", table)
    md = ["| px | Δcolor | Δsize | σ_color | σ_size | larger |", "|---|---|---|---|---|---|"]
    md += [f"| {r['image_size']} | {r['color_sep']} | {r['size_sep']} | {r['sigma_color']:.5f} | "
           f"{r['sigma_size']:.5f} | {'color' if r['sigma_color'] > r['sigma_size'] else 'size'} |" for r in table]
    write_text(out / "signal_table.md", "\n".join(md) + "\n")
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for j, ds in enumerate(SIGNAL_SIZE):
        for px, ls in ((16, "-"), (32, "--")):
            rows = [r for r in table if r["size_sep"] == ds and r["image_size"] == px]
            ax.plot([r["color_sep"] for r in rows], [r["sigma_color"] for r in rows], ls, marker="o", ms=3,
                    color=f"C{j}", label=f"σ_color, Δsize {ds}, {px} px")
            ax.axhline(rows[0]["sigma_size"], color=f"C{j}", ls=ls, lw=0.8, alpha=0.6)
    ax.set_xlabel("color separation Δcolor")
    ax.set_ylabel("concept signal σ (mean squared pixel difference)")
    ax.set_yscale("log")
    ax.set_title("σ_color vs Δcolor (thin lines: σ_size)", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "signal.png", dpi=110)
    plt.close(fig)
    for name, (dc, ds) in EXAMPLES.items():
        cfg = load_config(config, [f"data.concepts.color.sep={dc}", f"data.concepts.size.sep={ds}"])
        write_preview(cfg, out / name, overwrite=True,  # our own directory (checked by entry_dir)
                      title=f"Δcolor {dc}, Δsize {ds}: {name.replace('_', ' ')} signal")
    return out
