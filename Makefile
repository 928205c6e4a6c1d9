# Two set-up commands (see README.md):
#   make run    installs the plugin with a Qt backend and opens napari with the sample stack
#   make test   installs the test extras and runs the whole test suite on a virtual display
# Both work on a fresh clone: they make .venv and install what they need.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# The exact pin is a local CPU build on the project's machines; anything else pulls CUDA.
TORCH := torch==2.13.0

.PHONY: run test system-deps test-data docs clean

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	touch $@

$(VENV)/.run: $(VENV)/.torch pyproject.toml
	$(PIP) install --quiet -e ".[all]"
	touch $@

$(VENV)/.test: $(VENV)/.torch pyproject.toml
	$(PIP) install --quiet -e ".[testing]"
	touch $@

system-deps:
	bash tools/install-system-deps.sh

test-data: $(VENV)/.test
	$(PY) tests/data/fetch_hyperspy_files.py

run: $(VENV)/.run system-deps
	@if [ -z "$$DISPLAY" ] && [ -z "$$WAYLAND_DISPLAY" ]; then \
	  echo "No display found: running under a virtual one (xvfb-run)."; \
	  xvfb-run -a -s "-screen 0 1600x1000x24" $(VENV)/bin/tem-atoms view $(ARGS); \
	else \
	  $(VENV)/bin/tem-atoms view $(ARGS); \
	fi

# Every test, the slow ones too (plain `pytest` leaves them out).
test: $(VENV)/.test system-deps test-data
	$(PY) -m pytest -m "slow or not slow" $(PYTEST_ARGS)

# Rebuild the documentation's screenshots (a real napari window on a virtual display).
docs: $(VENV)/.test system-deps test-data
	xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) docs/make_screenshots.py

clean:
	rm -rf $(VENV) tests/data/hyperspy .pytest_cache
