import json
from pathlib import Path

import pytest
import torch

from conceptspace.cli import main
from conceptspace.config import load_config
from conceptspace.model.checkpoints import list_checkpoints, load_tensors
from conceptspace.train import RunDirError, load_checkpoint, train

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "configs" / "micro.yaml"


@pytest.fixture
def micro():
    return load_config(MICRO, ["train.steps=12", "train.n_checkpoints=3", "train.first_checkpoint=3"])


def final_weights(run_dir):
    return load_tensors(list_checkpoints(run_dir)[-1][1])[0]


def test_train_leaves_checkpoints_metrics_and_config(tmp_path, micro):
    run = train(tmp_path / "r", micro, progress=False)
    steps = [s for s, _ in list_checkpoints(run)]
    assert steps[-1] == 12 and len(steps) == 3
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    ckpt_rows = [r for r in rows if "checkpoint" in r]
    assert [r["step"] for r in ckpt_rows] == steps
    assert all(r["val_loss"] > 0 and r["ood_loss"] > 0 for r in ckpt_rows)
    assert load_config(run / "config.yaml") == micro
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "done" and info["seed"] == 0 and "torch" in info["versions"]
    cfg, model, objective, step = load_checkpoint(list_checkpoints(run)[-1][1])
    assert cfg == micro and step == 12 and not model.training


class Kill(Exception):
    pass


def kill_at(n):
    def on_step(step):
        if step == n:
            raise Kill

    return on_step


@pytest.mark.parametrize("objective,fused", [("ddpm", True), ("vdm", True), ("ddpm", False)])
def test_resume_after_kill_matches_uninterrupted_run(tmp_path, micro, objective, fused):
    cfg = load_config(MICRO, ["train.steps=12", "train.n_checkpoints=3", "train.first_checkpoint=3",
                              f"diffusion.objective={objective}", "model.dropout=0.1", f"train.fused_optimizer={fused}",
                              "data.mask=[{concept: color, p: 0.5, classes: ['01']}]"])
    train(tmp_path / "full", cfg, progress=False)
    with pytest.raises(Kill):
        train(tmp_path / "killed", cfg, progress=False, on_step=kill_at(9))  # between checkpoints 6 and 12
    assert json.loads((tmp_path / "killed" / "run.json").read_text())["status"] == "failed"
    train(tmp_path / "killed", cfg, resume=True, progress=False)
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "killed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # no duplicated log lines after the resume


def test_resume_falls_back_when_latest_state_is_corrupt(tmp_path, micro, caplog):
    with pytest.raises(Kill):
        train(tmp_path / "r", micro, progress=False, on_step=kill_at(11))
    latest = tmp_path / "r" / "resume.safetensors"
    latest.write_bytes(latest.read_bytes()[:100])
    train(tmp_path / "r", micro, resume=True, progress=False)
    assert "resuming from the previous state" in caplog.text
    train(tmp_path / "ref", micro, progress=False)
    a, b = final_weights(tmp_path / "r"), final_weights(tmp_path / "ref")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_existing_run_is_never_overwritten_without_flag(tmp_path, micro):
    train(tmp_path / "r", micro, progress=False)
    before = (tmp_path / "r" / "metrics.jsonl").read_text()
    (tmp_path / "r" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="--resume.*--overwrite"):
        train(tmp_path / "r", micro, progress=False)
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == before
    changed = load_config(MICRO, ["train.steps=12", "train.n_checkpoints=3", "train.first_checkpoint=3", "seed=1"])
    with pytest.raises(RunDirError, match="differs.*seed"):
        train(tmp_path / "r", changed, resume=True, progress=False)
    train(tmp_path / "r", micro.model_copy(update={"train": micro.train.model_copy(update={"threads": 1})}),
          resume=True, progress=False)  # another thread count is not another run
    assert load_config(tmp_path / "r" / "config.yaml") == micro  # the saved config keeps its own
    train(tmp_path / "r", changed, overwrite=True, progress=False)
    assert (tmp_path / "r" / "notes.txt").read_text() == "mine"  # only our own files are replaced


