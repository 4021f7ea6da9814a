"""End to end on the micro config: train -> evaluate -> analyse -> figures -> report."""

import json
from pathlib import Path

import numpy as np
import pytest

from conceptspace.cli import main
from conceptspace.rundir import load_npz as load_eval

ROOT = Path(__file__).resolve().parents[1]
MICRO = str(ROOT / "configs" / "micro.yaml")


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "micro"
    assert main(["run", MICRO, "--run-dir", str(run), "--set", "probe.kind=analytic"]) == 0
    return run


def test_every_artifact_exists(micro_run):
    for name in ["config.yaml", "run.json", "metrics.jsonl", "metrics.json", "report.html",
                 "eval/default/concept_probs.npz", "figures/trajectories.png", "figures/accuracy.png",
                 "figures/losses.png", "figures/samples.png", "figures/trajectory.gif"]:
        assert (micro_run / name).is_file(), name


def test_metrics_have_required_keys(micro_run):
    m = json.loads((micro_run / "metrics.json").read_text())
    assert set(m["classes"]) == {"00", "01", "10", "11"}
    for name, c in m["classes"].items():
        assert c["held_out"] == (name == "11")
        assert set(c["learning_step"]) == {"color", "size"}
        assert all(v is None or isinstance(v, int) for v in c["learning_step"].values())
    assert set(m["turn"]) == {"11"}
    assert {"step", "angle_deg", "memorised_toward"} <= set(m["turn"]["11"])
    assert "training_saturation_step" in m


def test_eval_arrays_shape(micro_run):
    a = load_eval(micro_run / "eval" / "default" / "concept_probs.npz")
    k = len(a["steps"])
    assert a["probs"].shape == (k, 4, 32, 2, 2) and a["preds"].shape == (k, 4, 32, 2)
    assert a["samples"].dtype == np.uint8 and list(a["classes"]) == ["00", "01", "10", "11"]


def test_report_is_self_contained(micro_run):
    page = (micro_run / "report.html").read_text()
    assert "data:image/png;base64," in page and "data:image/gif;base64," in page
    assert "http://" not in page and "https://" not in page
    assert "Held-out class 11" in page


