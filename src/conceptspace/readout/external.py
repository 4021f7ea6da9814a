"""Concept-space readings of a model this package did not train: any conditional generator and its checkpoints.

A *generator* is a callable `gen(prompts [N, D] float32, names [N] class names, seed) -> images [N, 3, H, W] in
[0, 1]`: prompts are the space's concept vectors (what this package's own models take), names say which class
each row asks for (what a class-label or text-conditioned model needs). Adapters:

- `DiffusersGenerator`: a diffusers `UNet2DConditionModel` (concept vectors as a one-token sequence when its
  `cross_attention_dim` equals the prompt's width, or any `encode(prompts, names)` you pass, e.g. a text encoder
  fed by `TextPrompts`) or a class-conditional `UNet2DModel` (`num_class_embeds`: class index = the space's class
  order), sampled with DDIM (the checkpoint's own `scheduler/` config when present);
- `own_run_checkpoints`: a run of this package (its readings through this interface equal its own evaluation);
- any plain Python callable with the signature above.

`evaluate_external(checkpoints, cfg, out)` writes an ordinary run directory (config, run.json, the evaluation and
elicitation arrays, metrics.json, report.html) from `(step, load)` pairs, where `load()` returns a generator; the
prompt-level elicitations (naive, best-of-k naive, and for concept-vector models overprompting and the prompt
ladder) run through the generator. Latent interventions need the hook points of this package's own models.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..analysis.onsets import joint_accuracy
from ..config import ExperimentConfig, config_to_yaml
from ..data.concepts import ConceptSpace
from ..data.prompts import class_prompts
from ..errors import ConceptspaceError
from ..rundir import RunDir, locked, read_json, write_json, write_text
from .elicit import N_SHOW_ELICIT, elicitation_prompt
from .elicitation import Elicitation, build_elicitations
from .evaluate import N_SHOW, eval_settings, object_mask, open_eval_file, over_new_checkpoints, pad_probs
from .probe import AnalyticProbe, check_probe_space, get_probe

GeneratorFn = Callable[[np.ndarray, Sequence[str], int], np.ndarray]
VECTOR_METHODS = {"naive", "naive_k", "overprompt", "ladder"}  # what a concept-vector generator can be asked
# (a text generator with several wordings adds "paraphrase")
NAME_METHODS = {"naive", "naive_k"}  # what a class-label or text generator can be asked


@dataclass
class TextPrompts:
    """Class names to text, e.g. template "a {size} {color} circle" with words {"color": ["red", "blue"], "size":
    ["large", "small"]}: class "11" -> "a small blue circle". `concepts`: the space's digit order (default: the
    order of `words`). Several templates are paraphrases: the first is the naive prompt, the others an elicitation
    ("paraphrase[j]")."""

    templates: str | list[str]
    words: dict[str, list[str]]
    concepts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.templates, str):
            self.templates = [self.templates]
        self.concepts = list(self.concepts) or list(self.words)
        missing = [c for c in self.concepts if c not in self.words]
        if missing:
            raise ConceptspaceError(f"TextPrompts: no words for concept(s) {', '.join(missing)}")

    def __call__(self, names: Sequence[str], variant: int = 0) -> list[str]:
        t = self.templates[variant]
        return [t.format(**{c: self.words[c][int(d)] for c, d in zip(self.concepts, n)}) for n in names]


class DiffusersGenerator:
    """A diffusers U-Net sampled with DDIM; see the module docstring for how it is conditioned. A text-conditioned
    U-Net takes `text` (TextPrompts) and `text_encoder` (list of strings -> [N, L, cross_attention_dim])."""

    def __init__(self, unet: torch.nn.Module, scheduler: Any = None, n_steps: int = 25,
                 class_names: Sequence[str] = (),
                 encode: Callable[[np.ndarray, Sequence[str]], torch.Tensor] | None = None,
                 text: TextPrompts | None = None, text_encoder: Callable[[list[str]], torch.Tensor] | None = None,
                 batch_size: int = 256):
        from diffusers import DDIMScheduler

        if (text is None) != (text_encoder is None):
            raise ConceptspaceError("a text-conditioned generator needs both `text` and `text_encoder`")
        self.unet = unet.eval()
        self.scheduler = scheduler or DDIMScheduler()
        self.n_steps, self.encode, self.batch_size = n_steps, encode, batch_size
        self.text, self.text_encoder = text, text_encoder
        self.class_index = {n: i for i, n in enumerate(class_names)}
        cfg = unet.config
        self.labels = getattr(cfg, "num_class_embeds", None) is not None and not hasattr(cfg, "cross_attention_dim")
        if not self.labels and not hasattr(cfg, "cross_attention_dim"):
            raise ConceptspaceError(f"{type(unet).__name__} takes no condition (no num_class_embeds, no "
                                    "cross-attention): a concept-space reading needs a conditional model")
        if self.labels and not self.class_index:
            raise ConceptspaceError("a class-label U-Net needs `class_names` (the class of each label index, in the "
                                    "space's order: ConceptSpace.class_names)")
        self.names_only = self.labels or encode is not None or text is not None  # no concept vectors to push
        self.paraphrases = len(text.templates) if text is not None else 0

    @torch.no_grad()
    def __call__(self, prompts: np.ndarray, names: Sequence[str], seed: int, variant: int = 0) -> np.ndarray:
        cfg, out = self.unet.config, []
        gen = torch.Generator().manual_seed(seed)
        x_all = torch.randn((len(prompts), cfg.in_channels, cfg.sample_size, cfg.sample_size), generator=gen)
        for lo in range(0, len(prompts), self.batch_size):
            sl = slice(lo, lo + self.batch_size)
            kwargs = {}
            if self.labels:
                kwargs["class_labels"] = torch.tensor([self.class_index[n] for n in names[sl]])
            elif self.text is not None:
                kwargs["encoder_hidden_states"] = self.text_encoder(self.text(names[sl], variant))
            elif self.encode is not None:
                kwargs["encoder_hidden_states"] = self.encode(prompts[sl], names[sl])
            else:
                if cfg.cross_attention_dim != prompts.shape[1]:
                    raise ConceptspaceError(f"the U-Net's cross_attention_dim is {cfg.cross_attention_dim}, the "
                                            f"prompts have {prompts.shape[1]} numbers; pass an encoder")
                kwargs["encoder_hidden_states"] = torch.from_numpy(prompts[sl])[:, None, :]
            self.scheduler.set_timesteps(self.n_steps)
            x = x_all[sl]
            for t in self.scheduler.timesteps:
                eps = self.unet(x, t, **kwargs).sample
                x = self.scheduler.step(eps, t, x).prev_sample
            out.append(((x.clamp(-1, 1) + 1) / 2).float().numpy())
        return np.concatenate(out)


def diffusers_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint under `root`: sub-folders whose name holds a number (the step:
    `checkpoint-500`, `step=500`, `500`) with a diffusers model (`config.json`, or `unet/config.json`)."""
    root = Path(root)
    if not root.is_dir():
        raise ConceptspaceError(f"{root}: not a folder of checkpoints")
    found = []
    for d in root.iterdir():
        m = re.search(r"(\d+)$", d.name)
        if d.is_dir() and m:
            model = d / "unet" if (d / "unet" / "config.json").is_file() else d
            if (model / "config.json").is_file():
                found.append((int(m.group(1)), model))
    if not found:
        raise ConceptspaceError(f"{root}: no checkpoint folders (named with their step, holding a diffusers "
                                "config.json and weights)")
    return sorted(found)


