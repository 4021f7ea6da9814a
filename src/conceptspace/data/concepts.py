"""Concept space S: concept axes, classes (digit strings), the train / held-out split, per-image concept values.

Conventions: value index 0 of every concept is the "first" corner (red, large, circle,
light background), so class "00" of color x size is a large red object and "11" a small blue one.
Digits follow the order of `data.concepts` in the config.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from ..config import DataConfig, NoiseStreams

SHAPES = ("circle", "triangle", "square")


@dataclass(frozen=True)
class Kind:
    """What G knows about one kind of concept: the one table every stage reads."""

    dims: int  # numbers per value (shape: one, an index into SHAPES; its prompt is one-hot over its values)
    half_range_fraction: float  # within-class jitter as a fraction of the gap (paper: Δc/8, 3Δs/8, Δb/8)
    default_sep: float | None  # separation when the config gives neither sep nor values (None: categorical)
    ends: Callable[[float], tuple[list[float], list[float]]] | None  # (value 0, last value) from h = sep / 2
    colour: bool = False  # an RGB value in [0, 1]; a single number means a gray level


# In the order of the paper's conditioning vector [shape | x | y | color RGB | size | bg RGB].
KINDS: dict[str, Kind] = {
    "shape": Kind(1, 0.0, None, None),
    "x": Kind(1, 1 / 8, 0.6, lambda h: ([-h], [h])),
    "y": Kind(1, 1 / 8, 0.6, lambda h: ([-h], [h])),
    "color": Kind(3, 1 / 8, 0.4, lambda h: ([0.5 + h, 0.5 - h, 0.5 - h], [0.5 - h, 0.5 - h, 0.5 + h]),
                  colour=True),  # red -> blue
    "size": Kind(1, 3 / 8, 0.4, lambda h: ([0.45 + h], [0.45 - h])),  # large -> small (radius, canvas [-1, 1])
    "bg_color": Kind(3, 1 / 8, 0.4, lambda h: ([0.5 + h] * 3, [0.5 - h] * 3), colour=True),  # light -> dark
}
KIND_DIMS = {k: v.dims for k, v in KINDS.items()}
# Values used when a kind is not a concept of the space (position and background are then nuisances).
FIXED_COLOR = (0.8, 0.2, 0.2)
POSITION_RANGE = 0.5  # nuisance position: uniform in [-0.5, 0.5]
NUISANCE_BG = (0.8, 1.0)  # train-mode nuisance background, per channel
NUISANCE_BG_TEST = 0.9

Mode = Literal["train", "test"]


@dataclass(frozen=True)
class Concept:
    """One axis of concept space: its kind, the mean value of each class along it, and the jitter.

    For real data the kind is the attribute's name, `means` is the identity (values are one-hot prompts) and
    `labels` names the values.
    """

    kind: str
    means: np.ndarray  # [n_values, KIND_DIMS[kind]] (real data: [n_values, n_values] one-hot)
    half_range: float
    labels: tuple[str, ...] | None = None

    @property
    def n_values(self) -> int:
        return len(self.means)

    def value_name(self, idx: int) -> str:
        """Readable name of value `idx` (e.g. 'triangle', 'size=0.25')."""
        if self.labels is not None:
            return f"{self.kind}={self.labels[idx]}"
        m = self.means[idx]
        if self.kind == "shape":
            return SHAPES[int(m[0])]
        if len(m) == 1:
            return f"{self.kind}={m[0]:.3g}"
        return f"{self.kind}=(" + ",".join(f"{v:.2f}" for v in m) + ")"

    def ranges(self, idx: int, size_floor: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Train-mode sampling box [lo, hi] of value `idx`."""
        lo, hi = self.means[idx] - self.half_range, self.means[idx] + self.half_range
        if self.kind == "size":
            lo = np.maximum(lo, size_floor)
        return lo, hi


