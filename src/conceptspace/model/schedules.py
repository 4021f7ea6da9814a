"""Noise schedules: discrete DDPM betas and the learned linear VDM log-SNR schedule.

Notation (shared with objectives.py and samplers.py; names follow diffusers where it has them):
    x0         clean sample in model space                      # [B, C, H, W]
    z_t / xt   noisy sample  z_t = alpha_t * x0 + sigma_t * eps  # [B, C, H, W]
    eps        standard normal noise                            # [B, C, H, W]
    t          continuous diffusion time in [0, 1]; 1 is pure noise
    gamma      negative log-SNR, gamma(t) = -log(alpha_t^2 / sigma_t^2)
    alpha_t    sqrt(sigmoid(-gamma(t)))  (variance preserving: alpha_t^2 + sigma_t^2 = 1)
    sigma_t    sqrt(sigmoid(gamma(t)))
    betas      discrete DDPM variances beta_i, i = 0 .. T-1     # [T]
    alpha_bar  alphas_cumprod, alpha_bar_i = prod_{j<=i} (1 - beta_j) = alpha^2 at index i  # [T]

A discrete index i lives at t = i / T. Clean data (Ho et al.'s x_0, diffusers' "alpha_prod = 1" after the
last step) has alpha_bar = 1, i.e. gamma = -inf; DiscreteSchedule maps every t < 0 there.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BetaSchedule = Literal["linear", "cosine"]


def linear_betas(n_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """Ho et al. (2020) linear betas, float64."""  # [T]
    return torch.linspace(beta_start, beta_end, n_timesteps, dtype=torch.float64)


def cosine_betas(n_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal (2021) cosine betas, clipped at max_beta, float64."""
    steps = torch.arange(n_timesteps + 1, dtype=torch.float64) / n_timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2  # [T + 1], alpha_bar(t) up to a constant
    betas = 1 - f[1:] / f[:-1]
    # The last ratio is 0 (f(1) = cos(pi/2)^2); the clip keeps the final step from being a point mass.
    return betas.clamp(max=max_beta)  # [T]


def make_betas(schedule: BetaSchedule, n_timesteps: int) -> Tensor:
    """Betas of a named DDPM schedule."""
    if schedule == "linear":
        return linear_betas(n_timesteps)
    if schedule == "cosine":
        return cosine_betas(n_timesteps)
    raise ValueError(f"unknown beta schedule {schedule!r}; expected 'linear' or 'cosine'")


def alpha_bar_from_betas(betas: Tensor) -> Tensor:
    """Cumulative product alpha_bar_i = prod_{j<=i} (1 - beta_j)."""
    return torch.cumprod(1 - betas, dim=0)


def gamma_from_alpha_bar(alpha_bar: Tensor) -> Tensor:
    """Negative log-SNR of alpha_bar: log((1 - alpha_bar) / alpha_bar)."""
    return torch.log1p(-alpha_bar) - torch.log(alpha_bar)


def alpha_sigma(gamma: Tensor) -> tuple[Tensor, Tensor]:
    """Signal and noise scales (alpha, sigma) of a negative log-SNR; gamma = -inf gives (1, 0)."""
    return torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()


def sigma2_between(gamma_s: Tensor, gamma_t: Tensor) -> Tensor:
    """Variance sigma_{t|s}^2 = 1 - alpha_t^2 / alpha_s^2 of q(z_t | z_s), s < t, without cancellation."""
    # alpha^2 = exp(-softplus(gamma)), so the ratio is an exp of a difference: expm1 keeps small jumps exact.
    return -torch.expm1(F.softplus(gamma_s) - F.softplus(gamma_t))


class DiscreteSchedule(nn.Module):
    """DDPM schedule on indices 0..T-1 (t = i / T), exposed as a continuous gamma(t)."""

    def __init__(self, schedule: BetaSchedule = "cosine", n_timesteps: int = 1000) -> None:
        super().__init__()
        self.schedule = schedule
        self.n_timesteps = n_timesteps
        betas = make_betas(schedule, n_timesteps)
        alpha_bar = alpha_bar_from_betas(betas)
        # float64 and non-persistent: the tables are a pure function of the config, and samplers need the
        # precision near alpha_bar ~ 1 (t ~ 0) and alpha_bar ~ 0 (t ~ 1).
        self.register_buffer("betas", betas, persistent=False)  # [T]
        self.register_buffer("alpha_bar", alpha_bar, persistent=False)  # [T]
        self.register_buffer("gamma_table", gamma_from_alpha_bar(alpha_bar), persistent=False)  # [T]

    def forward(self, t: Tensor) -> Tensor:
        """gamma(t): exact at t = i / T, linear in between, clamped at T-1 above and -inf (clean) for t < 0."""
        idx = (t.to(torch.float64) * self.n_timesteps).clamp(0, self.n_timesteps - 1)
        lo = idx.floor().long()
        hi = (lo + 1).clamp(max=self.n_timesteps - 1)
        frac = idx - lo
        gamma = torch.lerp(self.gamma_table[lo], self.gamma_table[hi], frac)
        gamma = torch.where(t < 0, torch.full_like(gamma, -math.inf), gamma)
        return gamma.to(t.dtype) if t.is_floating_point() else gamma


class LearnedLinearSchedule(nn.Module):
    """VDM "learned_linear" schedule gamma(t) = b + |w| t with trainable b and w."""

    def __init__(self, gamma_min: float = -5.0, gamma_max: float = 10.0) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.tensor(float(gamma_min)))
        self.w = nn.Parameter(torch.tensor(float(gamma_max - gamma_min)))

    def forward(self, t: Tensor) -> Tensor:
        """gamma(t), same shape as t."""
        return self.b + self.w.abs() * t

    def dgamma_dt(self, t: Tensor) -> Tensor:
        """Analytic d gamma / d t = |w| broadcast to t's shape (carries the gradient to w)."""
        return self.w.abs().expand_as(t)
