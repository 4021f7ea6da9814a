import numpy as np
import pytest

from conceptspace.config import load_config
from conceptspace.data.concepts import ConceptSpace, sample_values


def space_of(*overrides):
    return ConceptSpace.from_config(load_config(None, list(overrides)).data)


def test_2x2_classes_and_default_split(tiny_space):
    assert tiny_space.class_names == ["00", "01", "10", "11"]
    assert tiny_space.held_out == ("11",)
    assert tiny_space.train_classes == ["00", "01", "10"]


def test_paper_means_and_ranges():
    s = space_of("data.concepts.color.sep=0.8", "data.concepts.size.sep=0.4")
    color, size = s.concepts
    np.testing.assert_allclose(color.means, [[0.9, 0.1, 0.1], [0.1, 0.1, 0.9]])
    assert color.half_range == pytest.approx(0.1)
    np.testing.assert_allclose(size.means[:, 0], [0.65, 0.25])
    assert size.half_range == pytest.approx(0.15)


def test_2x2x2_split_matches_paper():
    s = space_of("data.concepts={color: {sep: 0.4}, size: {sep: 0.4}, bg_color: {sep: 0.4}}")
    assert s.train_classes == ["000", "001", "010", "100"]
    assert s.held_out == ("011", "101", "110", "111")


def test_2_to_the_5_and_more_values():
    s = space_of("data.concepts={shape: {}, x: {}, y: {}, color: {}, size: {}}")
    assert len(s.class_names) == 32
    assert len(s.train_classes) == 6
    s3 = space_of("data.concepts={color: {n_values: 3, sep: 0.6}, size: {}}", "data.held_out=['21', '11']")
    assert len(s3.class_names) == 6 and s3.held_out == ("21", "11")


def test_train_mode_within_class_box_test_mode_at_mean(tiny_space):
    rng = np.random.default_rng(0)
    ids = tiny_space.class_ids(["01"] * 500)
    v = sample_values(tiny_space, ids, "train", rng)
    color, size = tiny_space.concepts
    lo, hi = color.ranges(0)
    assert (v.color >= lo).all() and (v.color <= hi).all()
    lo, hi = size.ranges(1, tiny_space.size_floor)
    assert (v.size >= lo).all() and (v.size <= hi).all() and v.size.min() >= 0.1
    assert (np.abs(v.x) <= 0.5).all() and (np.abs(v.y) <= 0.5).all()
    t = sample_values(tiny_space, ids, "test", rng)
    assert (t.color == color.means[0]).all() and (t.size == size.means[1, 0]).all()
    assert (t.bg_color == 0.9).all()


def test_unknown_class_and_concept_errors(tiny_space):
    with pytest.raises(KeyError, match="unknown class"):
        tiny_space.class_index("22")
    with pytest.raises(KeyError, match="not in this space"):
        tiny_space.concept("shape")


def test_object_size_sets_the_radius_only_when_size_is_not_a_concept():
    rng = np.random.default_rng(0)
    shapes = space_of("data.concepts={color: {}, shape: {}}", "data.object_size=0.6")
    v = sample_values(shapes, shapes.class_ids(["01"] * 4), "train", rng)
    assert (v.size == 0.6).all()
    sized = space_of("data.object_size=0.6")  # color x size: size comes from the size concept
    v = sample_values(sized, sized.class_ids(["01"] * 4), "test", rng)
    assert (v.size == sized.concepts[1].means[1, 0]).all()
    with pytest.raises(ValueError, match="object_size"):
        load_config(None, ["data.object_size=0"])


def test_one_table_of_concept_kinds():
    from typing import get_args

    from conceptspace.config import ConceptKind
    from conceptspace.data.concepts import KINDS
    from conceptspace.data.prompts import SLOT_ORDER

    assert set(get_args(ConceptKind)) == set(KINDS) and SLOT_ORDER == tuple(KINDS)
