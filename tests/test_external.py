"""Concept-space readings of external models: tiny randomly initialised diffusers U-Nets saved as checkpoints
(nothing downloaded), a plain callable, and the CLI."""

import numpy as np
import pytest

from conceptspace.cli import main
from conceptspace.config import load_config
from conceptspace.errors import ConceptspaceError
from conceptspace.readout.external import TextPrompts, diffusers_checkpoints, evaluate_external
from conceptspace.rundir import RunDir, load_npz

diffusers = pytest.importorskip("diffusers")
MICRO = ["probe.kind=analytic", "eval.n_samples=4", "elicit.n_samples=4"]


def tiny_unet(kind: str):
    import torch

    torch.manual_seed(0)
    common = {"sample_size": 8, "in_channels": 3, "out_channels": 3, "layers_per_block": 1,
              "block_out_channels": (8, 16), "norm_num_groups": 4}
    if kind == "cross":
        return diffusers.UNet2DConditionModel(**common, cross_attention_dim=11, attention_head_dim=2,
                                              down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                              up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    return diffusers.UNet2DModel(**common, num_class_embeds=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"))


@pytest.mark.parametrize("kind", ["cross", "labels"])
def test_diffusers_checkpoints_give_a_concept_space_report(tmp_path, kind):
    unet = tiny_unet(kind)
    for step in (100, 300):
        unet.save_pretrained(tmp_path / "ckpts" / f"checkpoint-{step}" / "unet")
    (tmp_path / "ckpts" / "logs").mkdir()  # not a checkpoint: no step in its name
    assert [s for s, _ in diffusers_checkpoints(tmp_path / "ckpts")] == [100, 300]
    args = ["evaluate-external", str(tmp_path / "ckpts"), "--space", "configs/micro.yaml", "--out",
            str(tmp_path / "out"), "--n-steps", "3"] + [a for kv in MICRO for a in ("--set", kv)]
    assert main(args) == 0
    rd = RunDir(tmp_path / "out")
    probs = load_npz(rd.concept_probs)
    assert probs["steps"].tolist() == [100, 300] and probs["probs"].shape[:3] == (2, 4, 4)
    e = load_npz(rd.elicitation)
    methods = set(e["methods"].tolist())
    # concept vectors can be pushed; a class-label model can only be asked by name
    # (the latent intervention of the config is left out: it needs this package's hook points)
    assert methods == ({"naive", "naive_k", "overprompt"} if kind == "cross" else {"naive", "naive_k"})
    m = rd.read_metrics()
    assert "11" in m["elicitation"] and m["classes"]["11"]["held_out"] and rd.report.is_file()
    assert main(args) == 0  # again: nothing new to read, same numbers
    assert rd.read_metrics()["classes"] == m["classes"]


def test_a_plain_callable_and_refusals(tmp_path):
    cfg = load_config("configs/micro.yaml", MICRO)
    calls = []

    def gen(prompts, names, seed):  # draws every class as a mid-grey square: nothing is learned
        calls.append(len(prompts))
        return np.full((len(prompts), 3, 8, 8), 0.5, dtype=np.float32)

    m = evaluate_external([(10, lambda: gen), (20, lambda: gen)], cfg, tmp_path / "out", source="callable")
    assert all(s is None for s in m["classes"]["11"]["learning_step"].values())
    with pytest.raises(ConceptspaceError, match="another config"):
        evaluate_external([(10, lambda: gen)], load_config("configs/micro.yaml", [*MICRO, "seed=3"]),
                          tmp_path / "out")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(ConceptspaceError, match="not a run directory"):
        evaluate_external([(10, lambda: gen)], cfg, tmp_path / "mine")
    with pytest.raises(ConceptspaceError, match="no checkpoint folders"):
        diffusers_checkpoints(tmp_path / "mine")
    with pytest.raises(ConceptspaceError, match="no checkpoints"):
        evaluate_external([], cfg, tmp_path / "empty")
    # images of the wrong size, channels last, or out of [0, 1]: one line naming what was expected
    for bad in (np.full((1, 3, 16, 16), 0.5), np.full((1, 8, 8, 3), 0.5), np.full((1, 3, 8, 8), 255.0)):
        with pytest.raises(ConceptspaceError, match="expected"):
            evaluate_external([(10, lambda b=bad: lambda p, n, s: np.repeat(b, len(p), axis=0))], cfg,
                              tmp_path / f"bad{bad.shape[1]}{int(bad.max())}")
    # a run of this package is never written into
    run = tmp_path / "own"
    run.mkdir()
    (run / "run.json").write_text('{"seed": 0, "status": "done"}')
    with pytest.raises(ConceptspaceError, match="run of this package"):
        evaluate_external([(10, lambda: gen)], cfg, run)


def test_text_prompts_from_class_names():
    t = TextPrompts("a {size} {color} circle", {"color": ["red", "blue"], "size": ["large", "small"]},
                    ["color", "size"])
    assert t(["11", "00"]) == ["a small blue circle", "a large red circle"]
    # concepts default to the order of the words
    assert TextPrompts("a {size} {color} circle", {"color": ["red", "blue"], "size": ["large", "small"]})(
        ["01"]) == ["a small red circle"]
    with pytest.raises(ConceptspaceError, match="no words"):
        TextPrompts("a {color} circle", {"color": ["red", "blue"]}, ["color", "size"])


def test_models_that_cannot_be_read_are_refused():
    from conceptspace.readout.external import DiffusersGenerator

    with pytest.raises(ConceptspaceError, match="needs `class_names`"):
        DiffusersGenerator(tiny_unet("labels"))
    plain = diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                                  block_out_channels=(8, 16), norm_num_groups=4,
                                  down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    with pytest.raises(ConceptspaceError, match="takes no condition"):
        DiffusersGenerator(plain, class_names=["00", "01", "10", "11"])


def test_own_run_through_the_interface_reads_as_its_own_evaluation(tmp_path):
    from conceptspace.readout.external import own_run_checkpoints

    run = tmp_path / "r"
    assert main(["run", "configs/micro.yaml", "--run-dir", str(run), "--set", "probe.kind=analytic",
                 "--set", "train.steps=10", "--set", "train.n_checkpoints=3", "--set", "elicit.methods=[naive]"]) == 0
    cfg = load_config(run / "config.yaml", saved_run=True)
    evaluate_external(own_run_checkpoints(run), cfg, tmp_path / "ext")
    own, ext = load_npz(RunDir(run).concept_probs), load_npz(RunDir(tmp_path / "ext").concept_probs)
    assert np.array_equal(own["steps"], ext["steps"]) and np.array_equal(own["probs"], ext["probs"])
    assert RunDir(tmp_path / "ext").read_metrics()["classes"] == RunDir(run).read_metrics()["classes"]


def test_paraphrases_are_an_elicitation_of_text_models(tmp_path):
    from conceptspace.data.concepts import ConceptSpace, sample_values
    from conceptspace.data.render import render_space

    cfg = load_config("configs/micro.yaml", MICRO)
    space = ConceptSpace.from_config(cfg.data)

    class Text:  # a text model: the first wording draws the training classes and noise for the held-out one,
        names_only, paraphrases = True, 2  # the second draws every class

        def __call__(self, prompts, names, seed, variant=0):
            rng = np.random.default_rng(seed)
            images = render_space(sample_values(space, space.class_ids(list(names)), "test", rng), space, rng)
            if variant == 0:
                held = np.array([n in space.held_out for n in names])
                images[held] = rng.uniform(0, 1, images[held].shape)
            return images

    m = evaluate_external([(10, Text), (20, Text)], cfg, tmp_path / "out")
    e = load_npz(RunDir(tmp_path / "out").elicitation)
    names = e["names"].tolist()
    assert "paraphrase[1]" in names and "overprompt" not in set(e["methods"].tolist())
    joint = e["joint"][:, :, 0]  # [K, E]
    assert (joint[:, names.index("paraphrase[1]")] > 0.9).all() and (joint[:, names.index("naive")] < 0.5).all()
    assert m["elicitation"]["11"]["onset_step"]["paraphrase"] == 10


def test_text_conditioned_diffusers_generator():
    import torch

    from conceptspace.readout.external import DiffusersGenerator

    unet = tiny_unet("cross")
    text = TextPrompts(["a {size} {color} circle", "a {color} circle, {size}"],
                       {"color": ["red", "blue"], "size": ["large", "small"]}, ["color", "size"])
    seen = []

    def encoder(strings):
        seen.extend(strings)
        return torch.stack([torch.full((2, 11), float(len(s)) / 30) for s in strings])

    gen = DiffusersGenerator(unet, n_steps=2, text=text, text_encoder=encoder)
    assert gen.names_only and gen.paraphrases == 2
    images = gen(np.zeros((2, 11), np.float32), ["11", "00"], 0, variant=1)
    assert images.shape == (2, 3, 8, 8) and 0 <= images.min() and images.max() <= 1
    assert seen[:2] == ["a blue circle, small", "a red circle, large"]
    with pytest.raises(ConceptspaceError, match="both"):
        DiffusersGenerator(unet, text=text)
