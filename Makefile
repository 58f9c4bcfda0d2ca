# sdguard: `make demo` runs the main job on the embedded default, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sdguard-installed
# the CPU build of torch, installed before the package so pip never pulls a CUDA build
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= demo-out

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,scale]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/sdguard demo --out $(DEMO_OUT) --overwrite

test: install
	$(PY) -m pytest -q -p no:cacheprovider

bench: install
	$(PY) -m pytest -q -m slow
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(DEMO_OUT) build dist src/*.egg-info
