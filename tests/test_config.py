from pathlib import Path

import pytest

from conceptspace.config import (
    ExperimentConfig,
    config_to_yaml,
    load_config,
    save_config,
)
from conceptspace.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_default_equals_builtin_defaults():
    assert load_config(ROOT / "configs" / "2x2.yaml") == ExperimentConfig()


def test_roundtrip_yaml(tmp_path):
    cfg = load_config(ROOT / "configs" / "2x2.yaml", ["data.concepts.color.sep=0.2", "seed=3", "data.held_out=[11]"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert "sep: 0.2" in config_to_yaml(cfg)


def test_overrides_parse_yaml_values():
    cfg = load_config(None, ["data.concepts.color.values=[[0.9,0.1,0.1],[0.1,0.1,0.9]]", "data.held_out=[11]"])
    assert cfg.data.concepts["color"].values[1] == [0.1, 0.1, 0.9]
    assert cfg.data.held_out == ["11"]


@pytest.mark.parametrize(
    "override, key, reason",
    [
        ("data.foo=1", "data.foo", "Extra inputs"),
        ("data.image_size=abc", "data.image_size", "valid integer"),
        ("data.image_size=4", "data.image_size", "greater than or equal to 8"),
        ("data.concepts.color.sep=0.9", "data.concepts.color", "leaves [0, 1]"),
        ("data.concepts.size.sep=0.95", "data.concepts.size", "non-positive radius"),
        ("data.concepts.size.sep=-0.2", "data.concepts.size.sep", "swaps"),
        ("data.concepts.size.sep=0", "data.concepts.size.sep", "merges"),
        ("data.concepts.size.half_range=0.3", "data.concepts.size", "overlap"),
        ("data.held_out=['21']", "data.held_out", "unknown class '21'"),
        ("data.held_out=['00','01','10','11']", "data.held_out", "training set is empty"),
        ("data.concepts.shape.n_values=4", "data.concepts.shape.n_values", "at most 3 shapes"),
        ("data.mask=[{concept: bg_color, p: 0.5}]", "data.mask.0.concept", "not in the space"),
        ("data.mask=[{concept: color, p: 1.5}]", "data.mask.0.p", "less than or equal to 1"),
    ],
)
def test_bad_values_fail_with_one_line_naming_file_key_reason(tmp_path, override, key, reason):
    path = tmp_path / "exp.yaml"
    path.write_text((ROOT / "configs" / "2x2.yaml").read_text())
    with pytest.raises(ConfigError) as info:
        load_config(path, [override])
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(str(path))
    assert f": {key}: " in msg
    assert reason in msg


def test_mask_value_colliding_with_a_prompt_is_rejected():
    with pytest.raises(ConfigError, match="mask_value.*collides"):
        load_config(None, ["data.mask=[{concept: size, p: 0.5}]", "data.mask_value=0.25"])


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        load_config(None, ["novalue"])
