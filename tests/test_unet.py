"""Tests for ConditionalUNet: shapes, init, hook sites, conditioning path, trainability."""

import copy

import pytest
import torch

from conceptspace.model.unet import ConditionalUNet, SelfAttention, timestep_embedding

B, PROMPT_DIM, EMBED_DIM = 4, 5, 12
CONDITIONINGS = ["sep_mlp", "common_linear"]


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny models gain nothing from 2 threads, and lose a lot when other jobs load the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_model(conditioning: str = "sep_mlp", **kwargs) -> ConditionalUNet:
    """A tiny model: 8 px, widths (8, 16), seeded."""
    torch.manual_seed(0)
    kw = dict(image_size=8, prompt_dim=PROMPT_DIM, widths=(8, 16), embed_dim=EMBED_DIM, conditioning=conditioning)
    return ConditionalUNet(**{**kw, **kwargs})


def perturb(model: ConditionalUNet, seed: int = 0) -> ConditionalUNet:
    """Add seeded noise to every parameter so zero-initialised convs stop hiding the body."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model


def inputs(seed: int = 1, image_size: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 3, image_size, image_size, generator=g)  # [B, C, H, W]
    t = torch.rand(B, generator=g)  # [B]
    prompt = torch.rand(B, PROMPT_DIM, generator=g)  # [B, prompt_dim]
    return x, t, prompt


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
@pytest.mark.parametrize("widths", [(8,), (8, 16), (8, 16, 16)])
def test_output_shape(conditioning, widths):
    model = perturb(make_model(conditioning, widths=widths))
    x, t, p = inputs()
    assert model(x, t, p).shape == x.shape


def test_output_equals_input_at_init():
    x, t, p = inputs()
    assert torch.equal(make_model()(x, t, p), x)


def test_scalar_t_broadcasts():
    model = perturb(make_model())
    x, _, p = inputs()
    assert torch.equal(model(x, torch.tensor(0.3), p), model(x, torch.full((B,), 0.3), p))


def test_output_depends_on_t_and_prompt():
    model = perturb(make_model())
    x, t, p = inputs()
    ref = model(x, t, p)
    assert not torch.allclose(model(x, t.flip(0), p), ref)
    assert not torch.allclose(model(x, t, p.flip(0)), ref)


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
@pytest.mark.parametrize("fn", [lambda v, n: None, lambda v, n: v], ids=["none", "self"])
def test_identity_hooks_are_bit_identical(conditioning, fn):
    model = perturb(make_model(conditioning))
    x, t, p = inputs()
    ref = model(x, t, p)
    with model.hooks([("*", fn)]):
        out = model(x, t, p)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_zeroing_cond_hooks_equals_zero_projectors(conditioning):
    model = perturb(make_model(conditioning))
    x, t, p = inputs()
    with torch.no_grad(), model.hooks([("*.hook_cond", lambda v, n: torch.zeros_like(v))]):
        hooked = model(x, t, p)
    # Same weights, but every block's concept projector ends in zeroed weights (GELU(0) = 0 for sep_mlp).
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for name, module in zeroed.named_modules():
            if name.endswith("cond_proj"):
                last = module[-2] if conditioning == "sep_mlp" else module
                last.weight.zero_()
                last.bias.zero_()
        expected = zeroed(x, t, p)
        assert not torch.allclose(hooked, model(x, t, p))
    torch.testing.assert_close(hooked, expected, rtol=0, atol=1e-6)


def test_replacing_prompt_hook_equals_other_prompt():
    model = perturb(make_model("common_linear"))
    x, t, p = inputs()
    other = torch.rand(B, PROMPT_DIM, generator=torch.Generator().manual_seed(7))
    with model.hooks([("hook_prompt", lambda v, n: other)]):
        assert torch.equal(model(x, t, p), model(x, t, other))


def test_hooks_removed_after_context_and_exception():
    model = perturb(make_model())
    x, t, p = inputs()
    ref = model(x, t, p)
    zero = [("*.hook_cond", lambda v, n: torch.zeros_like(v))]
    with model.hooks(zero):
        pass
    with pytest.raises(ValueError):
        with model.hooks(zero):
            raise ValueError("inside")
    assert all(not hp._fns for hp in model.hook_points().values())
    assert torch.equal(model(x, t, p), ref)


def test_unknown_hook_name_raises_keyerror():
    model = make_model()
    with pytest.raises(KeyError, match="hook_prompt"):
        with model.hooks([("down.0.hook_nope", lambda v, n: v)]):
            pass
    with pytest.raises(KeyError):  # hook_embed exists only for common_linear
        model.run_with_cache(*inputs(), names="hook_embed")


def test_cond_hook_names_in_forward_order():
    model = make_model(res_blocks=2)
    fired = []
    with model.hooks([("*.hook_cond", lambda v, name: fired.append(name))]):
        model(*inputs())
    assert fired == model.cond_hook_names()
    assert len(fired) == 2 * 2 + 2 + 2 * 2  # down, mid, up
    assert fired[0].startswith("down.0.") and fired[-1].startswith("up.1.")


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_run_with_cache_shapes(conditioning):
    model = make_model(conditioning)
    _, cache = model.run_with_cache(*inputs())
    expected = {"hook_prompt": (B, PROMPT_DIM)}
    if conditioning == "common_linear":
        expected["hook_embed"] = (B, EMBED_DIM)
    channels = [8, 16, 16, 16, 16, 8]  # down.0, down.1, mid1, mid2, up.0 (deepest), up.1
    expected.update({name: (B, c) for name, c in zip(model.cond_hook_names(), channels, strict=True)})
    # the body: every ResBlock's output [B, C, H, W] (same blocks, same widths) and the attention's update
    x = inputs()[0]
    sizes = [x.shape[-1], x.shape[-1] // 2, x.shape[-1] // 2, x.shape[-1] // 2, x.shape[-1] // 2, x.shape[-1]]
    expected.update({name.replace("hook_cond", "hook_out"): (B, c, s, s)
                     for name, c, s in zip(model.cond_hook_names(), channels, sizes, strict=True)})
    expected["mid_attn.hook_attn"] = (B, 16, sizes[2], sizes[2])
    assert {k: tuple(v.shape) for k, v in cache.items()} == expected


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_cond_embeddings_do_not_depend_on_t(conditioning):
    model = perturb(make_model(conditioning))
    x, t, p = inputs()
    _, cache_a = model.run_with_cache(x, t, p, names="*.hook_cond")
    _, cache_b = model.run_with_cache(x, 1.0 - t, p, names="*.hook_cond")
    assert all(torch.equal(cache_a[k], cache_b[k]) for k in cache_a)


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_cond_parameter_names_are_exactly_the_conditioning_path(conditioning):
    model = perturb(make_model(conditioning))
    names = model.cond_parameter_names()
    assert names and not any("time" in n or "conv" in n or "norm" in n for n in names)
    assert any(".cond_proj." in n for n in names)
    assert any(n.startswith("cond_embed.") for n in names) == (conditioning == "common_linear")
    # Backprop from the block embeddings alone reaches exactly these parameters.
    seen = []
    with model.hooks([("*.hook_cond", lambda v, n: seen.append(v))]):
        model(*inputs())
    torch.stack([v.sum() for v in seen]).sum().backward()
    reached = [n for n, prm in model.named_parameters() if prm.grad is not None]
    assert reached == names


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_forward_backward(conditioning):
    model = perturb(make_model(conditioning, dropout=0.1)).train()
    x, t, p = inputs()
    model(x, t, p).square().mean().backward()
    for name, prm in model.named_parameters():
        assert prm.grad is not None and torch.isfinite(prm.grad).all(), name
    assert all(model.get_parameter(n).grad.abs().sum() > 0 for n in model.cond_parameter_names())


def test_gradient_flows_through_replacing_hook():
    model = perturb(make_model())
    scale = torch.tensor(1.5, requires_grad=True)
    with model.hooks([("mid1.hook_cond", lambda v, n: v * scale)]):
        model(*inputs()).square().mean().backward()
    assert scale.grad is not None and scale.grad.abs() > 0
    assert model.mid1.cond_proj[0].weight.grad.abs().sum() > 0


def test_hooks_under_no_grad():
    model = perturb(make_model())
    with torch.no_grad():
        out, cache = model.run_with_cache(*inputs(), names="*.hook_cond")
    assert not out.requires_grad and len(cache) == 6


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(widths=()),
        dict(widths=(8, 0)),
        dict(widths=(12,)),  # 8 groups do not divide 12 channels
        dict(image_size=6, widths=(8, 16, 16)),  # 6 is not divisible by 4
        dict(image_size=0),
        dict(res_blocks=0),
        dict(time_embed_dim=7),
        dict(conditioning="film"),
    ],
)
def test_invalid_arguments_raise_valueerror(kwargs):
    with pytest.raises(ValueError):
        make_model(**kwargs)


def test_wrong_input_size_raises_valueerror():
    x, t, p = inputs(image_size=16)
    with pytest.raises(ValueError, match="shape"):
        make_model()(x, t, p)


def test_time_embedding_uses_timescales_1_to_10000():
    model = make_model(time_embed_dim=8)
    t = torch.tensor([0.0, 0.25, 1.0])
    emb = timestep_embedding(t, model.time_freqs)  # [3, 8]
    torch.testing.assert_close(emb[:, 0], torch.sin(1000 * t))  # timescale 1
    torch.testing.assert_close(emb[:, 3], torch.sin(1000 * t / 10000))  # timescale 10000
    torch.testing.assert_close(emb[:, 4:], torch.cos(1000 * t[:, None] * model.time_freqs))


@pytest.mark.parametrize("channels, heads", [(64, 4), (32, 2), (16, 1)])
def test_self_attention_matches_reference(channels, heads):
    torch.manual_seed(0)
    attn = SelfAttention(channels, norm_groups=8)
    assert attn.heads == heads
    x = torch.randn(2, channels, 4, 4)  # [B, C, H, W]
    tokens = attn.norm(x).flatten(2).transpose(1, 2)  # [B, HW, C]
    q, k, v = attn.qkv(tokens).chunk(3, dim=-1)
    d = channels // heads
    outs = []
    for i in range(heads):
        sl = slice(i * d, (i + 1) * d)
        w = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / d**0.5, dim=-1)  # [B, HW, HW]
        outs.append(w @ v[..., sl])
    expected = x + attn.proj(torch.cat(outs, dim=-1)).transpose(1, 2).reshape(x.shape)
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)


def test_tiny_model_overfits_one_batch():
    model = make_model()
    x, t, p = inputs()
    target = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = (model(x, t, p) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10


def test_sampling_upsample_path_gives_the_same_output_as_training_path():
    """Without gradients the up path copies pixels instead of calling interpolate: bit-identical outputs."""
    import torch

    from conceptspace.model.unet import ConditionalUNet

    torch.manual_seed(0)
    net = ConditionalUNet(image_size=16, prompt_dim=4, widths=(8, 16, 32), norm_groups=4)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x, t, prompt = torch.randn(3, 3, 16, 16), torch.rand(3), torch.randn(3, 4)
    with torch.no_grad():
        fast = net(x, t, prompt)
    assert torch.equal(fast, net(x, t, prompt).detach())
