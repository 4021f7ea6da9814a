"""Shared tiny fixtures: every test passes explicit seeds, none relies on global RNG order."""

from pathlib import Path

import pytest

from conceptspace.config import load_config
from conceptspace.data.concepts import ConceptSpace


@pytest.fixture
def tiny_cfg():
    return load_config(None, ["data.image_size=8", "data.n_per_class=16", "data.concepts.color.sep=0.4"])


@pytest.fixture
def tiny_space(tiny_cfg):
    return ConceptSpace.from_config(tiny_cfg.data)


@pytest.fixture(autouse=True)
def _from_the_repository_root(monkeypatch):
    """Tests name shipped configs relative to the repository (as the README does); run them from there whatever the
    caller's working directory."""
    monkeypatch.chdir(Path(__file__).resolve().parents[1])


@pytest.fixture
def micro_model():
    """(cfg, space, model, objective) of the micro config with perturbed weights: a non-trivial model (the
    zero-initialised output layer of a fresh one would hide every difference)."""
    import torch

    from conceptspace.train import build_model, build_objective

    cfg = load_config("configs/micro.yaml")
    space = ConceptSpace.from_config(cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg, space)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return cfg, space, model, build_objective(cfg)
