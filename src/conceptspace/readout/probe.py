"""Concept probes f: X -> per-concept probabilities over each concept's values (the paper's concept classifier).

Two probes share one interface, `probe.predict_proba(images) -> list of [N, n_values] arrays` (one per concept):

- `AnalyticProbe` inverts G directly: background from the border pixels, a soft foreground mask, the foreground's
  mean color, soft area (-> radius), bounding-box fill (-> shape) and centroid (-> position). Each concept's
  features are compared with the features of rendered reference images of each value (a Gaussian class model
  calibrated on G once, deterministic, no training).
- `LearnedProbe` is a small CNN with one softmax head per concept, trained on rendered images of *all* classes
  (held-out ones included: the probe is an evaluator) pooled over a range of separations, cached on disk under a
  hash of everything it depends on, and refused unless it reaches the required accuracy on fresh test images.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import kernels
from ..config import DataConfig, ExperimentConfig, ProbeConfig
from ..data.concepts import ConceptSpace, ConceptValues, sample_values
from ..data.render import NOISE_BLOCK, render_space
from ..errors import ConceptspaceError
from ..model.checkpoints import load_tensors, save_tensors

logger = logging.getLogger(__name__)

PROBE_FORMAT = 3  # bump when the probe's code changes what a cached probe means (3: pinned kernels, no oneDNN)
PROBE_THREADS = 1  # probe training always runs on this many threads, so its weights do not depend on the machine


class ProbeError(ConceptspaceError):
    """A probe that cannot be used: too inaccurate, or trained for another concept space."""


# ------------------------------------------------------------------------------------------ analytic probe


BLANK_CONTRAST = 0.02  # an image whose pixels all stay this close to its border's colour has no object


def _background(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clipped images [N, 3, H, W], background = border median [N, 3], distance to it per pixel [N, H, W])."""
    x = np.asarray(images, dtype=np.float32).clip(0, 1)
    border = np.concatenate([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], axis=2)  # [N, 3, 4W]
    bg = np.median(border, axis=2)  # [N, 3]
    return x, bg, np.linalg.norm(x - bg[:, :, None, None], axis=1)


def has_object(images: np.ndarray, min_contrast: float = BLANK_CONTRAST) -> np.ndarray:
    """[N, 3, H, W] images -> [N] bool: some pixel differs from the border's median colour by `min_contrast`.

    A blank canvas has no object to read; the probes would still return a (meaningless) reading for it.
    """
    _, _, dist = _background(images)
    return dist.reshape(len(dist), -1).max(axis=1) >= min_contrast


