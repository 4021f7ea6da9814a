"""Typed configs: YAML in, frozen pydantic models out, `--set key.sub=value` overrides.

Every validation failure becomes one `ConfigError` line: `<file>: <key>: <reason>`.
Later sections (model, diffusion, train, eval) live next to `DataConfig` in `ExperimentConfig`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError

ConceptKind = Literal["shape", "x", "y", "color", "size", "bg_color"]
NoiseStreams = Literal["one", "per_block"]  # where G's pixel noise comes from (data.noise_streams)


class StrictModel(BaseModel):
    """Unknown keys are errors, NaN and infinity are no numbers; configs are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ConceptConfig(StrictModel):
    """One concept axis: either a separation (the paper's parametrisation) or explicit values."""

    n_values: int = Field(2, ge=2, le=10)
    # Distance between the two extreme values along the concept's axis (Δcolor, Δsize, Δbg in the paper).
    sep: float | None = None
    # Explicit class values, overriding `sep`: RGB triples (color, bg_color), radii (size), coordinates (x, y),
    # or shape names (circle, triangle, square).
    values: list[Any] | None = None
    # Within-class jitter of train-mode samples (uniform in mean ± half_range); default: the paper's fraction of the gap.
    half_range: float | None = Field(None, ge=0)


class MaskRule(StrictModel):
    """Underspecification M: drop `concept` from the prompt of `classes` with probability `p` during training."""

    concept: ConceptKind
    p: float = Field(ge=0.0, le=1.0)
    classes: list[str] | None = None  # None: every training class


class RealDataConfig(StrictModel):
    """Labelled real images instead of G (Fashion-MNIST from Debian, CelebA on disk, or any labelled folder)."""

    source: Literal["fashion_mnist", "celeba", "folder"]
    # fashion_mnist: the IDX folder (default /usr/share/datasets/fashion-mnist, Debian's dataset-fashion-mnist);
    # celeba: the folder holding img_align_celeba/ and list_attr_celeba.txt; folder: the images' folder.
    path: str | None = None
    csv: str | None = None  # folder source: CSV with a file-name column then one 0/1 column per attribute
    split: Literal["train", "test", "all"] = "train"  # fashion: IDX files; celeba: partition file (if present)
    tone_quantile: float = Field(0.5, gt=0.0, lt=1.0)  # fashion tone: within-category split of mean intensity
    tone_gap: float = Field(0.2, ge=0.0, lt=1.0)  # ... dropping this quantile band around it (ambiguous items)
    max_per_class: int = Field(2000, ge=1)  # images used per class (balanced subsample)
    min_per_class: int = Field(20, ge=1)  # fewer images in any class is an error
    # folder source: file names in the CSV must stay inside the image folder (no "..", no absolute paths)
    allow_outside_paths: bool = False