def load_diffusers(folder: Path, space: ConceptSpace, n_steps: int = 25, encode: Callable | None = None,
                   text: TextPrompts | None = None,
                   text_encoder: Callable[[list[str]], torch.Tensor] | None = None) -> DiffusersGenerator:
    """A checkpoint folder as a generator: the U-Net from safetensors (nothing unpickled), the scheduler from the
    checkpoint's `scheduler/` (or its parent's) when present, DDIM otherwise; `encode` or `text` + `text_encoder`
    as in DiffusersGenerator."""
    from diffusers import DDIMScheduler, UNet2DConditionModel, UNet2DModel

    kind = json.loads((folder / "config.json").read_text()).get("_class_name", "")
    cls = UNet2DConditionModel if kind == "UNet2DConditionModel" else UNet2DModel
    unet = cls.from_pretrained(folder, use_safetensors=True, low_cpu_mem_usage=False)
    sched = None
    for d in (folder / "scheduler", folder.parent / "scheduler"):  # the checkpoint's own first
        if (d / "scheduler_config.json").is_file():
            sched = DDIMScheduler.from_pretrained(d)
            break
    return DiffusersGenerator(unet, sched, n_steps, space.class_names, encode, text, text_encoder)


def own_run_checkpoints(run_dir: str | Path, cfg: ExperimentConfig | None = None
                        ) -> list[tuple[int, Callable[[], GeneratorFn]]]:
    """A run of this package as (step, load) pairs of generators (the same sampler and noise as its evaluation):
    the adapter that lets the interface be checked against the package's own readings."""
    from ..model.checkpoints import list_checkpoints
    from ..train import load_checkpoint, load_run_config
    from .evaluate import generate

    cfg = cfg or load_run_config(run_dir)

    def loader(path: Path) -> GeneratorFn:
        _, model, objective, _ = load_checkpoint(path)

        def gen(prompts: np.ndarray, names: Sequence[str], seed: int) -> np.ndarray:
            return generate(model, objective, cfg, torch.from_numpy(prompts), noise=seed - cfg.eval.seed)
        return gen

    return [(step, lambda p=path: loader(p)) for step, path in list_checkpoints(run_dir)]


