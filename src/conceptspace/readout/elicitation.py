"""Hidden capabilities: ways of asking a checkpoint for a held-out class, evaluated as rows of one table.

An `Elicitation` is a prompt transform plus optional edits of the conditioning path (the paper's hidden-capability experiments):

- naive:        the held-out class's nominal prompt; `naive_k` rows are the same prompt under k initial-noise
                seeds (try 0 is naive itself), so naive prompting can be given as many tries as an intervention;
- overprompt:   one concept's prompt value pushed beyond the training range, mean_v + s * (mean_v - mean_other);
- ladder:       the paper's overprompting ladder: explicit, increasingly exaggerated values of one concept;
- latent:       linear latent intervention: in every conditioned block (or on the shared embedding of a
                common_linear model), at every sampling step, e' = e + alpha (e . b) b, then
                e'' = e' - beta (e' . l) l (b, l unit norm). Contrastive directions: b = E(held-out prompt) -
                E(the same prompt with the boosted concept at its competing value), l = E(the prompt with another
                concept at its competing value) - E(held-out prompt), E the block's embedding;
- latent_paper: the paper's directions: b = E(a prompt stating only the boosted concept, at an extreme value),
                l = E(a prompt stating only another concept, at its competing value);
- patch:        the checkpoint's conditioning-path parameters replaced by those of a donor checkpoint;
- cfg:          classifier-free guidance scale w (models trained with prompt dropout).

Prompt-only and latent elicitations of a checkpoint are sampled in one batch (the latent hook applies each row's
own alpha, beta and directions); the extra naive tries, patch and cfg need their own passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.concepts import ConceptSpace
from ..data.prompts import PromptLayout, class_prompts
from ..errors import ConceptspaceError

METHODS = ("naive", "overprompt", "ladder", "latent", "latent_paper", "patch", "cfg")
PROMPT_METHODS = ("naive", "overprompt", "ladder", "latent", "latent_paper")  # sampled together in one batch
LATENT_METHODS = ("latent", "latent_paper")


class ElicitationError(ConceptspaceError):
    """An elicitation that cannot be built (unknown method, empty grid, concept not in the space, ...)."""


@dataclass(frozen=True)
class Elicitation:
    """One way of asking for a held-out class."""

    name: str  # "naive", "naive[try 2]", "overprompt[color x1]", "latent[color a=2 b=0.1]", "patch[from 6000]"
    method: str  # the rows of one method are its grid; its reading at a checkpoint is the best grid point
    concept: str | None = None  # the pushed / boosted concept
    scale: float = 0.0  # overprompt push s, or latent alpha
    beta: float = 0.0  # latent: fraction of the competing component removed
    donor: int | None = None  # patch: donor checkpoint step (-1 = the last one)
    guidance: float = 1.0  # cfg scale
    value: tuple[float, ...] | None = None  # ladder: the concept's prompt value
    noise: int = 0  # naive_k: the try (initial-noise seed offset; 0 = the noise every other row uses)
    variant: int = 0  # paraphrase: which wording of the class's text prompt (external text models)


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


def ladder_prompt(space: ConceptSpace, name: str, concept: str, value: tuple[float, ...]) -> np.ndarray:
    """The held-out class's prompt with one concept's slots set to an explicit value (a rung of the ladder)."""
    h = class_prompts(space, [name])[0].copy()
    h[PromptLayout.for_space(space).slices[concept]] = value
    return h


def concept_only_prompt(space: ConceptSpace, concept: str, value: int | np.ndarray) -> np.ndarray:
    """A prompt that states one concept's value and nothing else (every other slot 0); `value` is a value index or
    explicit slot values."""
    layout = PromptLayout.for_space(space)
    h = np.zeros(layout.dim, dtype=np.float32)
    c = space.concept(concept)
    sl = layout.slices[concept]
    if not isinstance(value, (int, np.integer)):
        h[sl] = value
    elif c.kind == "shape":
        h[sl.start + value] = 1.0
    else:
        h[sl] = c.means[value]
    return h


def _slot_width(space: ConceptSpace, concept: str) -> int:
    sl = PromptLayout.for_space(space).slices[concept]
    return sl.stop - sl.start


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
    if "ladder" in cfg.methods:
        rungs = [(c, tuple(float(x) for x in v)) for c in concepts for v in cfg.ladder.get(c, [])]
        if not rungs:
            raise ElicitationError(f"elicit.ladder has no values for the pushed concepts ({', '.join(concepts)})")
        for c, v in rungs:
            if len(v) != _slot_width(space, c):
                raise ElicitationError(f"elicit.ladder.{c}: value {list(v)} has {len(v)} numbers, the prompt "
                                       f"has {_slot_width(space, c)} for {c}")
        out += [Elicitation(f"ladder[{c} ({', '.join(f'{x:g}' for x in v)})]", "ladder", c, value=v)
                for c, v in rungs]
    for method in LATENT_METHODS:
        if method in cfg.methods:
            if not cfg.latent_alphas:
                raise ElicitationError("elicit.latent_alphas is empty")
            for c, v in cfg.paper_latent_values.items():
                if c in space.kinds and len(v) != _slot_width(space, c):
                    raise ElicitationError(f"elicit.paper_latent_values.{c}: {len(v)} numbers, the prompt has "
                                           f"{_slot_width(space, c)} for {c}")
            out += [Elicitation(f"{method}[{c} a={a:g} b={cfg.latent_beta:g}]", method, c, a, cfg.latent_beta)
                    for c in concepts for a in cfg.latent_alphas]
    if "patch" in cfg.methods:
        if not cfg.patch_donors:
            raise ElicitationError("elicit.patch_donors is empty")
        out += [Elicitation(f"patch[from {'last' if d == -1 else d}]", "patch", donor=d) for d in cfg.patch_donors]
    if "cfg" in cfg.methods:
        if not cfg.guidance_scales:
            raise ElicitationError("elicit.guidance_scales is empty")
        out += [Elicitation(f"cfg[w={w:g}]", "cfg", guidance=w) for w in cfg.guidance_scales]
    # Naive prompting with as many tries as the largest grid: a best of k beats one try by chance alone.
    largest = max([sum(e.method == m for e in out) for m in dict.fromkeys(e.method for e in out)], default=1)
    k = cfg.naive_tries if cfg.naive_tries is not None else largest
    if k > 1:
        out += [Elicitation("naive[try 0]", "naive_k")] + [Elicitation(f"naive[try {j}]", "naive_k", noise=j)
                                                            for j in range(1, k)]
    return out


# ------------------------------------------------------------------------------------------ latent hook


def prompt_embeddings(model, prompts: np.ndarray, at: str) -> dict[str, torch.Tensor]:
    """Embedding of each prompt at every hook point matching `at`: {hook: [N, C]}.

    The conditioning path depends on the prompt only (not on the image or the time), so one forward pass at x = 0,
    t = 0 reads it."""
    device = next(model.parameters()).device
    h = torch.from_numpy(np.asarray(prompts, dtype=np.float32)).to(device)
    x = torch.zeros(len(h), model.in_channels, model.image_size, model.image_size, device=device)
    with torch.no_grad():
        _, cache = model.run_with_cache(x, torch.zeros(len(h), device=device), h, names=at)
    return {k: v.cpu() for k, v in cache.items()}


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def with_value(space: ConceptSpace, name: str, concept: str, value: int) -> str:
    """The class name with one concept's digit replaced (11 with color at value 0 -> 01)."""
    j = space.kinds.index(concept)
    return name[:j] + str(value) + name[j + 1:]


