"""In-memory datasets from G: training classes (train / validation split) and the held-out OOD set."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..config import ExperimentConfig
from ..data.concepts import ConceptSpace, sample_values
from ..data.prompts import encode_prompt
from ..data.render import render_space
from .sources import DataSourceError


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


def render_classes(space: ConceptSpace, names: list[str], mode: str, rng: np.random.Generator,
                   threads: int = 2) -> ConceptImages:
    """Render one image per entry of `names` (train or test mode) with its prompt (`threads`: see `render`)."""
    if not names:  # e.g. no held-out class: an empty set, not an error
        from .prompts import PromptLayout

        side = space.image_size
        return ConceptImages(torch.zeros(0, 3, side, side), torch.zeros(0, PromptLayout.for_space(space).dim),
                             np.zeros((0, len(space.concepts)), dtype=np.int64))
    ids = space.class_ids(names)
    values = sample_values(space, ids, mode, rng)
    images = render_space(values, space, rng, threads)
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


def dataset_bytes(cfg: ExperimentConfig, space: ConceptSpace) -> int:
    """Bytes of the training set as float32 images (plus the OOD images), before it is allocated."""
    side = cfg.data.image_size
    n = len(space.train_classes) * cfg.data.n_per_class + len(space.held_out) * cfg.data.n_ood
    return n * 3 * side * side * 4


def check_memory(cfg: ExperimentConfig, space: ConceptSpace, fraction: float = 0.8) -> None:
    """Refuse, with the estimate, a training set that cannot fit in this machine's memory (data.force_memory: try)."""
    need = dataset_bytes(cfg, space) * 2  # rendering holds a second copy while it blurs and stacks
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > fraction * total and not cfg.data.force_memory:
        raise DataSourceError(
            f"the training set needs about {need / 2**30:.1f} GiB ({cfg.data.n_per_class} images per class at "
            f"{cfg.data.image_size} px) and this machine has {total / 2**30:.1f} GiB; lower data.n_per_class or "
            "data.image_size, or set data.force_memory=true to try anyway")


def make_dataset(cfg: ExperimentConfig) -> TrainingData:
    """Bit-identical for a given config and seed, in any process (own generator, fixed draw order)."""
    space = ConceptSpace.from_config(cfg.data)
    check_memory(cfg, space)
    rng = np.random.default_rng([cfg.seed, 0])
    if space.is_real:
        full = real_classes(cfg, space, space.train_classes, cfg.data.n_per_class, rng)
        order = rng.permutation(len(full))
        n_val = int(round(cfg.data.val_fraction * len(full)))
        ood = real_classes(cfg, space, list(space.held_out), cfg.data.n_ood, rng)
        return TrainingData(space, full.subset(order[n_val:]), full.subset(order[:n_val]), ood)
    threads = cfg.train.threads or 2  # a sweep's one-thread run renders on one thread too
    full = render_classes(space, [n for n in space.train_classes for _ in range(cfg.data.n_per_class)], "train", rng,
                          threads)
    order = rng.permutation(len(full))
    n_val = int(round(cfg.data.val_fraction * len(full)))
    ood = render_classes(space, [n for n in space.held_out for _ in range(cfg.data.n_ood)], "test", rng, threads)
    return TrainingData(space, full.subset(order[n_val:]), full.subset(order[:n_val]), ood)
