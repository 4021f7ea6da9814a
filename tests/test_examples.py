"""The quickstart notebook runs from top to bottom (its code cells, in order, in one namespace)."""

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_notebook_runs(monkeypatch):
    nb = json.loads((ROOT / "examples" / "quickstart.ipynb").read_text())
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    assert len(code) >= 5
    monkeypatch.chdir(ROOT)  # the notebook names configs relative to the repository, as a user running it would
    namespace: dict = {}
    for i, src in enumerate(code):
        exec(compile(src, f"quickstart.ipynb cell {i}", "exec"), namespace)
    assert Path(namespace["report"]).is_file()
    assert namespace["boosted"].shape == (4, 3, 8, 8)
    assert set(namespace["e"]["hidden"]) >= {"overprompt", "latent"}
    assert os.path.isdir(namespace["work"])