def image_features(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image features of G's inverse: bg_color, color [N, 3], radius, fill, x, y [N, 1]."""
    x, bg, dist = _background(images)  # [N, 3, H, W], [N, 3], [N, H, W]
    n, _, h, w = x.shape
    peak = dist.reshape(n, -1).max(axis=1)  # [N]
    weight = np.clip(dist / np.maximum(peak, 1e-6)[:, None, None], 0, 1)  # soft foreground in [0, 1]
    weight[peak < BLANK_CONTRAST] = 0.0  # a blank image has no object
    area = weight.reshape(n, -1).sum(axis=1)  # in pixels
    core = weight**4  # the object's colour is read from its core, away from the blurred edge
    color = (core[:, None] * x).reshape(n, 3, -1).sum(2) / np.maximum(core.reshape(n, -1).sum(1), 1e-6)[:, None]
    color[peak < BLANK_CONTRAST] = bg[peak < BLANK_CONTRAST]
    pitch = 2.0 / (w - 1)  # canvas units per pixel
    radius = np.sqrt(area / np.pi) * pitch
    lin = np.linspace(-1, 1, w, dtype=np.float32)
    tot = np.maximum(area, 1e-6)
    cx = (weight.sum(2) * lin).sum(1) / tot  # axis 0 = x (as G draws it)
    cy = (weight.sum(1) * lin).sum(1) / tot
    hard = weight > 0.5
    rows, cols = hard.any(2), hard.any(1)
    bbox = np.maximum(rows.sum(1) * cols.sum(1), 1)
    fill = hard.reshape(n, -1).sum(1) / bbox
    return {"bg_color": bg, "color": color, "size": radius[:, None], "shape": fill[:, None],
            "x": cx[:, None], "y": cy[:, None]}


@dataclass
class AnalyticProbe:
    """Gaussian class model on G-inverse features, calibrated on rendered reference images."""

    space: ConceptSpace
    means_: list[np.ndarray]  # per concept [n_values, d]
    scales_: list[np.ndarray]  # per concept [d]

    @classmethod
    def calibrate(cls, space: ConceptSpace, n_per_value: int = 256, seed: int = 0) -> "AnalyticProbe":
        """Reference features of each concept value from train-mode renders of every class."""
        rng = np.random.default_rng(seed)
        names = [n for n in space.class_names for _ in range(n_per_value)]
        ids = space.class_ids(names)
        feats = image_features(render_space(sample_values(space, ids, "train", rng), space, rng))
        means, scales = [], []
        for j, c in enumerate(space.concepts):
            f = feats[c.kind]
            mu = np.stack([f[ids[:, j] == v].mean(0) for v in range(c.n_values)])
            resid = np.concatenate([f[ids[:, j] == v] - mu[v] for v in range(c.n_values)])
            # Floor the spread at a tenth of the gap so probabilities stay finite but sharp.
            gap = min(np.abs(mu[a] - mu[b]).max() for a in range(len(mu)) for b in range(a + 1, len(mu)))
            scales.append(np.maximum(resid.std(0), 0.1 * gap))
            means.append(mu)
        return cls(space, means, scales)

    checksum = "analytic"  # deterministic and untrained: nothing to check

    def to(self, device) -> "AnalyticProbe":
        """Numpy on the CPU whatever the run's device."""
        return self

    def predict_proba(self, images: np.ndarray) -> list[np.ndarray]:
        """[N, 3, H, W] images in [0, 1] -> per concept [N, n_values] probabilities."""
        feats = image_features(images)
        out = []
        for c, mu, sd in zip(self.space.concepts, self.means_, self.scales_):
            z = (feats[c.kind][:, None, :] - mu[None]) / sd  # [N, V, d]
            logit = -0.5 * (z**2).sum(-1)
            logit -= logit.max(1, keepdims=True)
            p = np.exp(logit)
            out.append(p / p.sum(1, keepdims=True))
        return out


# ------------------------------------------------------------------------------------------ learned probe


class ProbeNet(nn.Module):
    """Small CNN trunk -> global max-pool -> one linear softmax head per concept."""

    def __init__(self, n_values: list[int], width: int = 32) -> None:
        super().__init__()
        w = width
        self.trunk = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.GELU(),
            nn.Conv2d(w, w, 3, padding=1), nn.GELU(),
            nn.Conv2d(w, 2 * w, 3, padding=1, stride=2), nn.GELU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.GELU(),
        )
        # Max-pool (as the paper's probe) keeps the object's evidence wherever it sits; the mean keeps the bg.
        self.head = nn.Sequential(nn.Linear(4 * w, 2 * w), nn.GELU(), nn.Linear(2 * w, sum(n_values)))
        self.n_values = list(n_values)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.trunk(x * 2 - 1)  # [B, 2w, H/2, W/2]
        pooled = torch.cat([h.amax((2, 3)), h.mean((2, 3))], dim=1)  # [B, 4w]
        return list(self.head(pooled).split(self.n_values, dim=1))


def probe_spaces(data: DataConfig, probe: ProbeConfig) -> list[ConceptSpace]:
    """The spaces a probe is trained on: space i takes the i-th pooled separation of every concept (cycling through
    shorter lists), so weak and strong separations are all seen. Concepts with explicit values, or without pooled
    separations, keep their own. The run's own separation is left out on purpose: one probe serves a whole sweep
    (its accuracy on the run's own space is checked when the probe is used)."""
    pooled = {k: v for k, v in probe.pool_seps.items() if k in data.concepts and data.concepts[k].values is None}
    n = max((len(v) for v in pooled.values()), default=0)
    if n == 0:
        return [ConceptSpace.from_config(data.model_copy(update={"mask": []}))]
    spaces = []
    for i in range(n):
        concepts = {k: v.model_copy(update={"sep": pooled[k][i % len(pooled[k])]}) if k in pooled else v
                    for k, v in data.concepts.items()}
        try:
            spaces.append(ConceptSpace.from_config(data.model_copy(update={"concepts": concepts, "mask": []})))
        except ValueError as exc:
            raise ProbeError(f"probe.pool_seps: separation set {i} is impossible for this space ({exc})") from None
    return spaces


