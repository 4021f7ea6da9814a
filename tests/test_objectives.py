"""Tests for the DDPM and VDM objectives: closed forms, a Bayes-optimal denoiser, anchors from the paper's setup."""

import math

import pytest
import torch
from torch import Tensor, nn

from conceptspace.model.objectives import DDPMObjective, Objective, VDMObjective
from conceptspace.model.schedules import alpha_sigma

SHAPE = (3, 8, 8)
BITS = 1 / math.log(2)


class PointMassDenoiser(nn.Module):
    """Bayes-optimal eps for a dataset holding the single image c: (z_t - alpha_t c) / sigma_t."""

    def __init__(self, objective: Objective, c01: Tensor) -> None:
        super().__init__()
        self.objective = objective
        self.c = objective.to_model(c01).double()  # [C, H, W]

    def gamma_of(self, t_net: Tensor) -> Tensor:
        """Invert the objective's net_time (VDM: through the config gamma range; DDPM: t_net = index / T)."""
        obj = self.objective
        if isinstance(obj, VDMObjective):
            return obj.gamma_min + t_net.double() * (obj.gamma_max - obj.gamma_min)
        idx = torch.round(t_net.double() * obj.n_timesteps).long()
        return obj.schedule.gamma_table[idx]

    def forward(self, x: Tensor, t_net: Tensor, prompt: Tensor) -> Tensor:
        alpha, sigma = (s[:, None, None, None] for s in alpha_sigma(self.gamma_of(t_net.detach())))
        return ((x.double() - alpha * self.c) / sigma).to(x.dtype)


def zeros_model(x: Tensor, t_net: Tensor, prompt: Tensor) -> Tensor:
    return torch.zeros_like(x)


def identity_model(x: Tensor, t_net: Tensor, prompt: Tensor) -> Tensor:
    return x  # the paper's U-Net at init (zero-init output conv + global residual): eps_hat = z_t


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(batch: int, low: float = 0.0, high: float = 1.0, seed: int = 1) -> Tensor:
    return low + (high - low) * torch.rand(batch, *SHAPE, generator=gen(seed))


def test_ddpm_maps_and_time():
    obj = DDPMObjective("linear", 100)
    x = images(2)
    assert torch.allclose(obj.to_model(x), 2 * x - 1)
    assert torch.allclose(obj.from_model(obj.to_model(x)), x)
    t = torch.tensor([0.0, 0.37])
    assert obj.net_time(t).equal(t)
    assert obj.gamma(torch.tensor([0.5], dtype=torch.float64)).item() == pytest.approx(
        math.log((1 - obj.schedule.alpha_bar[50].item()) / obj.schedule.alpha_bar[50].item())
    )


def test_ddpm_loss_zero_and_perfect_predictors():
    obj = DDPMObjective("cosine", 100)
    c = torch.full(SHAPE, 0.3)
    x0, prompt = c.expand(64, *SHAPE), torch.rand(64, 11, generator=gen(2))
    zero = obj.loss(zeros_model, x0, prompt, gen())
    assert set(zero) == {"loss", "mse"}
    assert zero["loss"].item() == pytest.approx(1.0, abs=0.05)  # E[eps^2] = 1
    perfect = obj.loss(PointMassDenoiser(obj, c), x0, prompt, gen())
    assert perfect["loss"].item() < 1e-6


def test_loss_is_deterministic_given_generator():
    for obj in (DDPMObjective("linear", 100), VDMObjective()):
        x0, prompt = images(4), torch.rand(4, 11, generator=gen(2))
        a, b = obj.loss(identity_model, x0, prompt, gen(7)), obj.loss(identity_model, x0, prompt, gen(7))
        assert all(a[k].equal(b[k]) for k in a)


@pytest.mark.parametrize("objective_cls", [DDPMObjective, VDMObjective])
def test_cond_dropout_fraction_and_null_prompt(objective_cls: type[Objective]):
    obj = objective_cls(cond_drop_p=0.25, null_value=-1.0)
    n = 4000
    prompt = torch.rand(n, 5, generator=gen(3))  # never -1 by itself
    seen: list[Tensor] = []

    def recorder(x: Tensor, t_net: Tensor, p: Tensor) -> Tensor:
        seen.append(p)
        return torch.zeros_like(x)

    obj.loss(recorder, torch.rand(n, 1, 1, 1, generator=gen(4)), prompt, gen())
    dropped = (seen[0] == -1.0).all(dim=1)  # [N]
    assert dropped.float().mean().item() == pytest.approx(0.25, abs=0.03)
    assert seen[0][~dropped].equal(prompt[~dropped])  # kept prompts untouched
    assert obj.null_prompt(prompt).equal(torch.full_like(prompt, -1.0))


