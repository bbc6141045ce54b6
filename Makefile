# Two commands do everything on a fresh machine:  make demo   and   make test
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/python -m pip -q --disable-pip-version-check
DEPS    := $(VENV)/.deps-installed
BUILT   := $(VENV)/.core-built
LOCK    := requirements.lock
TORCH   ?= torch==2.13.0
SHELL   := /bin/bash
.SHELLFLAGS := -eo pipefail -c

.PHONY: venv build wheel lock test test-deps test-fast demo bench clean

venv: $(DEPS)

$(PY):
	python3 -m venv $(VENV)

# torch first and pinned: a plain 'torch' requirement would pull gigabytes of CUDA wheels.
# Then exactly the versions in requirements.lock (--no-deps: nothing that the lock does not name
# gets in; pip check proves the lock is complete).
$(DEPS): $(LOCK) | $(PY)
	$(PIP) install $(TORCH) 2>&1 | sed "/^WARNING: Location/d"
	$(PY) -c "import torch" 
	$(PIP) install --no-deps -r $(LOCK) 2>&1 | sed "/^WARNING: Location/d"
	$(PY) -m pip check
	$(PY) -c "import transformers, lancedb, av, watchdog, pybind11, pytest"
	touch $@

# requirements.lock: exact versions of everything requirements.txt pulls, resolved together with
# $(TORCH) so that torch's own dependencies (sympy, filelock, ...) are pinned too, while torch
# itself (and pip) stay out of the lock: torch is installed first, above. Run after editing
# requirements.txt; keeps the existing pins that still fit (make lock LOCKFLAGS=--upgrade: newest).
lock: | $(PY)
	$(PY) -c "import piptools" 2>/dev/null || $(PIP) install pip-tools
	echo "$(TORCH)" | CUSTOM_COMPILE_COMMAND="make lock" $(PY) -m piptools compile --quiet \
	    $(LOCKFLAGS) --strip-extras --unsafe-package torch --unsafe-package pip \
	    --no-emit-index-url --no-emit-find-links --output-file $(LOCK) requirements.txt -
	! grep -iE "^nvidia-" $(LOCK)

# Builds pystream._core through CMake (setup.py) and installs the package in editable mode.
$(BUILT): $(DEPS) setup.py CMakeLists.txt $(wildcard csrc/*)
	$(PIP) install --no-build-isolation --no-deps -e . 2>&1 | sed "/^WARNING: Location/d"
	$(PY) -c "import pystream._core as c; print('pystream._core built:', c.build_info())"
	touch $@

build: $(BUILT)

# A wheel of the package (C++ core included) in dist/; `pip install dist/pystream-*.whl` after
# torch. tests/test_package.py builds one the same way and installs it into a scratch venv.
wheel: $(BUILT)
	$(PIP) wheel --no-build-isolation --no-deps -w dist .

# vlc (RTSP server), ffmpeg (UDP/HLS senders) and mosquitto (MQTT broker) from Debian, for the
# live-stream and alert tests.
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
