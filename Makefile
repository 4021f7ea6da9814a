# Two commands matter: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
# The CPU wheel of PyTorch goes in *before* the package, so no dependency pulls a CUDA build.
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
# One stamp per torch spec: changing TORCH reinstalls, an unchanged venv is not touched again.
STAMP  := $(VENV)/.installed-$(subst =,_,$(subst /,_,$(TORCH)))

.PHONY: demo test test-slow install bench clean-venv

demo: $(STAMP)
	$(VENV)/bin/conceptspace data configs/2x2.yaml --out runs/demo-data --overwrite

test: $(STAMP)
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

bench: $(STAMP)
	$(PY) benchmarks/render_throughput.py

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-* && touch $@

clean-venv:
	rm -rf $(VENV)
