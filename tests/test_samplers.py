"""Sampler tests: closed-form steps, method equivalences, a point-mass oracle, guidance and determinism."""

import math

import pytest
import torch
from torch import Tensor, nn

from conceptspace.model.objectives import DDPMObjective, Objective, VDMObjective
from conceptspace.model.samplers import (
    ddim_step,
    ddpm_step,
    guided_eps,
    sample,
    sampler_timesteps,
    vdm_step,
)
from conceptspace.model.schedules import alpha_sigma

SHAPE = (1, 2, 3)


class PointMassDenoiser(nn.Module):
    """Bayes-optimal eps for a dataset holding the single image c: (z_t - alpha_t c) / sigma_t."""

    def __init__(self, objective: Objective, c01: Tensor) -> None:
        super().__init__()
        self.objective = objective
        self.c = objective.to_model(c01).double()  # [C, H, W]
        self.modes: list[bool] = []  # self.training at every call

    def gamma_of(self, t_net: Tensor) -> Tensor:
        """Invert the objective's net_time (VDM: through the config gamma range; DDPM: t_net = index / T)."""
        obj = self.objective
        if isinstance(obj, VDMObjective):
            return obj.gamma_min + t_net.double() * (obj.gamma_max - obj.gamma_min)
        return obj.schedule.gamma_table[torch.round(t_net.double() * obj.n_timesteps).long()]

    def forward(self, x: Tensor, t_net: Tensor, prompt: Tensor) -> Tensor:
        self.modes.append(self.training)
        alpha, sigma = (s[:, None, None, None] for s in alpha_sigma(self.gamma_of(t_net)))
        return ((x.double() - alpha * self.c) / sigma).to(x.dtype)


