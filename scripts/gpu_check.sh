#!/usr/bin/env bash
# The whole GPU check in one command, for a bare GPU machine:
#
#     bash scripts/gpu_check.sh [LOG]          # default LOG: gpu_check.log in the repo root
#
# Needs: an NVIDIA GPU, nvcc (PATH, $CUDACXX or /usr/local/cuda/bin), and a `python3` (3.12 is
# what the project's GPU machines have; $PYTHON overrides) that already has a CUDA torch,
# transformers, pybind11 and cmake. Not needed: lancedb, av, a venv. If python3 lacks pytest or
# hypothesis they are installed into build/gpu-check-pylib (never into the system python) from
# $GPU_CHECK_WHEELS, a folder of wheels (for machines without network: fill it elsewhere with
# `pip download -d wheels pytest hypothesis`), or else from the package index.
#
# Steps (each logged with its output; a failed step does not stop the later ones):
#   1. environment: python, torch, CUDA device, nvcc
#   2. build pystream._core with the CUDA kernels through CMake (PYSTREAM_CUDA=on; the CUDA
#      architectures default to this GPU's, override with PYSTREAM_CUDA_ARCHS="80;90") into
#      pystream/ and check that the core sees the device
#   3. the CUDA tests: tests/test_core_cuda.py and tests/test_core_errors.py in full, and the
#      tests marked `cuda` in test_core_states.py, test_model_equivalence.py and
#      test_streaming.py (the streaming encoder on CUDA against CPU, encode_video on CUDA
#      against CPU). None of these import lancedb or av.
#   4. benchmarks on the GPU: benchmarks/merge.py (CPU and CUDA merge core vs reference) and
#      benchmarks/encoder.py --device cuda (per-frame CLIP vs offline vs streaming TempMe)
# Ends with one line per step (PASS / FAIL) and exits 1 if any failed.
#
# Environment: GPU_CHECK_ALLOW_CPU=1 runs the steps without a GPU (CUDA tests skip; for
# checking this script itself), GPU_CHECK_QUICK=1 runs the benchmarks with few repeats.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
LOG="${1:-$ROOT/gpu_check.log}"
PY="${PYTHON:-python3}"
: > "$LOG"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
RESULTS=()

log() { echo "$*" | tee -a "$LOG"; }

step() {  # step NAME CMD...: run CMD, output to the log and the terminal, record PASS/FAIL
  local name="$1"; shift
  log ""
  log "=== $name: $* ($(date -u +%H:%M:%S))"
  local t0=$SECONDS
  "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 0 ]; then RESULTS+=("PASS  $name ($((SECONDS - t0)) s)")
  else RESULTS+=("FAIL  $name (exit $rc, $((SECONDS - t0)) s)"); fi
  return "$rc"
}

log "pystream GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no git') on $(hostname)"

