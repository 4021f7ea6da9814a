"""The paper's results as a catalogue: one entry per figure or table, each with the command that reproduces it at
CPU scale, its measured wall time on 2 cores and the status of our last result (`configs/paper.yaml`).

`load_catalogue()` reads and checks the catalogue; `run_entry` runs an entry into `<out>/<name>` (sweeps and runs
resume where they stopped; the wall time of every piece is recorded in `paper_run.json`); `report_entry` draws
its figures and returns its reading as sentences; `catalogue_table` is what `conceptspace paper list` prints.
"""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
import time
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from .config import StrictModel, load_config
from .errors import ConceptspaceError
from .rundir import RunDir, locked, read_json, write_json, write_text

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
        if len({Path(s).stem for s in v}) != len(v):
            raise ValueError("specs need different file names (each sweep gets a folder named after it)")
        return v

    @model_validator(mode="after")
    def _fits_kind(self) -> "Entry":
        if self.kind != "sweep" and len(self.specs) != 1:
            raise ValueError(f"a {self.kind} entry has one config")
        if self.toy_model and self.kind != "sweep":
            raise ValueError("toy_model applies to sweep entries")
        if self.kind != "run" and self.seeds != [0]:
            raise ValueError("seeds apply to run entries (a sweep's seeds are in its spec)")
        return self


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


def format_minutes(m: float | None) -> str:
    """'3 s', '47 min', '2 h 08 min'; 'not measured' for None."""
    if m is None:
        return "not measured"
    if m < 1:
        return f"{m * 60:.0f} s"
    return f"{m:.0f} min" if round(m) < 60 else f"{int(round(m) // 60)} h {int(round(m) % 60):02d} min"


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
        t = f"needs {e.requires}" if e.requires else format_minutes(e.minutes_2cores)
        t += f" (here: {format_minutes(here)})" if here is not None else ""
        rows.append(f"| {e.name} | {e.paper} | `{command(e)}` | {t} | {e.status} |")
    measured = [e.minutes_2cores for e in entries if e.minutes_2cores is not None and not e.requires]
    rows.append("")
    rows.append(f"{len(entries)} entries; measured CPU entries total {sum(measured) / 60:.1f} hours on 2 cores "
                f"({len(measured)} of {sum(not e.requires for e in entries)} measured).")
    return "\n".join(rows)


def _commit() -> str | None:
    """The commit of the clone this package runs from, with "-dirty" when its working tree has changes; None when
    the package is not a clone's own (an installed copy inside some other repository says nothing about it)."""
    def git(*cmd: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(ROOT), *cmd], capture_output=True, text=True, timeout=10,
                                 check=False)
        except OSError:
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() != ROOT:
        return None
    head = git("rev-parse", "HEAD")
    return head and head + ("-dirty" if git("status", "--porcelain") else "")


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
    """Run an entry into `<out_root>/<name>` (resuming what is there) and record the piece's wall time, commit and
    settings in paper_run.json. One `paper run` per entry at a time (a lock on its folder)."""
    overrides = overrides or []
    if overrides and e.kind != "run":
        raise ConceptspaceError(f"{e.name}: --set applies to run entries; a sweep's settings live in its spec")
    if any(o.split("=", 1)[0].strip() == "seed" for o in overrides):
        raise ConceptspaceError(f"{e.name}: the entry's seeds are {e.seeds}; --set seed would be replaced")
    d = entry_dir(out_root, e, create=True)
    with locked(d):
        record = read_json(d / RECORD) if (d / RECORD).is_file() else {"entry": e.name, "pieces": []}
        piece = {"started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "commit": _commit(),
                 "cores": os.cpu_count(), "executor": executor, "workers": workers, "overrides": overrides,
                 "seconds": 0.0, "finished": False}
        record["pieces"].append(piece)
        write_json(d / RECORD, record)
        t0 = time.time()
        try:
            failed = _run(e, d, executor, workers, overrides)
        finally:
            piece["seconds"] = round(time.time() - t0, 1)
            write_json(d / RECORD, record)
        piece["finished"] = not failed
        write_json(d / RECORD, record)
    if failed:
        raise ConceptspaceError(f"{e.name}: {len(failed)} run(s) did not finish:\n" + "\n".join(
            f"  {r['run']}: {r['status']}: {r.get('error') or ''}" for r in failed)
            + "\nrerun the same command to resume killed or failed runs; a point locked by another process or made "
              "under another spec needs that process to end, or another --out")
    return d


