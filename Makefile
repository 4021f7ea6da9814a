# Two commands matter: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
# The CPU wheel of PyTorch goes in *before* the package, so no dependency pulls a CUDA build.
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
# One stamp per torch spec: changing TORCH reinstalls, an unchanged venv is not touched again.
STAMP  := $(VENV)/.installed-$(subst =,_,$(subst /,_,$(TORCH)))

.PHONY: demo test test-slow install bench clean-venv system-deps

# The main job on the default config; repeating it resumes / catches up instead of overwriting runs/demo.
demo: $(STAMP)
	$(VENV)/bin/conceptspace run configs/2x2.yaml --run-dir runs/demo --resume

test: $(STAMP) system-deps
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

# Performance figures on this machine (run on free cores; README "Rendering speed" to "GPU" has measured output).
bench: $(STAMP)
	$(PY) benchmarks/render_throughput.py
	$(PY) benchmarks/train_speed.py --skip-paper
	$(PY) benchmarks/scaling.py
	$(PY) benchmarks/gpu_speed.py

install: $(STAMP)

# Debian packages: headless Chromium for the report test, and Fashion-MNIST (the real-image data set; nothing is
# downloaded at run time). Installed when missing (needs root and apt); if that fails the tests that need them are
# skipped and say why.
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
system-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && test -f $(FASHION) || \
	  { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
	    dataset-fashion-mnist) >/dev/null 2>&1 || \
	    echo "warning: could not install chromium / dataset-fashion-mnist; tests that need them will be skipped"; }

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-* && touch $@

clean-venv:
	rm -rf $(VENV)
