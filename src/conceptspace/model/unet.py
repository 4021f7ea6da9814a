"""Conditional U-Net denoiser ``eps_hat = x + UNet(x, t, prompt)`` (the paper's denoiser, made cheap for CPU).

Layout for ``widths=(32, 64)``, ``res_blocks=1`` (the CPU default; the paper uses (64, 128, 256), 2):

    conv_in 3x3 -> down.0 (16 px, 32 ch) -> skip0 -> 3x3/2 conv -> down.1 (8 px, 64 ch)
    -> mid1 -> mid_attn -> mid2
    -> up.0 (8 px, 64 ch) -> nearest x2 + 3x3 conv -> concat skip0 -> up.1 (16 px, 32 ch)
    -> GroupNorm -> GELU -> conv 3x3 (zero-init) -> + x

``up`` is stored in forward order, so ``up.0`` is the deepest level.

Every ResBlock adds two per-channel biases: one from the time embedding, one from the concept
conditioning embedding. With ``conditioning="sep_mlp"`` (paper default) each block embeds the raw
prompt with its own MLP; with ``"common_linear"`` one shared MLP embeds it once and each block maps
that with a Linear. The conditioning path never sees ``t``, so a block's embedding depends on the
prompt alone (what the paper's linear latent intervention relies on).

Hook points:
    hook_prompt                      [B, prompt_dim]  raw prompt, before any embedding
    hook_embed                       [B, embed_dim]   shared embedding (``common_linear`` only)
    <block>.hook_cond                [B, C]           a ResBlock's concept embedding, just before it is
                                                      added; names in forward order: ``cond_hook_names()``
    <block>.hook_out                 [B, C, H, W]     a ResBlock's output (the body's features)
    mid_attn.hook_attn               [B, C, H, W]     what self-attention adds to the features
    where <block> is down.{i}.blocks.{j}, mid1, mid2 or up.{i}.blocks.{j}.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .hooks import HookedModule, HookPoint

Conditioning = Literal["sep_mlp", "common_linear"]


def group_norm(channels: int, norm_groups: int) -> nn.GroupNorm:
    """GroupNorm with ``min(norm_groups, channels)`` groups; ValueError if that does not divide ``channels``."""
    groups = min(norm_groups, channels)
    if groups < 1 or channels % groups:
        raise ValueError(f"norm_groups={norm_groups} gives {groups} groups, which does not divide {channels} channels")
    return nn.GroupNorm(groups, channels, eps=1e-6)  # eps as in the paper's code


def zero_init(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` so a residual branch starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Sinusoidal embedding of network time ``t`` (scaled by 1000) at the given angular frequencies."""
    args = 1000.0 * t[:, None].float() * freqs[None, :]  # [B, dim/2]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)  # [B, dim]


