# Everything runs inside .venv, created on first use with the machine's Python 3.11.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The app's browser test drives Debian's Chromium with its driver: installed where missing (as root, else with sudo).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install browser train test test-fast lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,sweep,experiments,app,onnx]'
	@touch $(STAMP)

install: $(STAMP)

browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver \
		>/dev/null; }

train: $(STAMP)
	$(BIN)/python train.py

test: $(STAMP) browser
	$(BIN)/python -m pytest -q tests

# Everything but the tests marked slow (train.py runs, the fuzz, ONNX exports, the browser): no Chromium needed.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

lint: $(STAMP)
	$(BIN)/ruff check dequantizer tests train.py experiments

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
