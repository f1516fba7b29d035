#!/usr/bin/env bash
# The GPU checks, in two steps, because a GPU machine may have the NVIDIA driver but none of the
# Debian packages the build needs:
#   scripts/gpu-check.sh prepare   here: builds the GPU test program (in build/ when that is a CUDA
#                                  build, as setup.sh makes it where nvcc is found; else in build-gpu/
#                                  for $SA2VA_CUDA_ARCHITECTURES, default 90 = H100/H200) and gathers it
#                                  with the shared libraries it uses into gpu-bundle/
#   scripts/gpu-check.sh run       on the GPU machine, from the repository root with gpu-bundle/ copied
#                                  there: runs every GPU test (the op harness against the CPU, the runtime
#                                  checks) and prints one summary line; exit status 0 only when all pass
#                                  and none skipped
set -euo pipefail
cd "$(dirname "$0")/.."
step=${1:-}
case "$step" in
  prepare)
    dir=build
    if ! grep -q '^CMAKE_CUDA_COMPILER:' build/CMakeCache.txt 2> /dev/null; then
      dir=build-gpu
      cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSA2VA_CUDA=ON \
        -DSA2VA_CUDA_ARCHITECTURES="${SA2VA_CUDA_ARCHITECTURES:-90}" -DSA2VA_BUILD_PYTHON=OFF \
        -DSA2VA_BUILD_BENCH=OFF > /dev/null
    fi
    cmake --build "$dir" -j "$(nproc)" --target sa2va_gpu_tests
    archs=$(sed -n 's/^SA2VA_CUDA_ARCHITECTURES:STRING=//p' "$dir/CMakeCache.txt")
    rm -rf gpu-bundle && mkdir -p gpu-bundle/lib
    cp "$dir/tests/sa2va_gpu_tests" gpu-bundle/
    # Every shared library but the C library's own parts, which the GPU machine has (newer).
    ldd gpu-bundle/sa2va_gpu_tests | awk '$2 == "=>" && $3 ~ /^\// {print $3}' |
      grep -v -E '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*)\.so' | while read -r lib; do
      cp -L "$lib" gpu-bundle/lib/
    done
    echo "gpu-bundle/ ready ($(du -sh gpu-bundle | cut -f1), architectures $archs): carry it and run scripts/gpu-check.sh run"
    ;;
  run)
    [ -x gpu-bundle/sa2va_gpu_tests ] || { echo "gpu-bundle/ is missing: run scripts/gpu-check.sh prepare first"; exit 1; }
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    # cuBLASLt is opened at run time (src/ops/cuda/blas.cpp); too large to carry, it comes from the GPU
    # machine's CUDA toolkit or a Python wheel of it when the loader's own paths lack it.
    libs="$PWD/gpu-bundle/lib"
    if ! ldconfig -p | grep -q 'libcublasLt\.so\.13'; then
      found=$(find /usr/local/cuda*/ /usr/lib /opt -name 'libcublasLt.so.13*' 2> /dev/null | head -1 || true)
      [ -n "$found" ] && libs="$libs:$(dirname "$found")"
    fi
    echo "libraries: $libs"
    log=${OUT:-/tmp}/gpu-tests.log
    start=$(date +%s)
    set +e
    SA2VA_DATA_DIR="$PWD/data" LD_LIBRARY_PATH="$libs" timeout "${SA2VA_GPU_TEST_TIMEOUT:-300}" gpu-bundle/sa2va_gpu_tests 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    set -e
    # One line per test ends in its time: "[       OK ] Suite.Name (12 ms)".
    passed=$(grep -c '^\[       OK \] .* ms)$' "$log" || true)
    failed=$(grep -c '^\[  FAILED  \] .* ms)$' "$log" || true)
    skipped=$(grep -c '^\[  SKIPPED \] .* ms)$' "$log" || true)
    echo "gpu-check: $passed passed, $failed failed, $skipped skipped in $(( $(date +%s) - start )) s (log: $log)"
    [ "$status" -eq 0 ] && [ "$failed" -eq 0 ] && [ "$skipped" -eq 0 ]
    ;;
  *)
    echo "usage: scripts/gpu-check.sh prepare|run"; exit 2 ;;
esac
