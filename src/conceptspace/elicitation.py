"""Hidden capabilities: ways of asking a checkpoint for a held-out class, evaluated as rows of one table.

An `Elicitation` is a prompt transform plus optional edits of the conditioning path (paper-notes 5):

- naive:       the held-out class's nominal prompt;
- overprompt:  one concept's prompt value pushed beyond the training range, mean_v + s * (mean_v - mean_other);
- latent:      linear latent intervention: in every conditioned block (or on the shared embedding of a
               common_linear model), at every sampling step, e' = e + alpha (e . b) b, then
               e'' = e' - beta (e' . l) l, with b the block's embedding of a concept-only prompt of the held-out
               value of the boosted concept and l that of the competing value of each other concept (unit norm);
- patch:       the checkpoint's conditioning-path parameters replaced by those of a donor checkpoint;
- cfg:         classifier-free guidance scale w (models trained with prompt dropout).

Prompt-only and latent elicitations of a checkpoint are sampled in one batch (the latent hook applies each row's
own alpha, beta and directions); patch and cfg need their own passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .concepts import ConceptSpace
from .errors import ConceptspaceError
from .prompts import PromptLayout, class_prompts

METHODS = ("naive", "overprompt", "latent", "patch", "cfg")


class ElicitationError(ConceptspaceError):
    """An elicitation that cannot be built (unknown method, empty grid, concept not in the space, ...)."""


@dataclass(frozen=True)
class Elicitation:
    """One way of asking for a held-out class."""

    name: str  # "naive", "overprompt[color x1.0]", "latent[color a=2 b=0.1]", "patch[from 6000]", "cfg[w=3]"
    method: str
    concept: str | None = None  # the pushed / boosted concept
    scale: float = 0.0  # overprompt push s, or latent alpha
    beta: float = 0.0  # latent: fraction of the competing component removed
    donor: int | None = None  # patch: donor checkpoint step (-1 = the last one)
    guidance: float = 1.0  # cfg scale


def overprompt_prompt(space: ConceptSpace, name: str, concept: str, scale: float) -> np.ndarray:
    """The held-out class's prompt with one concept pushed `scale` gaps beyond its value, away from the others."""
    h = class_prompts(space, [name])[0].copy()
    j = space.kinds.index(concept)
    c = space.concept(concept)
    if c.kind == "shape":
        raise ElicitationError("overprompt: shape is categorical and cannot be pushed beyond its range")
    v = int(name[j])
    others = [i for i in range(c.n_values) if i != v]
    away = c.means[v] - c.means[others].mean(0)  # the direction that makes value v "more v"
    sl = PromptLayout.for_space(space).slices[concept]
    h[sl] = c.means[v] + scale * away
    return h


def concept_only_prompt(space: ConceptSpace, concept: str, value: int) -> np.ndarray:
    """A prompt that states one concept's value and nothing else (every other slot 0)."""
    layout = PromptLayout.for_space(space)
    h = np.zeros(layout.dim, dtype=np.float32)
    c = space.concept(concept)
    sl = layout.slices[concept]
    if c.kind == "shape":
        h[sl.start + value] = 1.0
    else:
        h[sl] = c.means[value]
    return h


def build_elicitations(space: ConceptSpace, cfg) -> list[Elicitation]:
    """The elicitations named by `cfg.methods` with their grids (cfg: ElicitConfig)."""
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise ElicitationError(f"unknown elicitation method {unknown[0]!r} (known: {', '.join(METHODS)})")
    concepts = cfg.concepts if cfg.concepts is not None else [k for k in space.kinds if k != "shape"]
    for c in concepts:
        if c not in space.kinds:
            raise ElicitationError(f"elicit.concepts: {c!r} is not in the space (concepts: {', '.join(space.kinds)})")
    out = [Elicitation("naive", "naive")]
    if "overprompt" in cfg.methods:
        if not cfg.overprompt_scales:
            raise ElicitationError("elicit.overprompt_scales is empty")
        out += [Elicitation(f"overprompt[{c} x{s:g}]", "overprompt", c, s) for c in concepts
                for s in cfg.overprompt_scales]
    if "latent" in cfg.methods:
        if not cfg.latent_alphas:
            raise ElicitationError("elicit.latent_alphas is empty")
        out += [Elicitation(f"latent[{c} a={a:g} b={cfg.latent_beta:g}]", "latent", c, a, cfg.latent_beta)
                for c in concepts for a in cfg.latent_alphas]
    if "patch" in cfg.methods:
        if not cfg.patch_donors:
            raise ElicitationError("elicit.patch_donors is empty")
        out += [Elicitation(f"patch[from {'last' if d == -1 else d}]", "patch", donor=d) for d in cfg.patch_donors]
    if "cfg" in cfg.methods:
        if not cfg.guidance_scales:
            raise ElicitationError("elicit.guidance_scales is empty")
        out += [Elicitation(f"cfg[w={w:g}]", "cfg", guidance=w) for w in cfg.guidance_scales]
    return out


# ------------------------------------------------------------------------------------------ latent hook


