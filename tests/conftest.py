"""Shared tiny fixtures: every test passes explicit seeds, none relies on global RNG order."""

import pytest

from conceptspace.config import load_config
from conceptspace.data.concepts import ConceptSpace


@pytest.fixture
def tiny_cfg():
    return load_config(None, ["data.image_size=8", "data.n_per_class=16", "data.concepts.color.sep=0.4"])


@pytest.fixture
def tiny_space(tiny_cfg):
    return ConceptSpace.from_config(tiny_cfg.data)