def test_cond_dropout_extremes():
    prompt = torch.rand(50, 3, generator=gen(3))
    assert DDPMObjective(cond_drop_p=0.0).drop_prompt(prompt, gen()).equal(prompt)
    assert (DDPMObjective(cond_drop_p=1.0, null_value=0.0).drop_prompt(prompt, gen()) == 0).all()


def test_vdm_init_schedule_and_net_time():
    obj = VDMObjective()
    t = torch.tensor([0.0, 1.0])
    assert torch.allclose(obj.gamma(t), torch.tensor([-5.0, 10.0]))
    assert torch.allclose(obj.net_time(t), torch.tensor([0.0, 1.0]))
    assert obj.from_model(obj.to_model(t)).equal(t)  # raw [0, 1] data space
    with torch.no_grad():
        obj.schedule.b.fill_(-8.0)  # a learned b moves gamma(0) below the config gamma_min
    assert obj.net_time(torch.tensor([0.0])).item() == pytest.approx(-0.2)


def test_vdm_antithetic_times():
    t = VDMObjective().sample_times(8, gen(), "cpu")
    assert ((t >= 0) & (t < 1)).all()
    assert torch.allclose(t.diff(), torch.full((7,), 1 / 8))


def test_vdm_gradients_reach_b_and_w_in_closed_form():
    obj = VDMObjective()
    parts = obj.loss(zeros_model, images(8), torch.rand(8, 11, generator=gen(2)), gen())
    # With eps_hat = 0 the diffusion term is linear in |w|: d/dw = diffusion / |w|.
    parts["diffusion"].backward(retain_graph=True)
    assert obj.schedule.w.grad.item() == pytest.approx(parts["diffusion"].item() / 15.0, rel=1e-5)
    # recon = const + exp(b) * (...): d/db = recon - const, const = log N normaliser in bits.
    obj.schedule.w.grad = None
    parts["recon"].backward(retain_graph=True)
    const = (math.log(obj.data_noise) + 0.5 * math.log(2 * math.pi)) * BITS
    assert obj.schedule.b.grad.item() == pytest.approx(parts["recon"].item() - const, rel=1e-4)
    obj.zero_grad()
    parts["loss"].backward()
    assert obj.schedule.b.grad.abs() > 0 and obj.schedule.w.grad.abs() > 0


def test_vdm_loss_parts_sum_and_perfect_predictor():
    obj = VDMObjective()
    c = torch.rand(SHAPE, generator=gen(5))
    x0, prompt = c.expand(16, *SHAPE), torch.rand(16, 11, generator=gen(2))
    parts = obj.loss(PointMassDenoiser(obj, c), x0, prompt, gen())
    assert set(parts) == {"loss", "diffusion", "latent", "recon"}
    assert parts["loss"].item() == pytest.approx(sum(parts[k].item() for k in ("diffusion", "latent", "recon")))
    assert parts["diffusion"].item() < 1e-3  # ~10 bits/dim for a zero predictor


def test_vdm_latent_kl_closed_form():
    obj = VDMObjective(gamma_min=-2.0, gamma_max=1.0)  # gamma(1) = 1: a KL far from 0
    x0 = images(4)
    latent = obj.loss(zeros_model, x0, torch.zeros(4, 11), gen())["latent"]
    var_1 = torch.sigmoid(torch.tensor(1.0))
    q = torch.distributions.Normal((1 - var_1).sqrt() * x0, var_1.sqrt())
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0))
    expected = kl.flatten(1).sum(1).mean() * BITS / x0[0].numel()
    assert latent.item() == pytest.approx(expected.item(), rel=1e-5)


def test_vdm_paper_anchor_values_at_init():
    obj = VDMObjective()
    x0, prompt = images(16), torch.rand(16, 11, generator=gen(2))
    parts = obj.loss(zeros_model, x0, prompt, gen())
    # recon: E = (0.5 e^{gamma(0)} / data_noise^2 + log data_noise + 0.5 log 2 pi) / ln 2 ~ 4852
    # ("~4840" in the notes)
    expected_recon = (0.5 * math.exp(-5.0) / 1e-6 + math.log(1e-3) + 0.5 * math.log(2 * math.pi)) * BITS
    assert parts["recon"].item() == pytest.approx(expected_recon, rel=0.03)
    assert parts["recon"].item() == pytest.approx(4840, rel=0.03)
    # diffusion for eps_hat = 0: 0.5 * |w| * E||eps||^2 / D bits = 7.5 / ln 2 ~ 10.8
    assert parts["diffusion"].item() == pytest.approx(7.5 * BITS, rel=0.05)
    # the notes' "~5" is the paper U-Net at init (eps_hat = z_t) on light-background images
    light = obj.loss(identity_model, images(16, 0.8, 1.0), prompt, gen())
    assert 3.0 < light["diffusion"].item() < 7.0
    assert light["latent"].item() < 1e-3  # gamma(1) = 10: q(z_1 | x) is almost N(0, I)
