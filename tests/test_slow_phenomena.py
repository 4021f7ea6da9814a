"""Qualitative results of the paper at small scale (minutes on 2 cores): `pytest -m slow`."""

import json

import pytest

from conceptspace.cli import main


@pytest.mark.slow
def test_strong_color_signal_is_learned_before_size(tmp_path):
    """Δcolor 0.8 (normalised color signal 0.78): the training class 01 (small red) gets its color before its size."""
    run = tmp_path / "order"
    args = ["--set", "train.steps=1500", "--set", "train.n_checkpoints=15", "--set", "probe.kind=analytic",
            "--set", "model.widths=[16, 32]", "--set", "elicit.methods=[naive]", "--set", "eval.n_samples=16"]
    assert main(["run", "configs/2x2.yaml", "--run-dir", str(run), *args]) == 0
    steps = json.loads((run / "metrics.json").read_text())["classes"]["01"]["learning_step"]
    assert steps["color"] is not None
    assert steps["size"] is None or steps["color"] < steps["size"]