def block_directions(model, space: ConceptSpace, concept: str, value: int, at: str) -> dict[str, torch.Tensor]:
    """Unit direction per hook point: the embedding of a concept-only prompt through the same projector."""
    h = torch.from_numpy(concept_only_prompt(space, concept, value))[None]
    x = torch.zeros(1, model.in_channels, model.image_size, model.image_size)
    with torch.no_grad():
        _, cache = model.run_with_cache(x, torch.zeros(1), h, names=at)
    return {k: v[0] / v[0].norm().clamp_min(1e-12) for k, v in cache.items()}


@dataclass
class LatentRows:
    """Per-row parameters of the latent intervention for one sampling batch, stacked per hook point."""

    alpha: torch.Tensor  # [B, 1]
    beta: torch.Tensor  # [B, 1]
    boost: dict[str, torch.Tensor]  # hook -> [B, C] unit direction b per row (zeros: no intervention)
    compete: dict[str, torch.Tensor]  # hook -> [B, M, C] unit directions l per row (zero-padded)


def latent_hook(rows: LatentRows):
    """A HookFn applying each row's e' = e + a (e.b) b, e'' = e' - beta (e'.l) l (exactly e where a = beta = 0)."""

    def fn(e: torch.Tensor, name: str) -> torch.Tensor:
        reps = e.shape[0] // rows.alpha.shape[0]  # classifier-free guidance doubles the batch
        alpha, beta = rows.alpha.repeat(reps, 1), rows.beta.repeat(reps, 1)
        b = rows.boost[name].repeat(reps, 1)  # [B, C]
        v = e + alpha * (e * b).sum(-1, keepdim=True) * b
        comp = rows.compete[name].repeat(reps, 1, 1)  # [B, M, C]
        for m in range(comp.shape[1]):
            lvec = comp[:, m]
            v = v - beta * (v * lvec).sum(-1, keepdim=True) * lvec
        return v

    return fn


def latent_rows(model, space: ConceptSpace, held_name: str, elicitations: list[Elicitation], n_samples: int,
                at: str) -> LatentRows:
    """Row parameters for a batch of `len(elicitations) * n_samples` rows (non-latent rows untouched)."""
    cache: dict[tuple[str, int], dict[str, torch.Tensor]] = {}

    def direction(kind: str, value: int) -> dict[str, torch.Tensor]:
        if (kind, value) not in cache:
            cache[(kind, value)] = block_directions(model, space, kind, value, at)
        return cache[(kind, value)]

    hooks = model.resolve_hook_names(at)
    dims = {h: direction(space.kinds[0], 0)[h].shape[0] for h in hooks}
    n_comp = sum(c.n_values - 1 for c in space.concepts) or 1
    n_rows = len(elicitations) * n_samples
    alpha, beta = torch.zeros(n_rows, 1), torch.zeros(n_rows, 1)
    boost = {h: torch.zeros(n_rows, dims[h]) for h in hooks}
    compete = {h: torch.zeros(n_rows, n_comp, dims[h]) for h in hooks}
    for k, e in enumerate(elicitations):
        if e.method != "latent":
            continue
        rows = slice(k * n_samples, (k + 1) * n_samples)
        j = space.kinds.index(e.concept)
        alpha[rows], beta[rows] = e.scale, e.beta
        # Competing directions: for every other concept, its values other than the held-out one (for binary
        # concepts: the memorised training value the trajectory is drawn to).
        comps = [direction(c.kind, v) for i, c in enumerate(space.concepts) if i != j
                 for v in range(c.n_values) if v != int(held_name[i])]
        b = direction(e.concept, int(held_name[j]))
        for h in hooks:
            boost[h][rows] = b[h]
            for m, comp in enumerate(comps):
                compete[h][rows, m] = comp[h]
    return LatentRows(alpha, beta, boost, compete)


# ------------------------------------------------------------------------------------------ patching


def patch_conditioning(base, donor) -> None:
    """Replace the base model's conditioning-path parameters with the donor's (in place), keeping its body."""
    names = base.cond_parameter_names()
    if names != donor.cond_parameter_names():
        raise ElicitationError("patch: the two checkpoints have different conditioning paths (architectures)")
    donor_params = dict(donor.named_parameters())
    base_params = dict(base.named_parameters())
    with torch.no_grad():
        for n in names:
            if base_params[n].shape != donor_params[n].shape:
                raise ElicitationError(f"patch: parameter {n} has shape {tuple(base_params[n].shape)} in one "
                                       f"checkpoint and {tuple(donor_params[n].shape)} in the other")
            base_params[n].copy_(donor_params[n])


def joint_accuracy(probs: np.ndarray, held_name: str) -> np.ndarray:
    """[..., S, C, V] probabilities -> [...] mean over samples of the product over concepts of P(target value)."""
    digits = [int(ch) for ch in held_name]
    p = np.stack([probs[..., j, d] for j, d in enumerate(digits)], axis=-1)  # [..., S, C]
    return p.prod(-1).mean(-1)


def best_of_grid(joint: np.ndarray, methods: list[str]) -> dict[str, np.ndarray]:
    """[K, E] joint accuracy -> {method: [K] max over that method's grid points}, methods in first-seen order."""
    return {m: joint[:, [i for i, mm in enumerate(methods) if mm == m]].max(axis=1) for m in dict.fromkeys(methods)}
