"""Samplers (DDPM ancestral, DDIM, VDM ancestral) and classifier-free guidance, for any Objective.

Every sampler moves z from time t to an earlier time s < t using only gamma_t = gamma(t), gamma_s = gamma(s)
(notation in schedules.py), so all of them work with both objectives:
    - DDPMObjective: n_steps indices strided over 0..T-1 ("trailing": T-1 first, as diffusers'
      timestep_spacing="trailing"), then one last step to clean data (gamma = -inf, alpha = 1).
    - VDMObjective: the continuous grid t = 1, 1 - 1/n, ..., 0; the result is z_0 itself (as the paper's sampler:
      no division by alpha_0), so a sigma_0 = sigma(gamma(0)) of noise stays in the output.
Where methods coincide (same grid, same noise draws):
    - "vdm" is the DDPM posterior q(z_s | z_t, x0_hat) written in terms of eps_hat: "ddpm" == "vdm";
    - "ddim" with eta=1 has the posterior variance and mean: "ddim"(eta=1) == "ddpm";
    - the final step onto clean data (sigma_s = 0) is deterministic for every method and returns x0_hat.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .objectives import Denoiser, Objective, randn_tensor
from .schedules import alpha_sigma, sigma2_between

Method = Literal["ddpm", "ddim", "vdm"]
METHODS: tuple[str, ...] = ("ddpm", "ddim", "vdm")


def sampler_timesteps(objective: Objective, n_steps: int) -> Tensor:
    """Times visited by a sampler, noisiest first: [n_steps + 1], float64; the model runs on all but the last."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    n_timesteps = objective.n_timesteps
    if n_timesteps is None:
        return torch.linspace(1.0, 0.0, n_steps + 1, dtype=torch.float64)
    if n_steps > n_timesteps:
        raise ValueError(f"n_steps={n_steps} exceeds the objective's {n_timesteps} timesteps")
    # Trailing spacing starts at index T-1, the step whose marginal is closest to the N(0, I) we start from.
    idx = torch.round(torch.arange(n_steps, 0, -1, dtype=torch.float64) * n_timesteps / n_steps) - 1
    clean = torch.tensor([-1.0], dtype=torch.float64)  # index -1 = clean data, gamma(t < 0) = -inf
    return torch.cat([idx, clean]) / n_timesteps


def _scales(gamma_t: Tensor | float, gamma_s: Tensor | float) -> tuple[Tensor, ...]:
    """(gamma_t, gamma_s, alpha_t, sigma_t, alpha_s, sigma_s) as 0-dim float64 CPU tensors."""
    # 0-dim CPU tensors combine with a batch on any device and take the batch's dtype, so the
    # coefficients stay float64 until they meet the batch.
    gamma_t = torch.as_tensor(gamma_t, dtype=torch.float64).cpu()
    gamma_s = torch.as_tensor(gamma_s, dtype=torch.float64).cpu()
    return (gamma_t, gamma_s, *alpha_sigma(gamma_t), *alpha_sigma(gamma_s))


def _add_noise(mean: Tensor, std: Tensor, noise: Tensor | None) -> Tensor:
    """mean + std * noise; a missing noise is only allowed when std == 0."""
    if noise is None:
        if std > 0:
            raise ValueError("this step is stochastic: pass noise")
        return mean
    return mean + std * noise


def ddpm_step(
    z_t: Tensor, eps_hat: Tensor, gamma_t: Tensor | float, gamma_s: Tensor | float, noise: Tensor | None = None
) -> Tensor:
    """Ancestral step: sample q(z_s | z_t, x0_hat) (Ho et al. eq. 6-7 for a jump t -> s; no clipping)."""
    g_t, g_s, alpha_t, sigma_t, alpha_s, sigma_s = _scales(gamma_t, gamma_s)
    sigma2_ts = sigma2_between(g_s, g_t)  # variance of the jump s -> t, "beta_t" for adjacent indices
    # - pred_original_sample -> x0_hat = (z_t - sigma_t eps_hat) / alpha_t
    x0_hat = (z_t - sigma_t * eps_hat) / alpha_t
    # - posterior mean coefficients, diffusers' pred_original_sample_coeff and current_sample_coeff
    coef_x0 = alpha_s * sigma2_ts / sigma_t**2
    coef_zt = (alpha_t / alpha_s) * sigma_s**2 / sigma_t**2
    std = (sigma2_ts * sigma_s**2 / sigma_t**2).sqrt()  # diffusers' "fixed_small" variance
    return _add_noise(coef_x0 * x0_hat + coef_zt * z_t, std, noise)


def ddim_step(
    z_t: Tensor,
    eps_hat: Tensor,
    gamma_t: Tensor | float,
    gamma_s: Tensor | float,
    eta: float = 0.0,
    noise: Tensor | None = None,
) -> Tensor:
    """DDIM step (Song et al. eq. 12): eta=0 deterministic, eta=1 the ancestral posterior."""
    g_t, g_s, alpha_t, sigma_t, alpha_s, sigma_s = _scales(gamma_t, gamma_s)
    # - std_dev_t = eta * sqrt((1 - a_s) / (1 - a_t)) * sqrt(1 - a_t / a_s), a = alpha_bar = alpha^2
    std = eta * sigma_s / sigma_t * sigma2_between(g_s, g_t).sqrt()
    x0_hat = (z_t - sigma_t * eps_hat) / alpha_t
    # - "direction pointing to x_t": the part of sigma_s not spent on fresh noise
    dir_coef = (sigma_s**2 - std**2).clamp(min=0).sqrt()
    return _add_noise(alpha_s * x0_hat + dir_coef * eps_hat, std, noise if eta > 0 else None)


