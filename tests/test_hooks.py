"""Tests for the hook mechanism on a toy model (the U-Net's hooks are tested in test_unet.py)."""

import pytest
import torch
from torch import nn

from conceptspace.model.hooks import HookedModule, HookPoint


class Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.hook_b = HookPoint()  # [B, 4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hook_b(self.lin(x))


class Toy(HookedModule):
    """hook_a once, then inner.hook_b twice (shared weights), so multi-firing is covered."""

    def __init__(self) -> None:
        super().__init__()
        self.hook_a = HookPoint()  # [B, 4]
        self.inner = Inner()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hook_a(x)
        return self.inner(self.inner(h))


@pytest.fixture
def toy() -> Toy:
    torch.manual_seed(0)
    return Toy()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(3, 4, generator=torch.Generator().manual_seed(1))


def n_installed(model: HookedModule) -> int:
    return sum(len(p._fns) for p in model.hook_points().values())


def test_hook_points_are_keyed_by_dotted_name(toy):
    assert list(toy.hook_points()) == ["hook_a", "inner.hook_b"]


def test_hook_point_without_fns_returns_same_tensor(x):
    assert HookPoint()(x) is x


@pytest.mark.parametrize("fn", [lambda v, name: None, lambda v, name: v], ids=["none", "self"])
def test_identity_hooks_are_bit_identical(toy, x, fn):
    ref = toy(x)
    with toy.hooks([("hook_a", fn), ("inner.hook_b", fn)]):
        out = toy(x)
    assert torch.equal(out, ref)


def test_replacements_apply_in_installation_order(toy, x):
    point = toy.hook_a
    with toy.hooks([("hook_a", lambda v, n: v + 1), ("hook_a", lambda v, n: v * 2)]):
        assert torch.equal(point(x), (x + 1) * 2)


def test_hook_fn_receives_dotted_name(toy, x):
    seen = []
    with toy.hooks([("*", lambda v, name: seen.append(name))]):
        toy(x)
    assert seen == ["hook_a", "inner.hook_b", "inner.hook_b"]


def test_pattern_selects_matching_hooks(toy):
    assert toy.resolve_hook_names("*.hook_b") == ["inner.hook_b"]
    assert toy.resolve_hook_names(["hook_a", "*hook*"]) == ["hook_a", "inner.hook_b"]


def test_unknown_name_raises_keyerror_and_installs_nothing(toy):
    with pytest.raises(KeyError, match="inner.hook_b"):  # the message lists what exists
        with toy.hooks([("hook_a", lambda v, n: v), ("hook_nope", lambda v, n: v)]):
            pass
    assert n_installed(toy) == 0


def test_hooks_removed_on_exit_and_on_exception(toy, x):
    ref = toy(x)
    zero = lambda v, n: torch.zeros_like(v)  # noqa: E731
    with toy.hooks([("*", zero)]):
        assert n_installed(toy) == 2
        assert not torch.equal(toy(x), ref)
    assert n_installed(toy) == 0
    with pytest.raises(RuntimeError):
        with toy.hooks([("*", zero)]):
            raise RuntimeError("boom")
    assert n_installed(toy) == 0
    assert torch.equal(toy(x), ref)


def test_nested_contexts_remove_only_their_own_hooks(toy, x):
    fn = lambda v, n: v  # noqa: E731 - the same fn in both contexts
    with toy.hooks([("hook_a", fn)]):
        with toy.hooks([("hook_a", fn)]):
            assert len(toy.hook_a._fns) == 2
        assert len(toy.hook_a._fns) == 1
    assert n_installed(toy) == 0


def test_run_with_cache_returns_detached_copies(toy, x):
    out, cache = toy.run_with_cache(x)
    assert torch.equal(out, toy(x))
    assert list(cache) == ["hook_a", "inner.hook_b"]
    assert torch.equal(cache["hook_a"], x) and cache["hook_a"] is not x
    assert not cache["inner.hook_b"].requires_grad
    # inner.hook_b fires twice; the cache keeps the second (last) value
    assert torch.equal(cache["inner.hook_b"], out)
    assert n_installed(toy) == 0


def test_run_with_cache_selects_names(toy, x):
    _, cache = toy.run_with_cache(x, names="*.hook_b")
    assert list(cache) == ["inner.hook_b"]
    _, cache = toy.run_with_cache(x, names=["hook_a"])
    assert list(cache) == ["hook_a"]


def test_run_with_cache_sees_active_replacements(toy, x):
    with toy.hooks([("hook_a", lambda v, n: v * 0)]):
        _, cache = toy.run_with_cache(x, names="hook_a")
    assert torch.equal(cache["hook_a"], torch.zeros_like(x))


def test_gradient_flows_through_replacement(toy, x):
    scale = torch.tensor(2.0, requires_grad=True)
    with toy.hooks([("hook_a", lambda v, n: v * scale)]):
        toy(x).sum().backward()
    assert scale.grad is not None and scale.grad.abs() > 0
    assert toy.inner.lin.weight.grad is not None


def test_hooks_work_under_no_grad(toy, x):
    with torch.no_grad(), toy.hooks([("hook_a", lambda v, n: v + 1)]):
        out = toy(x)
    assert torch.equal(out, toy(x + 1).detach())


def test_run_with_hooks_matches_context(toy, x):
    hooks = [("inner.hook_b", lambda v, n: -v)]
    with toy.hooks(hooks):
        ref = toy(x)
    assert torch.equal(toy.run_with_hooks(x, fwd_hooks=hooks), ref)


def test_body_hooks_and_transformerlens_style_functions(micro_model):
    import torch

    from conceptspace.data.prompts import class_prompts

    cfg, space, model, _ = micro_model
    x, t = torch.randn(2, 3, 8, 8), torch.zeros(2)
    h = torch.from_numpy(class_prompts(space, ["00", "11"]))
    outs = [n for n in model.hook_points() if n.endswith("hook_out")]
    assert "mid1.hook_out" in outs and "mid_attn.hook_attn" in model.hook_points()
    base, cache = model.run_with_cache(x, t, h, names=["*.hook_out", "mid_attn.hook_attn"])
    assert cache["mid1.hook_out"].shape == (2, cfg.model.widths[-1], 4, 4)
    seen = []

    def tl_style(tensor, hook):  # TransformerLens' signature: (tensor, hook) with hook.name
        seen.append(hook.name)
        return tensor * 0

    with model.hooks([("mid1.hook_out", tl_style)]):
        zeroed = model(x, t, h)
    assert seen == ["mid1.hook_out"] and not torch.equal(zeroed, base)
    assert torch.equal(model(x, t, h), base)  # removed on exit; identity hook points change nothing