def _axis_means(kind: str, n: int, sep: float) -> np.ndarray:
    """The paper's parametrisation: n values spread evenly over a separation `sep`."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    ends = KINDS[kind].ends(sep / 2)
    lo, hi = np.array(ends[0]), np.array(ends[1])
    return lo + t * (hi - lo)


def _explicit_means(kind: str, values: list, key: str) -> np.ndarray:
    if kind == "shape":
        bad = [v for v in values if v not in SHAPES]
        if bad:
            raise ValueError(f"{key}: unknown shape {bad[0]!r} (known: {', '.join(SHAPES)})")
        return np.array([[SHAPES.index(v)] for v in values], dtype=float)
    dims = KIND_DIMS[kind]
    try:
        arr = np.array([[v] if np.isscalar(v) else v for v in values], dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{key}: values must be numbers or lists of {dims} numbers") from None
    if KINDS[kind].colour and arr.shape[1] == 1:
        arr = np.repeat(arr, 3, axis=1)  # a single number is a gray level
    if arr.ndim != 2 or arr.shape[1] != dims:
        raise ValueError(f"{key}: each {kind} value needs {dims} number(s)")
    return arr


def _check_concept(c: Concept, key: str, size_floor: float) -> None:
    """Ranges, overlaps and order: the classes must stay distinct and physical."""
    m, hr = c.means, c.half_range
    if c.kind == "shape":
        if len(set(m[:, 0])) != len(m):
            raise ValueError(f"{key}: shape values repeat")
        return
    eps = 1e-9  # the paper's extreme setting (Δc = 0.8) touches 1.0 exactly; float error must not reject it
    leaves = (m - hr < -eps) | (m + hr > 1 + eps)
    if KINDS[c.kind].colour and leaves.any():
        bad = int(np.argmax(leaves.any(axis=1)))
        raise ValueError(
            f"{key}: {c.kind} of value {bad} leaves [0, 1] (mean {np.round(m[bad], 4).tolist()} ± {hr:.4g})"
        )
    if c.kind == "size":
        if (m[:, 0] <= 0).any():
            raise ValueError(f"{key}: non-positive radius {m[:, 0].min():.4g} (separation too large?)")
        if (m[:, 0] < size_floor).any():
            raise ValueError(f"{key}: radius {m[:, 0].min():.4g} below data.size_floor={size_floor}")
        if (m[:, 0] + hr > 1.0).any():
            raise ValueError(f"{key}: radius {m[:, 0].max() + hr:.4g} larger than the canvas (max 1.0)")
    if c.kind in ("x", "y") and (np.abs(m) + hr > 1.0).any():
        raise ValueError(f"{key}: position leaves the canvas [-1, 1]")
    for i, j in itertools.combinations(range(len(m)), 2):
        # Train-mode boxes overlap when every coordinate's intervals overlap (L-infinity distance <= 2*hr).
        if np.abs(m[i] - m[j]).max() <= 2 * hr:
            raise ValueError(f"{key}: values {i} and {j} overlap (means closer than the within-class range ±{hr:.4g})")


def _build_concept(kind: str, cc, key: str, size_floor: float) -> Concept:
    if cc.values is not None:
        if len(cc.values) != cc.n_values and "n_values" in cc.model_fields_set:
            raise ValueError(f"{key}.values: {len(cc.values)} values but n_values={cc.n_values}")
        if len(cc.values) < 2:
            raise ValueError(f"{key}.values: a concept needs at least two values")
        means = _explicit_means(kind, cc.values, key + ".values")
        gaps = [np.abs(a - b).max() for a, b in itertools.combinations(means, 2)]
        gap = min(gaps) if gaps else 0.0
    elif kind == "shape":
        if cc.sep is not None:
            raise ValueError(f"{key}.sep: shape has no separation; list its values instead")
        if cc.n_values > len(SHAPES):
            raise ValueError(f"{key}.n_values: at most {len(SHAPES)} shapes ({', '.join(SHAPES)})")
        means, gap = np.arange(cc.n_values, dtype=float)[:, None], 0.0
    else:
        sep = KINDS[kind].default_sep if cc.sep is None else cc.sep
        if sep <= 0:
            raise ValueError(f"{key}.sep: must be > 0 (got {sep}; zero merges the classes, a negative value swaps them)")
        means = _axis_means(kind, cc.n_values, sep)
        gap = sep / (cc.n_values - 1)
    hr = KINDS[kind].half_range_fraction * gap if cc.half_range is None else cc.half_range
    concept = Concept(kind=kind, means=means, half_range=float(hr))
    _check_concept(concept, key, size_floor)
    return concept


@dataclass(frozen=True)
class ConceptSpace:
    """Concept axes, their classes and which classes are held out of training."""

    concepts: tuple[Concept, ...]
    held_out: tuple[str, ...]
    image_size: int = 16
    blur: float = 1 / 32
    noise: float = 1e-3
    size_floor: float = 0.1
    is_real: bool = False  # images come from a labelled real data set, not from G
    object_size: float = 0.45  # the radius of every object when size is not a concept
    noise_streams: NoiseStreams = "one"  # see `render`: one generator for all pixel noise, or one per block

    @classmethod
    def from_config(cls, cfg: "DataConfig") -> "ConceptSpace":
        """Build and validate the space; raises ValueError('<key>: <reason>') on impossible settings."""
        if cfg.real is not None:
            concepts = tuple(_real_concept(name, cc, cfg.real.source) for name, cc in cfg.concepts.items())
        else:
            unknown = [k for k in cfg.concepts if k not in KIND_DIMS]
            if unknown:
                raise ValueError(f"concepts.{unknown[0]}: unknown concept kind (kinds of G: {', '.join(KIND_DIMS)}; "
                                 "attribute names need data.real)")
            concepts = tuple(
                _build_concept(kind, cc, f"concepts.{kind}", cfg.size_floor) for kind, cc in cfg.concepts.items()
            )
        shape = tuple(c.n_values for c in concepts)
        names = ["".join(map(str, idx)) for idx in itertools.product(*map(range, shape))]
        if cfg.held_out is None:
            held = tuple(n for n in names if sum(ch != "0" for ch in n) > 1)
        else:
            unknown = [n for n in cfg.held_out if n not in names]
            if unknown:
                listed = ", ".join(names[:16]) + (", ..." if len(names) > 16 else "")
                raise ValueError(f"held_out: unknown class {unknown[0]!r} (classes: {listed})")
            if len(set(cfg.held_out)) != len(cfg.held_out):
                raise ValueError("held_out: a class is listed twice")
            held = tuple(cfg.held_out)
        if len(held) == len(names):
            raise ValueError("held_out: every class is held out, so the training set is empty")
        space = cls(concepts, held, cfg.image_size, cfg.blur, cfg.noise, cfg.size_floor, cfg.real is not None,
                    cfg.object_size, cfg.noise_streams)
        _check_masks(space, cfg)
        return space

    # ----------------------------------------------------------------------------------------- classes
    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(c.kind for c in self.concepts)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(c.n_values for c in self.concepts)

    @property
    def class_names(self) -> list[str]:
        """All classes in ravel order: '00', '01', '10', '11' for a 2x2 space."""
        return ["".join(map(str, idx)) for idx in itertools.product(*map(range, self.shape))]

    @property
    def train_classes(self) -> list[str]:
        return [n for n in self.class_names if n not in self.held_out]

    def concept(self, kind: str) -> Concept:
        """The concept of a given kind; KeyError naming the space's concepts otherwise."""
        for c in self.concepts:
            if c.kind == kind:
                return c
        raise KeyError(f"concept {kind!r} is not in this space (concepts: {', '.join(self.kinds)})")

    def class_index(self, name: str) -> tuple[int, ...]:
        """Digit tuple of a class name; KeyError for unknown names."""
        if name not in self.class_names:
            raise KeyError(f"unknown class {name!r} (classes: {', '.join(self.class_names)})")
        return tuple(int(ch) for ch in name)

    def class_ids(self, names: list[str]) -> np.ndarray:
        """[N, n_concepts] digit array for a list of class names."""
        return np.array([self.class_index(n) for n in names], dtype=np.int64).reshape(len(names), len(self.concepts))

    def class_rows(self, labels: np.ndarray, name: str) -> np.ndarray:
        """Indices of the rows of a [N, n_concepts] value-index array that belong to class `name`."""
        return np.nonzero((labels == np.array(self.class_index(name))).all(1))[0]

    def describe(self, name: str) -> str:
        """'00' -> 'color=(0.70,0.30,0.30), size=0.65'."""
        return ", ".join(c.value_name(i) for c, i in zip(self.concepts, self.class_index(name)))


