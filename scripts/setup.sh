#!/usr/bin/env bash
# Installs the Debian packages sa2va.cpp needs and builds everything:
#   build/       release build (library, `sa2va` program, Python module, tests; benchmarks on request:
#                cmake --build build --target benchmarks), with the CUDA backend when nvcc is found
#                (on PATH or at the toolkit's usual place)
#   build-asan/  the test suite under AddressSanitizer + UndefinedBehaviorSanitizer, built with clang,
#                the operator tests again with the AVX-512 and AMX kernels emulated (sa2va_wide_x86_tests)
#                and the libFuzzer targets (tests/fuzz)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build pkg-config git clang libclang-rt-dev llvm
  libopenblas-dev nlohmann-json3-dev libcli11-dev libcpp-httplib-dev
  libjpeg62-turbo-dev libpng-dev
  libavformat-dev libavcodec-dev libswscale-dev libavutil-dev ffmpeg
  libsentencepiece-dev sentencepiece
  libgtest-dev libbenchmark-dev libsimde-dev
  python3-dev python3-pybind11 pybind11-dev python3-numpy python3-pytest python3-pil python3-venv python3-pip
  python3-setuptools python3-wheel
  chromium
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js with npm runs the browser test; a machine that has them (from any source) keeps its own.
command -v npm > /dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi

# playwright-core for the browser test of `sa2va serve` (the lock file pins it).
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  (cd tests/browser && npm ci --no-audit --no-fund)
fi

jobs=$(nproc)
# The CUDA backend is built when a CUDA compiler is found: on PATH, or in the toolkit's default place.
cuda_args=()
if ! command -v nvcc > /dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  cuda_args=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
fi
# The Python module is built for Debian's interpreter, the one apt installs numpy, PIL and pytest for.
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE=/usr/bin/python3 "${cuda_args[@]}"
cmake --build build -j "$jobs"
# clang for the sanitizer build: libFuzzer comes with it, and it compiles this code faster than GCC.
if [ -f build-asan/CMakeCache.txt ] && ! grep -q "^CMAKE_CXX_COMPILER:.*clang" build-asan/CMakeCache.txt; then
  rm -rf build-asan  # configured with another compiler before
fi
# It is also the CPU-only build (SA2VA_CUDA=OFF); build/ has the CUDA backend wherever nvcc is found.
CC=clang CXX=clang++ cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSA2VA_SANITIZE=ON \
  -DSA2VA_BUILD_BENCH=OFF -DSA2VA_BUILD_PYTHON=OFF -DSA2VA_CUDA=OFF
targets=(sa2va_tests fuzz_targets)
# The emulated AVX-512 operator tests, where CMake could set them up (SIMDe and a CPU with AVX2).
grep -q "^SA2VA_WIDE_X86_TESTS_BUILT:INTERNAL=ON" build-asan/CMakeCache.txt && targets+=(sa2va_wide_x86_tests)
cmake --build build-asan -j "$jobs" --target "${targets[@]}"
echo "setup done: ./build/sa2va is the program; ./scripts/test.sh runs the tests"
