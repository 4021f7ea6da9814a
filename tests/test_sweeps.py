import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conceptspace.analysis.sweep import analyze_sweep, order_grid, speed_vs_signal
from conceptspace.analysis.sweep_stats import wilson
from conceptspace.cli import main
from conceptspace.report.sweep_page import sweep_report
from conceptspace.sweeps import SweepError, expand, load_spec, point_name, run_sweep

ROOT = Path(__file__).resolve().parents[1]


def write_spec(tmp_path, grid, zipped=None, extra=None):
    spec = {"base": str(ROOT / "configs" / "micro.yaml"), "grid": grid,
            "set": {"probe.kind": "analytic", "train.steps": 6, "train.n_checkpoints": 2,
                    "train.first_checkpoint": 3, "elicit.methods": ["naive"], "eval.n_samples": 4,
                    "sampler.n_steps": 3, **(extra or {})}}
    if zipped:
        spec["zip"] = zipped
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_grid_and_zip_expansion_and_names(tmp_path):
    path = write_spec(tmp_path, {"data.concepts.color.sep": [0.2, 0.4], "seed": [0, 1, 2]},
                      [{"data.concepts.size.sep": [0.2, 0.4], "train.lr": [0.001, 0.002]}])
    points = expand(load_spec(path), path)
    assert len(points) == 12
    assert points[0].name == "color_sep=0.2,seed=0,size_sep=0.2,train_lr=0.001"
    assert {p.config.data.concepts["color"].sep for p in points} == {0.2, 0.4}
    assert all(p.config.train.steps == 6 for p in points)
    assert point_name({"data.concepts.color.sep": 0.2, "seed": 1}) == "color_sep=0.2,seed=1"


