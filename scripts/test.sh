#!/usr/bin/env bash
# Runs the whole test suite: the release build, then the unit tests under ASan+UBSan.
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
# One process per core, each running its share of the tests (gtest sharding).
pids=()
for shard in $(seq 0 $((jobs - 1))); do
  GTEST_TOTAL_SHARDS=$jobs GTEST_SHARD_INDEX=$shard ./build-asan/tests/sa2va_tests --gtest_brief=1 \
    --gtest_filter="$filter" > "build-asan/sanitizer-shard-$shard.log" 2>&1 &
  pids+=($!)
done
failed=0
for shard in "${!pids[@]}"; do
  if wait "${pids[$shard]}"; then
    grep -a -E "^\[  (PASSED|FAILED)" "build-asan/sanitizer-shard-$shard.log" || true
  else
    failed=1
    echo "== sanitizer shard $shard failed:"
    cat "build-asan/sanitizer-shard-$shard.log"
  fi
done
[ "$failed" -eq 0 ]

echo "== sanitizer build: each fuzz target for 12 s from its seed corpus (tests/fuzz)"
fixtures=${SA2VA_FIXTURES:-../shared/fixtures}
# The prompt target loads the tiny fixture model when there is one, else writes a random one.
[ -d "$fixtures/sa2va-tiny" ] && export SA2VA_FUZZ_MODEL="$(cd "$fixtures/sa2va-tiny" && pwd)"
ctest --test-dir build-asan -R '^Fuzz\.' -j "$jobs" --output-on-failure
echo "all tests passed"
