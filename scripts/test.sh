#!/usr/bin/env bash
# Runs the whole test suite: the release build, then under ASan+UBSan the unit tests, the operator
# tests again with the AVX-512 and AMX kernels emulated, and each fuzz target.
# Conformance tests read the fixtures from $SA2VA_FIXTURES (default: ../shared/fixtures);
# without them they skip, except under CI=true where a missing fixture is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

echo "== release build: all tests (C++, the Python module, the installed tree)"
ctest --test-dir build --output-on-failure -j "$jobs" --timeout 900

echo "== sanitizer build: unit tests"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# The full-size SAM2 runs (1024x1024 backbone on every frame, also in the mask-decoder training test), the
# whole-pipeline conformance cases,
# the program-level suites and the server tests that mostly run the model (video, masks, concurrency)
# run in the release build only; under sanitizers they would repeat the same code paths far slower.
# The server's request parsing, limits, sessions and cancellation stay under the sanitizers.
filter='-Sam2ImageTest.*:TrainMaskDecoder.*:Sam2VideoConformance.*:Sam2VideoTracker.*:PipelineConformance.*:Phi3Conformance.*:InternLM2Conformance.*:DumpConformance.*:QuantizedWeights.AccuracyOfEvery*:EndToEnd*:TokenizeCli.*:QuantizeCli.*:Pipeline.VisualCache*:Pipeline.AnswerIsHanded*:Pipeline.ConversationAfter*:Pipeline.TextStreams*:Pipeline.ShouldStop*:Server.ChatCompletion*:Server.Streamed*:Server.VideoFrames*:Server.SessionsKeep*:Server.Concurrent*'
# One process per core, each running its share of the tests (gtest sharding); a failed shard's log
# is printed whole.
run_shards() {  # binary, log name, gtest filter
  local pids=() shard failed=0
  for shard in $(seq 0 $((jobs - 1))); do
    GTEST_TOTAL_SHARDS=$jobs GTEST_SHARD_INDEX=$shard "$1" --gtest_brief=1 --gtest_filter="${3:-*}" \
      > "build-asan/$2-shard-$shard.log" 2>&1 &
    pids+=($!)
  done
  for shard in "${!pids[@]}"; do
    if wait "${pids[$shard]}"; then
      grep -a -E "^\[  (PASSED|FAILED)" "build-asan/$2-shard-$shard.log" || true
    else
      failed=1
      echo "== $2 shard $shard failed:"
      cat "build-asan/$2-shard-$shard.log"
    fi
  done
  [ "$failed" -eq 0 ]
}
run_shards build-asan/tests/sa2va_tests sanitizer "$filter"

echo "== sanitizer build: operator tests with the AVX-512 and AMX kernels emulated"
if [ -x build-asan/tests/sa2va_wide_x86_tests ]; then
  run_shards build-asan/tests/sa2va_wide_x86_tests wide-x86 ""
elif [ "${CI:-}" = "true" ]; then
  echo "build-asan/tests/sa2va_wide_x86_tests is missing (CMake needs libsimde-dev and an x86-64 CPU with AVX2)"
  exit 1
else
  echo "skipped: build-asan/tests/sa2va_wide_x86_tests was not built (needs libsimde-dev and a CPU with AVX2)"
fi

echo "== sanitizer build: each fuzz target for 12 s from its seed corpus (tests/fuzz)"
fixtures=${SA2VA_FIXTURES:-../shared/fixtures}
# The prompt target loads the tiny fixture model when there is one, else writes a random one.
[ -d "$fixtures/sa2va-tiny" ] && export SA2VA_FUZZ_MODEL="$(cd "$fixtures/sa2va-tiny" && pwd)"
ctest --test-dir build-asan -R '^Fuzz\.' -j "$jobs" --output-on-failure
echo "all tests passed"