class PromptModel(nn.Module):
    """Prompt-dependent elementwise fake denoiser that records the batches it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[Tensor] = []

    def forward(self, x: Tensor, t_net: Tensor, prompt: Tensor) -> Tensor:
        self.batches.append(prompt)
        return 0.5 * x + prompt.mean(1)[:, None, None, None] * (1 + t_net[:, None, None, None])


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def vdm_with_low_gamma0() -> VDMObjective:
    """gamma(0) = -20, gamma(1) = 10: the z_0 output is within sigma_0 = e^-10 of the data."""
    obj = VDMObjective()
    with torch.no_grad():
        obj.schedule.b.fill_(-20.0)
        obj.schedule.w.fill_(30.0)
    return obj


def test_sampler_timesteps_grids():
    vdm = sampler_timesteps(VDMObjective(), 4)
    assert torch.allclose(vdm, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64))
    ddpm = sampler_timesteps(DDPMObjective(n_timesteps=1000), 50) * 1000
    assert ddpm[0].item() == pytest.approx(999) and ddpm[-2].item() == pytest.approx(19)
    assert ddpm[-1].item() == pytest.approx(-1)  # clean data
    assert torch.allclose(ddpm.diff()[:-1], torch.full((49,), -20.0, dtype=torch.float64))
    every_index = sampler_timesteps(DDPMObjective(n_timesteps=10), 10) * 10
    assert torch.allclose(every_index, torch.arange(9.0, -2, -1, dtype=torch.float64))
    with pytest.raises(ValueError):
        sampler_timesteps(DDPMObjective(n_timesteps=10), 11)


def test_ddpm_step_matches_ho_posterior():
    obj = DDPMObjective("linear", 1000)
    i = 400
    ab, ab_prev = obj.schedule.alpha_bar[i].item(), obj.schedule.alpha_bar[i - 1].item()
    beta = obj.schedule.betas[i].item()
    z_t, eps_hat = torch.randn(2, *SHAPE, generator=gen(1)), torch.randn(2, *SHAPE, generator=gen(2))
    x0_hat = (z_t - math.sqrt(1 - ab) * eps_hat) / math.sqrt(ab)
    mean = (math.sqrt(ab_prev) * beta / (1 - ab)) * x0_hat + (math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)) * z_t
    std = math.sqrt((1 - ab_prev) / (1 - ab) * beta)
    g_t, g_s = obj.gamma(torch.tensor(i / 1000.0)), obj.gamma(torch.tensor((i - 1) / 1000.0))
    ones = torch.ones_like(z_t)
    assert torch.allclose(ddpm_step(z_t, eps_hat, g_t, g_s, torch.zeros_like(z_t)), mean, atol=1e-5)
    assert torch.allclose(ddpm_step(z_t, eps_hat, g_t, g_s, ones), mean + std, atol=1e-5)
    with pytest.raises(ValueError):
        ddpm_step(z_t, eps_hat, g_t, g_s)  # stochastic step without noise


def test_ddim_step_matches_song_formula():
    obj = DDPMObjective("cosine", 1000)
    t, s = 600, 550  # a strided jump
    ab_t, ab_s = obj.schedule.alpha_bar[t].item(), obj.schedule.alpha_bar[s].item()
    z_t, eps_hat = torch.randn(3, *SHAPE, generator=gen(1)), torch.randn(3, *SHAPE, generator=gen(2))
    noise = torch.randn(3, *SHAPE, generator=gen(3))
    x0_hat = (z_t - math.sqrt(1 - ab_t) * eps_hat) / math.sqrt(ab_t)
    g_t, g_s = obj.gamma(torch.tensor(t / 1000.0)), obj.gamma(torch.tensor(s / 1000.0))
    for eta in (0.0, 0.5):
        std = eta * math.sqrt((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s))
        expected = math.sqrt(ab_s) * x0_hat + math.sqrt(1 - ab_s - std**2) * eps_hat + std * noise
        assert torch.allclose(ddim_step(z_t, eps_hat, g_t, g_s, eta, noise), expected, atol=1e-5)


@pytest.mark.parametrize(("g_t", "g_s"), [(3.0, -1.0), (10.0, 9.5), (-4.0, -5.0), (2.0, -math.inf)])
def test_ddim_eta1_and_vdm_equal_ddpm_ancestral(g_t: float, g_s: float):
    z_t, eps_hat = torch.randn(4, *SHAPE, generator=gen(1)), torch.randn(4, *SHAPE, generator=gen(2))
    noise = torch.randn(4, *SHAPE, generator=gen(3))
    ancestral = ddpm_step(z_t, eps_hat, g_t, g_s, noise)
    assert torch.allclose(ddim_step(z_t, eps_hat, g_t, g_s, 1.0, noise), ancestral, atol=1e-5)
    assert torch.allclose(vdm_step(z_t, eps_hat, g_t, g_s, noise), ancestral, atol=1e-5)
    # the posterior variance alone: ddpm's std = ddim(eta=1)'s std = sigma_s sqrt(c)
    zeros = torch.zeros_like(noise)
    std = (ddpm_step(z_t, eps_hat, g_t, g_s, noise + 1) - ddpm_step(z_t, eps_hat, g_t, g_s, noise)).mean()
    std_ddim = ddim_step(z_t, eps_hat, g_t, g_s, 1.0, zeros + 1) - ddim_step(z_t, eps_hat, g_t, g_s, 1.0, zeros)
    _, sigma_s = alpha_sigma(torch.tensor(g_s, dtype=torch.float64))
    assert std.item() == pytest.approx(sigma_s.item() * math.sqrt(-math.expm1(g_s - g_t)), abs=1e-5)
    assert std_ddim.mean().item() == pytest.approx(std.item(), abs=1e-5)


def test_vdm_step_matches_paper_formula():
    g_t, g_s = 4.0, 1.0
    z_t, eps_hat = torch.randn(2, *SHAPE, generator=gen(1)), torch.randn(2, *SHAPE, generator=gen(2))
    noise = torch.randn(2, *SHAPE, generator=gen(3))
    sig = lambda g: 1 / (1 + math.exp(-g))  # noqa: E731
    c = -math.expm1(g_s - g_t)
    mean = math.sqrt(sig(-g_s) / sig(-g_t)) * (z_t - c * math.sqrt(sig(g_t)) * eps_hat)
    expected = mean + math.sqrt(sig(g_s) * c) * noise
    assert torch.allclose(vdm_step(z_t, eps_hat, g_t, g_s, noise), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("objective", "method", "eta", "atol"),
    [
        (DDPMObjective("cosine", 1000), "ddim", 0.0, 1e-5),
        (DDPMObjective("linear", 1000), "ddim", 0.5, 1e-5),
        (DDPMObjective("cosine", 1000), "ddpm", 0.0, 1e-5),
        (DDPMObjective("cosine", 1000), "vdm", 0.0, 1e-5),
        (vdm_with_low_gamma0(), "ddim", 0.0, 1e-3),
        (vdm_with_low_gamma0(), "ddpm", 0.0, 1e-3),
        (vdm_with_low_gamma0(), "vdm", 0.0, 1e-3),
    ],
)
def test_point_mass_oracle_returns_the_data(objective: Objective, method: str, eta: float, atol: float):
    c = torch.rand(SHAPE, generator=gen(9))
    model = PointMassDenoiser(objective, c)
    out = sample(model, objective, torch.zeros(8, 4), shape=SHAPE, n_steps=20,
                 method=method, eta=eta, generator=gen())  # type: ignore[arg-type]
    assert out.shape == (8, *SHAPE)
    assert torch.allclose(out, c.expand_as(out), atol=atol)


@pytest.mark.parametrize("method", ["ddpm", "vdm"])
def test_vdm_output_keeps_sigma0_noise(method: str):
    """At the default gamma(0) = -5 the output is z_0 ~ N(alpha_0 c, sigma_0^2), not c (no division by alpha_0)."""
    obj = VDMObjective()
    c = torch.rand(SHAPE, generator=gen(9))
    out = sample(PointMassDenoiser(obj, c), obj, torch.zeros(256, 4), shape=SHAPE, n_steps=10,
                 method=method, generator=gen())  # type: ignore[arg-type]
    alpha_0, sigma_0 = alpha_sigma(torch.tensor(-5.0))
    residual = (out - alpha_0 * c) / sigma_0
    assert residual.mean().abs().item() < 0.1
    assert residual.std().item() == pytest.approx(1.0, abs=0.1)


def test_ddpm_equals_vdm_sampler_on_vdm_objective():
    obj, prompts = VDMObjective(), torch.rand(3, 4, generator=gen(4))
    a = sample(PromptModel(), obj, prompts, shape=SHAPE, n_steps=8, method="ddpm", generator=gen())
    b = sample(PromptModel(), obj, prompts, shape=SHAPE, n_steps=8, method="vdm", generator=gen())
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)


def test_same_seed_bit_identical_and_batch_size_invariant():
    obj, prompts = DDPMObjective("linear", 100), torch.rand(5, 4, generator=gen(4))
    kwargs = dict(shape=SHAPE, n_steps=10, method="ddpm", guidance_scale=2.0)
    a = sample(PromptModel(), obj, prompts, generator=gen(3), **kwargs)  # type: ignore[arg-type]
    b = sample(PromptModel(), obj, prompts, generator=gen(3), **kwargs)  # type: ignore[arg-type]
    c = sample(PromptModel(), obj, prompts, generator=gen(3), batch_size=2, **kwargs)  # type: ignore[arg-type]
    d = sample(PromptModel(), obj, prompts, generator=gen(4), **kwargs)  # type: ignore[arg-type]
    assert a.equal(b)
    assert torch.allclose(a, c, atol=1e-6)
    assert not torch.allclose(a, d)


def test_guidance_one_runs_only_the_conditional_pass():
    obj, prompts, model = VDMObjective(), torch.rand(6, 4, generator=gen(4)), PromptModel()
    sample(model, obj, prompts, shape=SHAPE, n_steps=5, guidance_scale=1.0, batch_size=4, generator=gen())
    assert len(model.batches) == 5 * 2  # n_steps x chunks, one forward each
    assert all(not (b == obj.null_value).all(dim=1).any() for b in model.batches)
    assert [len(b) for b in model.batches[:2]] == [4, 2]


def test_guidance_zero_is_unconditional_and_batched():
    obj, prompts = DDPMObjective("linear", 100, null_value=-1.0), torch.rand(3, 4, generator=gen(4))
    model = PromptModel()
    guided = sample(model, obj, prompts, shape=SHAPE, n_steps=6, guidance_scale=0.0, generator=gen())
    assert len(model.batches) == 6 and len(model.batches[0]) == 6  # cond + uncond in one forward
    uncond = sample(PromptModel(), obj, obj.null_prompt(prompts), shape=SHAPE, n_steps=6, generator=gen())
    assert torch.allclose(guided, uncond, atol=1e-6)


def test_guided_eps_formula():
    obj, model = VDMObjective(null_value=0.0), PromptModel()
    z, t_net, prompts = torch.randn(2, *SHAPE, generator=gen(1)), torch.full((2,), 0.3), torch.rand(2, 4)
    cond, uncond = model(z, t_net, prompts), model(z, t_net, torch.zeros_like(prompts))
    out = guided_eps(model, obj, z, t_net, prompts, 3.0)
    assert torch.allclose(out, uncond + 3.0 * (cond - uncond), atol=1e-6)


def test_sample_uses_eval_mode_and_restores_it():
    obj = DDPMObjective("linear", 100)
    model = PointMassDenoiser(obj, torch.zeros(SHAPE)).train()
    sample(model, obj, torch.zeros(2, 4), shape=SHAPE, n_steps=3, generator=gen())
    assert model.modes == [False] * 3 and model.training
    with pytest.raises(ValueError):
        sample(model, obj, torch.zeros(2, 4), shape=SHAPE, method="ddpm", eta=0.5)


@pytest.mark.parametrize("eta", [0.0, 0.7])
@pytest.mark.parametrize("t", [519, 19])  # 19 -> 19 - 20 < 0: the final jump onto clean data
def test_ddim_step_matches_diffusers(eta: float, t: int):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDIMScheduler(
        beta_schedule="linear", clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing"
    )
    scheduler.set_timesteps(50)
    obj = DDPMObjective("linear", 1000)
    z_t, eps_hat = torch.randn(2, *SHAPE, generator=gen(1)), torch.randn(2, *SHAPE, generator=gen(2))
    theirs = scheduler.step(eps_hat, t, z_t, eta=eta, generator=gen(5)).prev_sample
    noise = torch.randn(2, *SHAPE, generator=gen(5))
    g_t, g_s = obj.gamma(torch.tensor(t / 1000.0)), obj.gamma(torch.tensor((t - 20) / 1000.0))
    assert torch.allclose(ddim_step(z_t, eps_hat, g_t, g_s, eta, noise), theirs, atol=1e-4)


@pytest.mark.parametrize("t", [519, 19])
def test_ddpm_step_matches_diffusers(t: int):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDPMScheduler(
        beta_schedule="squaredcos_cap_v2", clip_sample=False, timestep_spacing="trailing"
    )
    scheduler.set_timesteps(50)
    obj = DDPMObjective("cosine", 1000)
    z_t, eps_hat = torch.randn(2, *SHAPE, generator=gen(1)), torch.randn(2, *SHAPE, generator=gen(2))
    theirs = scheduler.step(eps_hat, t, z_t, generator=gen(5)).prev_sample
    noise = torch.randn(2, *SHAPE, generator=gen(5))
    g_t, g_s = obj.gamma(torch.tensor(t / 1000.0)), obj.gamma(torch.tensor((t - 20) / 1000.0))
    assert torch.allclose(ddpm_step(z_t, eps_hat, g_t, g_s, noise), theirs, atol=1e-4)


def test_timesteps_match_diffusers_trailing_spacing():
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDIMScheduler(timestep_spacing="trailing")
    for n_steps in (50, 30, 7):
        scheduler.set_timesteps(n_steps)
        ours = torch.round(sampler_timesteps(DDPMObjective(n_timesteps=1000), n_steps) * 1000)[:-1]
        assert ours.long().tolist() == scheduler.timesteps.tolist()


def test_clip_x0_keeps_generations_in_the_data_range_and_is_inert_for_good_predictions():
    from conceptspace.model.objectives import DDPMObjective
    from conceptspace.model.samplers import sample

    obj = DDPMObjective(schedule="cosine", n_timesteps=1000)

    def bad(x, t, p):  # a poor early-training denoiser: its x0_hat explodes by 1/alpha near t = 1
        return torch.zeros_like(x)

    prompts = torch.zeros(4, 3)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    wild = sample(bad, obj, prompts, shape=(1, 4, 4), n_steps=10, method="ddim", generator=gen())
    tame = sample(bad, obj, prompts, shape=(1, 4, 4), n_steps=10, method="ddim", generator=gen(), clip_x0=True)
    assert wild.abs().max() > 10
    assert tame.min() >= -1e-5 and tame.max() <= 1 + 1e-5
    c = 0.3  # point mass at c (data space): the optimal denoiser's x0_hat is exactly c, clipping changes nothing

    def oracle(x, t, p):
        g = obj.gamma(torch.as_tensor(t[0].item() * 1.0))
        a, s = torch.sigmoid(-g).sqrt(), torch.sigmoid(g).sqrt()
        return (x - a * (2 * c - 1)) / s

    x = sample(oracle, obj, prompts, shape=(1, 4, 4), n_steps=10, method="ddim", generator=gen(), clip_x0=True)
    assert torch.allclose(x, torch.full_like(x, c), atol=1e-3)