def contrastive_directions(model, space: ConceptSpace, held_name: str, concept: str,
                           at: str) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """(b, [l, ...]) per hook point, unit norm: b points from the competing values of `concept` to the held-out
    value (E(held-out prompt) - E(prompt with that concept changed), averaged over competing values); each l from
    the held-out prompt to one competing value of another concept (the memorised training corners)."""
    j = space.kinds.index(concept)
    others = [v for v in range(space.concepts[j].n_values) if v != int(held_name[j])]
    comps = [(c.kind, v) for i, c in enumerate(space.concepts) if i != j
             for v in range(c.n_values) if v != int(held_name[i])]
    names = [held_name] + [with_value(space, held_name, concept, v) for v in others] + \
        [with_value(space, held_name, k, v) for k, v in comps]
    emb = prompt_embeddings(model, class_prompts(space, names), at)
    n = len(others)
    boost = {k: _unit(e[0] - e[1:1 + n].mean(0)) for k, e in emb.items()}
    compete = [{k: _unit(e[1 + n + m] - e[0]) for k, e in emb.items()} for m in range(len(comps))]
    return boost, compete


def paper_directions(model, space: ConceptSpace, held_name: str, concept: str, at: str,
                     extreme: dict[str, list[float]]) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """(b, [l, ...]) as in the paper's intervention: b = E(prompt stating only `concept`, at its extreme value if
    one is given, else the held-out value), l = E(prompt stating only another concept, at a competing value)."""
    j = space.kinds.index(concept)
    target = np.asarray(extreme[concept], np.float32) if concept in extreme else int(held_name[j])
    prompts = [concept_only_prompt(space, concept, target)]
    prompts += [concept_only_prompt(space, c.kind, v) for i, c in enumerate(space.concepts) if i != j
                for v in range(c.n_values) if v != int(held_name[i])]
    emb = prompt_embeddings(model, np.stack(prompts), at)
    boost = {k: _unit(e[0]) for k, e in emb.items()}
    compete = [{k: _unit(e[m]) for k, e in emb.items()} for m in range(1, len(prompts))]
    return boost, compete


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
        if reps < 1 or e.shape[0] % rows.alpha.shape[0]:
            raise ValueError(f"latent hook: {e.shape[0]} rows for {rows.alpha.shape[0]} row parameters (the batch "
                             "must not be split into chunks)")
        dev = e.device
        alpha, beta = rows.alpha.to(dev).repeat(reps, 1), rows.beta.to(dev).repeat(reps, 1)
        b = rows.boost[name].to(dev).repeat(reps, 1)  # [B, C]
        v = e + alpha * (e * b).sum(-1, keepdim=True) * b
        comp = rows.compete[name].to(dev).repeat(reps, 1, 1)  # [B, M, C]
        for m in range(comp.shape[1]):
            lvec = comp[:, m]
            v = v - beta * (v * lvec).sum(-1, keepdim=True) * lvec
        return v

    return fn