class DataConfig(StrictModel):
    """The concept space and the data-generating process G (or a labelled real image set, `real`)."""

    image_size: int = Field(16, ge=8, le=512)
    # Gaussian edge blur as a fraction of the image width, so 16 px and 32 px images show the same object
    # (the paper's 1 px at 32 px = 1/32).
    blur: float = Field(1 / 32, ge=0.0, le=0.25)
    noise: float = Field(1e-3, ge=0.0, le=0.5)
    # Where the pixel noise comes from: "one" generator for the whole data set (every data set made before this
    # option), or "per_block": a stream per 256 images, so two threads render whole blocks (1.4x at 32 px); the
    # same distribution, different noise values, so a different run.
    noise_streams: NoiseStreams = "one"
    # Synthetic: kinds shape, x, y, color, size, bg_color. Real data: attribute names (fashion_mnist: category
    # and tone; celeba / folder: attribute columns), each with `values` naming its values.
    concepts: dict[str, ConceptConfig] = Field(
        default_factory=lambda: {"color": ConceptConfig(sep=0.8), "size": ConceptConfig(sep=0.4)}, min_length=1
    )
    held_out: list[str] | None = None  # None: classes with more than one non-zero digit (the paper's split)
    n_per_class: int = Field(2048, ge=1)
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    n_ood: int = Field(32, ge=0)  # test-mode images per held-out class, for the OOD loss curve only
    size_floor: float = Field(0.1, gt=0.0)  # smallest train-mode radius (the paper's global floor)
    object_size: float = Field(0.45, gt=0.0, le=1.0)  # the radius of every object when size is not a concept
    mask: list[MaskRule] = Field(default_factory=list)
    mask_value: float = 0.0  # value written into the slots of a masked concept (the paper zeroes them)
    real: RealDataConfig | None = None  # None: images come from G
    force_memory: bool = False  # train even when the training set is estimated not to fit in memory

    @model_validator(mode="before")
    @classmethod
    def _class_names_as_strings(cls, data: Any) -> Any:
        # YAML reads `held_out: [11]` or `--set data.held_out=[011]` as numbers; class names are digit strings.
        if not isinstance(data, dict):
            return data
        concepts = data.get("concepts")
        width = len(concepts) if isinstance(concepts, dict) and concepts else 2  # anything else fails validation

        def fix(names: Any) -> Any:
            if not isinstance(names, list):
                return names
            return [str(n).zfill(width) if isinstance(n, int) and not isinstance(n, bool) else n for n in names]

        data = dict(data)
        data["held_out"] = fix(data.get("held_out"))
        if isinstance(data.get("mask"), list):
            data["mask"] = [dict(r, classes=fix(r.get("classes"))) if isinstance(r, dict) else r for r in data["mask"]]
        return data

    @model_validator(mode="after")
    def _check_space(self) -> "DataConfig":
        # Building the space runs every semantic check (ranges, overlaps, unknown classes) in one place.
        from .data.concepts import ConceptSpace

        ConceptSpace.from_config(self)
        return self


class ModelConfig(StrictModel):
    """The conditional U-Net (the paper's denoiser, made CPU-sized)."""

    widths: list[int] = Field(default_factory=lambda: [16, 32, 64], min_length=1)
    res_blocks: int = Field(1, ge=1)
    attention: bool = True  # self-attention at the lowest resolution
    norm_groups: int = Field(8, ge=1)
    # sep_mlp: every res block has its own MLP of the raw prompt (the paper's runs);
    # common_linear: one shared prompt embedding, then a linear map per block.
    conditioning: Literal["sep_mlp", "common_linear"] = "sep_mlp"
    embed_dim: int = Field(64, ge=1)
    time_embed_dim: int = Field(64, ge=2)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check_widths(self) -> "ModelConfig":
        for w in self.widths:
            if w < 1 or w % min(self.norm_groups, w):
                raise ValueError(f"widths: {w} is not divisible by norm_groups={self.norm_groups}")
        return self


class DiffusionConfig(StrictModel):
    """Training objective: DDPM epsilon prediction (fast default) or the paper's continuous-time VDM."""

    objective: Literal["ddpm", "vdm"] = "ddpm"
    schedule: Literal["linear", "cosine"] = "cosine"  # DDPM only
    n_timesteps: int = Field(1000, ge=2)  # DDPM only
    gamma_min: float = -5.0  # VDM: learned linear log-SNR schedule, initial end points
    gamma_max: float = 10.0
    data_noise: float = Field(1e-3, gt=0.0)
    cond_drop_p: float = Field(0.0, ge=0.0, le=1.0)  # prompt dropout for classifier-free guidance
    null_value: float = -1.0  # the null prompt (the paper's HEAD uses -1)

    @model_validator(mode="after")
    def _check_gamma(self) -> "DiffusionConfig":
        if self.gamma_max <= self.gamma_min:
            raise ValueError(f"gamma_max: must exceed gamma_min={self.gamma_min}")
        return self


class SamplerConfig(StrictModel):
    """How generations are drawn at evaluation time."""

    method: Literal["ddpm", "ddim", "vdm"] = "ddim"
    n_steps: int = Field(25, ge=1)  # 25 DDIM steps read the same concepts as 50 at 16 px, at half the cost
    eta: float = Field(0.0, ge=0.0)
    guidance_scale: float = 1.0
    # Clip the predicted clean image to the data range at every step (needed for DDPM's cosine schedule, whose
    # first step has alpha ~ 5e-5; the paper's VDM sampler does not clip).
    clip_x0: bool = True
    # bf16: the denoiser runs under bfloat16 autocast while sampling (CPUs with AVX-512 BF16 or AMX, CUDA GPUs).
    # Samples change slightly, so readings taken in fp32 and bf16 are not interchangeable; fp32 is the default.
    precision: Literal["fp32", "bf16"] = "fp32"


