"""In-memory datasets from G: training classes (train / validation split) and the held-out OOD set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import ExperimentConfig
from ..data.concepts import ConceptSpace, sample_values
from ..data.prompts import encode_prompt
from ..data.render import render_space


@dataclass
class ConceptImages:
    """Images [N, 3, H, W] in [0, 1], their prompts [N, D] and class digits [N, n_concepts]."""

    images: torch.Tensor
    prompts: torch.Tensor
    class_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: np.ndarray) -> "ConceptImages":
        return ConceptImages(self.images[idx], self.prompts[idx], self.class_ids[idx])


def render_classes(space: ConceptSpace, names: list[str], mode: str, rng: np.random.Generator) -> ConceptImages:
    """Render one image per entry of `names` (train or test mode) with its prompt."""
    ids = space.class_ids(names)
    values = sample_values(space, ids, mode, rng)
    images = render_space(values, space, rng)
    return ConceptImages(torch.from_numpy(images), torch.from_numpy(encode_prompt(space, values)), ids)


@dataclass
class TrainingData:
    """What a training run sees (train, val) and the held-out images kept aside for an OOD loss curve."""

    space: ConceptSpace
    train: ConceptImages
    val: ConceptImages
    ood: ConceptImages


def real_classes(cfg: ExperimentConfig, space: ConceptSpace, names: list[str], per_class: int | None,
                 rng: np.random.Generator) -> ConceptImages:
    """Labelled real images of the given classes (at most `per_class` each), with one-hot prompts."""
    from ..data.prompts import onehot_prompts
    from ..data.sources import load_real

    real = load_real(cfg.data)
    keep = [rng.permutation(space.class_rows(real.labels, name))[:per_class] for name in names]
    keep = np.concatenate(keep) if keep else np.array([], dtype=np.int64)
    ids = real.labels[keep]
    return ConceptImages(torch.from_numpy(real.images[keep]), torch.from_numpy(onehot_prompts(space, ids)), ids)


def make_dataset(cfg: ExperimentConfig) -> TrainingData:
    """Bit-identical for a given config and seed, in any process (own generator, fixed draw order)."""
    space = ConceptSpace.from_config(cfg.data)
    rng = np.random.default_rng([cfg.seed, 0])
    if space.is_real:
        full = real_classes(cfg, space, space.train_classes, cfg.data.n_per_class, rng)
        order = rng.permutation(len(full))
        n_val = int(round(cfg.data.val_fraction * len(full)))
        ood = real_classes(cfg, space, list(space.held_out), cfg.data.n_ood, rng)
        return TrainingData(space, full.subset(order[n_val:]), full.subset(order[:n_val]), ood)
    full = render_classes(space, [n for n in space.train_classes for _ in range(cfg.data.n_per_class)], "train", rng)
    order = rng.permutation(len(full))
    n_val = int(round(cfg.data.val_fraction * len(full)))
    ood = render_classes(space, [n for n in space.held_out for _ in range(cfg.data.n_ood)], "test", rng)
    return TrainingData(space, full.subset(order[n_val:]), full.subset(order[:n_val]), ood)