class ResBlock(nn.Module):
    """GN-GELU-conv, plus time and concept channel biases, GN-GELU-dropout-conv(zero-init), residual."""

    def __init__(
        self, in_ch: int, out_ch: int, *, time_dim: int, cond_dim: int, cond_mlp: bool, norm_groups: int, dropout: float
    ) -> None:
        super().__init__()
        self.norm1 = group_norm(in_ch, norm_groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, out_ch)
        if cond_mlp:  # sep_mlp: cond is the raw prompt, embedded by this block's own MLP
            self.cond_proj = nn.Sequential(
                nn.Linear(cond_dim, out_ch), nn.GELU(), nn.Linear(out_ch, out_ch), nn.GELU()
            )
        else:  # common_linear: cond is the shared embedding
            self.cond_proj = nn.Linear(cond_dim, out_ch)
        self.hook_cond = HookPoint()  # [B, C]
        self.norm2 = group_norm(out_ch, norm_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.hook_out = HookPoint()  # [B, C, H, W] the block's output (residual stream of the body)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.gelu(self.norm1(x)))  # [B, C, H, W]
        bias = self.time_proj(temb) + self.hook_cond(self.cond_proj(cond))  # [B, C]
        h = h + bias[:, :, None, None]
        h = self.conv2(self.dropout(F.gelu(self.norm2(h))))
        return self.hook_out(self.skip(x) + h)  # [B, C, H, W]


class SelfAttention(nn.Module):
    """Multi-head softmax self-attention over pixels with a residual connection."""

    def __init__(self, channels: int, *, norm_groups: int, max_heads: int = 4) -> None:
        super().__init__()
        # Fewer heads for narrow layers so each head keeps at least 16 dims; heads must divide C.
        heads = max(1, min(max_heads, channels // 16))
        while channels % heads:
            heads -= 1
        self.heads = heads
        self.norm = group_norm(channels, norm_groups)
        # 1x1 convs written as Linears on pixel tokens: same maths, and several times faster on
        # CPU here because the q, k, v views then feed the fused SDPA kernel, not its math fallback.
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.hook_attn = HookPoint()  # [B, C, H, W] what attention adds to the residual stream

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # [B, HW, C]
        qkv = self.qkv(tokens).reshape(b, hgt * wid, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = (z.contiguous() for z in qkv.unbind(0))  # each [B, heads, HW, C/heads]
        out = F.scaled_dot_product_attention(q, k, v)  # scale = (C/heads)^-1/2, as in the paper
        out = self.proj(out.transpose(1, 2).reshape(b, hgt * wid, c))  # [B, HW, C]
        return x + self.hook_attn(out.transpose(1, 2).reshape(b, c, hgt, wid))


class Level(nn.Module):
    """One resolution of the down or up path: ResBlocks, then an optional resampling conv."""

    def __init__(self, blocks: list[ResBlock], resample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.resample = resample if resample is not None else nn.Identity()

    def forward(self, h: torch.Tensor, temb: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        # Resampling is left to the caller: the down path saves its skip between blocks and resample.
        for block in self.blocks:
            h = block(h, temb, cond)
        return h


class Upsample(nn.Module):
    """Nearest-neighbour x2 then 3x3 conv (avoids transposed-conv checkerboards)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or not x.is_cpu:
            up = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:  # sampling on CPU: the same values (a copy), several times faster than interpolate's CPU kernel
            up = x.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)
        return self.conv(up)


class ConditionalUNet(HookedModule):
    """Epsilon-prediction U-Net conditioned on network time ``t`` and a concept prompt vector."""

    def __init__(
        self,
        *,
        image_size: int,
        prompt_dim: int,
        in_channels: int = 3,
        widths: Sequence[int] = (32, 64),
        res_blocks: int = 1,
        attention: bool = True,
        norm_groups: int = 8,
        conditioning: Conditioning = "sep_mlp",
        embed_dim: int = 64,
        time_embed_dim: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        _check_args(image_size, prompt_dim, in_channels, widths, res_blocks, conditioning, embed_dim, time_embed_dim)
        self.image_size, self.in_channels, self.widths = image_size, in_channels, widths
        self.conditioning = conditioning
        n_levels = len(widths)

        # 1. Time path: sinusoid (timescales 1..10000, log-spaced) -> MLP.
        half = time_embed_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / max(half - 1, 1))  # [half]
        self.register_buffer("time_freqs", freqs, persistent=False)
        time_dim = 4 * widths[0]
        self.time_mlp = nn.Sequential(
            nn.Linear(time_embed_dim, time_dim), nn.GELU(), nn.Linear(time_dim, time_dim), nn.GELU()
        )

        # 2. Concept path: the raw prompt, and for common_linear one shared embedder.
        self.hook_prompt = HookPoint()  # [B, prompt_dim]
        if conditioning == "common_linear":
            self.cond_embed = nn.Sequential(
                nn.Linear(prompt_dim, embed_dim), nn.GELU(), nn.Linear(embed_dim, embed_dim), nn.GELU()
            )
            self.hook_embed = HookPoint()  # [B, embed_dim]
        cond_dim = prompt_dim if conditioning == "sep_mlp" else embed_dim

        def res(in_ch: int, out_ch: int) -> ResBlock:
            return ResBlock(
                in_ch, out_ch, time_dim=time_dim, cond_dim=cond_dim, cond_mlp=conditioning == "sep_mlp",
                norm_groups=norm_groups, dropout=dropout,
            )

        def blocks(in_ch: int, out_ch: int) -> list[ResBlock]:
            return [res(in_ch if j == 0 else out_ch, out_ch) for j in range(res_blocks)]

        # 3. Body. Modules are registered in forward order so hook names come out in forward order.
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        prev = widths[0]
        for i, w in enumerate(widths):
            last = i == n_levels - 1
            self.down.append(Level(blocks(prev, w), None if last else nn.Conv2d(w, w, 3, stride=2, padding=1)))
            prev = w
        self.mid1 = res(prev, prev)
        self.mid_attn = SelfAttention(prev, norm_groups=norm_groups) if attention else nn.Identity()
        self.mid2 = res(prev, prev)
        self.up = nn.ModuleList()
        for i in reversed(range(n_levels)):
            in_ch = widths[i] if i == n_levels - 1 else 2 * widths[i]  # below the top: upsampled + skip
            self.up.append(Level(blocks(in_ch, widths[i]), Upsample(widths[i], widths[i - 1]) if i > 0 else None))
        self.out_norm = group_norm(widths[0], norm_groups)
        self.out_conv = zero_init(nn.Conv2d(widths[0], in_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """Predict the noise: ``x [B, C, H, W]``, ``t [B]`` (or scalar) in about [0, 1], ``prompt [B, prompt_dim]``."""
        if x.ndim != 4 or x.shape[1:] != (self.in_channels, self.image_size, self.image_size):
            raise ValueError(f"expected x of shape [B, {self.in_channels}, {self.image_size}, {self.image_size}], "
                             f"got {list(x.shape)}")
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        temb = self.time_mlp(timestep_embedding(t, self.time_freqs))  # [B, 4 * widths[0]]
        cond = self.hook_prompt(prompt)  # [B, prompt_dim]
        if self.conditioning == "common_linear":
            cond = self.hook_embed(self.cond_embed(cond))  # [B, embed_dim]

        h = self.conv_in(x)  # [B, widths[0], H, W]
        skips = []
        for i, level in enumerate(self.down):
            h = level(h, temb, cond)
            if i < len(self.down) - 1:
                skips.append(h)
                h = level.resample(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb, cond)), temb, cond)
        for j, level in enumerate(self.up):
            if j > 0:
                h = torch.cat([h, skips.pop()], dim=1)  # [B, 2 * widths[i], h, w]
            h = level.resample(level(h, temb, cond))
        return x + self.out_conv(F.gelu(self.out_norm(h)))  # global residual: eps_hat == x at init

    def cond_hook_names(self) -> list[str]:
        """Names of the per-ResBlock ``hook_cond`` points, in forward order."""
        return [name for name in self.hook_points() if name.endswith("hook_cond")]

    def cond_parameter_names(self) -> list[str]:
        """Parameters of the concept-conditioning path: per-block projectors and the shared embedder."""
        return [
            name for name, _ in self.named_parameters()
            if name.startswith("cond_embed.") or ".cond_proj." in name
        ]


def _check_args(
    image_size: int, prompt_dim: int, in_channels: int, widths: tuple[int, ...], res_blocks: int,
    conditioning: str, embed_dim: int, time_embed_dim: int,
) -> None:
    """Raise ValueError for constructor arguments that cannot build a working U-Net."""
    if not widths or any(w < 1 for w in widths):
        raise ValueError(f"widths must be a non-empty sequence of positive ints, got {widths}")
    if image_size < 1 or image_size % 2 ** (len(widths) - 1):
        raise ValueError(
            f"image_size={image_size} must be divisible by 2**(len(widths)-1)={2 ** (len(widths) - 1)}"
        )
    if res_blocks < 1:
        raise ValueError(f"res_blocks must be >= 1, got {res_blocks}")
    if min(prompt_dim, in_channels, embed_dim) < 1:
        raise ValueError("prompt_dim, in_channels and embed_dim must be positive")
    if time_embed_dim < 2 or time_embed_dim % 2:
        raise ValueError(f"time_embed_dim must be even and >= 2 (half sin, half cos), got {time_embed_dim}")
    if conditioning not in ("sep_mlp", "common_linear"):
        raise ValueError(f"conditioning must be 'sep_mlp' or 'common_linear', got {conditioning!r}")