def probe_key(data: DataConfig, probe: ProbeConfig) -> str:
    """Hash of everything the probe depends on: the concepts' kinds and value counts, pooled (not the run's own)
    separations, rendering and probe settings; not the run's seed, model, training or held-out split."""
    pooled = {k for k in probe.pool_seps if k in data.concepts and data.concepts[k].values is None}
    concepts = {k: v.model_dump(mode="json", exclude={"sep"} if k in pooled else set())
                for k, v in data.concepts.items()}
    relevant = {
        "format": PROBE_FORMAT,
        "concepts": concepts,
        "data": data.model_dump(mode="json",
                                include={"image_size", "blur", "noise", "size_floor", "object_size", "real"}),
        "probe": probe.model_dump(mode="json", exclude={"cache_dir", "kind", "min_accuracy"}),
    }
    if data.noise_streams != "one" and data.real is None:  # keyed only when set (every earlier key stays as it
        relevant["noise_streams"] = f"{data.noise_streams}/{NOISE_BLOCK}"  # was) and only for images from G
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


@contextmanager
def deterministic_torch(threads: int) -> Iterator[None]:
    """Run torch on a fixed number of threads with deterministic kernels, restoring both on exit.

    CPU reductions split work by thread, so the same training on 1 and on 2 threads can differ in the last bits and,
    over 1,500 steps, in what the probe reads; fixing the count makes a probe the same on every machine.
    """
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    old_onednn = torch.backends.mkldnn.enabled
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.backends.mkldnn.enabled = False  # oneDNN's kernels follow the CPU's ISA and cache sizes
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)
        torch.backends.mkldnn.enabled = old_onednn


def weights_checksum(net: nn.Module) -> str:
    """sha256 (first 16 hex digits) of a network's weights in a fixed order: identical weights, identical sum."""
    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _render_pool(spaces: list[ConceptSpace], n_per_class: int, mode: str, rng) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for space in spaces:
        names = [n for n in space.class_names for _ in range(n_per_class)]
        ids = space.class_ids(names)
        xs.append(render_space(sample_values(space, ids, mode, rng), space, rng))
        ys.append(ids)
    return np.concatenate(xs), np.concatenate(ys)


@dataclass
class LearnedProbe:
    """A trained ProbeNet with its test accuracy per concept."""

    space: ConceptSpace
    net: ProbeNet
    accuracy_: dict[str, float]
    key: str
    held_out_accuracy_: dict[str, float] | None = None  # real data: accuracy on the held-out combinations alone

    @property
    def checksum(self) -> str:
        """Checksum of the weights: two machines that read with the same probe print the same one."""
        return weights_checksum(self.net)

    def to(self, device: str | torch.device) -> "LearnedProbe":
        """Read on `device` (the run's); results come back as numpy arrays either way."""
        self.net.to(device)
        return self

    @torch.no_grad()
    def predict_proba(self, images: np.ndarray | torch.Tensor, batch_size: int = 1024) -> list[np.ndarray]:
        """[N, 3, H, W] images in [0, 1] -> per concept [N, n_values] probabilities (softmax of each head)."""
        device = next(self.net.parameters()).device
        x = torch.as_tensor(np.asarray(images, dtype=np.float32)).clamp(0, 1)
        self.net.eval()
        parts = [self.net(x[i:i + batch_size].to(device)) for i in range(0, len(x), batch_size)]
        return [torch.cat([p[j] for p in parts]).softmax(1).cpu().numpy() for j in range(len(self.space.concepts))]