def test_evaluate_catches_up_and_refuses_other_settings(micro_run, capsys):
    before = load_eval(micro_run / "eval" / "default" / "concept_probs.npz")
    assert main(["evaluate", str(micro_run), "--set", "probe.kind=analytic"]) == 0  # nothing new: same arrays
    after = load_eval(micro_run / "eval" / "default" / "concept_probs.npz")
    assert np.array_equal(before["probs"], after["probs"])
    assert main(["evaluate", str(micro_run), "--set", "probe.kind=analytic", "--set", "sampler.n_steps=5"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main(["evaluate", str(micro_run), "--set", "probe.kind=analytic", "--set", "sampler.n_steps=5",
                 "--tag", "fast"]) == 0
    assert (micro_run / "eval" / "fast" / "concept_probs.npz").is_file()
    # another evaluation keeps its own numbers: the default one's metrics.json is untouched
    assert (micro_run / "eval" / "fast" / "metrics.json").is_file()
    assert main(["report", str(micro_run), "--tag", "fast", "--set", "probe.kind=analytic",
                 "--set", "sampler.n_steps=5"]) == 0
    assert (micro_run / "eval" / "fast" / "report.html").is_file()
    test_micro_run_metrics_are_unchanged(micro_run)


def test_evaluate_bad_directories(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text(Path(MICRO).read_text())
    (run / "run.json").write_text('{"status": "running"}')
    assert main(["evaluate", str(run)]) == 2
    assert "no checkpoints yet" in capsys.readouterr().err


def test_summary_table_and_seed_figure(micro_run, capsys, tmp_path):
    assert main(["summary", str(micro_run), str(micro_run), "--figure", str(tmp_path / "f.png")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| run | held-out") and out[2].startswith(f"| {micro_run.name} | 11 |")
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_run_object_reads_a_run_and_samples_as_its_evaluation_did(micro_run):
    from conceptspace import Run

    run = Run(micro_run)
    assert run.checkpoints == [int(s) for s in load_eval(micro_run / "eval" / "default" / "concept_probs.npz")["steps"]]
    assert run.space.class_names == ["00", "01", "10", "11"] and run.metrics["classes"]
    t = run.trajectories()
    assert t["coords"].shape == (len(run.checkpoints), 4, 2) and t["classes"] == run.space.class_names
    # The run's own sampler settings and evaluation seed: the same images the evaluation stored.
    n = run.config.eval.n_samples
    images = run.sample(run.space.class_names, n=n)
    stored = load_eval(micro_run / "eval" / "default" / "concept_probs.npz")["samples"][-1]  # [P, n_show, 3, H, W]
    ours = (images.reshape(4, n, *images.shape[1:])[:, :stored.shape[1]] * 255).round().astype(np.uint8)
    assert np.array_equal(ours, stored)
    with pytest.raises(Exception, match="no checkpoint at step"):
        run.model(step=123456)
    with pytest.raises(Exception, match="unknown elicitation"):
        run.sample(["11"], n=2, elicitation="telepathy")


def _close(a, b, path="metrics"):
    """Equal JSON trees, floats to 1e-6 (last bits may differ between processors), everything else exactly."""
    if isinstance(a, dict):
        assert set(a) == set(b), f"{path}: keys {sorted(set(a) ^ set(b))}"
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9), path
    else:
        assert a == b, path


def test_micro_run_metrics_are_unchanged(micro_run):
    """The whole pipeline on the micro config gives the reference metrics (a refactor must not change results;
    a deliberate change of a reading regenerates tests/golden/micro_analytic_metrics.json and says why)."""
    golden = json.loads((ROOT / "tests" / "golden" / "micro_analytic_metrics.json").read_text())
    _close(golden, json.loads((micro_run / "metrics.json").read_text()))


def test_report_draws_and_analyze_recomputes(micro_run):
    path = micro_run / "metrics.json"
    m = json.loads(path.read_text())
    m["drawing_step"], keep = -1, m["drawing_step"]
    path.write_text(json.dumps(m))
    assert main(["report", str(micro_run)]) == 0
    assert json.loads(path.read_text())["drawing_step"] == -1  # report drew from the numbers, it did not redo them
    assert main(["analyze", str(micro_run)]) == 0
    assert json.loads(path.read_text())["drawing_step"] == keep
    test_micro_run_metrics_are_unchanged(micro_run)


def test_archive_keeps_the_readings_without_checkpoints(micro_run, tmp_path, capsys):
    import shutil

    from conceptspace.analysis.sweep import collect_runs
    from conceptspace.rundir import write_json

    # a sweep of two points: one finished, one killed (its readings are partial: left out)
    sweep = tmp_path / "sweep"
    for name, status in (("seed=0", "done"), ("seed=1", "failed")):
        shutil.copytree(micro_run, sweep / name)
        write_json(sweep / name / "sweep_status.json", {"run": name, "status": status})
    write_json(sweep / "sweep.json", {"spec": "x.yaml", "points": [{"name": "seed=0", "overrides": {"seed": 0}},
                                                                   {"name": "seed=1", "overrides": {"seed": 1}}]})
    dest = tmp_path / "archive"
    assert main(["archive", str(sweep), str(dest)]) == 0
    assert "archived 1 finished run(s)" in capsys.readouterr().out
    assert sorted(p.name for p in dest.iterdir()) == ["seed=0", "sweep.json"]
    kept = {str(p.relative_to(dest / "seed=0")) for p in (dest / "seed=0").rglob("*") if p.is_file()}
    assert not any(k.endswith(".safetensors") or k.startswith(("checkpoints", "figures")) or k == "report.html"
                   for k in kept)
    assert {"config.yaml", "run.json", "metrics.json", "metrics.jsonl", "eval/default/concept_probs.npz"} <= kept
    full, small = load_eval(micro_run / "eval/default/concept_probs.npz"), load_eval(
        dest / "seed=0/eval/default/concept_probs.npz")
    assert np.array_equal(small["samples"][0], full["samples"][-1]) and small["samples"].shape[0] == 1
    assert small["samples_steps"].tolist() == full["steps"][-1:].tolist()
    assert np.array_equal(small["probs"], full["probs"])
    # a sweep's analysis reads the archive as it reads the runs
    (orig,), (arch,) = collect_runs(sweep)[:1], collect_runs(dest)
    assert orig["trajectories"] == arch["trajectories"] and orig["classes"] == arch["classes"]
    # never into a folder that holds something
    assert main(["archive", str(sweep), str(dest)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_new_checkpoints_are_not_read_by_another_probe(tmp_path):
    """A caught-up evaluation whose probe changed (retrained on another machine, a new probe version) would mix
    two probes' readings in one file; it is refused, and a file with nothing new to read is left alone."""
    from conceptspace.errors import ConceptspaceError
    from conceptspace.readout.evaluate import over_new_checkpoints

    path = tmp_path / "concept_probs.npz"
    old = {"steps": np.array([10]), "probs": np.zeros((1, 2)), "probe_checksum": np.array("aaaa")}
    read = lambda: ()  # noqa: E731
    per_checkpoint = lambda: {"probs": np.ones((1, 2))}  # noqa: E731
    both = [(10, read), (20, read)]
    with pytest.raises(ConceptspaceError, match="another probe"):
        over_new_checkpoints(tmp_path, path, dict(old), per_checkpoint, {"probe_checksum": np.array("bbbb")},
                             "evaluate", False, checkpoints=both)
    assert not path.exists()
    same = over_new_checkpoints(tmp_path, path, dict(old), per_checkpoint, {"probe_checksum": np.array("aaaa")},
                                "evaluate", False, checkpoints=both)
    assert same["steps"].tolist() == [10, 20] and same["probs"][:, 0].tolist() == [0.0, 1.0]
    kept = over_new_checkpoints(tmp_path, path, dict(old), per_checkpoint, {"probe_checksum": np.array("bbbb")},
                                "evaluate", False, checkpoints=both[:1])
    assert kept["steps"].tolist() == [10] and str(kept["probe_checksum"]) == "aaaa"
