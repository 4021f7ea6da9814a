import gzip
from pathlib import Path

import numpy as np
import pytest

from conceptspace.config import load_config
from conceptspace.data.concepts import ConceptSpace
from conceptspace.data.sources import (
    FASHION_DIR,
    DataSourceError,
    class_mean_signal,
    load_real,
    read_idx,
)


def write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


@pytest.fixture
def fake_fashion(tmp_path):
    """Trousers (label 1) and sneakers (label 7) with a spread of intensities, in IDX format."""
    rng = np.random.default_rng(0)
    n = 400
    labels = np.array([1, 7] * (n // 2))
    images = np.zeros((n, 28, 28))
    for i, lab in enumerate(labels):
        level = rng.uniform(40, 250)
        if lab == 1:
            images[i, 4:24, 10:18] = level  # a tall item
        else:
            images[i, 14:22, 4:24] = level  # a wide item
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    return tmp_path


def fashion_cfg(path, *extra):
    return load_config("configs/fashion_2x2.yaml", [f"data.real.path={path}", "data.real.max_per_class=60",
                                                     "data.real.min_per_class=10", *extra])


def test_read_idx_roundtrip_and_errors(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", arr)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), arr)
    (tmp_path / "b.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x09abc"))
    with pytest.raises(DataSourceError, match="truncated"):
        read_idx(tmp_path / "b.gz")


def test_fashion_loader_and_tone_split_balanced_within_categories(fake_fashion):
    cfg = fashion_cfg(fake_fashion)
    real = load_real(cfg.data)
    assert real.images.shape[1:] == (3, 16, 16) and real.images.min() >= 0 and real.images.max() <= 1
    counts = {tuple(r): n for r, n in zip(*np.unique(real.labels, axis=0, return_counts=True))}
    assert counts == {(0, 0): 60, (0, 1): 60, (1, 0): 60, (1, 1): 60}
    brightness = real.images.max(axis=(1, 2, 3))
    for cat in (0, 1):
        dark = brightness[(real.labels[:, 0] == cat) & (real.labels[:, 1] == 0)]
        light = brightness[(real.labels[:, 0] == cat) & (real.labels[:, 1] == 1)]
        assert dark.max() < light.min()  # tone is a within-category split
    sig = class_mean_signal(ConceptSpace.from_config(cfg.data), real)
    assert sig["category"] > 0 and sig["tone"] > 0


def test_fashion_errors(tmp_path, fake_fashion):
    with pytest.raises(DataSourceError, match="apt-get install dataset-fashion-mnist"):
        load_real(fashion_cfg(tmp_path / "none").data)
    with pytest.raises(DataSourceError, match="unknown garment 'Hat'.*Trouser"):
        load_real(fashion_cfg(fake_fashion, "data.concepts.category.values=[Trouser, Hat]").data)
    with pytest.raises(DataSourceError, match="too few images"):
        load_real(fashion_cfg(fake_fashion, "data.real.min_per_class=500").data)
    with pytest.raises(ValueError, match="Fashion-MNIST concepts"):
        fashion_cfg(fake_fashion, "data.concepts={colour: {values: [a, b]}, tone: {values: [dark, light]}}")


def write_celeba(root: Path, n: int = 40, corrupt: int = 2, no_female_hat: bool = False):
    from PIL import Image

    (root / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(1)
    lines = [str(n), "5_o_Clock_Shadow Male Wearing_Hat Smiling"]
    for i in range(n):
        male, hat = i % 2, (i // 2) % 2
        if no_female_hat and male == 0 and hat == 1:
            hat = 0
        name = f"{i:06d}.jpg"
        arr = (rng.random((218, 178, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(root / "img_align_celeba" / name)
        lines.append(f"{name} -1 {1 if male else -1} {1 if hat else -1} 1")
    for i in range(corrupt):
        (root / "img_align_celeba" / f"{i:06d}.jpg").write_bytes(b"not a jpeg")
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")


def celeba_cfg(root, *extra):
    return load_config("configs/celeba_gender_hat.yaml",
                       [f"data.real.path={root}", "data.image_size=16", "data.real.min_per_class=5", *extra])


def test_celeba_layout_fixture_with_corrupted_images(tmp_path, caplog):
    write_celeba(tmp_path)
    real = load_real(celeba_cfg(tmp_path).data)
    assert real.images.shape[1:] == (3, 16, 16) and real.skipped == 2
    assert "skipped 2" in caplog.text
    with pytest.raises(DataSourceError, match="no attribute 'Eyeglasses'; available: .*Wearing_Hat"):
        load_real(celeba_cfg(tmp_path, "data.concepts={Male: {}, Eyeglasses: {}}").data)


def test_celeba_held_out_combination_without_images(tmp_path):
    write_celeba(tmp_path, corrupt=0, no_female_hat=True)
    with pytest.raises(DataSourceError, match="held-out combination has no images"):
        load_real(celeba_cfg(tmp_path, "data.held_out=['01']").data)


def test_folder_loader_with_bad_rows(tmp_path):
    from PIL import Image

    rows = ["file,striped,round"]
    for i in range(24):
        Image.fromarray(np.full((8, 8, 3), i * 10, np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{i % 2},{(i // 2) % 2}")
    rows += ["broken.png,1", "x.png,maybe,1", "missing.png,1,1"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    cfg = load_config("configs/fashion_2x2.yaml", [
        "data.real={source: folder, csv: " + str(tmp_path / "labels.csv") + ", min_per_class: 3}",
        "data.concepts={striped: {values: [plain, striped]}, round: {values: [square, round]}}"])
    real = load_real(cfg.data)
    assert len(real.labels) == 24 and real.skipped == 3
    # File names that leave the image folder are refused unless the user opts in.
    (tmp_path / "sub").mkdir()
    for name in ("../0.png", str(tmp_path / "0.png")):
        (tmp_path / "sub" / "labels.csv").write_text("\n".join(rows[:25] + [f"{name},1,1"]) + "\n")
        bad = load_config("configs/fashion_2x2.yaml", [
            "data.real={source: folder, csv: " + str(tmp_path / "sub" / "labels.csv") + ", min_per_class: 1}",
            "data.concepts={striped: {values: [plain, striped]}, round: {values: [square, round]}}"])
        with pytest.raises(DataSourceError, match="outside the image folder"):
            load_real(bad.data)


@pytest.mark.skipif(not Path(FASHION_DIR, "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed (make test installs it)")
def test_micro_run_on_real_fashion_mnist(tmp_path):
    from conceptspace.cli import main

    args = ["--set", "data.real.max_per_class=100", "--set", "data.n_per_class=100", "--set", "data.n_ood=8",
            "--set", "model.widths=[8, 16]", "--set", "model.norm_groups=4", "--set", "train.steps=8",
            "--set", "train.n_checkpoints=2", "--set", "train.batch_size=16", "--set", "probe.steps=30",
            "--set", "probe.min_accuracy=0", "--set", f"probe.cache_dir={tmp_path / 'probes'}",
            "--set", "eval.n_samples=4", "--set", "sampler.n_steps=3", "--set", "elicit.n_samples=2",
            "--set", "elicit.methods=[naive, overprompt, latent]"]
    assert main(["run", "configs/fashion_2x2.yaml", "--run-dir", str(tmp_path / "r"), *args]) == 0
    import json

    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert set(m["classes"]) == {"00", "01", "10", "11"} and m["probe_agreement"] == {}
    assert "11" in m["elicitation"]
