"""Underspecification: a micro masking run end to end, and the masking aggregation on synthetic runs."""

import json

import numpy as np
import pytest

from conceptspace.analysis.masking import masking_metrics, object_rgb
from conceptspace.cli import main

MICRO = ["--set", "data.image_size=8", "--set", "data.n_per_class=32", "--set", "data.n_ood=4",
         "--set", "model.widths=[8, 16]", "--set", "model.norm_groups=4", "--set", "train.steps=8",
         "--set", "train.n_checkpoints=2", "--set", "train.batch_size=16", "--set", "probe.kind=analytic",
         "--set", "eval.n_samples=4", "--set", "sampler.n_steps=3"]


def test_micro_masking_run(tmp_path):
    run = tmp_path / "mask"
    assert main(["run", "configs/masking.yaml", "--run-dir", str(run), *MICRO, "--set", "data.mask.0.p=1.0"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["concepts"] == ["color", "shape"] and m["classes"]["11"]["held_out"]
    assert main(["toy-model", "--a", "1,3", "--out", str(tmp_path / "toy")]) == 0
    assert (tmp_path / "toy" / "toy_model.png").is_file()


def test_masking_metrics_on_synthetic_runs():
    runs = []
    for p, t, blue in [(0.0, 1000, 0.9), (0.25, 1500, 0.8), (0.5, 2500, 0.6), (0.75, None, 0.4), (1.0, None, 0.1)]:
        runs.append({"masking": p, "steps": [100, 4000], "classes": {
            "11": {"held_out": True, "learning_step": {"color": t, "shape": 500}, "final_coords": [blue, 0.9]}}})
    m = masking_metrics(runs)
    assert m["spearman_time_vs_p"] == pytest.approx(0.9747, abs=1e-3)  # the two "never" runs tie as slowest
    assert m["final_p_blue"]["1"] == pytest.approx(0.1)
    assert m["learning_step"]["0.75"] == {"color": [None], "shape": [500]}
    assert m["mean_speed"]["0"]["color"] == pytest.approx(1 / 1000)
    assert m["final_object_rgb"]["0"] is None  # synthetic records have no generations
    assert masking_metrics(runs[:1]) is None


def test_object_rgb_reads_the_object_not_the_background():
    img = np.full((2, 3, 16, 16), 0.5, dtype=np.float32)  # gray background
    img[:, :, 5:11, 5:11] = np.array([0.7, 0.3, 0.3])[:, None, None]  # a red square
    rgb = object_rgb((img * 255).round().astype(np.uint8))
    assert rgb == pytest.approx([0.7, 0.3, 0.3], abs=0.01)
    assert object_rgb(np.full((1, 3, 8, 8), 128, dtype=np.uint8)) is None  # nothing drawn
