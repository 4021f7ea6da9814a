import numpy as np
import pytest

from conceptspace.config import load_config
from conceptspace.data.concepts import ConceptSpace, sample_values
from conceptspace.data.render import render_space
from conceptspace.readout.probe import (
    AnalyticProbe,
    ProbeError,
    check_probe_space,
    get_learned_probe,
    probe_key,
)


@pytest.mark.parametrize("overrides", [
    ["data.concepts.color.sep=0.1"],
    ["data.concepts.color.sep=0.8", "data.image_size=32"],
    ["data.concepts={color: {}, shape: {}}"],
    ["data.concepts={color: {}, size: {}, bg_color: {}}"],
])
def test_analytic_probe_reads_rendered_images(overrides):
    space = ConceptSpace.from_config(load_config(None, overrides).data)
    probe = AnalyticProbe.calibrate(space)
    rng = np.random.default_rng(3)
    ids = space.class_ids(space.class_names * 50)
    for mode in ("test", "train"):
        probs = probe.predict_proba(render_space(sample_values(space, ids, mode, rng), space, rng))
        for j, p in enumerate(probs):
            assert (p.argmax(1) == ids[:, j]).mean() >= 0.98
            np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)


def test_analytic_probe_is_deterministic(tiny_space):
    a, b = AnalyticProbe.calibrate(tiny_space), AnalyticProbe.calibrate(tiny_space)
    x = np.random.default_rng(0).random((5, 3, 8, 8)).astype(np.float32)
    assert all(np.array_equal(p, q) for p, q in zip(a.predict_proba(x), b.predict_proba(x)))


def test_learned_probe_trains_caches_and_refuses_when_weak(tmp_path):
    cfg = load_config(None, ["data.image_size=8", "probe.steps=300", "probe.n_train_per_class=128",
                             "probe.width=8", f"probe.cache_dir={tmp_path}", "probe.min_accuracy=0.95",
                             "probe.pool_seps={}"])
    probe = get_learned_probe(cfg.data, cfg.probe, progress=False)
    assert min(probe.accuracy_.values()) >= 0.95
    cached = list(tmp_path.glob("probe-*.safetensors"))
    assert len(cached) == 1
    again = get_learned_probe(cfg.data, cfg.probe, progress=False)  # loads, no retraining
    x = np.random.default_rng(0).random((4, 3, 8, 8)).astype(np.float32)
    assert all(np.allclose(p, q) for p, q in zip(probe.predict_proba(x), again.predict_proba(x)))
    weak = cfg.probe.model_copy(update={"steps": 1, "min_accuracy": 0.999})
    with pytest.raises(ProbeError, match="needs 100%|reaches only"):
        get_learned_probe(cfg.data, weak, progress=False)


def test_probe_key_depends_on_space_not_on_seed():
    a = load_config(None, ["seed=1"])
    b = load_config(None, ["seed=2", "train.steps=10"])
    c = load_config(None, ["data.image_size=32"])
    assert probe_key(a.data, a.probe) == probe_key(b.data, b.probe) != probe_key(c.data, c.probe)


def test_probe_for_another_space_is_refused(tiny_space):
    other = ConceptSpace.from_config(load_config(None, ["data.concepts={color: {}, shape: {}}"]).data)
    with pytest.raises(ProbeError, match="probe reads concepts"):
        check_probe_space(AnalyticProbe.calibrate(other), tiny_space)