# ---------------------------------------------------------------- 1. environment
env_check() {
  "$PY" - <<'EOF'
import sys
print("python", sys.version.split()[0], sys.executable)
import torch
print("torch", torch.__version__, "cuda build", torch.version.cuda,
      "cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"  device {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}")
import transformers, pybind11
print("transformers", transformers.__version__, "pybind11", pybind11.__version__)
EOF
}
step "environment" env_check
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  if [ "${GPU_CHECK_ALLOW_CPU:-0}" != "1" ]; then
    log "torch sees no CUDA device (a CPU-only torch, or no GPU): nothing to check."
    log "FAIL  environment: no CUDA device"
    exit 1
  fi
  log "GPU_CHECK_ALLOW_CPU=1: continuing without a GPU (CUDA tests will skip)"
  CUDA_MODE=auto
else
  CUDA_MODE=on
fi
NVCC="${CUDACXX:-$(command -v nvcc || true)}"
[ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ] && NVCC=/usr/local/cuda/bin/nvcc
if [ -n "$NVCC" ]; then
  export CUDACXX="$NVCC"
  log "nvcc: $NVCC ($("$NVCC" --version | tail -1))"
else
  log "nvcc not found (PATH, \$CUDACXX, /usr/local/cuda/bin)"
  [ "$CUDA_MODE" = on ] && RESULTS+=("FAIL  nvcc: not found")
fi

# ---------------------------------------------------------------- 2. build the core
build_core() {
  local archs="${PYSTREAM_CUDA_ARCHS:-}"
  if [ -z "$archs" ]; then
    archs="$("$PY" -c "import torch; m, n = torch.cuda.get_device_capability(); print(f'{m}{n}')" 2>/dev/null || echo "75;80;90")"
  fi
  local bdir="$ROOT/build/gpu-check-$("$PY" -c 'import sys; print(sys.implementation.cache_tag)')"
  local native=ON
  [ "${PYSTREAM_NATIVE:-1}" = "0" ] && native=OFF
  rm -f "$ROOT/pystream/_core$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
  cmake -S "$ROOT" -B "$bdir" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$ROOT/pystream/" \
    -DPython_EXECUTABLE="$(command -v "$PY")" \
    -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" \
    -DPYSTREAM_CUDA="$CUDA_MODE" -DCMAKE_CUDA_ARCHITECTURES="$archs" \
    -DPYSTREAM_NATIVE="$native" -DPYSTREAM_VERSION=0.1.0 &&
  cmake --build "$bdir" -j "${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" &&
  "$PY" - "$CUDA_MODE" "$ROOT" <<'EOF'
import os, sys
import pystream, pystream._core as c
from pystream import merge
info = c.build_info()
print("built:", c.__file__)
print("build_info:", info)
print("core sees a CUDA device:", c.cuda_available())
assert os.path.realpath(c.__file__).startswith(os.path.realpath(sys.argv[2])), \
    f"imported {c.__file__}, not the core just built in {sys.argv[2]}"
if sys.argv[1] == "on":
    assert info["cuda_compiled"], "built without the CUDA kernels"
    assert merge.core_cuda_available(), "CUDA kernels compiled but the core sees no device"
EOF
}
step "build pystream._core (PYSTREAM_CUDA=$CUDA_MODE)" build_core

# ---------------------------------------------------------------- 3. CUDA tests
PYLIB="$ROOT/build/gpu-check-pylib"  # test-only packages go here, never into the system python
need_pkgs() {
  local missing=()
  for m in "$@"; do "$PY" -c "import $m" 2>/dev/null || missing+=("$m"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} for the tests into $PYLIB"
  local src=()
  [ -n "${GPU_CHECK_WHEELS:-}" ] && src=(--no-index --find-links "$GPU_CHECK_WHEELS")
  "$PY" -m pip install -q --disable-pip-version-check --target "$PYLIB" "${src[@]}" \
    "${missing[@]}" 2>&1 | tee -a "$LOG"
  export PYTHONPATH="$PYTHONPATH:$PYLIB"
  for m in "${missing[@]}"; do "$PY" -c "import $m" 2>/dev/null || return 1; done
}
need_pkgs pytest || log "pytest is not available: the CUDA tests cannot run"
need_pkgs hypothesis || log "hypothesis is not available: its property tests are left out"

cuda_tests() {
  "$PY" -c "import pytest" 2>/dev/null || { echo "no pytest"; return 1; }
  local files=(tests/test_core_cuda.py tests/test_core_errors.py)
  local marked=(tests/test_model_equivalence.py tests/test_streaming.py)
  if "$PY" -c "import hypothesis" 2>/dev/null; then marked+=(tests/test_core_states.py); fi
  # -p no:cacheprovider: nothing written into the checkout but the log
  "$PY" -m pytest -q -rs -p no:cacheprovider "${files[@]}" &&
  "$PY" -m pytest -q -rs -p no:cacheprovider -m cuda "${marked[@]}"
}
step "CUDA tests (kernels, errors, states, encode_video and streaming encoder CUDA vs CPU)" cuda_tests

# ---------------------------------------------------------------- 4. benchmarks on the GPU
if [ "${GPU_CHECK_QUICK:-0}" = "1" ]; then MERGE_ARGS=(--repeats 5); ENC_ARGS=(--rounds 2); else
  MERGE_ARGS=(); ENC_ARGS=(); fi
step "benchmarks/merge.py (CPU and CUDA)" "$PY" benchmarks/merge.py "${MERGE_ARGS[@]}"
DEV=cuda
[ "$CUDA_MODE" = on ] || DEV=cpu
step "benchmarks/encoder.py --device $DEV" "$PY" benchmarks/encoder.py --device "$DEV" "${ENC_ARGS[@]}" \
  $([ "${GPU_CHECK_QUICK:-0}" = "1" ] && echo --tiny)

# ---------------------------------------------------------------- summary
log ""
log "=== summary (log: $LOG)"
failed=0
for r in "${RESULTS[@]}"; do
  log "$r"
  case "$r" in FAIL*) failed=1 ;; esac
done
exit "$failed"
