"""The paper catalogue: the shipped entries are valid, and list / run / report work on micro entries."""

import json
from pathlib import Path

import pytest
import yaml

from conceptspace.cli import main
from conceptspace.errors import ConceptspaceError
from conceptspace.paper import catalogue_table, find_entry, format_minutes, load_catalogue, report_entry
from conceptspace.rundir import read_json

ROOT = Path(__file__).resolve().parents[1]

MICRO = {"probe.kind": "analytic", "train.steps": 6, "train.n_checkpoints": 2, "train.first_checkpoint": 3,
         "elicit.methods": ["naive"], "eval.n_samples": 4, "sampler.n_steps": 3}


def test_shipped_catalogue_is_valid_and_covers_the_paper():
    entries = load_catalogue()
    names = {e.name for e in entries}
    # the results the catalogue must hold (patching and CFG in one entry)
    assert {"concept-signal", "speed-vs-color", "speed-vs-size", "learning-order", "memorisation-turn",
            "hidden-capability", "patching-and-cfg", "bg-2x2x2", "bg-plateau", "underspecification",
            "fashion-mnist", "celeba"} <= names
    table = catalogue_table(entries, out_root="/nonexistent")
    assert all(f"| {n} |" in table for n in names) and "hours on 2 cores" in table
    assert "needs CelebA" in table  # an entry beyond this machine says what it needs instead of a time


def write_catalogue(tmp_path, entries):
    (tmp_path / "cat.yaml").write_text(yaml.safe_dump({"entries": entries}))
    return tmp_path / "cat.yaml"


def entry(name, kind, specs, **kw):
    return {"name": name, "paper": "p", "finding": "f", "kind": kind, "specs": specs, "setting": "s",
            "status": "not run", **kw}


def test_bad_catalogues_fail_with_one_line(tmp_path):
    (tmp_path / "micro.yaml").write_text((ROOT / "configs" / "micro.yaml").read_text())
    for bad in ([entry("a", "run", ["missing.yaml"])],
                [entry("a", "run", ["micro.yaml"]), entry("a", "run", ["micro.yaml"])],
                [entry("a", "run", ["micro.yaml"], status="done")],
                [entry("A b", "run", ["micro.yaml"])],
                [entry("a", "run", ["micro.yaml", "micro.yaml"])],
                [entry("a", "run", ["micro.yaml"], toy_model=True)],
                [entry("a", "sweep", ["micro.yaml"], seeds=[1, 2])]):
        with pytest.raises(ConceptspaceError):
            load_catalogue(write_catalogue(tmp_path, bad))
    entries = load_catalogue(write_catalogue(tmp_path, [entry("a", "run", ["micro.yaml"])]))
    with pytest.raises(ConceptspaceError, match="entries: a"):
        find_entry(entries, "b")


def test_run_and_report_micro_entries(tmp_path):
    base = yaml.safe_load((ROOT / "configs" / "micro.yaml").read_text())
    base["train"].update(steps=6, n_checkpoints=2, first_checkpoint=3)
    base.update(probe={"kind": "analytic"}, elicit={"methods": ["naive"]}, eval={"n_samples": 4})
    base["sampler"]["n_steps"] = 3
    (tmp_path / "micro.yaml").write_text(yaml.safe_dump(base))
    for i, sep in enumerate((0.3, 0.6)):  # two sweep specs, reported pooled
        (tmp_path / f"s{i}.yaml").write_text(yaml.safe_dump(
            {"base": str(ROOT / "configs" / "micro.yaml"), "set": MICRO, "grid": {"data.concepts.color.sep": [sep]}}))
    cat = write_catalogue(tmp_path, [entry("sig", "signal", ["micro.yaml"]), entry("one", "run", ["micro.yaml"]),
                                     entry("sw", "sweep", ["s0.yaml", "s1.yaml"])])
    out = tmp_path / "out"
    with pytest.raises(ConceptspaceError, match="no results yet"):
        report_entry(find_entry(load_catalogue(cat), "one"), out)
    for name in ("sig", "one", "sw"):
        assert main(["paper", "run", name, "--catalogue", str(cat), "--out", str(out)]) == 0
        record = read_json(out / name / "paper_run.json")
        assert len(record["pieces"]) == 1 and record["pieces"][0]["finished"] and record["pieces"][0]["seconds"] > 0
        assert main(["paper", "report", name, "--catalogue", str(cat), "--out", str(out)]) == 0
        assert (out / name / "reading.txt").read_text().startswith(f"{name}: p")
    assert (out / "sig" / "signal.png").is_file() and len(read_json(out / "sig" / "signal_table.json")) == 24
    assert (out / "one" / "seed=0" / "report.html").is_file()
    pooled = read_json(out / "sw" / "pooled" / "sweep_metrics.json")
    assert pooled["n_runs"] == 2 and (out / "sw" / "pooled" / "sweep_report.html").is_file()
    # a second run resumes (nothing to do) and adds a piece; list shows this machine's time
    assert main(["paper", "run", "one", "--catalogue", str(cat), "--out", str(out)]) == 0
    assert len(read_json(out / "one" / "paper_run.json")["pieces"]) == 2
    table = catalogue_table(load_catalogue(cat), out)
    assert "(here: " in table
    # a run that did not finish is reported as partial, never as the whole
    next(p for p in (out / "sw" / "s1").iterdir() if p.is_dir()).joinpath("metrics.json").unlink()
    lines = report_entry(find_entry(load_catalogue(cat), "sw"), out)
    assert any(ln.startswith("PARTIAL: 1 of 2 points finished") for ln in lines)
    assert main(["paper", "run", "one", "--catalogue", str(cat), "--out", str(out), "--set", "seed=4"]) == 2
    # --set is for run entries; a folder the tool did not make is never written into
    assert main(["paper", "run", "sw", "--catalogue", str(cat), "--out", str(out), "--set", "seed=3"]) == 2
    (tmp_path / "mine" / "one").mkdir(parents=True)
    (tmp_path / "mine" / "one" / "notes.txt").write_text("mine")
    assert main(["paper", "run", "one", "--catalogue", str(cat), "--out", str(tmp_path / "mine")]) == 2
    assert sorted(p.name for p in (tmp_path / "mine" / "one").iterdir()) == ["notes.txt"]
    listed = json.loads(_capture(["paper", "list", "--json", "--catalogue", str(cat)]))
    assert [e["name"] for e in listed] == ["sig", "one", "sw"] and listed[1]["command"] == "conceptspace paper run one"


def _capture(argv):
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    return buf.getvalue()


def test_readme_table_agrees_with_the_catalogue():
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- paper-table -->", 1)[1].strip().split("\n\n", 1)[0].splitlines()[2:]
    rows = {cells[1].strip(" `"): (cells[3].strip(), cells[4].strip()) for cells in (r.split("|") for r in block)}
    entries = load_catalogue()
    assert {n: st for n, (_, st) in rows.items()} == {e.name: e.status for e in entries}
    for e in entries:  # the time column starts with the catalogue's time, formatted as `paper list` prints it
        assert rows[e.name][0].startswith(f"needs {e.requires}" if e.requires else format_minutes(e.minutes_2cores))