def test_bad_specs(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: nope.yaml\ngrid: {seed: [0]}\n")
    with pytest.raises(SweepError, match="not found"):
        expand(load_spec(bad), bad)
    bad.write_text("grid: {seed: []}\n")
    with pytest.raises(SweepError, match="non-empty list"):
        expand(load_spec(bad), bad)
    bad.write_text("grids: {seed: [0]}\n")
    with pytest.raises(SweepError, match="needs a 'grid'"):
        load_spec(bad)
    bad.write_text("grid: {data.concepts.color.sep: [0.95]}\n")
    with pytest.raises(ValueError, match="color_sep=0.95.*leaves"):
        expand(load_spec(bad), bad)


@pytest.mark.parametrize("executor", ["local", "slurm-local", "dask"])
def test_executors_run_a_micro_sweep(tmp_path, executor):
    path = write_spec(tmp_path, {"seed": [0, 1]})
    results = run_sweep(path, tmp_path / "out", executor=executor, workers=2)
    assert [r["status"] for r in results] == ["done", "done"]
    for name in ("seed=0", "seed=1"):
        assert (tmp_path / "out" / name / "report.html").is_file()
    assert json.loads((tmp_path / "out" / "sweep_results.json").read_text())["executor"] == executor


def test_resume_skips_finished_reports_failures_and_respects_locks(tmp_path, capsys):
    path = write_spec(tmp_path, {"seed": [0, 1]})
    out = tmp_path / "out"
    run_sweep(path, out, executor="local", workers=1)
    finished = (out / "seed=0" / "report.html").stat().st_mtime_ns
    # A killed run: its status marker is gone, its checkpoints are still there.
    (out / "seed=1" / "sweep_status.json").unlink()
    results = run_sweep(path, out, executor="local", workers=1)
    assert results[0].get("skipped") and results[1]["status"] == "done" and not results[1].get("skipped")
    assert (out / "seed=0" / "report.html").stat().st_mtime_ns == finished
    # A failing point does not stop the other one.
    bad = write_spec(tmp_path, {"seed": [0, 1]}, extra={"train.batch_size": 100000})
    assert main(["sweep", str(bad), "--out", str(tmp_path / "bad"), "--workers", "2"]) == 1
    assert "batch_size" in capsys.readouterr().out
    assert main(["sweep", str(path), "--out", str(out), "--dry-run"]) == 0
    assert "done" in capsys.readouterr().out


def test_lock_prevents_double_run(tmp_path):
    import fcntl

    from conceptspace.sweeps import run_point

    run = tmp_path / "r"
    run.mkdir()
    with open(run / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert run_point(str(run), (ROOT / "configs" / "micro.yaml").read_text())["status"] == "locked"
    assert not (run / "config.yaml").exists()


def synthetic_runs():
    """Held-out color learned faster at larger separation; size constant."""
    runs = []
    for sep, t in [(0.1, None), (0.2, 3000), (0.4, 1500), (0.8, 500)]:
        for seed in range(2):
            runs.append({"name": f"c{sep},s{seed}", "sep": {"color": sep, "size": 0.4},
                         "signal": {"color": sep**2, "size": 0.05},
                         "steps": [100, 4000], "classes": {
                             "11": {"held_out": True, "learning_step": {"color": t, "size": 1000 + seed}},
                             "10": {"held_out": False, "learning_step": {"color": round(100 / sep), "size": 100}}}})
    return runs


def test_speed_vs_signal_on_synthetic_runs():
    m = speed_vs_signal(synthetic_runs(), ["color", "size"])
    assert m["color"]["spearman_of_means"] == pytest.approx(1.0)
    assert m["color"]["mean_speed"][0] == 0.0  # never learned = speed 0
    assert len(m["color"]["points"]) == 8
    assert m["size"]["spearman_of_means"] is None  # one separation only
    # Per run: the two never-learned runs are censored at 4,000, not dropped; the order is perfect.
    per_run = m["color"]["per_run"]
    assert per_run["n_runs"] == 8 and per_run["n_learned"] == 6 and per_run["concordance"] == pytest.approx(1.0)
    assert per_run["concordance_interval"] == [pytest.approx(1.0), pytest.approx(1.0)]
    assert per_run["kaplan_meier"]["0.1"] == {"n": 2, "steps": [], "learned_fraction": [], "horizon": 4000}
    assert per_run["kaplan_meier"]["0.8"]["learned_fraction"] == [1.0]
    assert per_run["learned_by_separation"]["0.1"]["learned"] == 0 and per_run["learned_by_separation"]["0.1"]["n"] == 2
    assert per_run["learned_by_separation"]["0.8"] == {"n": 2, "learned": 2, "interval": list(wilson(2, 2))}
    # Size has one separation and one signal: no relation to measure.
    assert m["size"]["per_run"]["concordance"] == pytest.approx(0.5) and m["size"]["per_run"]["spearman_runs"] is None
    # Training class 10 learns color faster at larger separation; it has size value 0, so no size speed.
    assert m["color"]["training"]["spearman_of_means"] == pytest.approx(1.0)
    assert m["size"]["training"]["mean_speed"] == [] and m["size"]["training"]["per_run"] == {}


def test_order_prediction_from_the_relative_signal():
    from conceptspace.analysis.sweep import order_prediction

    runs = []
    for i, (sc, ss, tc, ts) in enumerate([(0.1, 0.05, 500, 900), (0.01, 0.05, None, 700), (0.1, 0.05, 800, 600),
                                          (0.01, 0.05, None, None), (0.05, 0.05, 300, 400)]):
        runs.append({"signal": {"color": sc, "size": ss},
                     "classes": {"11": {"held_out": True, "learning_step": {"color": tc, "size": ts}}}})
    pred = order_prediction(runs, "color", "size")
    # scored: run 0 right, run 1 right (color never = censored after size), run 2 wrong; run 3 unknown (neither
    # learned), run 4 has equal signals (no prediction).
    assert (pred["n"], pred["n_scored"], pred["correct"], pred["unknown"]) == (5, 3, 2, 1)
    assert pred["accuracy"] == pytest.approx(2 / 3) and pred["interval"][0] < 2 / 3 < pred["interval"][1]


def test_order_grid_sign():
    runs = []
    for dc in (0.2, 0.8):
        for ds in (0.2, 0.4):
            tc = 3000 if dc == 0.2 else 500
            runs.append({"sep": {"color": dc, "size": ds}, "steps": [4000],
                         "classes": {"11": {"held_out": True, "learning_step": {"color": tc, "size": 1000}}}})
    xs, ys, grid = order_grid(runs)
    assert xs == [0.2, 0.8] and (grid[:, 0] < 0).all() and (grid[:, 1] > 0).all()
    from conceptspace.analysis.sweep import signal_ratio_grid

    for r in runs:  # σ_color = Δcolor², σ_size = Δsize / 4: equal at Δcolor 0.2 / Δsize 0.16 and 0.8 / 2.56
        r["signal"] = {"color": r["sep"]["color"] ** 2, "size": r["sep"]["size"] / 4}
    ratio = signal_ratio_grid(runs, xs, ys)
    assert ratio.shape == (2, 2) and (ratio[:, 0] < 0).all() and (ratio[:, 1] > 0).all()
    assert ratio[0, 1] == pytest.approx(np.log(0.64 / 0.05))
    assert np.isnan(signal_ratio_grid(runs, xs + [1.0], ys)[:, 2]).all()  # a cell without runs stays empty


def test_sweep_report_on_a_micro_sweep(tmp_path):
    path = write_spec(tmp_path, {"data.concepts.color.sep": [0.3, 0.6, 0.9]})
    with pytest.raises(ValueError):
        run_sweep(path, tmp_path / "x", executor="local")  # 0.9 is impossible: fails before anything runs
    path = write_spec(tmp_path, {"data.concepts.color.sep": [0.3, 0.6]})
    run_sweep(path, tmp_path / "out", executor="local", workers=2)
    report = sweep_report(analyze_sweep(tmp_path / "out"))
    m = json.loads((tmp_path / "out" / "sweep_metrics.json").read_text())
    assert set(m["speed_vs_signal"]) == {"color", "size"}
    assert all(len(p) == 2 for p in m["speed_vs_signal"]["color"]["points"])
    assert "data:image/png;base64" in report.read_text()
    assert (tmp_path / "out" / "figures" / "learning_speed_vs_concept_signal.png").read_bytes()[:4] == b"\x89PNG"
    assert np.isfinite(m["speed_vs_signal"]["color"]["points"][0][0])

    # more seeds run later into another directory, pooled into a new one; neither sweep's own report changes
    own = (tmp_path / "out" / "sweep_metrics.json").read_text()
    path = write_spec(tmp_path, {"data.concepts.color.sep": [0.3, 0.6], "seed": [1]})
    run_sweep(path, tmp_path / "more", executor="local", workers=2)
    assert main(["report", str(tmp_path / "out"), "--pool", str(tmp_path / "more"),
                 "--out", str(tmp_path / "pooled")]) == 0
    pooled = json.loads((tmp_path / "pooled" / "sweep_metrics.json").read_text())
    assert pooled["n_runs"] == 4 and len(pooled["speed_vs_signal"]["color"]["points"]) == 4
    assert all(len(v) == 2 for v in pooled["first_corner_by_separation"]["color"].values())
    assert (tmp_path / "out" / "sweep_metrics.json").read_text() == own
    assert main(["report", str(tmp_path / "out"), "--pool", str(tmp_path / "out"),
                 "--out", str(tmp_path / "twice")]) == 2  # the same runs twice
    assert main(["report", str(tmp_path / "out"), "--pool", str(tmp_path / "more")]) == 2  # no --out
    assert main(["report", str(tmp_path / "out"), "--pool", str(tmp_path / "more"),
                 "--out", str(tmp_path / "more")]) == 2  # into a sweep directory


def test_sweep_report_on_a_micro_masking_sweep(tmp_path):
    spec = {"base": str(ROOT / "configs" / "masking.yaml"), "grid": {"data.mask.0.p": [0.0, 1.0]},
            "set": {"data.image_size": 8, "data.n_per_class": 32, "data.n_ood": 4, "model.widths": [8, 16],
                    "model.norm_groups": 4, "probe.kind": "analytic", "train.steps": 8, "train.n_checkpoints": 4,
                    "train.first_checkpoint": 3, "train.batch_size": 16, "eval.n_samples": 4,
                    "sampler.n_steps": 3}}
    path = tmp_path / "masking.yaml"
    path.write_text(yaml.safe_dump(spec))
    run_sweep(path, tmp_path / "out", executor="local", workers=2)
    page = sweep_report(analyze_sweep(tmp_path / "out")).read_text()
    m = json.loads((tmp_path / "out" / "sweep_metrics.json").read_text())["masking"]
    assert set(m["final_p_blue"]) == {"0", "1"} and set(m["learning_step"]["1"]) == {"color", "shape"}
    assert all(v is None or len(v) == 3 for v in m["final_object_rgb"].values())
    for title in ("steps to 80% vs masking probability", "held-out trajectories by masking probability",
                  "final generations at p=0", "final generations at p=1"):
        assert title in page
    assert main(["toy-model", "--sweep", str(tmp_path / "out"), "--out", str(tmp_path / "toy")]) == 0
    fits = json.loads((tmp_path / "toy" / "toy_fit.json").read_text())
    # (a and the time scale are bounded by the optimiser, so checking the bounds would test nothing; whether a fit
    # recovers known values is tested in test_toy.py)
    assert set(fits) == {"p=0", "p=1"} and all(np.isfinite(f["mse"]) and f["n_runs"] == 1 for f in fits.values())
    assert all(len(f["steps"]) >= 3 and f["steps"] == sorted(f["steps"]) for f in fits.values())


def test_learned_vs_distance_on_synthetic_runs():
    from conceptspace.analysis.sweep import learned_vs_distance

    run = {"name": "r", "steps": [10, 20, 30], "saturation": 20, "corners": {"111": [1, 1, 1], "000": [0, 0, 0]},
           "trajectories": {
        "111": [[0, 0, 0], [1.0, 1.0, 0.0], [1, 1, 1]], "000": [[0, 0, 0]] * 3},
        "classes": {"111": {"held_out": True, "learning_step": {"a": 10, "b": 20, "c": None}},
                    "000": {"held_out": False, "learning_step": {"a": 10, "b": 10, "c": 10}}}}
    (pt,) = learned_vs_distance([run])
    assert pt["class"] == "111" and pt["distance"] == pytest.approx(1.0) and pt["learned"] is False
    run["saturation"] = None  # never saturates: the last checkpoint
    (pt,) = learned_vs_distance([run])
    assert pt["distance"] == pytest.approx(0.0) and not pt["saturated"]


@pytest.mark.parametrize("spec", sorted((ROOT / "configs" / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweeps_expand_to_valid_configs(spec):
    points = expand(load_spec(spec), spec)
    assert len(points) >= 2 and len({p.name for p in points}) == len(points)


def test_color_signal_extremes_match_color_signal_settings():
    # the extra seeds are pooled with color_signal.yaml's, so every setting but the seed must be the same
    base = {p.overrides["data.concepts.color.sep"]: p.config for p in
            expand(load_spec(ROOT / "configs/sweeps/color_signal.yaml"), ROOT / "configs/sweeps/color_signal.yaml")
            if p.overrides["seed"] == 0}
    spec = ROOT / "configs/sweeps/color_signal_extremes.yaml"
    for point in expand(load_spec(spec), spec):
        assert point.config.seed >= 3
        assert point.config.model_copy(update={"seed": 0}) == base[point.overrides["data.concepts.color.sep"]]


def test_slurm_executor_refuses_when_slurm_is_absent(tmp_path, monkeypatch, capsys):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    path = write_spec(tmp_path, {"seed": [0]})
    with pytest.raises(SweepError, match="SLURM is not available"):
        run_sweep(path, tmp_path / "out", executor="slurm")
    assert main(["sweep", str(path), "--out", str(tmp_path / "out2"), "--executor", "slurm"]) == 2
    assert "no sbatch" in capsys.readouterr().err
    assert not (tmp_path / "out2" / "seed=0" / "config.yaml").exists()  # nothing ran, locally or elsewhere


def test_failed_points_are_retried(tmp_path, monkeypatch):
    from conceptspace import sweeps

    calls = []

    def flaky(jobs, *args, **kw):
        calls.append([d for d, _ in jobs])
        status = "failed" if len(calls) < 3 else "done"
        return [{"run": d, "status": status, "error": "boom" if status == "failed" else None} for d, _ in jobs]

    monkeypatch.setattr(sweeps, "execute", flaky)
    path = write_spec(tmp_path, {"seed": [0, 1]})
    results = run_sweep(path, tmp_path / "out", executor="local", retries=2)
    assert [r["status"] for r in results] == ["done", "done"] and [r["tries"] for r in results] == [3, 3]
    assert len(calls) == 3
    calls.clear()
    results = run_sweep(path, tmp_path / "out", executor="local", retries=0)
    assert [r["status"] for r in results] == ["failed", "failed"] and len(calls) == 1


def test_local_sweeps_spread_points_over_gpus():
    """With GPUs, pending points go round-robin to GPUs 0..n-1 (several processes per GPU when there are more workers
    than GPUs); without GPUs (a CPU build of torch) no point gets one and CUDA is never asked."""
    from conceptspace.sweeps import gpu_slots, local_gpu_count

    assert gpu_slots(5, 2) == [0, 1, 0, 1, 0]
    assert gpu_slots(3, 0) == [None, None, None]
    import torch

    if torch.version.cuda is None:
        assert local_gpu_count() == 0


def test_a_finished_point_or_run_is_never_reported_under_a_changed_config(tmp_path):
    """Re-running a sweep whose spec changed (another recipe) into the same --out fails those points instead of
    passing the old runs off as new ones; `run --resume` of a finished run under another config is refused too."""
    path = write_spec(tmp_path, {"seed": [0]})
    out = tmp_path / "out"
    assert run_sweep(path, out, executor="local", workers=1)[0]["status"] == "done"
    changed = write_spec(tmp_path, {"seed": [0]}, extra={"train.lr": 0.002})
    result = run_sweep(changed, out, executor="local", workers=1)[0]
    assert result["status"] == "failed" and "train.lr" in result["error"] and "new --out" in result["error"]
    cfg = str(ROOT / "configs" / "micro.yaml")
    run = str(out / "seed=0")
    assert main(["run", cfg, "--run-dir", run, "--resume", "--set", "probe.kind=analytic",
                 "--set", "train.lr=0.005"]) != 0


def test_unlearned_trends_tell_a_plateau_from_a_late_rise():
    from conceptspace.analysis.sweep import unlearned_trends

    steps = [100, 1000, 2000, 3000, 4000, 5000, 6000, 6500, 7000, 8000]  # uneven near the end
    rising = [0, 0, 0, 0, 0, 0.1, 0.3, 0.4, 0.6, 0.7]  # still climbing toward 1 when the run ends
    flat = [0, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]  # a plateau at 0.3
    falling = [0, 0.2, 0.5, 0.7, 0.8, 0.7, 0.6, 0.55, 0.5, 0.3]  # reached, then lost: last point drops most
    never = {"a": None, "b": None}
    run = {"name": "r", "steps": steps,
           "corners": {"11": [1, 1], "01": [0, 1], "10": [1, 0], "00": [0, 0]},
           "trajectories": {"11": [[0.2, y] for y in rising], "01": [[0.5, y] for y in flat],
                            "10": [[0.4, y] for y in falling], "00": [[0.3, 0.9]] * 10},
           "classes": {"11": {"held_out": True, "learning_step": {"a": 500, "b": None}},
                       "01": {"held_out": True, "learning_step": dict(never)},  # a never held, but its value is 0
                       "10": {"held_out": False, "learning_step": dict(never)},  # a training class: not a reading
                       "00": {"held_out": True, "learning_step": dict(never)}}}  # value 0 on both: nothing to learn
    got = {t["class"]: t for t in unlearned_trends([run], ["a", "b"])}
    assert set(got) == {"11", "01"} and all(t["concept"] == "b" for t in got.values())
    # least squares over the checkpoints at or after 75% of the run (6000, 6500, 7000, 8000), not the last difference
    expected = np.polyfit([6000, 6500, 7000, 8000], [0.3, 0.4, 0.6, 0.7], 1)[0] * 1000
    assert got["11"]["trend"] == "toward" and got["11"]["slope_toward_per_1k"] == pytest.approx(expected, abs=1e-4)
    assert got["01"]["trend"] == "flat" and got["01"]["slope_toward_per_1k"] == pytest.approx(0.0)
    # a 3-valued concept: value 1 sits at 0.5 on its axis; a coordinate falling from 1 toward it is "toward"
    three = {"name": "t", "steps": steps, "corners": {"01": [0, 0.5]}, "trajectories": {"01": [[0.0, 1 - y / 2] for y in rising]},
             "classes": {"01": {"held_out": True, "learning_step": {"a": 100, "b": None}}}}
    (t,) = unlearned_trends([three], ["b"])
    assert t["target"] == 0.5 and t["trend"] == "toward" and t["distance_at_end"] == pytest.approx(0.15)
    assert got["11"]["steps"] == [2000, 4000, 6000, 8000] and got["11"]["coordinate"] == [0.0, 0.0, 0.3, 0.7]
    assert got["11"]["distance_at_end"] == pytest.approx(0.3)
    run["classes"]["10"]["held_out"] = True  # its b is value 0: still skipped; its a (value 1) reached then lost
    run["trajectories"]["10"] = [[y, 0.0] for y in falling]
    assert unlearned_trends([run], ["a"])[0]["class"] == "10" and unlearned_trends([run], ["a"])[0]["trend"] == "away"
    run["classes"]["11"]["learning_step"]["b"] = 7000  # held: no longer censored, not reported
    assert [t["class"] for t in unlearned_trends([run], ["b"])] == ["01"]
    # few checkpoints: the slope still uses the last 3, so a steady rise is not called flat
    short = {**run, "steps": [0, 1000, 2000, 3000], "trajectories": {k: v[-4:] for k, v in run["trajectories"].items()}}
    short["trajectories"]["01"] = [[0.5, y] for y in (0.0, 0.3, 0.6, 0.9)]
    assert {t["class"]: t["trend"] for t in unlearned_trends([short], ["b"])}["01"] == "toward"