def _accuracy(net: ProbeNet, space: ConceptSpace, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    probs = LearnedProbe(space, net, {}, "").predict_proba(x)
    return {c.kind: float((p.argmax(1) == y[:, j]).mean()) for j, (c, p) in enumerate(zip(space.concepts, probs))}


def _test_accuracy(net: ProbeNet, spaces: list[ConceptSpace], cfg: ProbeConfig, seed: int) -> dict[str, float]:
    x, y = _render_pool(spaces, cfg.n_test_per_class, "test", np.random.default_rng([seed, 1]))
    return _accuracy(net, spaces[0], x, y)


def _real_probe_data(data: DataConfig, seed: int) -> tuple[ConceptSpace, np.ndarray, np.ndarray, np.ndarray,
                                                           np.ndarray]:
    """Real images of every class (held-out included), split 80 / 20 into probe training and test sets."""
    from ..data.sources import load_real

    space = ConceptSpace.from_config(data)
    real = load_real(data)
    order = np.random.default_rng([seed, 5]).permutation(len(real.labels))
    cut = int(0.8 * len(order))
    tr, te = order[:cut], order[cut:]
    return space, real.images[tr], real.labels[tr], real.images[te], real.labels[te]


def train_probe(data: DataConfig, cfg: ProbeConfig, seed: int = 0, progress: bool | None = None) -> LearnedProbe:
    """Train a probe on all classes (pooled over separations for G, all labelled images for real data); report
    its per-concept accuracy on held-back test images (and, for real data, on the held-out combinations alone)."""
    from tqdm import tqdm

    if data.real is not None:
        space, x, y, x_test, y_test = _real_probe_data(data, seed)
    else:
        spaces = probe_spaces(data, cfg)
        space = spaces[0]
        x, y = _render_pool(spaces, cfg.n_train_per_class, "train", np.random.default_rng([seed, 0]))
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    show = sys.stderr.isatty() if progress is None else progress
    with deterministic_torch(PROBE_THREADS):
        torch.manual_seed(seed)
        net = ProbeNet([c.n_values for c in space.concepts], cfg.width)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
        gen = torch.Generator().manual_seed(seed)
        if not show:
            logger.info("training the concept probe (%d steps, one thread; cached afterwards)", cfg.steps)
        for i in tqdm(range(cfg.steps), disable=not show, desc="probe"):
            if not show and i and i % max(cfg.steps // 5, 1) == 0:
                logger.info("probe: step %d of %d", i, cfg.steps)
            idx = torch.randint(len(x_t), (cfg.batch_size,), generator=gen)
            logits = net(x_t[idx])
            loss = sum(nn.functional.cross_entropy(lg, y_t[idx, j]) for j, lg in enumerate(logits))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if data.real is None:
        return LearnedProbe(space, net, _test_accuracy(net, spaces, cfg, seed), probe_key(data, cfg))
    probe = LearnedProbe(space, net, _accuracy(net, space, x_test, y_test), probe_key(data, cfg))
    held = np.isin(np.array(["".join(map(str, r)) for r in y_test]), space.held_out)
    probe.held_out_accuracy_ = _accuracy(net, space, x_test[held], y_test[held]) if held.any() else {}
    return probe


def save_probe(path: Path, probe: LearnedProbe) -> None:
    """Write a trained probe with the metadata `get_learned_probe` checks on loading."""
    meta = {"key": probe.key, "kinds": list(probe.space.kinds), "n_values": [c.n_values for c in probe.space.concepts],
            "accuracy": probe.accuracy_, "held_out_accuracy": probe.held_out_accuracy_}
    save_tensors(path, probe.net.state_dict(), meta)


def train_probe_pinned(data: DataConfig, cfg: ProbeConfig, seed: int = 0,
                       progress: bool | None = None) -> LearnedProbe:
    """`train_probe` in a child process whose kernels are fixed by `kernels.PINNED_KERNELS`: the same weights on every
    x86-64 machine with AVX2 and these package versions. Elsewhere it trains here and says the weights may differ."""
    if kernels.in_pinned_process():  # a pinned command: this process already runs the pinned kernels
        return train_probe(data, cfg, seed, progress)
    if not kernels.kernels_pinnable():
        logger.warning("this CPU (%s, %s) cannot run the pinned AVX2 kernels: the probe's weights, and so its "
                       "checksum, may differ from other machines'", platform.machine(),
                       torch.backends.cpu.get_cpu_capability())
        return train_probe(data, cfg, seed, progress)
    with tempfile.TemporaryDirectory(prefix="conceptspace-probe-") as tmp:
        out = Path(tmp) / "probe.safetensors"
        job = {"data": data.model_dump(mode="json"), "probe": cfg.model_dump(mode="json"), "seed": seed,
               "progress": progress, "out": str(out)}  # None: the child's inherited stderr decides
        done = subprocess.run([sys.executable, "-m", "conceptspace.readout.probe"], input=json.dumps(job),
                              text=True, env=kernels.pinned_env(), stdout=subprocess.DEVNULL)
        if done.returncode != 0 or not out.is_file():
            raise ProbeError(f"probe training failed in its child process (exit {done.returncode}); "
                             "its error is printed above")
        return load_probe(out, data, cfg)


def load_probe(path: Path, data: DataConfig, cfg: ProbeConfig) -> LearnedProbe:
    """A probe written by `save_probe`, refused if it was trained for other concepts than `data`'s."""
    space = ConceptSpace.from_config(data)
    n_values = [c.n_values for c in space.concepts]
    tensors, meta = load_tensors(path)
    if meta.get("kinds") != list(space.kinds) or meta.get("n_values") != n_values:
        raise ProbeError(f"{path}: probe was trained for concepts {meta.get('kinds')}, not {list(space.kinds)}")
    net = ProbeNet(n_values, cfg.width)
    net.load_state_dict(tensors)
    probe = LearnedProbe(space, net, meta["accuracy"], probe_key(data, cfg))
    probe.held_out_accuracy_ = meta.get("held_out_accuracy")
    return probe


def _train_in_child() -> None:
    """Entry of the pinned child: a job as JSON on stdin -> the trained probe written to job['out']."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    job = json.loads(sys.stdin.read())
    probe = train_probe(DataConfig.model_validate(job["data"]), ProbeConfig.model_validate(job["probe"]),
                        job["seed"], job["progress"])
    save_probe(Path(job["out"]), probe)


def cache_dir(cfg: ProbeConfig) -> Path:
    """Where probes are cached: probe.cache_dir, $CONCEPTSPACE_CACHE/probes, or ~/.cache/conceptspace/probes."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir)
    root = os.environ.get("CONCEPTSPACE_CACHE") or Path.home() / ".cache" / "conceptspace"
    return Path(root) / "probes"


def get_learned_probe(data: DataConfig, cfg: ProbeConfig, progress: bool | None = None) -> LearnedProbe:
    """The cached probe for this space, trained (and cached) on first use; refused below `cfg.min_accuracy`."""
    key = probe_key(data, cfg)
    path = cache_dir(cfg) / f"probe-{key}.safetensors"
    if path.is_file():
        probe = load_probe(path, data, cfg)
    else:
        probe = train_probe_pinned(data, cfg, progress=progress)
        save_probe(path, probe)
    if data.real is None:
        # Check on fresh test-mode images of the pooled spaces (stored) and of this run's own space (now, cheap).
        own = _test_accuracy(probe.net, [ConceptSpace.from_config(data.model_copy(update={"mask": []}))], cfg, 7)
        probe.accuracy_ = {k: min(v, own[k]) for k, v in probe.accuracy_.items()}
    worst = min(probe.accuracy_, key=probe.accuracy_.get)
    if probe.accuracy_[worst] < cfg.min_accuracy:
        raise ProbeError(
            f"learned probe {path.name} reaches only {probe.accuracy_[worst]:.1%} on concept {worst!r} "
            f"(needs {cfg.min_accuracy:.0%}); raise probe.steps or use probe.kind=analytic"
        )
    return probe


def get_probe(cfg: ExperimentConfig, progress: bool | None = None):
    """The probe named by cfg.probe.kind for this run's space."""
    if cfg.probe.kind == "analytic":
        if cfg.data.real is not None:
            raise ProbeError("probe.kind=analytic inverts G and cannot read real images; use probe.kind=learned")
        return AnalyticProbe.calibrate(ConceptSpace.from_config(cfg.data))
    return get_learned_probe(cfg.data, cfg.probe, progress)


def check_probe_space(probe, space: ConceptSpace) -> None:
    """Refuse a probe built for another concept space."""
    if probe.space.kinds != space.kinds or probe.space.shape != space.shape:
        raise ProbeError(f"probe reads concepts {probe.space.kinds} {probe.space.shape}, "
                         f"the run has {space.kinds} {space.shape}")


__all__ = ["AnalyticProbe", "LearnedProbe", "ProbeNet", "ProbeError", "ConceptValues", "get_probe",
           "get_learned_probe", "train_probe", "train_probe_pinned", "image_features", "check_probe_space"]


if __name__ == "__main__":
    _train_in_child()
