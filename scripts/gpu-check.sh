#!/usr/bin/env bash
# The GPU checks, in two steps, because a GPU machine may have the NVIDIA driver but none of the
# Debian packages the build needs:
#   scripts/gpu-check.sh prepare   here: builds the GPU test program (in build/ when that is a CUDA
#                                  build, as setup.sh makes it where nvcc is found; else in build-gpu/
#                                  for $SA2VA_CUDA_ARCHITECTURES, default 90 = H100/H200) and gathers it
#                                  with the shared libraries it uses into gpu-bundle/
#   scripts/gpu-check.sh run       on the GPU machine, from the repository root with gpu-bundle/ copied
#                                  there: runs every GPU test (the op harness against the CPU, the runtime
#                                  checks, the pipeline against the CPU, the conformance fixtures) and the
#                                  GPU benchmark (bench/gpu_pipeline_timing.cpp), and prints one summary;
#                                  exit status 0 only when all pass, none skipped, and the benchmark ran
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
        -DSA2VA_BUILD_BENCH=ON > /dev/null
    fi
    cmake --build "$dir" -j "$(nproc)" --target sa2va_gpu_tests sa2va_gpu_bench
    archs=$(sed -n 's/^SA2VA_CUDA_ARCHITECTURES:STRING=//p' "$dir/CMakeCache.txt")
    stage=$(mktemp -d)
    mkdir -p "$stage/lib" "$stage/fixtures"
    cp "$dir/tests/sa2va_gpu_tests" "$dir/sa2va_gpu_bench" "$stage/"
    # Every shared library but the C library's own parts, which the GPU machine has (newer).
    for program in "$stage"/sa2va_gpu_*; do ldd "$program"; done | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u |
      grep -v -E '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*)\.so' | while read -r lib; do
      cp -L "$lib" "$stage/lib/"
    done
    # The fixture folders the GPU conformance test runs, with the goldens of its cases only: the 4B
    # template's and the 8B path's by default (sa2va-tiny, 1B's shape, would more than double the
    # bundle; the random-weight pipeline test covers that shape against the CPU).
    fixtures=${SA2VA_FIXTURES:-../shared/fixtures}
    for f in ${SA2VA_GPU_FIXTURES:-sa2va-tiny-phi3 sa2va-tiny-internlm2}; do
      [ -f "$fixtures/$f/meta.json" ] || { echo "fixture $fixtures/$f not found: the GPU conformance test will skip it"; continue; }
      mkdir -p "$stage/fixtures/$f/goldens"
      find "$fixtures/$f" -maxdepth 1 -type f -exec cp {} "$stage/fixtures/$f/" \;
      cp -r "$fixtures/$f/inputs" "$stage/fixtures/$f/"
      for c in image multiseg generate; do
        [ -f "$fixtures/$f/goldens/$c.safetensors" ] && cp "$fixtures/$f/goldens/$c.safetensors" "$stage/fixtures/$f/goldens/"
      done
    done
    rm -rf gpu-bundle && mkdir -p gpu-bundle
    tar -C "$stage" -cf - . | xz -T0 -6 > gpu-bundle/bundle.tar.xz
    rm -rf "$stage"
    echo "gpu-bundle/ ready ($(du -sh gpu-bundle | cut -f1), architectures $archs): carry it and run scripts/gpu-check.sh run"
    ;;
  run)
    [ -f gpu-bundle/bundle.tar.xz ] || { echo "gpu-bundle/ is missing: run scripts/gpu-check.sh prepare first"; exit 1; }
    bundle=$(mktemp -d)
    if command -v xz > /dev/null; then xz -dc gpu-bundle/bundle.tar.xz; else
      python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open("gpu-bundle/bundle.tar.xz"), sys.stdout.buffer)'
    fi | tar -C "$bundle" -xf -
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    # cuBLASLt is opened at run time (src/ops/cuda/blas.cpp); too large to carry, it comes from the GPU
    # machine's CUDA toolkit or a Python wheel of it when the loader's own paths lack it.
    libs="$bundle/lib"
    if ! ldconfig -p | grep -q 'libcublasLt\.so\.13'; then
      found=$(find /usr/local/cuda*/ /usr/lib /opt -name 'libcublasLt.so.13*' 2> /dev/null | head -1 || true)
      [ -n "$found" ] && libs="$libs:$(dirname "$found")"
    fi
    echo "libraries: $libs"
    log=${OUT:-/tmp}/gpu-tests.log
    start=$(date +%s)
    set +e
    SA2VA_DATA_DIR="$PWD/data" SA2VA_FIXTURES="$bundle/fixtures" LD_LIBRARY_PATH="$libs" \
      timeout "${SA2VA_GPU_TEST_TIMEOUT:-300}" "$bundle/sa2va_gpu_tests" 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    set -e
    # One line per test ends in its time: "[       OK ] Suite.Name (12 ms)".
    passed=$(grep -c '^\[       OK \] .* ms)$' "$log" || true)
    failed=$(grep -c '^\[  FAILED  \] .* ms)$' "$log" || true)
    skipped=$(grep -c '^\[  SKIPPED \] .* ms)$' "$log" || true)
    tests_s=$(( $(date +%s) - start ))
    # The GPU benchmark: a random model of Sa2VA-1B's shapes, timed as bench/README.md's GPU table.
    bench_log=${OUT:-/tmp}/gpu-bench.log
    set +e
    SA2VA_DATA_DIR="$PWD/data" LD_LIBRARY_PATH="$libs" timeout "${SA2VA_GPU_BENCH_TIMEOUT:-240}" \
      "$bundle/sa2va_gpu_bench" ${SA2VA_GPU_BENCH_ARGS:-} > "$bench_log" 2>&1
    bench_status=$?
    set -e
    echo "---- GPU benchmark (log: $bench_log)"
    cat "$bench_log"
    echo "gpu-check: $passed passed, $failed failed, $skipped skipped in $tests_s s (log: $log); benchmark exit $bench_status"
    [ "$status" -eq 0 ] && [ "$failed" -eq 0 ] && [ "$skipped" -eq 0 ] && [ "$bench_status" -eq 0 ]
    ;;
  *)
    echo "usage: scripts/gpu-check.sh prepare|run"; exit 2 ;;
esac
