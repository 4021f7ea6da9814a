import pytest
import torch

from conceptspace.model.checkpoints import (
    CheckpointError,
    checkpoint_steps,
    list_checkpoints,
    load_tensors,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_tensors,
)


@pytest.mark.parametrize("spacing", ["quadratic", "log", "linear"])
def test_checkpoint_steps_sorted_unique_with_endpoints(spacing):
    steps = checkpoint_steps(20000, 60, spacing, first=500)
    assert steps == sorted(set(steps)) and steps[0] == 500 and steps[-1] == 20000


def test_quadratic_matches_paper_schedule():
    assert checkpoint_steps(20000, 60, "quadratic", first=500)[:4] == [500, 594, 696, 807]


def test_roundtrip_and_atomic_names(tmp_path):
    path = tmp_path / "checkpoints" / "step=000000007.safetensors"
    save_tensors(path, {"a": torch.arange(3.0)}, {"step": 7})
    tensors, meta = load_tensors(path)
    assert torch.equal(tensors["a"], torch.arange(3.0)) and meta == {"step": 7}
    assert list_checkpoints(tmp_path) == [(7, path)]
    assert not list(path.parent.glob(".*tmp*"))


def test_truncated_and_foreign_files_fail_clearly(tmp_path):
    path = tmp_path / "c.safetensors"
    save_tensors(path, {"a": torch.zeros(100)}, {"step": 1})
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(CheckpointError, match="c.safetensors.*damaged"):
        load_tensors(path)
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="c.safetensors"):
        load_tensors(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_tensors(tmp_path / "missing.safetensors")


def test_optimizer_state_roundtrip():
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(lin.parameters(), lr=1e-2)
    lin(torch.randn(4, 3)).sum().backward()
    opt.step()
    flat = optimizer_to_tensors(opt)
    opt2 = torch.optim.AdamW(lin.parameters(), lr=1e-2)
    optimizer_from_tensors(opt2, flat)
    for a, b in zip(opt.state.values(), opt2.state.values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
