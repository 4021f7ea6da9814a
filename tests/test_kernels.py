"""--pin-kernels: a whole run (training and evaluation) whose numbers do not depend on the CPU's kernel choice."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conceptspace.cli import main
from conceptspace.kernels import kernels_pinnable
from conceptspace.model.checkpoints import list_checkpoints, load_tensors
from conceptspace.rundir import load_npz

pytestmark = pytest.mark.skipif(not kernels_pinnable(), reason="the pinned kernels need an x86-64 CPU with AVX2")

MICRO = ["configs/micro.yaml", "--set", "train.steps=20", "--set", "train.threads=1"]


def last_weights(run) -> dict[str, torch.Tensor]:
    return load_tensors(list_checkpoints(run)[-1][1])[0]


def weights_sha(weights: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(weights):
        h.update(name.encode() + weights[name].contiguous().numpy().tobytes())
    return h.hexdigest()


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def unpinned_train(run, capability: str) -> None:
    """Train in a fresh process whose PyTorch runs the given kernels (the choice is made once per process)."""
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
    done = subprocess.run([sys.executable, "-m", "conceptspace.cli", "-q", "train", *MICRO, "--run-dir", str(run)],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_pinned_run_does_not_depend_on_the_callers_kernel_choice(tmp_path, monkeypatch, capfd):
    """Unpinned, PyTorch's generic kernels train other weights than its AVX2 ones (the control); pinned, a
    caller that asks for the generic ones trains and evaluates the same numbers as one that asks for nothing."""
    unpinned_train(tmp_path / "avx2", "avx2")
    unpinned_train(tmp_path / "generic", "default")
    assert not same(last_weights(tmp_path / "avx2"), last_weights(tmp_path / "generic"))

    evaluate = ["evaluate", "--set", "probe.kind=analytic", "--set", "eval.n_samples=4", "--set", "sampler.n_steps=3"]
    assert main(["-q", "--pin-kernels", "train", *MICRO, "--run-dir", str(tmp_path / "here")]) == 0
    assert main(["-q", "--pin-kernels", *evaluate, str(tmp_path / "here")]) == 0
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    assert main(["-q", "--pin-kernels", "train", *MICRO, "--run-dir", str(tmp_path / "elsewhere")]) == 0
    assert main(["-q", "--pin-kernels", *evaluate, str(tmp_path / "elsewhere")]) == 0
    assert same(last_weights(tmp_path / "here"), last_weights(tmp_path / "elsewhere"))
    a, b = (load_npz(tmp_path / r / "eval" / "default" / "concept_probs.npz") for r in ("here", "elsewhere"))
    assert np.array_equal(a["probs"], b["probs"])
    kernels = json.loads((tmp_path / "here" / "run.json").read_text())["versions"]["kernels"]
    assert kernels == {"cpu_capability": "AVX2", "threads": 1, "onednn": False, "pinned": True}
    assert json.loads((tmp_path / "avx2" / "run.json").read_text())["versions"]["kernels"]["pinned"] is False
    # The weights every x86-64 machine with AVX2 trains (tests/golden/pinned_micro.json, made on another machine
    # than most of those that run this test): where this fails, the pin misses a library that picks by the CPU.
    golden = json.loads(Path("tests/golden/pinned_micro.json").read_text())
    assert weights_sha(last_weights(tmp_path / "here")) == golden["weights_sha256"], golden["made_on"]

    # Half a pinned run would not be reproducible: resuming it unpinned (or the reverse) is refused.
    assert main(["-q", "train", "--run-dir", str(tmp_path / "here"), "--resume"]) == 2
    assert main(["-q", "--pin-kernels", "train", "--run-dir", str(tmp_path / "here"), "--resume"]) == 0
    assert main(["-q", "--pin-kernels", "train", "--run-dir", str(tmp_path / "avx2"), "--resume"]) == 2
    assert "--pin-kernels" in capfd.readouterr().err


def test_a_failing_pinned_command_keeps_its_exit_code_and_message(tmp_path, capfd):
    assert main(["-q", "--pin-kernels", "evaluate", str(tmp_path / "no-such-run")]) == 2
    assert "no-such-run" in capfd.readouterr().err


def test_a_pinned_child_ended_by_a_signal_exits_as_a_shell_reports_it(monkeypatch):
    from conceptspace import kernels

    class Killed:
        def __init__(self, *args, **kwargs):
            pass

        def wait(self):
            return -15  # SIGTERM

    monkeypatch.setattr(kernels.subprocess, "Popen", Killed)
    assert kernels.run_pinned(["train"]) == 143