def vdm_step(
    z_t: Tensor, eps_hat: Tensor, gamma_t: Tensor | float, gamma_s: Tensor | float, noise: Tensor | None = None
) -> Tensor:
    """VDM ancestral step (Kingma et al. eq. 34), written in eps_hat directly."""
    g_t, g_s, alpha_t, sigma_t, alpha_s, sigma_s = _scales(gamma_t, gamma_s)
    c = -torch.expm1(g_s - g_t)  # 1 - SNR_t / SNR_s
    mean = (alpha_s / alpha_t) * (z_t - c * sigma_t * eps_hat)
    return _add_noise(mean, sigma_s * c.sqrt(), noise)


def guided_eps(
    model: Denoiser, objective: Objective, z: Tensor, t_net: Tensor, prompts: Tensor, guidance_scale: float
) -> Tensor:
    """Classifier-free guidance eps_uncond + w (eps_cond - eps_uncond); w == 1 runs the conditional pass only."""
    if guidance_scale == 1.0:
        return model(z, t_net, prompts)
    # One batched forward for both passes: [2B, ...] with the null prompts in the second half.
    prompts_2 = torch.cat([prompts, objective.null_prompt(prompts)])
    eps_cond, eps_uncond = model(torch.cat([z, z]), torch.cat([t_net, t_net]), prompts_2).chunk(2)
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def clip_prediction(objective: Objective, z_t: Tensor, eps_hat: Tensor, gamma_t: Tensor) -> Tensor:
    """eps_hat made consistent with x0_hat clipped to the data range (diffusers' clip_sample).

    Near t = 1 alpha_t is tiny (cosine: gamma(1) ~ 20, alpha ~ 5e-5), so x0_hat = (z - sigma eps) / alpha
    amplifies any error in eps_hat by 1 / alpha; clipping x0_hat to the range the data live in keeps it finite.
    """
    _, _, alpha_t, sigma_t, _, _ = _scales(gamma_t, gamma_t)
    lo, hi = (float(objective.to_model(torch.tensor(v))) for v in (0.0, 1.0))
    x0_hat = ((z_t - sigma_t * eps_hat) / alpha_t).clamp(lo, hi)
    return (z_t - alpha_t * x0_hat) / sigma_t


def _step(method: str, z: Tensor, eps_hat: Tensor, gamma_t: Tensor, gamma_s: Tensor, eta: float,
          noise: Tensor | None) -> Tensor:
    """Dispatch one update to the named method."""
    if method == "ddpm":
        return ddpm_step(z, eps_hat, gamma_t, gamma_s, noise)
    if method == "ddim":
        return ddim_step(z, eps_hat, gamma_t, gamma_s, eta, noise)
    return vdm_step(z, eps_hat, gamma_t, gamma_s, noise)


@torch.no_grad()
def sample(
    model: Denoiser,
    objective: Objective,
    prompts: Tensor,
    *,
    shape: tuple[int, int, int],
    n_steps: int = 50,
    method: Method = "ddim",
    eta: float = 0.0,
    guidance_scale: float = 1.0,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    shared_noise: int | None = None,
    clip_x0: bool = False,
) -> Tensor:
    """Generate one image per prompt, in data space (objective.from_model, not clipped).

    Args:
        prompts: [N, P] conditioning vectors, on the device of the model and objective.
        shape: (C, H, W) of one image.
        eta: DDIM stochasticity; only meaningful for method="ddim".
        batch_size: prompts per model forward (twice that many rows when guidance_scale != 1). Chunking never
            changes the result: all noise is drawn for the full [N, C, H, W] batch at each step.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if eta != 0.0 and method != "ddim":
        raise ValueError("eta only applies to method='ddim' ('ddpm' equals 'ddim' with eta=1)")
    device, n = prompts.device, prompts.shape[0]
    batch_size = batch_size or max(n, 1)
    times = sampler_timesteps(objective, n_steps).to(device)  # [n_steps + 1]
    gammas = objective.gamma(times).to(torch.float64).cpu()  # [n_steps + 1], float64 for the coefficients
    stochastic = method != "ddim" or eta > 0

    if shared_noise is not None and (shared_noise < 1 or n % shared_noise):
        raise ValueError(f"shared_noise={shared_noise} must divide the number of prompts ({n})")

    def draw(shape_: tuple[int, ...]) -> Tensor:
        # shared_noise=m: rows i, i+m, i+2m, ... get the same noise (common random numbers across prompt groups).
        if shared_noise is None:
            return randn_tensor(shape_, generator, device)
        return randn_tensor((shared_noise, *shape_[1:]), generator, device).repeat(n // shared_noise, 1, 1, 1)

    was_training = model.training if isinstance(model, nn.Module) else None
    if isinstance(model, nn.Module):
        model.eval()  # dropout off; restored below even if sampling fails
    try:
        z = draw((n, *shape))  # [N, C, H, W], z at times[0]
        for i in tqdm(range(n_steps), disable=not progress, desc=f"{method} sampling"):
            t_net = objective.net_time(times[i]).to(torch.float32)  # scalar, same for the whole batch
            eps_hat = torch.cat([
                guided_eps(model, objective, z_c, t_net.expand(len(z_c)), p_c, guidance_scale)
                for z_c, p_c in zip(z.split(batch_size), prompts.split(batch_size))
            ])  # [N, C, H, W]
            if clip_x0:
                eps_hat = clip_prediction(objective, z, eps_hat, gammas[i])
            noise = draw(tuple(z.shape)) if stochastic else None
            z = _step(method, z, eps_hat, gammas[i], gammas[i + 1], eta, noise)
    finally:
        if was_training is not None:
            model.train(was_training)
    return objective.from_model(z)
