"""Representation read-outs: known answers on synthetic features, and `conceptspace represent` on a micro run."""

import numpy as np
import pytest

from conceptspace.analysis.representation import (
    compare_onsets,
    decode_held_out,
    representation_readings,
    representation_summary,
)
from conceptspace.cli import main
from conceptspace.rundir import RunDir, load_npz

CLASSES, HELD = ["00", "01", "10", "11"], [False, False, False, True]


def features(additive: bool, n: int = 16, seed: int = 0) -> np.ndarray:
    """[P, n, F]: a random linear map of the concept digits (+ noise); not additive: the held-out class's
    features are those of training class 01 (memorised toward that corner)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(2, 12))
    digits = np.array([[int(c) for c in name] for name in CLASSES], dtype=float)
    if not additive:
        digits[3] = digits[1]
    return digits[:, None, :] @ w + 0.05 * rng.normal(size=(4, n, 12))


def test_additive_representation_is_decoded_and_a_memorised_one_is_not():
    per, joint = decode_held_out(features(True), CLASSES, HELD)
    assert joint[0] == 1.0 and (per == 1.0).all()
    per, joint = decode_held_out(features(False), CLASSES, HELD)
    assert joint[0] == 0.0 and per[0, 0] == 0.0 and per[0, 1] == 1.0  # read as red (01), size right


def test_readings_find_the_onset_and_compare_it():
    steps = np.array([10, 20, 30, 40, 50])
    seq = np.stack([features(k >= 2, seed=k) for k in range(5)])  # additive from the third checkpoint on
    arrays = {"steps": steps, "classes": np.array(CLASSES), "held_out": np.array(HELD), "sites": np.array(["body"]),
              "body": seq, "prompts": np.stack([np.repeat(np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)[:, None],
                                                          4, axis=1)])[0]}
    r = representation_readings(arrays)
    body = r["11"]["body"]
    assert body["onset_step"] == 30 and body["first"] == 0.0 and body["final"] == 1.0
    assert set(body["by_ridge"]) == {"0.01", "1", "100"}
    assert r["11"]["prompt"]["by_ridge"]["0.01"]["first"] == 1.0  # the raw prompt is additive by construction
    ran = {"naive": 45, "overprompt": None}
    leads = compare_onsets(r, {"11": {"naive_best_of_k_onset": 45, "best_intervention_onset": None,
                                      "onset_step": ran}}, 50)
    assert leads["11"]["body"] == {"lead_vs_naive": 15, "lead_vs_intervention": 20}  # never = the last step
    # no intervention run: no lead over one
    naive_only = compare_onsets(r, {"11": {"naive_best_of_k_onset": 45, "onset_step": {"naive": 45}}}, 50)
    assert naive_only["11"]["body"] == {"lead_vs_naive": 15, "lead_vs_intervention": None}
    runs = [{"name": "a", "arm": "x", "representation": {"11": {"body": {**body, **leads["11"]["body"]}}}}]
    s = representation_summary(runs)["x"]["body"]
    assert (s["n_runs"], s["decoded"], s["before_naive"], s["early_warning"], s["at_first_checkpoint"]) == (1, 1, 1, 1, 0)


def test_represent_a_micro_run(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["run", "configs/micro.yaml", "--run-dir", str(run), "--set", "probe.kind=analytic",
                 "--set", "train.steps=10", "--set", "train.n_checkpoints=3"]) == 0
    assert main(["represent", str(run), "--n", "4"]) == 0
    a = load_npz(RunDir(run).representation)
    assert a["cond"].shape[:3] == (3, 4, 4) and a["body"].shape[:3] == (3, 4, 4) and a["prompts"].shape[:2] == (4, 4)
    m = RunDir(run).read_metrics()["representation"]["11"]
    assert set(m) == {"cond", "body", "prompt"} and len(m["body"]["joint"]) == 3
    assert "lead over best-of-k naive" in capsys.readouterr().out
    # a second call reads nothing new (same settings) and gives the same readings
    assert main(["represent", str(run), "--n", "4"]) == 0
    assert RunDir(run).read_metrics()["representation"]["11"]["body"]["joint"] == m["body"]["joint"]
