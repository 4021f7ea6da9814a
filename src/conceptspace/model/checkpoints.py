"""Checkpoints: when to save, how to save safely, and how to load without unpickling anything.

`checkpoints/step=000001234.safetensors` holds the weights at each scheduled step (model.* and objective.*),
`resume.safetensors` weights and optimizer state at the latest checkpoint, `resume.prev.safetensors` the one
before (the fallback when the latest is damaged); paths come from `rundir.RunDir`. Files are written atomically,
so a killed run never leaves half a file behind. Metadata (step, config, format) is JSON inside the safetensors
header.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..errors import ConceptspaceError
from ..rundir import RunDir, atomic_write

FORMAT = "conceptspace-checkpoint-1"
STEP_RE = re.compile(r"^step=(\d+)\.safetensors$")


class CheckpointError(ConceptspaceError):
    """A checkpoint file that is missing, truncated or not ours."""


def checkpoint_steps(n_steps: int, n: int, spacing: str = "quadratic", first: int = 50) -> list[int]:
    """Sorted unique save steps in [first, n_steps], always ending at n_steps.

    quadratic: int(linspace(sqrt(first), sqrt(n_steps), n)^2), the paper's schedule (dense early).
    """
    first = max(1, min(first, n_steps))
    if spacing == "quadratic":
        steps = np.linspace(np.sqrt(first), np.sqrt(n_steps), n) ** 2
    elif spacing == "log":
        steps = np.geomspace(first, n_steps, n)
    elif spacing == "linear":
        steps = np.linspace(first, n_steps, n)
    else:
        raise ValueError(f"unknown checkpoint spacing {spacing!r}")
    out = sorted({int(s + 1e-9) for s in steps} | {n_steps})  # int() truncates, as the paper does
    return [s for s in out if first <= s <= n_steps]


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete scheduled checkpoint, by step."""
    folder = RunDir(run_dir).checkpoints
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_RE.match(p.name))]
    return sorted(found)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Atomic safetensors write (the run directory's one atomic write: temp file, fsync, rename)."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda fh: fh.write(save(flat, metadata={"format": FORMAT, "meta": json.dumps(meta)})))


def read_meta(path: str | Path) -> dict:
    """The metadata of a checkpoint (step, config) from its header alone, without loading any tensor."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            info = json.loads(fh.read(n)).get("__metadata__", {})
        if info.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a conceptspace checkpoint (format {info.get('format')!r})")
        return json.loads(info["meta"])
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: damaged checkpoint header ({type(exc).__name__})") from None


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Load (tensors, meta); a damaged or foreign file raises CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        tensors = load_file(str(path))
        with open(path, "rb") as fh:  # the header holds the metadata; load_file does not return it
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        info = header.get("__metadata__", {})
        if info.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a conceptspace checkpoint (format {info.get('format')!r})")
        return tensors, json.loads(info["meta"])
    except CheckpointError:
        raise
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: damaged or truncated checkpoint ({type(exc).__name__}: {exc})") from None


def split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under `prefix.`, with the prefix removed."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Flatten an optimizer's per-parameter state into named tensors (no pickling)."""
    out = {}
    for idx, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            out[f"optim.{idx}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return out


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of `optimizer_to_tensors`; hyper-parameters come from the freshly built optimizer."""
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in split_prefix(tensors, "optim").items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    sd["state"] = state
    opt.load_state_dict(sd)
