import numpy as np
import pytest
import torch

from conceptspace.analysis.onsets import joint_accuracy, onset_metrics
from conceptspace.config import load_config
from conceptspace.data.concepts import ConceptSpace
from conceptspace.data.prompts import class_prompts
from conceptspace.model.samplers import sample
from conceptspace.readout.elicitation import (
    Elicitation,
    ElicitationError,
    build_elicitations,
    latent_hook,
    latent_rows,
    overprompt_prompt,
    patch_conditioning,
)
from conceptspace.train import build_model


@pytest.fixture
def setup(micro_model):
    return micro_model


def gen(model, objective, prompts, hooks=(), shared=None):
    with model.hooks(list(hooks)):
        return sample(model, objective, prompts, shape=(3, 8, 8), n_steps=4, method="ddim",
                      generator=torch.Generator().manual_seed(0), shared_noise=shared, clip_x0=True)


def test_overprompt_at_nominal_value_is_naive_bit_for_bit(setup):
    cfg, space, model, objective = setup
    naive = torch.from_numpy(class_prompts(space, ["11"]).repeat(3, 0))
    over = torch.from_numpy(np.stack([overprompt_prompt(space, "11", "color", 0.0)] * 3))
    assert torch.equal(naive, over)
    assert torch.equal(gen(model, objective, naive), gen(model, objective, over))
    pushed = overprompt_prompt(space, "11", "color", 1.0)
    assert pushed[6] > naive[0, 6] and pushed[4] < naive[0, 4]  # bluer: more blue, less red


def test_shared_noise_groups_get_identical_generations(setup):
    cfg, space, model, objective = setup
    p = torch.from_numpy(class_prompts(space, ["11"]).repeat(4, 0))
    x = gen(model, objective, p, shared=2)
    assert torch.equal(x[:2], x[2:])


def test_latent_intervention_of_strength_zero_is_identity(setup):
    cfg, space, model, objective = setup
    e = [Elicitation("latent0", "latent", "color", 0.0, 0.0)]
    rows = latent_rows(model, space, "11", e, 3, "*.hook_cond")
    p = torch.from_numpy(class_prompts(space, ["11"]).repeat(3, 0))
    base = gen(model, objective, p)
    assert torch.equal(base, gen(model, objective, p, [("*.hook_cond", latent_hook(rows))]))
    strong = latent_rows(model, space, "11", [Elicitation("l", "latent", "color", 3.0, 0.1)], 3, "*.hook_cond")
    assert not torch.equal(base, gen(model, objective, p, [("*.hook_cond", latent_hook(strong))]))


def test_latent_hook_amplifies_the_boost_component(setup):
    cfg, space, model, _ = setup
    rows = latent_rows(model, space, "11", [Elicitation("l", "latent", "color", 2.0, 0.0)], 1, "*.hook_cond")
    name = model.cond_hook_names()[0]
    b = rows.boost[name][0]
    e = torch.randn(1, b.shape[0])
    out = latent_hook(rows)(e, name)
    assert torch.allclose(out[0] @ b, 3 * (e[0] @ b), atol=1e-5)  # e + 2 (e.b) b along b


def test_latent_on_shared_embedding(setup):
    cfg = load_config("configs/micro.yaml", ["model.conditioning=common_linear"])
    space = ConceptSpace.from_config(cfg.data)
    model = build_model(cfg, space)
    rows = latent_rows(model, space, "11", [Elicitation("l", "latent", "size", 1.0, 0.1)], 2, "hook_embed")
    assert rows.boost["hook_embed"].shape == (2, cfg.model.embed_dim)


def test_patching_with_itself_changes_nothing_and_other_changes_only_cond_path(setup):
    cfg, space, model, objective = setup
    p = torch.from_numpy(class_prompts(space, ["11"]).repeat(2, 0))
    base = gen(model, objective, p)
    patch_conditioning(model, model)
    assert torch.equal(base, gen(model, objective, p))
    donor = build_model(cfg, space)
    body = {k: v.clone() for k, v in model.state_dict().items()}
    patch_conditioning(model, donor)
    cond = set(model.cond_parameter_names())
    for k, v in model.state_dict().items():
        assert torch.equal(v, donor.state_dict()[k] if k in cond else body[k]), k


def test_patching_across_architectures_fails(setup):
    cfg, space, model, _ = setup
    other = build_model(load_config("configs/micro.yaml", ["model.widths=[8, 8]"]), space)
    with pytest.raises(ElicitationError, match="shape|different"):
        patch_conditioning(model, other)


