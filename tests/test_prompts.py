import numpy as np
import pytest

from conceptspace.config import load_config
from conceptspace.data.concepts import ConceptSpace, sample_values
from conceptspace.data.prompts import (
    PromptLayout,
    class_prompts,
    encode_prompt,
    mask_prompts,
)


def test_paper_layout_2x2(tiny_space):
    assert PromptLayout.for_space(tiny_space).dim == 11
    h = class_prompts(tiny_space, ["00", "11"])
    np.testing.assert_allclose(h[1], [0, 0, 0, 0, 0.3, 0.3, 0.7, 0.25, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(h[0, 4:8], [0.7, 0.3, 0.3, 0.65], atol=1e-6)


def test_train_prompts_carry_continuous_values(tiny_space):
    rng = np.random.default_rng(0)
    v = sample_values(tiny_space, tiny_space.class_ids(["00"] * 10), "train", rng)
    h = encode_prompt(tiny_space, v)
    np.testing.assert_allclose(h[:, 4:7], v.color, atol=1e-6)
    assert (h[:, :4] == 0).all() and (h[:, 8:] == 0).all()  # positions and absent concepts stay 0


def test_shape_one_hot():
    s = ConceptSpace.from_config(load_config(None, ["data.concepts={color: {}, shape: {}}"]).data)
    h = class_prompts(s, ["01", "10"])
    assert h[0, :2].tolist() == [0, 1] and h[1, :2].tolist() == [1, 0]


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_mask_fraction_matches_p_and_spares_other_classes(p):
    cfg = load_config(None, ["data.concepts={color: {}, shape: {}}", f"data.mask=[{{concept: color, p: {p}, classes: ['01']}}]"])
    s = ConceptSpace.from_config(cfg.data)
    names = ["00", "01", "10"] * 4000
    ids = s.class_ids(names)
    h = class_prompts(s, names)
    out, masked = mask_prompts(s, h, ids, cfg.data.mask, cfg.data.mask_value, np.random.default_rng(1))
    is01 = np.array(names) == "01"
    frac = masked[is01, 0].mean()
    assert abs(frac - p) < 4 * np.sqrt(p * (1 - p) / is01.sum()) + 1e-9
    assert not masked[~is01].any() and not masked[:, 1].any()
    assert np.array_equal(out[~is01], h[~is01])
    assert (out[masked[:, 0]][:, 4:7] == 0).all()