def _real_concept(name: str, cc, source: str) -> Concept:
    """A concept of a real data set: named values, one-hot prompts."""
    key = f"concepts.{name}"
    if cc.sep is not None or cc.half_range is not None:
        raise ValueError(f"{key}: real-data concepts take `values` (value names), not sep / half_range")
    labels = [str(v) for v in cc.values] if cc.values is not None else ["0", "1"]
    if len(labels) != 2:
        raise ValueError(f"{key}.values: real-data concepts are binary (two values), got {len(labels)}")
    if source == "fashion_mnist" and name not in ("category", "tone"):
        raise ValueError(f"{key}: Fashion-MNIST concepts are 'category' (a pair of garment names) and 'tone'")
    return Concept(kind=name, means=np.eye(len(labels)), half_range=0.0, labels=tuple(labels))


def _check_masks(space: ConceptSpace, cfg: "DataConfig") -> None:
    for k, rule in enumerate(cfg.mask):
        key = f"mask.{k}"
        if rule.concept not in space.kinds:
            raise ValueError(f"{key}.concept: {rule.concept!r} is not in the space (concepts: {', '.join(space.kinds)})")
        for name in rule.classes or []:
            if name not in space.train_classes:
                raise ValueError(f"{key}.classes: {name!r} is not a training class ({', '.join(space.train_classes)})")
        c = space.concept(rule.concept)
        if c.kind == "shape" or c.labels is not None:
            continue  # a one-hot code always holds a 0 and a 1, never a constant mask value
        for i in range(c.n_values):
            lo, hi = c.ranges(i, space.size_floor)
            if ((lo <= cfg.mask_value) & (cfg.mask_value <= hi)).all():
                raise ValueError(
                    f"mask_value: {cfg.mask_value} collides with a real {c.kind} prompt ({c.value_name(i)}); "
                    "pick a value outside every class range"
                )


