"""Prompts h = M(z): concept values -> conditioning vectors, and the masking function M (underspecification).

Layout (the paper's 11-slot vector when shape has two values):

    [ shape one-hot (n_shapes) | x | y | color R, G, B | size | bg R, G, B ]

Only the slots of concepts in the space are filled; every other slot is 0. Positions are nuisances and stay 0
unless x / y are concepts. A masked concept has all its slots set to `mask_value` (default 0, as the paper's
"dropped word").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .concepts import KINDS, ConceptSpace, ConceptValues, sample_values

SLOT_ORDER = tuple(KINDS)  # the paper's layout


@dataclass(frozen=True)
class PromptLayout:
    """Where each concept kind lives in the conditioning vector."""

    slices: dict[str, slice]
    dim: int

    @classmethod
    def for_space(cls, space: ConceptSpace) -> "PromptLayout":
        if space.is_real:  # real data: one one-hot block per concept, in order (the paper's CelebA prompts)
            slices, start = {}, 0
            for c in space.concepts:
                slices[c.kind] = slice(start, start + c.n_values)
                start += c.n_values
            return cls(slices, start)
        n_shapes = space.concept("shape").n_values if "shape" in space.kinds else 2
        widths = {k: n_shapes if k == "shape" else kind.dims for k, kind in KINDS.items()}
        slices, start = {}, 0
        for kind in SLOT_ORDER:
            slices[kind] = slice(start, start + widths[kind])
            start += widths[kind]
        return cls(slices, start)


def encode_prompt(space: ConceptSpace, values: ConceptValues) -> np.ndarray:
    """Conditioning vectors [N, D] float32 from per-image concept values (continuous, as the paper trains)."""
    layout = PromptLayout.for_space(space)
    h = np.zeros((len(values), layout.dim), dtype=np.float32)
    for c in space.concepts:
        sl = layout.slices[c.kind]
        if c.kind == "shape":
            h[np.arange(len(values)), sl.start + values.shape] = 1.0
        else:
            v = getattr(values, c.kind)
            h[:, sl] = v.reshape(len(values), -1)
    return h


def onehot_prompts(space: ConceptSpace, class_ids: np.ndarray) -> np.ndarray:
    """Real-data prompts [N, D]: the concatenated one-hot codes of each concept's value."""
    layout = PromptLayout.for_space(space)
    class_ids = np.asarray(class_ids).reshape(-1, len(space.concepts))
    h = np.zeros((len(class_ids), layout.dim), dtype=np.float32)
    for j, c in enumerate(space.concepts):
        h[np.arange(len(h)), layout.slices[c.kind].start + class_ids[:, j]] = 1.0
    return h


def class_prompts(space: ConceptSpace, names: list[str]) -> np.ndarray:
    """Nominal prompts (class means) [N, D] for class names: what 'naive prompting' asks for."""
    if space.is_real:
        return onehot_prompts(space, space.class_ids(names))
    values = sample_values(space, space.class_ids(names), "test", np.random.default_rng(0))
    return encode_prompt(space, values)


def mask_probabilities(space: ConceptSpace, rules: list, class_ids: np.ndarray) -> np.ndarray:
    """[N, n_concepts] probability that each concept is dropped from each sample's prompt."""
    class_ids = np.asarray(class_ids).reshape(-1, len(space.concepts))
    names = np.array(["".join(map(str, row)) for row in class_ids])
    p = np.zeros(class_ids.shape, dtype=np.float64)
    for rule in rules:
        j = space.kinds.index(rule.concept)
        hit = np.isin(names, rule.classes if rule.classes is not None else space.train_classes)
        p[hit, j] = np.maximum(p[hit, j], rule.p)
    return p


def mask_prompts(
    space: ConceptSpace,
    prompts: np.ndarray,
    class_ids: np.ndarray,
    rules: list,
    mask_value: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply M: returns (masked prompts [N, D], which concepts were masked [N, n_concepts] bool)."""
    p = mask_probabilities(space, rules, class_ids)
    masked = rng.random(p.shape) < p
    out = prompts.copy()
    layout = PromptLayout.for_space(space)
    for j, c in enumerate(space.concepts):
        out[masked[:, j], layout.slices[c.kind]] = mask_value
    return out, masked