def evaluate_external(checkpoints: list[tuple[int, Callable[[], GeneratorFn]]], cfg: ExperimentConfig,
                      out: str | Path, source: str = "", names_only: bool | None = None,
                      progress: bool | None = None) -> dict:
    """Evaluate and elicit every checkpoint of an external generator into the run directory `out` (resumable:
    checkpoints already read are skipped), analyse and report; returns metrics.json's content. Refuses a folder
    that holds anything else (one of this package's runs included); holds the folder's lock while it writes."""
    space = ConceptSpace.from_config(cfg.data)
    rd = RunDir(out)
    if not checkpoints:
        raise ConceptspaceError("no checkpoints to evaluate")
    if rd.root.is_dir() and any(rd.root.iterdir()) and not rd.info.is_file():
        raise ConceptspaceError(f"{out} exists and is not a run directory; choose another output folder")
    if rd.info.is_file() and "external" not in read_json(rd.info):
        raise ConceptspaceError(f"{out} is a run of this package, not an external reading; choose another output "
                                "folder")
    if rd.config.is_file() and rd.config.read_text() != config_to_yaml(cfg):
        raise ConceptspaceError(f"{out} holds a reading with another config; choose another output folder")
    rd.root.mkdir(parents=True, exist_ok=True)
    with locked(rd.root):
        return _evaluate_external(checkpoints, cfg, space, rd, source, names_only, progress)


def checked_images(images: Any, rows: int, size: int) -> np.ndarray:
    """A generator's output as float32 [rows, 3, size, size] in [0, 1]; anything else is a one-line error."""
    images = np.asarray(images, dtype=np.float32)
    if images.shape != (rows, 3, size, size):
        raise ConceptspaceError(f"the generator returned images of shape {images.shape}; expected {(rows, 3, size, size)}"
                                " (N, channels, height, width) at the space's image size")
    if not np.isfinite(images).all() or images.min() < -1e-3 or images.max() > 1 + 1e-3:
        raise ConceptspaceError(f"the generator returned values in [{np.nanmin(images):.3g}, {np.nanmax(images):.3g}]"
                                "; expected images in [0, 1]")
    return images.clip(0, 1)


def _evaluate_external(checkpoints: list[tuple[int, Callable[[], GeneratorFn]]], cfg: ExperimentConfig,
                       space: ConceptSpace, rd: RunDir, source: str, names_only: bool | None,
                       progress: bool | None) -> dict:
    from ..analysis.run_metrics import add_onsets_to_metrics, analyze_run
    from ..report.run_page import write_report

    write_text(rd.config, config_to_yaml(cfg))
    steps = [s for s, _ in checkpoints]
    info = {"seed": cfg.seed, "status": "running", "step": max(steps), "steps": max(steps),
            "external": {"source": source, "checkpoints": steps}}
    write_json(rd.info, info)
    probe = get_probe(cfg, progress)
    check_probe_space(probe, space)
    analytic = None if space.is_real else probe if isinstance(probe, AnalyticProbe) else AnalyticProbe.calibrate(space)
    names = space.class_names
    n, P, C = cfg.eval.n_samples, len(names), len(space.concepts)
    prompts = np.repeat(class_prompts(space, names), n, axis=0)
    row_names = [nm for nm in names for _ in range(n)]

    def read(gen: GeneratorFn, _=None) -> dict[str, np.ndarray]:
        images = checked_images(gen(prompts, row_names, cfg.eval.seed), len(prompts), cfg.data.image_size)
        probs = pad_probs(probe.predict_proba(images)).reshape(1, P, n, C, -1)
        arrays = {"probs": probs, "preds": probs.argmax(-1).astype(np.int8),
                  "samples": (images.reshape(P, n, *images.shape[1:])[None, :, :N_SHOW] * 255).round().astype(
                      np.uint8), "has_object": object_mask(images, space).reshape(1, P, n)}
        if analytic is not None:
            arrays["analytic_probs"] = pad_probs(analytic.predict_proba(images)).reshape(1, P, n, C, -1)
        return arrays

    loaders = [(s, lambda load=load: (load(),)) for s, load in checkpoints]
    static = {"classes": np.array(names), "held_out": np.array([nm in space.held_out for nm in names]),
              "probe_checksum": np.array(probe.checksum)}
    arrays = open_eval_file(rd.concept_probs, eval_settings(cfg), False)
    over_new_checkpoints(rd.root, rd.concept_probs, arrays, read, static, "evaluate", progress,
                         checkpoints=loaders)
    metrics = analyze_run(rd.root, cfg)
    if space.held_out:
        first = checkpoints[0][1]()  # asked what it can be prompted with
        if names_only is None:  # class-label and text models take no concept vectors
            names_only = bool(getattr(first, "names_only", False))
        _elicit(loaders, cfg, space, probe, rd, names_only, int(getattr(first, "paraphrases", 0)), progress)
        metrics = add_onsets_to_metrics(rd.root, cfg)
    write_report(rd.root, cfg)
    write_json(rd.info, {**info, "status": "done"})
    return metrics


