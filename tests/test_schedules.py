"""Oracle tests for the noise schedules against closed forms (and diffusers when installed)."""

import math

import pytest
import torch

from conceptspace.model.schedules import (
    DiscreteSchedule,
    LearnedLinearSchedule,
    alpha_bar_from_betas,
    alpha_sigma,
    cosine_betas,
    gamma_from_alpha_bar,
    linear_betas,
    make_betas,
    sigma2_between,
)


def test_linear_alpha_bar_matches_product_formula():
    n = 100
    betas = linear_betas(n)
    expected_betas = [1e-4 + (0.02 - 1e-4) * i / (n - 1) for i in range(n)]
    assert torch.allclose(betas, torch.tensor(expected_betas, dtype=torch.float64), atol=1e-15)
    expected = [math.prod(1 - b for b in expected_betas[: i + 1]) for i in range(n)]
    assert torch.allclose(alpha_bar_from_betas(betas), torch.tensor(expected, dtype=torch.float64), rtol=1e-12)


def test_cosine_alpha_bar_is_nichol_dhariwal_ratio():
    n, s = 1000, 0.008

    def f(i: int) -> float:
        return math.cos((i / n + s) / (1 + s) * math.pi / 2) ** 2

    alpha_bar = alpha_bar_from_betas(cosine_betas(n))
    # Before the 0.999 clip kicks in, alpha_bar_i = f(i + 1) / f(0) exactly.
    for i in [0, 1, 10, 500, 900, 990]:
        assert alpha_bar[i].item() == pytest.approx(f(i + 1) / f(0), rel=1e-9)
    assert cosine_betas(n).max().item() == pytest.approx(0.999)
    assert make_betas("cosine", n).equal(cosine_betas(n))
    with pytest.raises(ValueError):
        make_betas("sigmoid", n)  # type: ignore[arg-type]


def test_gamma_alpha_sigma_round_trip():
    alpha_bar = torch.tensor([1e-8, 0.1, 0.5, 0.9, 1 - 1e-8], dtype=torch.float64)
    alpha, sigma = alpha_sigma(gamma_from_alpha_bar(alpha_bar))
    assert torch.allclose(alpha**2, alpha_bar, rtol=1e-9)
    assert torch.allclose(alpha**2 + sigma**2, torch.ones_like(alpha), atol=1e-15)
    alpha, sigma = alpha_sigma(torch.tensor(-math.inf))
    assert (alpha.item(), sigma.item()) == (1.0, 0.0)  # clean data


def test_sigma2_between_is_one_minus_alpha_ratio():
    g_s, g_t = torch.tensor(-3.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)
    (a_s, _), (a_t, _) = alpha_sigma(g_s), alpha_sigma(g_t)
    assert sigma2_between(g_s, g_t).item() == pytest.approx(1 - (a_t / a_s).item() ** 2, rel=1e-12)


def test_discrete_schedule_exact_on_grid_and_clean_below_zero():
    sched = DiscreteSchedule("linear", 50)
    idx = torch.arange(50, dtype=torch.float64)
    assert torch.allclose(sched(idx / 50), gamma_from_alpha_bar(sched.alpha_bar), rtol=1e-12)
    mid = sched(torch.tensor([10.5 / 50], dtype=torch.float64))
    assert mid.item() == pytest.approx(0.5 * (sched.gamma_table[10] + sched.gamma_table[11]).item())
    assert sched(torch.tensor([-1 / 50])).item() == -math.inf
    assert sched(torch.tensor([1.0])).item() == pytest.approx(sched.gamma_table[-1].item(), rel=1e-6)
    assert sched.state_dict() == {}  # tables are rebuilt from the config, not checkpointed


def test_learned_linear_schedule_init_and_derivative():
    sched = LearnedLinearSchedule(-5.0, 10.0)
    t = torch.tensor([0.0, 0.3, 1.0], requires_grad=True)
    gamma = sched(t)
    assert torch.allclose(gamma, torch.tensor([-5.0, -0.5, 10.0]))
    (autograd_slope,) = torch.autograd.grad(gamma.sum(), t)
    assert torch.allclose(sched.dgamma_dt(t), autograd_slope)
    sched.dgamma_dt(t).sum().backward()
    assert sched.w.grad is not None and sched.w.grad.item() == pytest.approx(3.0)


@pytest.mark.parametrize(("ours", "theirs"), [("linear", "linear"), ("cosine", "squaredcos_cap_v2")])
def test_alpha_bar_matches_diffusers(ours: str, theirs: str):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=theirs)
    sched = DiscreteSchedule(ours, 1000)  # type: ignore[arg-type]
    # diffusers keeps float32 tables; ours are float64.
    assert torch.allclose(sched.alpha_bar.float(), scheduler.alphas_cumprod, rtol=1e-5, atol=1e-9)