def _run(e: Entry, d: Path, executor: str | None, workers: int | None, overrides: list[str]) -> list[dict]:
    """Run the entry; returns the sweep points that did not finish (empty when everything did)."""
    if e.kind == "signal":
        signal_entry(Path(e.specs[0]), d)
        return []
    if e.kind == "sweep":
        from .sweeps import run_sweep

        failed = []
        for spec in e.specs:
            failed += [r for r in run_sweep(spec, d / Path(spec).stem, executor, workers) if r["status"] != "done"]
        return failed
    from .pipeline import run_pipeline

    for seed in e.seeds:
        cfg = load_config(e.specs[0], [*overrides, f"seed={seed}"])
        run_dir = d / f"seed={seed}"
        run_pipeline(run_dir, cfg, resume=RunDir(run_dir).config.is_file())
    return []


def report_entry(e: Entry, out_root: str | Path = "runs/paper", hint: str = "") -> list[str]:
    """Draw an entry's figures from its results under `<out_root>/<name>` and return its reading (what is missing
    is said first: a partial result is never reported as the whole). `hint`: the options to repeat in advice."""
    d = entry_dir(out_root, e)
    again = f"conceptspace paper run {e.name}{hint}"
    if not (d / RECORD).is_file():
        raise ConceptspaceError(f"{d}: no results yet; run `{again}` first")
    lines = [f"{e.name}: {e.paper}", f"paper: {e.finding}", f"setting: {e.setting}"]
    pieces = read_json(d / RECORD).get("pieces", [])
    if not pieces or not pieces[-1].get("finished"):
        lines.insert(0, f"PARTIAL: the last `paper run` of this entry did not finish; `{again}` resumes it")
    if e.kind == "signal":
        lines += [ln for ln in (d / "signal_table.md").read_text().splitlines() if ln]
        lines.append(f"figures: {d / 'signal.png'}, {d / 'strong_color' / 'preview.png'}, "
                     f"{d / 'weak_color' / 'preview.png'}")
    elif e.kind == "sweep":
        lines += _report_sweep(e, d, again)
    else:
        lines += _report_runs(e, d, again)
    here = local_minutes(out_root, e.name)
    if here is not None:
        lines.append(f"wall time of this machine's run: {format_minutes(here)}")
    write_text(d / "reading.txt", "\n".join(lines) + "\n")
    return lines


def _report_sweep(e: Entry, d: Path, again: str) -> list[str]:
    from .analysis.sweep import analyze_sweep, pooled_runs, sweep_reading
    from .report.sweep_figures import write_toy_model
    from .report.sweep_page import sweep_report

    dirs = [d / Path(s).stem for s in e.specs]
    points = {x: [p["name"] for p in read_json(x / "sweep.json")["points"]] for x in dirs if (x / "sweep.json").is_file()}
    finished = {x: sum(RunDir(x / n).metrics.is_file() for n in names) for x, names in points.items()}
    have = [x for x in dirs if finished.get(x)]  # sweeps with at least one finished run
    if not have:
        raise ConceptspaceError(f"{d}: no finished sweep run yet; run `{again}`")
    lines = []
    done, total = sum(finished.values()), sum(len(v) for v in points.values())
    missing = [x.name for x in dirs if x not in points]
    if missing or done < total:
        lines.append(f"PARTIAL: {done} of {total} points finished" + (
            f", sweeps not started: {', '.join(missing)}" if missing else "") + f"; `{again}` resumes")
    out = analyze_sweep(have[0], pool=have[1:], out=d / "pooled" if len(have) > 1 else None)
    page = sweep_report(out)
    lines += sweep_reading(read_json(out / "sweep_metrics.json"))
    if e.toy_model:
        fits = write_toy_model(d / "toy", list(np.linspace(1, 5, 9)), pooled_runs(have))
        lines += [f"toy model, masking {k}: fitted a = {f['a']:.2f} (time scale {f['time_scale']:.2f}, mean squared "
                  f"error {f['mse']:.4f}, {f['n_runs']} seeds)" for k, f in fits.items()]
    lines.append(f"report: {page}; figures: {out / 'figures'}")
    return lines


def _report_runs(e: Entry, d: Path, again: str) -> list[str]:
    import matplotlib.pyplot as plt

    from .report.run_page import seeds_figure, summary_table, write_report

    done = [d / f"seed={s}" for s in e.seeds if RunDir(d / f"seed={s}").metrics.is_file()]
    if not done:
        raise ConceptspaceError(f"{d}: no finished run yet; run `{again}`")
    lines = []
    if len(done) < len(e.seeds):
        lines.append(f"PARTIAL: {len(done)} of {len(e.seeds)} seeds finished; `{again}` resumes")
    for run_dir in done:
        write_report(run_dir, load_config(RunDir(run_dir).config, saved_run=True))
    lines += summary_table([str(x) for x in done]).splitlines()
    if any(RunDir(x).elicitation.is_file() for x in done):
        fig = seeds_figure([str(x) for x in done])
        fig.savefig(d / "elicitation_seeds.png", dpi=110)
        plt.close(fig)
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