def test_cli_train_and_resume(tmp_path, capsys):
    run = tmp_path / "cli"
    assert main(["train", str(MICRO), "--run-dir", str(run), "--set", "train.steps=6", "--set", "train.n_checkpoints=2"]) == 0
    assert main(["train", str(MICRO), "--run-dir", str(run)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "--run-dir", str(run), "--resume"]) == 0
    assert main(["train", "--run-dir", str(tmp_path / "none"), "--resume"]) == 2


def test_every_metrics_row_reaches_callbacks_and_tensorboard(tmp_path, micro):
    pytest.importorskip("tensorboardX")
    rows = []

    class Collect:
        def on_row(self, row):
            rows.append(row)

    cfg = micro.model_copy(update={"train": micro.train.model_copy(update={"tracking": ["tensorboard"]})})
    train(tmp_path / "r", cfg, progress=False, callbacks=[Collect()])
    logged = [json.loads(ln) for ln in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert rows == logged and any("val_loss" in r for r in rows)
    events = list((tmp_path / "r" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0


def test_device_names_are_checked_never_silently_replaced():
    import torch

    from conceptspace.errors import ConceptspaceError
    from conceptspace.train import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        for name in ("cuda", "cuda:1"):
            with pytest.raises(ConceptspaceError, match="no CUDA GPU"):
                resolve_device(name)
    with pytest.raises(ValueError, match="train.device"):
        load_config("configs/micro.yaml", ["train.device=gpu"])
    assert load_config("configs/micro.yaml", ["train.device=cuda:2"]).train.device == "cuda:2"


def test_bf16_precision_trains_and_samples_and_fp32_settings_match_older_files(tmp_path, micro):
    """bf16 autocast is an option: it trains (finite, not the fp32 weights), it samples, and it is part of the
    evaluation settings; at fp32 the settings are those of files written before the option existed."""
    from conceptspace.readout.evaluate import eval_settings, evaluate_run

    bf16 = micro.model_copy(update={"train": micro.train.model_copy(update={"precision": "bf16"}),
                                    "sampler": micro.sampler.model_copy(update={"precision": "bf16"}),
                                    "probe": micro.probe.model_copy(update={"kind": "analytic"})})
    a, b = train(tmp_path / "fp32", micro, progress=False), train(tmp_path / "bf16", bf16, progress=False)
    wa, wb = final_weights(a), final_weights(b)
    assert all(torch.isfinite(v).all() for v in wb.values())
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)
    probs = evaluate_run(b, bf16, progress=False)
    assert probs.is_file()
    assert "precision" not in eval_settings(micro)["sampler"]
    assert eval_settings(bf16)["sampler"]["precision"] == "bf16"


def test_saved_runs_keep_their_optimizer_and_may_move_device(tmp_path, micro):
    """A run saved before `fused_optimizer` existed reads back as trained (the per-tensor loop), not as the new
    default; and resuming on another device (placement, like threads) is accepted."""
    import yaml

    from conceptspace.train import load_run_config

    with pytest.raises(Kill):
        train(tmp_path / "r", micro, progress=False, on_step=kill_at(5))
    tree = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    del tree["train"]["fused_optimizer"]  # as an older version wrote it
    (tmp_path / "r" / "config.yaml").write_text(yaml.safe_dump(tree))
    from conceptspace.model.checkpoints import read_meta  # the checkpoint's copy predates the key too

    ckpt = list_checkpoints(tmp_path / "r")[-1][1]
    tensors, meta = load_tensors(ckpt)
    del meta["config"]["train"]["fused_optimizer"]
    from conceptspace.model.checkpoints import save_tensors

    save_tensors(ckpt, tensors, meta)
    assert "fused_optimizer" not in read_meta(ckpt)["config"]["train"]
    assert load_run_config(tmp_path / "r").train.fused_optimizer is False
    moved = load_config(MICRO, ["train.steps=12", "train.n_checkpoints=3", "train.first_checkpoint=3",
                                "train.fused_optimizer=false", "train.device=cpu"])
    train(tmp_path / "r", moved, resume=True, progress=False)
    assert json.loads((tmp_path / "r" / "run.json").read_text())["status"] == "done"