def latent_rows(model, space: ConceptSpace, held_name: str, elicitations: list[Elicitation], n_samples: int,
                at: str, extreme: dict[str, list[float]] | None = None) -> LatentRows:
    """Row parameters for a batch of `len(elicitations) * n_samples` rows (non-latent rows untouched)."""
    cache: dict[tuple[str, str], tuple] = {}

    def directions(method: str, concept: str) -> tuple:
        if (method, concept) not in cache:
            cache[(method, concept)] = (
                contrastive_directions(model, space, held_name, concept, at) if method == "latent" else
                paper_directions(model, space, held_name, concept, at, extreme or {}))
        return cache[(method, concept)]

    hooks = model.resolve_hook_names(at)
    dims = {h: e.shape[1] for h, e in prompt_embeddings(model, class_prompts(space, [held_name]), at).items()}
    n_comp = sum(c.n_values - 1 for c in space.concepts) or 1
    n_rows = len(elicitations) * n_samples
    alpha, beta = torch.zeros(n_rows, 1), torch.zeros(n_rows, 1)
    boost = {h: torch.zeros(n_rows, dims[h]) for h in hooks}
    compete = {h: torch.zeros(n_rows, n_comp, dims[h]) for h in hooks}
    for k, e in enumerate(elicitations):
        if e.method not in LATENT_METHODS:
            continue
        rows = slice(k * n_samples, (k + 1) * n_samples)
        alpha[rows], beta[rows] = e.scale, e.beta
        b, comps = directions(e.method, e.concept)
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