@pytest.mark.parametrize("override, match", [
    ("elicit.latent_alphas=[]", "latent_alphas is empty"),
    ("elicit.overprompt_scales=[]", "overprompt_scales is empty"),
    ("elicit.concepts=[bg_color]", "not in the space"),
])
def test_bad_elicitation_settings(override, match):
    cfg = load_config("configs/micro.yaml", [override])
    with pytest.raises(ElicitationError, match=match):
        build_elicitations(ConceptSpace.from_config(cfg.data), cfg.elicit)


def test_unknown_method_is_rejected_by_config():
    with pytest.raises(ValueError, match="elicit.methods"):
        load_config("configs/micro.yaml", ["elicit.methods=[naive, telepathy]"])


def test_joint_accuracy_is_mean_of_products():
    probs = np.zeros((2, 2, 2))  # [S, C, V]
    probs[0] = [[0.2, 0.8], [0.5, 0.5]]
    probs[1] = [[0.0, 1.0], [0.0, 1.0]]
    assert joint_accuracy(probs, "11") == pytest.approx((0.8 * 0.5 + 1.0) / 2)


def probs_for(joint: np.ndarray) -> np.ndarray:
    """[K, E] joint accuracies -> [K, E, H=1, S=1, C=2, V=2] probabilities of class 11 with that per-sample joint."""
    k, e = joint.shape
    p = np.zeros((k, e, 1, 1, 2, 2))
    p[..., 0, 1], p[..., 0, 0] = joint[:, :, None, None], 1 - joint[:, :, None, None]
    p[..., 1, 1] = 1.0
    return p


def test_onsets_and_gap_on_synthetic_curves():
    steps = np.arange(1, 21) * 100
    naive = np.clip((np.arange(20) - 10) / 5, 0, 1)  # >= 0.8 from index 14
    over_a = np.clip((np.arange(20) - 4) / 5, 0, 1)  # from index 8
    over_b = np.clip((np.arange(20) - 6) / 5, 0, 1)  # from index 10
    arrays = {"steps": steps, "names": np.array(["naive", "o1", "o2"]),
              "methods": np.array(["naive", "overprompt", "overprompt"]), "held_out": np.array(["11"]),
              "probs": probs_for(np.stack([naive, over_a, over_b], 1))}
    settings = load_config("configs/micro.yaml").elicit
    m = onset_metrics(arrays, settings, ["color", "size"], start_step=0)["11"]
    assert m["onset_step"] == {"naive": steps[14], "overprompt": steps[8]}
    assert m["grid_onset_step"]["o2"] == {"first": steps[10], "held": steps[10]}
    assert m["gap_steps"] == steps[14] - steps[8] and not m["naive_never_reached"]
    assert m["naive_tries"] == 1 and m["naive_best_of_k_onset"] == steps[14]
    arrays["probs"][:, 0, ..., 0, 1] = 0.1
    arrays["probs"][:, 0, ..., 0, 0] = 0.9
    m = onset_metrics(arrays, settings, ["color", "size"], start_step=0)["11"]
    assert m["onset_step"]["naive"] is None and m["gap_steps"] is None and m["naive_never_reached"]
    # Without evaluation arrays there is no control reading, so nothing counts as hidden.
    assert m["lead_steps"]["overprompt"] == steps[-1] - steps[8] and m["hidden"] == {"overprompt": False}


def test_micro_elicit_cli_with_patch_and_cfg(tmp_path, capsys):
    from conceptspace.cli import main

    run = tmp_path / "r"
    args = ["--set", "probe.kind=analytic", "--set", "train.steps=8", "--set", "train.n_checkpoints=2",
            "--set", "diffusion.cond_drop_p=0.2", "--set", "elicit.methods=[naive]"]
    assert main(["run", "configs/micro.yaml", "--run-dir", str(run), *args]) == 0
    assert main(["elicit", str(run), "--methods", "naive,patch,cfg", "--set", "probe.kind=analytic",
                 "--set", "elicit.patch_donors=[-1, 5]", "--tag", "all"]) == 0
    out = capsys.readouterr().out
    assert "onset steps: naive" in out and "patch" in out and "cfg" in out
    assert main(["elicit", str(run), "--methods", "naive,telepathy", "--set", "probe.kind=analytic"]) == 2
