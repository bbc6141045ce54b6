# Two commands do everything on a fresh machine:  make demo   and   make test
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/python -m pip -q --disable-pip-version-check
DEPS    := $(VENV)/.deps-installed
BUILT   := $(VENV)/.core-built
TORCH   ?= torch==2.13.0
SHELL   := /bin/bash
.SHELLFLAGS := -eo pipefail -c

.PHONY: venv build test test-deps test-fast demo bench clean

venv: $(DEPS)

$(PY):
	python3 -m venv $(VENV)

# torch first and pinned: a plain 'torch' requirement would pull gigabytes of CUDA wheels.
$(DEPS): requirements.txt | $(PY)
	$(PIP) install $(TORCH) 2>&1 | sed "/^WARNING: Location/d"
	$(PY) -c "import torch" 
	$(PIP) install -r requirements.txt 2>&1 | sed "/^WARNING: Location/d"
	$(PY) -c "import transformers, lancedb, av, watchdog, pybind11, pytest"
	touch $@

# Builds pystream._core through CMake (setup.py) and installs the package in editable mode.
$(BUILT): $(DEPS) setup.py CMakeLists.txt $(wildcard csrc/*)
	$(PIP) install --no-build-isolation --no-deps -e . 2>&1 | sed "/^WARNING: Location/d"
	$(PY) -c "import pystream._core as c; print('pystream._core built:', c.build_info())"
	touch $@

build: $(BUILT)

# vlc (RTSP server) and ffmpeg (UDP/HLS senders) from Debian, for the live-stream tests.
test-deps:
	bash scripts/install_test_deps.sh

test: $(BUILT) test-deps
	$(PY) -m pytest -q -rs tests

test-fast: $(BUILT)
	$(PY) -m pytest -q -m "not slow" tests

demo: $(BUILT)
	$(PY) -m pystream.demo

bench: $(BUILT)
	$(PY) benchmarks/merge.py
	$(PY) benchmarks/encoder.py
	$(PY) benchmarks/quality.py
	$(PY) benchmarks/pipeline.py
	$(PY) benchmarks/store.py

clean:
	rm -rf build $(VENV) *.egg-info pystream/_core*.so
