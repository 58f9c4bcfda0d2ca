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

.PHONY: install browser demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,scale,nudity,train,dp,fl,desensitize,watermark,deploy,ray]"
	$(PY) -m pip install -q --no-deps "invisible-watermark==0.2.0"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/sdguard demo --out $(DEMO_OUT) --overwrite

# the HTML report is checked in headless Chromium (Debian's package) where it can be installed
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1; } || \
	  echo "chromium could not be installed: the browser test will be skipped"

test: install browser
	$(PY) -m pytest -q -p no:cacheprovider --durations=40

bench: install
	$(PY) -m pytest -q -m slow
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(DEMO_OUT) build dist src/*.egg-info
