"""Accidents that must never end with exit code 0 and a wrong result (fast part; runs with the micro config)."""

import json

import pytest
import torch

from conceptspace.cli import main
from conceptspace.config import load_config


@pytest.mark.parametrize("override", ["train.lr=1e3", "train.weight_decay=1e30"])
def test_divergence_stops_training_with_an_error(tmp_path, override, capsys):
    run = tmp_path / "r"
    assert main(["train", "configs/micro.yaml", "--run-dir", str(run), "--set", override]) == 2
    err = capsys.readouterr().err
    assert "diverged at step" in err and "train.lr" in err
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
    for ckpt in (run / "checkpoints").glob("*.safetensors"):  # what was kept is finite
        from safetensors.torch import load_file

        assert all(torch.isfinite(t).all() for t in load_file(str(ckpt)).values())


def test_a_few_bad_batches_may_be_skipped_when_asked(tmp_path):
    from conceptspace import train as train_module

    calls = {"n": 0}
    real = train_module.build_objective

    def nan_once(cfg):
        objective = real(cfg)
        loss = objective.loss

        def first_nan(*a, **k):
            parts = loss(*a, **k)
            calls["n"] += 1
            if calls["n"] == 3:
                parts["loss"] = parts["loss"] * float("nan")
            return parts

        objective.loss = first_nan
        return objective

    cfg = load_config("configs/micro.yaml", ["train.max_nonfinite=1"])
    train_module.build_objective, saved = nan_once, train_module.build_objective
    try:
        train_module.train(tmp_path / "r", cfg, progress=False)
    finally:
        train_module.build_objective = saved
    assert json.loads((tmp_path / "r" / "run.json").read_text())["status"] == "done"


@pytest.mark.parametrize("override", ["data.concepts.color.sep=.nan", "train.weight_decay=.inf",
                                      "diffusion.gamma_min=-.inf", "sampler.guidance_scale=.nan",
                                      "data.mask_value=.nan", "sampler.eta=.inf"])
def test_nan_and_infinity_are_rejected_as_settings(override, capsys):
    with pytest.raises(ValueError, match="finite"):
        load_config("configs/micro.yaml", [override])
    assert main(["signal", "configs/micro.yaml", "--set", override]) == 2
    assert "finite" in capsys.readouterr().err


def test_evaluation_refuses_non_finite_checkpoints(tmp_path, capsys):
    from safetensors.torch import load_file

    from conceptspace.model.checkpoints import save_tensors
    from conceptspace.train import load_checkpoint

    run = tmp_path / "r"
    assert main(["train", "configs/micro.yaml", "--run-dir", str(run)]) == 0
    ckpt = sorted((run / "checkpoints").glob("*.safetensors"))[-1]
    tensors = load_file(str(ckpt))
    with open(ckpt, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        meta = json.loads(json.loads(fh.read(n))["__metadata__"]["meta"])
    name = next(k for k, t in tensors.items() if t.is_floating_point())
    tensors[name] = tensors[name] * float("nan")
    save_tensors(ckpt, tensors, meta)
    from conceptspace.model.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match="non-finite weights"):
        load_checkpoint(ckpt)


def test_a_second_writer_is_refused_and_a_killed_holder_leaves_no_stale_lock(tmp_path, capsys):
    import signal
    import subprocess
    import sys

    run = tmp_path / "r"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom conceptspace.rundir import locked\n"
        f"with locked({str(run)!r}):\n    print('held', flush=True)\n    time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["train", "configs/micro.yaml", "--run-dir", str(run)]) == 2
        err = capsys.readouterr().err
        assert f"in use by pid {holder.pid} on " in err
        assert not (run / "config.yaml").exists()  # nothing was written next to the other writer
    finally:
        holder.send_signal(signal.SIGKILL)  # killed while holding it: the kernel releases the lock
        holder.wait()
    assert main(["train", "configs/micro.yaml", "--run-dir", str(run)]) == 0


def test_overwrite_is_a_fresh_run_and_keeps_user_files(tmp_path, capsys):
    run = tmp_path / "r"
    args = ["--set", "probe.kind=analytic", "--set", "elicit.methods=[naive]"]
    assert main(["run", "configs/micro.yaml", "--run-dir", str(run), *args]) == 0
    (run / "checkpoints" / "my_notes.txt").write_text("mine")
    (run / "eval" / "default" / "plot.py").write_text("mine too")
    old = json.loads((run / "metrics.json").read_text())
    assert main(["train", "configs/micro.yaml", "--run-dir", str(run), "--overwrite", "--set", "seed=1"]) == 0
    # the previous run's evaluation, metrics and report are gone: nothing of seed 0 can pass for seed 1's
    for name in ("metrics.json", "report.html", "eval/default/concept_probs.npz", "eval/default/elicitation.npz",
                 "figures/trajectories.png"):
        assert not (run / name).exists(), name
    assert (run / "checkpoints" / "my_notes.txt").read_text() == "mine"
    assert (run / "eval" / "default" / "plot.py").read_text() == "mine too"
    assert json.loads((run / "run.json").read_text())["seed"] == 1
    assert main(["run", "configs/micro.yaml", "--run-dir", str(run), "--resume", "--set", "seed=1", *args]) == 0
    assert json.loads((run / "metrics.json").read_text()) != old


