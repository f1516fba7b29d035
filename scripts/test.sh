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
# The fork test too runs in the release build only: this sanitizer runtime takes no lock of its own
# allocator around fork(), so a child forked while a worker thread is still freeing memory can wait
# for ever on that lock (seen once, under load); glibc's allocator, in the release build, does.
filter='-ThreadPool.AForkedChild*:Sam2ImageTest.*:TrainMaskDecoder.*:Sam2VideoConformance.*:Sam2VideoTracker.*:PipelineConformance.*:Phi3Conformance.*:InternLM2Conformance.*:DumpConformance.*:QuantizedWeights.AccuracyOfEvery*:EndToEnd*:ServeCommand.*:TokenizeCli.*:QuantizeCli.*:Pipeline.VisualCache*:Pipeline.AnswerIsHanded*:Pipeline.ConversationAfter*:Pipeline.TextStreams*:Pipeline.ShouldStop*:Server.ChatCompletion*:Server.Streamed*:Server.VideoFrames*:Server.SessionsKeep*:Server.Concurrent*'
# One process per core at a time: first each of the slowest tests alone (longest first), then the
# rest in three shares per core (gtest sharding), so that no share of slow tests keeps the other cores
# waiting at the end. A failed process's log is printed whole.
run_shards() {  # binary, log name, gtest filter (negative patterns or empty), slowest tests (a:b:c)
  local shards=$((jobs * 3)) failed=0 name
  local -a names=() filters=() shard_env=()
  local slow=()
  [ -n "${4:-}" ] && IFS=: read -r -a slow <<< "$4"
  for name in "${slow[@]}"; do names+=("$2-${name//[^A-Za-z0-9._-]/_}"); filters+=("$name"); shard_env+=(""); done
  local rest="${3:-*}"  # the other tests: the filter, and not the slowest
  if [ ${#slow[@]} -gt 0 ]; then
    if [ "$rest" = "*" ]; then rest="-$4"; else rest="$rest:$4"; fi
  fi
  for shard in $(seq 0 $((shards - 1))); do
    names+=("$2-shard-$shard"); filters+=("$rest"); shard_env+=("$shard")
  done
  rm -f "build-asan/$2"-*.status
  for i in "${!names[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    (
      status=0
      if [ -n "${shard_env[$i]}" ]; then
        export GTEST_TOTAL_SHARDS=$shards GTEST_SHARD_INDEX=${shard_env[$i]}
      fi
      "$1" --gtest_brief=1 --gtest_filter="${filters[$i]}" > "build-asan/${names[$i]}.log" 2>&1 || status=$?
      echo "$status" > "build-asan/${names[$i]}.status"
    ) &
  done
  wait
  for name in "${names[@]}"; do
    if [ "$(cat "build-asan/$name.status" 2>/dev/null)" = 0 ]; then
      grep -a -E "^\[  (PASSED|FAILED)" "build-asan/$name.log" || true
    else
      failed=1
      echo "== $name failed:"
      cat "build-asan/$name.log"
    fi
  done
  [ "$failed" -eq 0 ]
}
# Under the sanitizers these take 12-70 s each (half of the whole run), longest first.
slowest='StandInDevice.WholePipelineAsOnTheCpu:Pipeline.UniformKeyFramesConditionSam2OnTheFramesTheLlmSaw'
slowest+=':Pipeline.VideoFramesOfDifferentSizesGiveMasksAtTheFirstFramesSize:Pipeline.F32CheckpointsAreUsedInPlace'
run_shards build-asan/tests/sa2va_tests sanitizer "$filter" "$slowest"

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
