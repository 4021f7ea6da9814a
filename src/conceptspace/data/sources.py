"""Real images as a concept space: Fashion-MNIST (Debian's package), CelebA on disk, or any labelled folder.

Every source yields `LabelledImages`: images [N, 3, S, S] float32 in [0, 1] (grey images are repeated over the
three channels, so the same U-Net and probe apply) and concept labels [N, n_concepts] (value indices), balanced
to at most `real.max_per_class` images per class. Nothing is downloaded: the files must be on disk.

- fashion_mnist: concepts `category` (a pair of garment names, e.g. [Trouser, Sneaker]) and `tone`
  ([dark, light]: a quantile split of the item's mean intensity *within* each category, so tone is not a proxy
  for category). Reads the gzipped IDX files of `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist).
- celeba: `img_align_celeba/` + `list_attr_celeba.txt` (+ optional `list_eval_partition.txt`); attribute names
  are concepts (value 0 = attribute -1, value 1 = attribute 1); center crop 178 x 178, resized.
- folder: a CSV whose first column is a file name (relative to `real.path`) and whose other columns are 0/1
  attributes; rows that do not parse are skipped and counted.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..data.concepts import ConceptSpace
from ..errors import ConceptspaceError

logger = logging.getLogger(__name__)

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
INSTALL_FASHION = "sudo apt-get install dataset-fashion-mnist"


class DataSourceError(ConceptspaceError):
    """Missing files, unknown attributes, empty or too small classes."""


@dataclass
class LabelledImages:
    images: np.ndarray  # [N, 3, S, S] float32 in [0, 1]
    labels: np.ndarray  # [N, n_concepts] int64 value indices
    skipped: int = 0  # unreadable images or rows


def read_idx(path: str | Path) -> np.ndarray:
    """A (gzipped) IDX file as a numpy array: a few lines, no dependency."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataSourceError(f"{path}: not an IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0D: ">f4"}.get(data[2])
    if dtype is None:
        raise DataSourceError(f"{path}: unsupported IDX type {data[2]:#x}")
    arr = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DataSourceError(f"{path}: truncated IDX file ({arr.size} of {int(np.prod(dims))} values)")
    return arr.reshape(dims)


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """[N, C, H, W] float -> [N, C, size, size] (area interpolation when shrinking, bilinear when growing)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    if x.shape[-1] == size and x.shape[-2] == size:
        return x.numpy()
    mode = "area" if x.shape[-1] > size else "bilinear"
    out = F.interpolate(x, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return out.clamp(0, 1).numpy()


def _balance(labels: np.ndarray, space: ConceptSpace, max_per_class: int, min_per_class: int,
             rng: np.random.Generator) -> np.ndarray:
    """Indices of a class-balanced subsample; errors name empty or too small classes."""
    keep = []
    counts = {}
    for name in space.class_names:
        idx = space.class_rows(labels, name)
        counts[name] = len(idx)
        keep.append(rng.permutation(idx)[:max_per_class])
    small = {n: c for n, c in counts.items() if c < min_per_class}
    if small:
        what = ", ".join(f"{n}: {c}" for n, c in small.items())
        held = [n for n in small if n in space.held_out]
        kind = "held-out combination has no images" if held and counts[held[0]] == 0 else "too few images"
        raise DataSourceError(f"{kind} ({what}; need at least real.min_per_class={min_per_class}); "
                              "pick other attributes or values")
    return np.sort(np.concatenate(keep))


def _fashion(space: ConceptSpace, real, size: int, rng: np.random.Generator) -> LabelledImages:
    root = Path(real.path or FASHION_DIR)
    splits = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}[real.split]
    xs, ys = [], []
    for prefix in splits:
        img, lab = root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"
        if not img.is_file() or not lab.is_file():
            raise DataSourceError(f"Fashion-MNIST not found: expected {img} and {lab}; install it with "
                                  f"`{INSTALL_FASHION}` or set data.real.path")
        xs.append(read_idx(img))
        ys.append(read_idx(lab))
    x, y = np.concatenate(xs), np.concatenate(ys)
    cat = space.concept("category")
    names = [n.lower() for n in FASHION_CLASSES]
    ids = []
    for label in cat.labels:
        if label.lower() not in names:
            raise DataSourceError(f"data.concepts.category.values: unknown garment {label!r} "
                                  f"(Fashion-MNIST has: {', '.join(FASHION_CLASSES)})")
        ids.append(names.index(label.lower()))
    keep = np.isin(y, ids)
    x, y = x[keep].astype(np.float32) / 255.0, y[keep]
    category = np.array([ids.index(v) for v in y])
    # Tone: the item's mean intensity over its own pixels, split at a quantile within each category.
    fg = x > 0.05
    intensity = (x * fg).sum((1, 2)) / np.maximum(fg.sum((1, 2)), 1)
    tone = np.full(len(x), -1, dtype=np.int64)
    for c in range(len(ids)):
        sel = category == c
        lo, hi = np.quantile(intensity[sel], [real.tone_quantile - real.tone_gap / 2,
                                              real.tone_quantile + real.tone_gap / 2])
        tone[sel & (intensity <= lo)] = 0  # dark
        tone[sel & (intensity > hi)] = 1  # light; items in the band between are ambiguous and left out
    cols = {"category": category, "tone": tone}
    labels = np.stack([cols[c.kind] for c in space.concepts], 1)
    valid = np.nonzero(tone >= 0)[0]
    idx = valid[_balance(labels[valid], space, real.max_per_class, real.min_per_class, rng)]
    images = resize(np.repeat(x[idx][:, None], 3, axis=1), size)
    return LabelledImages(images, labels[idx])


def _load_rgb(path: Path, size: int, crop: int | None) -> np.ndarray | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if crop:
                w, h = im.size
                c = min(crop, w, h)
                im = im.crop(((w - c) // 2, (h - c) // 2, (w - c) // 2 + c, (h - c) // 2 + c))
            im = im.resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def _attribute_table(space: ConceptSpace, header: list[str], rows: list[list[str]], source: str,
                     to_bit) -> tuple[list[str], np.ndarray, int]:
    missing = [c.kind for c in space.concepts if c.kind not in header]
    if missing:
        raise DataSourceError(f"{source}: no attribute {missing[0]!r}; available: {', '.join(header)}")
    cols = [header.index(c.kind) for c in space.concepts]
    files, labels, bad = [], [], 0
    for row in rows:
        try:
            labels.append([to_bit(row[1 + j]) for j in cols])
            files.append(row[0])
        except (IndexError, ValueError):
            bad += 1
    return files, np.array(labels, dtype=np.int64).reshape(-1, len(cols)), bad


def _from_files(space: ConceptSpace, real, size: int, rng, files: list[str], labels: np.ndarray, folder: Path,
                crop: int | None, bad_rows: int) -> LabelledImages:
    idx = _balance(labels, space, real.max_per_class, real.min_per_class, rng)
    images, keep, skipped = [], [], bad_rows
    for i in idx:
        img = _load_rgb(folder / files[i], size, crop)
        if img is None:
            skipped += 1  # corrupted or missing image: counted, never fatal
            continue
        images.append(img)
        keep.append(i)
    if skipped:
        logger.warning("skipped %d unreadable images or rows", skipped)
    if not images:
        raise DataSourceError(f"{folder}: none of the selected images could be read")
    out = LabelledImages(np.stack(images), labels[np.array(keep)], skipped)
    _balance(out.labels, space, real.max_per_class, real.min_per_class, rng)  # still enough after skipping?
    return out


def _celeba(space: ConceptSpace, real, size: int, rng) -> LabelledImages:
    if not real.path:
        raise DataSourceError("data.real.path: set it to the folder holding img_align_celeba/ and list_attr_celeba.txt")
    root = Path(real.path)
    attr = root / "list_attr_celeba.txt"
    if not attr.is_file():
        raise DataSourceError(f"CelebA attributes not found: expected {attr} (and the images in "
                              f"{root / 'img_align_celeba'}/)")
    lines = attr.read_text().splitlines()
    header = ["file", *lines[1].split()]
    rows = [ln.split() for ln in lines[2:] if ln.strip()]
    part = root / "list_eval_partition.txt"
    if real.split != "all" and part.is_file():
        want = {"train": "0", "test": "2"}[real.split]
        allowed = {ln.split()[0] for ln in part.read_text().splitlines() if ln.split()[1:] == [want]}
        rows = [r for r in rows if r[0] in allowed]

    def to_bit(v: str) -> int:
        if v not in ("1", "-1"):
            raise ValueError(v)
        return int(v == "1")

    files, labels, bad = _attribute_table(space, header[1:], [[r[0], *r[1:]] for r in rows], str(attr), to_bit)
    return _from_files(space, real, size, rng, files, labels, root / "img_align_celeba", 178, bad)


def _folder(space: ConceptSpace, real, size: int, rng) -> LabelledImages:
    if not real.csv:
        raise DataSourceError("data.real.csv: the CSV of file names and 0/1 attribute columns is required")
    table = Path(real.csv)
    if not table.is_file():
        raise DataSourceError(f"data.real.csv: {table} not found")
    with open(table, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise DataSourceError(f"{table}: empty CSV")
    header, body = rows[0], rows[1:]

    def to_bit(v: str) -> int:
        v = v.strip().lower()
        if v in ("1", "true", "yes"):
            return 1
        if v in ("0", "-1", "false", "no"):
            return 0
        raise ValueError(v)

    files, labels, bad = _attribute_table(space, header[1:], body, str(table), to_bit)
    folder = Path(real.path) if real.path else table.parent
    if not real.allow_outside_paths:
        inside = folder.resolve()
        outside = [f for f in files if Path(f).is_absolute() or not (inside / f).resolve().is_relative_to(inside)]
        if outside:
            raise DataSourceError(f"{table}: {len(outside)} file name(s) point outside the image folder {folder} "
                                  f"(first: {outside[0]!r}); set data.real.allow_outside_paths=true if meant")
    return _from_files(space, real, size, rng, files, labels, folder, None, bad)


@lru_cache(maxsize=4)
def _load_cached(data_json: str, seed: int) -> LabelledImages:
    from ..config import DataConfig

    data = DataConfig.model_validate(json.loads(data_json))
    space = ConceptSpace.from_config(data)
    rng = np.random.default_rng([seed, 11])
    loader = {"fashion_mnist": _fashion, "celeba": _celeba, "folder": _folder}[data.real.source]
    return loader(space, data.real, data.image_size, rng)


def load_real(data, seed: int = 0) -> LabelledImages:
    """The balanced labelled images of a real-data config (cached per process)."""
    if data.real is None:
        raise DataSourceError("data.real is not set: this config renders its images with G")
    return _load_cached(json.dumps(data.model_dump(mode="json"), sort_keys=True), seed)


def class_mean_signal(space: ConceptSpace, images: LabelledImages) -> dict[str, float]:
    """Concept signal on real images: real images come in no matched pairs, so σ_i is the mean squared pixel
    difference between the *mean images* of the base class (all digits 0) and the class with digit i set to 1."""
    def mean_of(ids: tuple[int, ...]) -> np.ndarray:
        sel = (images.labels == np.array(ids)).all(1)
        return images.images[sel].mean(0)

    base = tuple(0 for _ in space.concepts)
    out = {}
    for j, c in enumerate(space.concepts):
        other = tuple(1 if i == j else 0 for i in range(len(space.concepts)))
        out[c.kind] = float(((mean_of(other) - mean_of(base)) ** 2).mean())
    return out