def test_config_yaml_is_checked_against_the_checkpoints(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["run", "configs/micro.yaml", "--run-dir", str(run), "--set", "probe.kind=analytic",
                 "--set", "elicit.methods=[naive]"]) == 0
    good = (run / "config.yaml").read_text()
    # Cut before `train:`: resuming would otherwise continue a finished 30-step run toward the default 4,000 steps.
    (run / "config.yaml").write_text(good[:good.index("train:")])
    assert main(["train", "--run-dir", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "differs from the config its checkpoints were trained with" in err and "train.first_checkpoint" in err
    (run / "config.yaml").write_text("")
    assert main(["report", str(run)]) == 2
    assert "empty config file" in capsys.readouterr().err
    (run / "config.yaml").unlink()
    assert main(["analyze", str(run)]) == 2
    assert "--rebuild-config" in capsys.readouterr().err
    assert main(["analyze", str(run), "--rebuild-config"]) == 0
    assert (run / "config.yaml").read_text() == good


def test_an_empty_config_file_is_an_error_not_the_defaults(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("\n")
    assert main(["train", str(empty), "--run-dir", str(tmp_path / "r")]) == 2
    assert "empty config file" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("pin", [[], ["--pin-kernels"]], ids=["unpinned", "pinned"])
def test_sigterm_leaves_an_interrupted_resumable_run(tmp_path, pin):
    """SIGTERM to the command's process (for --pin-kernels, the parent, which forwards it to its child)."""
    import signal
    import subprocess
    import sys
    import time

    from conceptspace.kernels import kernels_pinnable

    if pin and not kernels_pinnable():
        pytest.skip("the pinned kernels need an x86-64 CPU with AVX2")
    run = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "conceptspace.cli", *pin, "train", "configs/micro.yaml", "--run-dir",
                             str(run), "--set", "train.steps=3000", "--set", "train.n_checkpoints=30"],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((run / "checkpoints").glob("*.safetensors")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "stopped by SIGTERM" in err and "Traceback" not in err
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    assert main([*pin, "train", "--run-dir", str(run), "--resume", "--set", "train.threads=1"]) == 0
    assert json.loads((run / "run.json").read_text())["status"] == "done"


def test_a_cut_off_last_log_line_is_skipped_and_os_errors_are_one_line(tmp_path, capsys, caplog):
    run = tmp_path / "r"
    assert main(["run", "configs/micro.yaml", "--run-dir", str(run), "--set", "probe.kind=analytic",
                 "--set", "elicit.methods=[naive]"]) == 0
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 31, "lo')  # a kill or a full disk in the middle of a write
    assert main(["report", str(run)]) == 0
    assert "damaged last line" in caplog.text
    from conceptspace.rundir import RunDir

    assert RunDir(run).read_log()[-1]["step"] == 30
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    capsys.readouterr()
    assert main(["train", "configs/micro.yaml", "--run-dir", str(blocker / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def _config_keys() -> list[str]:
    from conceptspace.config import ExperimentConfig

    def walk(tree, prefix=""):
        for k, v in tree.items():
            if isinstance(v, dict) and v and k not in ("concepts", "pool_seps", "ladder", "paper_latent_values"):
                yield from walk(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}"

    return sorted(walk(ExperimentConfig().model_dump(mode="json")))


VALUES = ["0", "-1", "1e308", ".nan", "-.inf", "2e40", "1180591620717411303424", "''", "[]", "{}", "null", "abc",
          "[1, 2]", "{a: 1}", "true", "0.5", "-0.5", "3", "[[]]", "'11'", "[00, 11]"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # 1e308 overflows in the signal's pixel arithmetic: fine
def test_fuzzed_settings_give_exit_0_or_2_and_one_line(capsys):
    """Property: any single setting, whatever its value, gives exit code 0 or 2 and never a traceback."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    keys = _config_keys() + ["data.concepts.color.sep", "data.concepts.size.values", "data.concepts.shape.n_values",
                             "data.mask.0.p", "elicit.ladder.color", "probe.pool_seps.color", "nonsense.key"]
    seen = {"ok": 0, "refused": 0}

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(key=st.sampled_from(keys), value=st.sampled_from(VALUES))
    def check(key, value):
        capsys.readouterr()
        rc = main(["signal", "configs/micro.yaml", "--set", f"{key}={value}"])
        err = capsys.readouterr().err
        assert rc in (0, 2) and "Traceback" not in err
        if rc == 2:
            assert err.startswith("error: ") and err.count("\n") == 1, err
        seen["ok" if rc == 0 else "refused"] += 1

    check()
    assert seen["refused"] > 50  # most of these values are invalid somewhere


@pytest.fixture(scope="module")
def finished_micro_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("damage") / "r"
    assert main(["run", "configs/micro.yaml", "--run-dir", str(run), "--set", "probe.kind=analytic",
                 "--set", "elicit.methods=[naive, overprompt]"]) == 0
    return run


ARTIFACTS = ["config.yaml", "run.json", "metrics.jsonl", "metrics.json", "eval/default/concept_probs.npz",
             "eval/default/elicitation.npz", "LAST_CHECKPOINT", "resume.safetensors"]


@pytest.mark.parametrize("artifact", ARTIFACTS)
@pytest.mark.parametrize("damage", ["half", "empty"])
def test_a_damaged_artifact_is_one_line_or_a_documented_fallback(finished_micro_run, tmp_path, artifact, damage,
                                                                 capsys):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(finished_micro_run, run)
    original = (run / "metrics.json").read_text()
    path = sorted((run / "checkpoints").glob("*.safetensors"))[-1] if artifact == "LAST_CHECKPOINT" else run / artifact
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] if damage == "half" else b"")
    for command in (["analyze", str(run)], ["report", str(run)], ["evaluate", str(run)],
                    ["train", "--run-dir", str(run), "--resume"]):
        capsys.readouterr()
        rc = main(command + (["--set", "probe.kind=analytic"] if command[0] == "evaluate" else []))
        err = capsys.readouterr().err
        assert rc in (0, 2) and "Traceback" not in err, (command, err)
        if rc == 2:
            assert err.count("\n") == 1 and err.startswith("error: "), (command, err)
        elif artifact not in ("metrics.json", "metrics.jsonl", "run.json", "resume.safetensors"):
            # exit 0 with a damaged input is only allowed when the numbers are still the run's own
            assert (run / "metrics.json").read_text() == original, command


def test_summary_of_a_directory_without_metrics_is_one_line(tmp_path, capsys):
    assert main(["summary", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_more_settings_that_used_to_end_in_a_traceback(tmp_path, capsys):
    # no held-out class: a valid space (nothing to elicit), not a reshape error leaving a config.yaml behind
    run = tmp_path / "no_held_out"
    assert main(["run", "configs/micro.yaml", "--run-dir", str(run), "--set", "data.held_out=[]",
                 "--set", "probe.kind=analytic"]) == 0
    # a YAML file that is a bare string; a seed beyond any generator; a checkpoint count no disk could hold
    bare = tmp_path / "bare.yaml"
    bare.write_text("just a string\n")
    for args in (["signal", str(bare)], ["signal", "configs/micro.yaml", "--set", f"seed={2**70}"],
                 ["signal", "configs/micro.yaml", "--set", "train.n_checkpoints=1000000000"]):
        capsys.readouterr()
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1


def test_what_cannot_work_fails_before_training(tmp_path, capsys):
    big = tmp_path / "big"
    assert main(["train", "configs/micro.yaml", "--run-dir", str(big), "--set", "data.image_size=512",
                 "--set", "data.n_per_class=2048"]) == 2
    assert "GiB" in capsys.readouterr().err and not big.exists()  # refused before anything was written
    gated = tmp_path / "gated"
    assert main(["run", "configs/micro.yaml", "--run-dir", str(gated), "--set", "probe.steps=1",
                 "--set", f"probe.cache_dir={tmp_path / 'probes'}", "--set", "probe.n_train_per_class=8",
                 "--set", "probe.n_test_per_class=8"]) == 2
    assert "reaches only" in capsys.readouterr().err
    assert not (gated / "checkpoints").exists()  # the probe's gate is checked before any training step


def test_report_elicit_and_analyze_before_evaluation_say_what_to_run(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "configs/micro.yaml", "--run-dir", str(run)]) == 0
    for command in ("report", "elicit", "analyze"):
        capsys.readouterr()
        assert main([command, str(run)]) == 2
        err = capsys.readouterr().err
        assert "not evaluated yet" in err and "conceptspace evaluate" in err and err.count("\n") == 1
