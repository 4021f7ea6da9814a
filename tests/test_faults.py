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
        train_module.train(cfg, tmp_path / "r", progress=False)
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
