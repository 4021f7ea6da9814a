import pytest

from conceptspace.config import load_config
from conceptspace.data.concepts import ConceptSpace
from conceptspace.data.signal import concept_signal, normalized_signal

# The concept signal of the paper's official code: pixel MSE of 128 paired test-mode images at 32 px, 1 px blur.
PAPER = [((0.2, 0.4), 0.00741, 0.04297), ((0.4, 0.4), 0.02964, 0.05536), ((0.8, 0.4), 0.11854, 0.09323)]


@pytest.mark.parametrize("seps, color, size", PAPER)
def test_reproduces_paper_table_within_0_2_percent(seps, color, size):
    cfg = load_config(None, ["data.image_size=32", "data.blur=0.03125",
                             f"data.concepts.color.sep={seps[0]}", f"data.concepts.size.sep={seps[1]}"])
    sig = concept_signal(ConceptSpace.from_config(cfg.data))
    assert sig["color"] == pytest.approx(color, rel=2e-3)
    assert sig["size"] == pytest.approx(size, rel=2e-3)


def test_signal_grows_with_separation_and_normalises():
    sigs = [concept_signal(ConceptSpace.from_config(load_config(None, [f"data.concepts.color.sep={c}"]).data))
            for c in (0.1, 0.3, 0.6)]
    assert sigs[0]["color"] < sigs[1]["color"] < sigs[2]["color"]
    n = normalized_signal(sigs[1])
    assert sum(v * v for v in n.values()) == pytest.approx(1.0)


def test_16px_close_to_32px():
    s16 = concept_signal(ConceptSpace.from_config(load_config(None, ["data.image_size=16"]).data))
    s32 = concept_signal(ConceptSpace.from_config(load_config(None, ["data.image_size=32"]).data))
    for k in s16:
        assert s16[k] == pytest.approx(s32[k], rel=0.1)