# ------------------------------------------------------------------------------------- per-image values


@dataclass
class ConceptValues:
    """Inputs of G for N images: every kind is filled, concept or nuisance."""

    x: np.ndarray  # [N]
    y: np.ndarray  # [N]
    color: np.ndarray  # [N, 3]
    size: np.ndarray  # [N]
    shape: np.ndarray  # [N] int index into SHAPES
    bg_color: np.ndarray  # [N, 3]

    def __len__(self) -> int:
        return len(self.x)


def sample_values(space: ConceptSpace, class_ids: np.ndarray, mode: Mode, rng: np.random.Generator) -> ConceptValues:
    """Concept values for images of the given classes.

    train mode: each concept uniform within its class box (size floored at `size_floor`); test mode: class means.
    Positions are drawn first and the same way in both modes, so two calls with equal seeds share positions
    (what the concept signal's paired images need).
    """
    class_ids = np.asarray(class_ids, dtype=np.int64).reshape(-1, len(space.concepts))
    n = len(class_ids)
    pos = rng.uniform(-POSITION_RANGE, POSITION_RANGE, size=(n, 2))
    if mode == "train":
        bg = rng.uniform(*NUISANCE_BG, size=(n, 3))
    else:
        bg = np.full((n, 3), NUISANCE_BG_TEST)
    out = {
        "x": pos[:, 0],
        "y": pos[:, 1],
        "color": np.tile(FIXED_COLOR, (n, 1)),
        "size": np.full(n, space.object_size),
        "shape": np.zeros(n, dtype=np.int64),
        "bg_color": bg,
    }
    for j, c in enumerate(space.concepts):
        idx = class_ids[:, j]
        if (idx < 0).any() or (idx >= c.n_values).any():
            raise ValueError(f"class index out of range for concept {c.kind!r}")
        mean = c.means[idx]  # [N, d]
        if c.kind == "shape":
            out["shape"] = mean[:, 0].astype(np.int64)
            continue
        if mode == "train" and c.half_range > 0:
            lo, hi = mean - c.half_range, mean + c.half_range
            if c.kind == "size":
                lo = np.maximum(lo, space.size_floor)
            val = rng.uniform(lo, hi)
        else:
            val = mean.copy()
        out[c.kind] = val[:, 0] if KIND_DIMS[c.kind] == 1 else val
    return ConceptValues(**out)
