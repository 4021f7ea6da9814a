"""Training objectives: discrete DDPM epsilon-MSE and the paper's continuous-time VDM bound.

Both share one interface so trainers and samplers never ask which one they hold:
    loss(model, x0, prompt, generator) -> {"loss": scalar, <named parts>: scalar}   (batch means)
    gamma(t)       negative log-SNR at continuous time t in [0, 1] (see schedules.py notation)
    net_time(t)    the time the denoiser sees
    to_model(x01) / from_model(x)   data space [0, 1] <-> the space the diffusion runs in
    null_prompt(prompt)             classifier-free guidance null token (whole prompt = null_value)

The denoiser is any callable model(x, t_net, prompt) -> eps_hat with x [B, C, H, W], t_net [B], prompt [B, P].
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import torch
from torch import Tensor, nn

from .schedules import DiscreteSchedule, LearnedLinearSchedule, alpha_sigma

Denoiser = Callable[[Tensor, Tensor, Tensor], Tensor]


def randn_tensor(
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard normal draw on the generator's device, moved to `device` (a CPU seed then fixes GPU runs too)."""
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


def rand_tensor(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str
) -> Tensor:
    """Uniform [0, 1) draw on the generator's device, moved to `device`."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


class Objective(nn.Module):
    """Base class: prompt dropout, null token and the identity data map; subclasses define gamma and loss."""

    n_timesteps: int | None = None  # discrete grid size; None for continuous-time objectives

    def __init__(self, cond_drop_p: float = 0.0, null_value: float = -1.0) -> None:
        super().__init__()
        if not 0.0 <= cond_drop_p <= 1.0:
            raise ValueError(f"cond_drop_p must be in [0, 1], got {cond_drop_p}")
        self.cond_drop_p = cond_drop_p
        self.null_value = null_value

    def gamma(self, t: Tensor) -> Tensor:
        """Negative log-SNR at continuous time t."""
        raise NotImplementedError

    def net_time(self, t: Tensor) -> Tensor:
        """Time input of the denoiser at continuous time t."""
        raise NotImplementedError

    def loss(
        self, model: Denoiser, x0: Tensor, prompt: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Training loss ("loss") and its named parts, all batch means."""
        raise NotImplementedError

    def to_model(self, x01: Tensor) -> Tensor:
        """Map data space [0, 1] to the diffusion space."""
        return x01

    def from_model(self, x: Tensor) -> Tensor:
        """Map the diffusion space back to data space (no clipping)."""
        return x

    def null_prompt(self, prompt: Tensor) -> Tensor:
        """The null (unconditional) prompt: same shape, every entry null_value."""
        return torch.full_like(prompt, self.null_value)

    def drop_prompt(self, prompt: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Replace each whole prompt by the null token with probability cond_drop_p."""
        # Drawn even when cond_drop_p == 0 so the other random streams do not depend on cond_drop_p.
        drop = rand_tensor((prompt.shape[0],), generator, prompt.device) < self.cond_drop_p  # [B]
        return torch.where(drop[:, None], self.null_prompt(prompt), prompt)


class DDPMObjective(Objective):
    """Ho et al. epsilon-prediction MSE on uniform discrete timesteps; diffusion runs in [-1, 1]."""

    def __init__(
        self,
        schedule: Literal["linear", "cosine"] = "cosine",
        n_timesteps: int = 1000,
        cond_drop_p: float = 0.0,
        null_value: float = -1.0,
    ) -> None:
        super().__init__(cond_drop_p, null_value)
        self.n_timesteps = n_timesteps
        self.schedule = DiscreteSchedule(schedule, n_timesteps)

    def gamma(self, t: Tensor) -> Tensor:
        """gamma from alpha_bar at index t * T (exact on the grid; t < 0 is clean data, gamma = -inf)."""
        return self.schedule(t)

    def net_time(self, t: Tensor) -> Tensor:
        """The network sees index / T, i.e. t itself."""
        return t

    def to_model(self, x01: Tensor) -> Tensor:
        """[0, 1] -> [-1, 1]."""
        return 2 * x01 - 1

    def from_model(self, x: Tensor) -> Tensor:
        """[-1, 1] -> [0, 1] (not clipped)."""
        return (x + 1) / 2

    def loss(
        self, model: Denoiser, x0: Tensor, prompt: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Mean squared error between predicted and true noise ("mse" == "loss")."""
        x = self.to_model(x0)  # [B, C, H, W]
        gen_device = generator.device if generator is not None else x.device
        idx = torch.randint(self.n_timesteps, (x.shape[0],), generator=generator, device=gen_device)
        idx = idx.to(x.device)  # [B], uniform in {0 .. T-1}
        eps = randn_tensor(tuple(x.shape), generator, x.device, x.dtype)  # [B, C, H, W]
        prompt = self.drop_prompt(prompt, generator)
        alpha_bar = self.schedule.alpha_bar[idx].to(x.dtype)[:, None, None, None]  # [B, 1, 1, 1]
        xt = alpha_bar.sqrt() * x + (1 - alpha_bar).sqrt() * eps
        t = idx.to(x.dtype) / self.n_timesteps  # [B]
        eps_hat = model(xt, self.net_time(t), prompt)
        mse = (eps_hat - eps).square().mean()
        return {"loss": mse, "mse": mse}


class VDMObjective(Objective):
    """Continuous-time VDM bound in bits/dim with a learned linear schedule (Kingma et al. 2021, the paper's objective)."""

    def __init__(
        self,
        gamma_min: float = -5.0,
        gamma_max: float = 10.0,
        data_noise: float = 1e-3,
        cond_drop_p: float = 0.0,
        null_value: float = -1.0,
    ) -> None:
        super().__init__(cond_drop_p, null_value)
        # The config values stay fixed: net_time normalises with them even after b and w have moved.
        self.gamma_min = gamma_min
        self.gamma_max = gamma_max
        self.data_noise = data_noise
        self.schedule = LearnedLinearSchedule(gamma_min, gamma_max)

    def gamma(self, t: Tensor) -> Tensor:
        """Learned gamma(t) = b + |w| t."""
        return self.schedule(t)

    def net_time(self, t: Tensor) -> Tensor:
        """(gamma(t) - gamma_min) / (gamma_max - gamma_min) with the constructor values; may leave [0, 1]."""
        return (self.gamma(t) - self.gamma_min) / (self.gamma_max - self.gamma_min)

    def sample_times(
        self, batch_size: int, generator: torch.Generator | None, device: torch.device | str
    ) -> Tensor:
        """Antithetic times t_i = u + i / B, u ~ U[0, 1/B): one per stratum, lower variance than iid."""
        u = rand_tensor((1,), generator, device) / batch_size
        return u + torch.arange(batch_size, device=device) / batch_size  # [B]

    def loss(
        self, model: Denoiser, x0: Tensor, prompt: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """VDM bound: "diffusion" + "latent" + "recon" (= "loss"), each summed per example, in bits/dim."""
        x = self.to_model(x0)  # [B, C, H, W]
        batch_size, device = x.shape[0], x.device
        bpd = 1.0 / (x[0].numel() * math.log(2))  # nats summed over D dims -> bits per dim
        t = self.sample_times(batch_size, generator, device)  # [B]
        eps = randn_tensor(tuple(x.shape), generator, device, x.dtype)
        prompt = self.drop_prompt(prompt, generator)
        eps_0 = randn_tensor(tuple(x.shape), generator, device, x.dtype)

        # 1. Diffusion: continuous-time limit of the denoising terms, weighted by d gamma / d t.
        gamma_t = self.gamma(t)  # [B]
        alpha_t, sigma_t = (s[:, None, None, None] for s in alpha_sigma(gamma_t))
        z_t = alpha_t * x + sigma_t * eps
        eps_hat = model(z_t, self.net_time(t), prompt)
        sq_err = (eps_hat - eps).square().flatten(1).sum(1)  # [B]
        diffusion = bpd * 0.5 * sq_err * self.schedule.dgamma_dt(t)

        # 2. Latent: KL(q(z_1 | x) || N(0, I)) in closed form.
        gamma_1 = self.gamma(torch.ones((), device=device))
        var_1 = torch.sigmoid(gamma_1)
        log_var_1 = nn.functional.logsigmoid(gamma_1)  # log sigmoid, stable for large |gamma|
        kl = 0.5 * ((1 - var_1) * x.square() + var_1 - log_var_1 - 1)
        latent = bpd * kl.flatten(1).sum(1)  # [B]

        # 3. Reconstruction: -log N(x; z_0 / alpha_0, data_noise^2) with z_0 ~ q(z_0 | x).
        alpha_0, sigma_0 = alpha_sigma(self.gamma(torch.zeros((), device=device)))
        x_hat = (alpha_0 * x + sigma_0 * eps_0) / alpha_0
        log_norm = math.log(self.data_noise) + 0.5 * math.log(2 * math.pi)
        nll = 0.5 * ((x - x_hat) / self.data_noise).square() + log_norm
        recon = bpd * nll.flatten(1).sum(1)  # [B]

        parts = {"diffusion": diffusion.mean(), "latent": latent.mean(), "recon": recon.mean()}
        return {"loss": parts["diffusion"] + parts["latent"] + parts["recon"], **parts}