class TrainConfig(StrictModel):
    """Optimisation and checkpointing."""

    # The five-minute recipe of configs/2x2.yaml (until then: 6,000 steps, batch 64, lr 1e-3, which the configs of
    # published results pin).
    steps: int = Field(4000, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(2e-3, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    grad_clip: float | None = Field(None, gt=0.0)  # the paper clips the global grad norm at 0.01
    # AdamW as one fused kernel over all parameters: the same update rule, several times cheaper than the per-tensor
    # loop (about a tenth of a training step of the default model), with other rounding; false: the loop, as the
    # pre-registered hidden-capability runs were trained.
    fused_optimizer: bool = True
    # Steps whose loss or gradient norm is not finite: skipped (no update) up to this many in a run, then training
    # stops with an error; 0 stops at the first one.
    max_nonfinite: int = Field(0, ge=0)
    n_checkpoints: int = Field(30, ge=1, le=100_000)  # each one is a weights file and an evaluation
    # quadratic: the paper's sqrt-linspace (dense early); log: denser still; linear: even.
    checkpoint_spacing: Literal["quadratic", "log", "linear"] = "quadratic"
    first_checkpoint: int = Field(50, ge=1)
    log_every: int = Field(50, ge=1)
    threads: int | None = Field(None, ge=1)  # torch threads; None = all cores
    tracking: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list)  # metrics writers (tracking.py)
    wandb_project: str | None = None
    # auto: a CUDA GPU if there is one, else Apple's mps, else the CPU; or cpu, cuda, cuda:N, mps. Training,
    # evaluation, elicitation and the probe all run there.
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+|mps)$")
    # bf16: forward and backward under bfloat16 autocast (weights, optimizer and loss stay fp32). Faster on CPUs
    # with AVX-512 BF16 or AMX and on GPUs, and changes the trajectory of a run, so fp32 is the default.
    precision: Literal["fp32", "bf16"] = "fp32"