def _elicit(loaders, cfg: ExperimentConfig, space: ConceptSpace, probe, rd: RunDir, names_only: bool | None,
            paraphrases: int, progress: bool | None) -> None:
    """elicitation.npz of the prompt-level elicitations the generator can be asked (the others are left out)."""
    allowed = NAME_METHODS if names_only else VECTOR_METHODS
    elicitations = [e for e in build_elicitations(space, cfg.elicit) if e.method in allowed]
    if paraphrases > 1:  # the other wordings of the class's text; naive gets as many tries as there are
        elicitations += [Elicitation(f"paraphrase[{j}]", "paraphrase", variant=j) for j in range(1, paraphrases)]
        tries = sum(e.method == "naive_k" for e in elicitations)
        if tries < paraphrases - 1:
            elicitations += [Elicitation(f"naive[try {j}]", "naive_k", noise=j) for j in range(max(tries, 1),
                                                                                             paraphrases - 1)]
            if tries == 0:
                elicitations.append(Elicitation("naive[try 0]", "naive_k"))
    n, C, held = cfg.elicit.n_samples, len(space.concepts), list(space.held_out)

    def read(gen: GeneratorFn, _=None) -> dict[str, np.ndarray]:
        probs, found, shown = [], [], []
        for e in elicitations:
            rows = np.stack([elicitation_prompt(space, h, e) for h in held for _ in range(n)])
            row_names = [h for h in held for _ in range(n)]
            images = checked_images(gen(rows, row_names, cfg.eval.seed, variant=e.variant) if e.method == "paraphrase"
                                    else gen(rows, row_names, cfg.eval.seed + e.noise), len(rows), cfg.data.image_size)
            probs.append(pad_probs(probe.predict_proba(images)).reshape(len(held), n, C, -1))
            found.append(object_mask(images, space).reshape(len(held), n))
            shown.append((images.reshape(len(held), n, *images.shape[1:])[:, :N_SHOW_ELICIT] * 255).round()
                         .astype(np.uint8))
        p, f = np.stack(probs), np.stack(found)  # [E, H, S, C, V], [E, H, S]
        joint = np.stack([joint_accuracy(p[:, i], h, f[:, i]) for i, h in enumerate(held)], axis=1)
        paper = np.stack([joint_accuracy(p[:, i], h, f[:, i], "paper") for i, h in enumerate(held)], axis=1)
        return {"probs": p[None], "has_object": f[None], "joint": joint[None], "joint_paper": paper[None],
                "samples": np.stack(shown)[None]}

    static = {"names": np.array([e.name for e in elicitations]), "methods": np.array([e.method for e in elicitations]),
              "concepts": np.array([e.concept or "" for e in elicitations]), "held_out": np.array(held),
              "probe_checksum": np.array(probe.checksum)}
    settings = {"elicit": cfg.elicit.model_dump(mode="json"), "names_only": bool(names_only), "external": True}
    arrays = open_eval_file(rd.elicitation, settings, False)
    over_new_checkpoints(rd.root, rd.elicitation, arrays, read, static, "elicit", progress, checkpoints=loaders)