class ProbeConfig(StrictModel):
    """The concept probe that reads generations back into concept space (the paper's concept classifier)."""

    kind: Literal["learned", "analytic"] = "learned"
    # Separations pooled into the learned probe's training set, so one probe serves a whole sweep.
    pool_seps: dict[str, list[float]] = Field(
        default_factory=lambda: {"color": [0.1, 0.2, 0.4, 0.8], "size": [0.2, 0.3, 0.4], "bg_color": [0.1, 0.3, 0.6]}
    )
    n_train_per_class: int = Field(512, ge=1)
    n_test_per_class: int = Field(128, ge=1)
    steps: int = Field(1500, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(2e-3, gt=0.0)
    width: int = Field(16, ge=1)
    min_accuracy: float = Field(0.99, ge=0.0, le=1.0)  # per concept, on fresh test-mode images
    cache_dir: str | None = None  # default: $CONCEPTSPACE_CACHE/probes or ~/.cache/conceptspace/probes


class EvalConfig(StrictModel):
    """Evaluation of checkpoints and the trajectory analysis (learning speed, memorisation, sudden turns)."""

    n_samples: int = Field(32, ge=1)  # generations per class per checkpoint
    seed: int = Field(0, ge=0, lt=2**31)  # initial noise, shared by every checkpoint so trajectories are comparable
    batch_size: int = Field(256, ge=1)
    threshold: float = Field(0.8, gt=0.0, le=1.0)  # learning time: accuracy above this ...
    run_length: int = Field(3, ge=1)  # ... for this many consecutive checkpoints (first reached) ...
    allowed_dip: int = Field(1, ge=0)  # ... held: then above it to the end, but for dips of this many checkpoints
    smoothing: float = Field(1.5, ge=0.0)  # ... after Gaussian smoothing along checkpoints (sigma, in checkpoints)
    memorisation_radius: float = Field(0.5, gt=0.0)  # a held-out trajectory this close to a training corner
    # The analysis of held-out trajectories starts once the training classes are drawn: their mean accuracy this
    # fraction of the way from chance to perfect (0.75 for binary concepts). Before, samples are noise.
    drawing_level: float = Field(0.5, ge=0.0, le=1.0)
    turn_window: int = Field(2, ge=1)  # heading change measured over +-this many checkpoints
    saturation_msd: float = Field(0.01, gt=0.0)  # training saturated: mean squared distance to corners below


class ElicitConfig(StrictModel):
    """Hidden-capability elicitation of the held-out classes (the paper's hidden-capability experiments)."""

    methods: list[Literal["naive", "overprompt", "ladder", "latent", "latent_paper", "patch", "cfg"]] = Field(
        default_factory=lambda: ["naive", "overprompt", "latent"]
    )
    concepts: list[str] | None = None  # concepts pushed / boosted; None = every non-categorical one
    overprompt_scales: list[float] = Field(default_factory=lambda: [0.5, 1.0])  # gaps beyond the class value
    # The paper's overprompting ladder: explicit prompt values of a pushed concept, most exaggerated last (its
    # blues for the held-out small blue class); the other concepts keep the class's value.
    ladder: dict[str, list[list[float]]] = Field(default_factory=lambda: {"color": [
        [0.4, 0.4, 0.6], [0.35, 0.35, 0.65], [0.25, 0.25, 0.75], [0.15, 0.15, 0.85], [0.05, 0.05, 0.95]]})
    latent_alphas: list[float] = Field(default_factory=lambda: [1.0, 3.0])  # amplification of the concept component
    latent_beta: float = Field(0.1, ge=0.0, le=1.0)  # fraction of the competing component removed
    latent_at: Literal["auto", "blocks", "shared"] = "auto"  # auto: per-block for sep_mlp, shared for common_*
    # latent_paper: the boosted direction is the embedding of a concept-only prompt at this extreme value (the
    # paper's blue, RGB (0.05, 0.05, 0.95)); concepts not listed use the held-out class's value.
    paper_latent_values: dict[str, list[float]] = Field(default_factory=lambda: {"color": [0.05, 0.05, 0.95]})
    patch_donors: list[int] = Field(default_factory=lambda: [-1])  # donor checkpoint steps; -1 = the last one
    guidance_scales: list[float] = Field(default_factory=lambda: [2.0, 4.0])
    n_samples: int = Field(16, ge=1)  # per elicitation, held-out class and checkpoint
    # Best-of-k naive prompting: k initial-noise seeds of the naive prompt, each n_samples, so naive prompting gets
    # as many tries as an intervention grid. None: the size of the largest grid; 1: plain naive only.
    naive_tries: int | None = Field(None, ge=1)
    threshold: float = Field(0.8, gt=0.0, le=1.0)  # onset: joint accuracy at or above this ...
    run_length: int = Field(3, ge=1)  # ... for this many consecutive checkpoints (first reached) ...
    allowed_dip: int = Field(1, ge=0)  # ... held: then above it to the end, but for dips of at most this many
    # A hidden capability: the intervention's held onset comes this fraction of the run before best-of-k naive
    # prompting's (never = the run's end) ...
    lead_fraction: float = Field(0.15, ge=0.0, le=1.0)
    # ... and the training classes sharing the pushed value are drawn with it (naive accuracy >= this) there.
    control_threshold: float = Field(0.8, gt=0.0, le=1.0)


class ExperimentConfig(StrictModel):
    """Everything a run depends on. Saved verbatim (resolved) in every run directory."""

    seed: int = Field(0, ge=0, lt=2**31)  # torch and numpy seeds; (seed, step) seeds every training step
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = Field(default_factory=DiffusionConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    elicit: ElicitConfig = Field(default_factory=ElicitConfig)

    @model_validator(mode="after")
    def _check_model_fits_image(self) -> "ExperimentConfig":
        factor = 2 ** (len(self.model.widths) - 1)
        if self.data.image_size % factor:
            raise ValueError(
                f"model.widths: {len(self.model.widths)} levels need an image size divisible by {factor} "
                f"(data.image_size={self.data.image_size})"
            )
        return self


# --------------------------------------------------------------------------------------------------- I/O


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested tree; a numeric part indexes a list (`data.mask.0.p`)."""
    keys = dotted.split(".")
    node: Any = tree
    for key, nxt in zip(keys[:-1], keys[1:]):
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ConfigError(f"--set {dotted}: no item {key!r} in the list")
            node = node[int(key)]
            continue
        child = node.get(key)
        if child is None:
            child = node[key] = [] if nxt.isdigit() else {}
        if not isinstance(child, (dict, list)):
            raise ConfigError(f"--set {dotted}: '{key}' is a value, not a section")
        node = child
    last = keys[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"--set {dotted}: no item {last!r} in the list")
        node[int(last)] = value
    else:
        node[last] = value


def apply_overrides(tree: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply `key.sub=value` strings (values parsed as YAML: numbers, lists, null) to a raw config tree."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key.sub=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({exc.__class__.__name__})") from None
        _set_path(tree, key.strip(), value)
    return tree


def _format_error(source: str, exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "<root>"
    msg = err["msg"].removeprefix("Value error, ")
    # Semantic checks raise "<sub.key>: <reason>"; fold the sub-key into the key path.
    sub = re.match(r"^([\w.]+): (.*)$", msg, flags=re.S) if err["type"] == "value_error" else None
    if sub:
        key, msg = f"{key}.{sub.group(1)}" if key != "<root>" else sub.group(1), sub.group(2)
    if err["type"] not in ("missing", "value_error", "assertion_error") and "input" in err:
        msg += f" (got {err['input']!r})"
    more = f" [+{len(exc.errors()) - 1} more]" if len(exc.errors()) > 1 else ""
    return f"{source}: {key}: {msg}{more}"


# Settings added after runs were already being saved, whose default for new configs differs from what those runs
# did: a saved run's config (config.yaml, a checkpoint's metadata) without the key gets the old behaviour.
SAVED_RUN_DEFAULTS: dict[tuple[str, str], Any] = {("train", "fused_optimizer"): False}


def config_from_dict(tree: dict[str, Any], source: str = "<config>", saved_run: bool = False) -> ExperimentConfig:
    """Validate a raw tree; failures raise one-line `ConfigError`s naming source, key and reason. `saved_run`: the
    tree is a run's saved config, so keys it predates take the behaviour it was run with (SAVED_RUN_DEFAULTS)."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: <root>: expected a mapping of sections, got {type(tree).__name__}")
    if saved_run:
        for (section, key), value in SAVED_RUN_DEFAULTS.items():
            part = tree.get(section)
            if isinstance(part, dict) and key not in part:
                tree = {**tree, section: {**part, key: value}}
    try:
        return ExperimentConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_error(source, exc)) from None


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (),
                saved_run: bool = False) -> ExperimentConfig:
    """Load a YAML config (None: all defaults) and apply `--set` overrides (`saved_run`: see `config_from_dict`)."""
    # Without a file, start from the dumped defaults so `--set data.concepts.color.sep=...` edits the default
    # concepts instead of replacing the whole mapping.
    tree: dict[str, Any] = ExperimentConfig().model_dump(mode="json")
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read config ({exc.strerror})") from None
        try:
            tree = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if tree is None:  # an empty file is a mistake (a truncated copy, a wrong path), never "all defaults"
            raise ConfigError(f"{source}: empty config file (to use the defaults, give no config file)")
    if overrides:
        source += " (with --set " + ", ".join(overrides) + ")"
    return config_from_dict(apply_overrides(tree, overrides), source, saved_run)


def config_to_yaml(cfg: BaseModel) -> str:
    """The resolved config as YAML; `load_config` of it gives an equal object."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def save_config(cfg: BaseModel, path: str | Path) -> None:
    """Write the resolved config next to a run's artifacts."""
    from .rundir import write_text  # the one atomic write

    write_text(path, config_to_yaml(cfg))
