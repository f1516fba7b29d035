#!/usr/bin/env bash
# Decode and prefill speed of the Sa2VA-1B language model beside llama.cpp, in one run, format by
# format, alternating so both see the same machine:
#   decode:  ours `sa2va --profile run`, text-only prompt, 128 new tokens (ms per generated token:
#            the layers and the output head, as llama-bench counts it)
#            beside llama-bench tg128;
#   prefill: ours a 509-token text prompt (ms of the prefill stage) beside llama-bench pp512;
# same architecture and thread count. Prints tokens/s and the ratio per format and round, and the
# load average around each. Where build/bench/read_rate_bench is built (`cmake --build build --target
# read_rate_bench`), the machine's streaming read rate is measured before and after, and each decode
# is also given as a share of the bandwidth bound (the weight bytes of a token read at that rate:
# 988 MB in bf16, 525 MB in q8_0, 278 MB in q4_0 for Sa2VA-1B's language model).
#
#   bench/decode_side_by_side.sh MODEL_DIR PEER_DIR [THREADS] [ROUNDS]
# MODEL_DIR: `sa2va make-model --preset 1b` output; its q8_0 / q4_0 copies are made with
#   `sa2va quantize` next to it (MODEL_DIR-q8_0, MODEL_DIR-q4_0) when missing.
# PEER_DIR: a folder with tools/llama-bench and gguf/qwen2.5-0.5b-{f16,q8_0,q4_0}.gguf (what the
#   llama.cpp peer benchmark script prepares).
set -euo pipefail
model=${1:?model folder}; peer=${2:?peer folder}; threads=${3:-2}; rounds=${4:-2}
sa2va="$(cd "$(dirname "$0")/.." && pwd)/build/sa2va"
for f in q8_0 q4_0; do
  [ -d "$model-$f" ] || "$sa2va" quantize --model "$model" --out "$model-$f" --weights "$f"
done
sync; sleep 5  # let the written folders reach the disk before timing anything
ours() {  # tokens/s of decode
  "$sa2va" --threads "$threads" --profile run --model "$1" --prompt "Tell me a story about a cat." \
    --max-new-tokens 128 2>&1 >/dev/null | awk '/^llm.decode_token/ {printf "%.2f", 1000 / $4}'
}
long_prompt=$(for i in $(seq 50); do printf 'The quick brown fox jumps over the lazy dog. '; done)
prompt_tokens=509  # 500 text tokens + 9 of the chat template (sa2va tokenize / dump prompt_ids)
ours_prefill() {  # tokens/s of prefill
  "$sa2va" --threads "$threads" --profile run --model "$1" --prompt "$long_prompt" \
    --max-new-tokens 1 2>&1 >/dev/null | awk -v n=$prompt_tokens '/^llm.prefill/ {printf "%.2f", n * 1000 / $4}'
}
peer_tg() {
  "$peer/tools/llama-bench" -m "$peer/gguf/qwen2.5-0.5b-$1.gguf" -p 0 -n 128 -r 3 -t "$threads" 2>/dev/null |
    awk -F'|' '/tg128/ {split($8, a, " "); printf "%.2f", a[1]}'
}
peer_pp() {
  "$peer/tools/llama-bench" -m "$peer/gguf/qwen2.5-0.5b-$1.gguf" -p 512 -n 0 -r 3 -t "$threads" 2>/dev/null |
    awk -F'|' '/pp512/ {split($8, a, " "); printf "%.2f", a[1]}'
}
read_rate() {  # GB/s, 1 GiB in huge pages, the default thread count
  "$(dirname "$sa2va")/bench/read_rate_bench" --benchmark_filter='BM_ReadRate/1024' 2>/dev/null |
    awk '/GB_per_s/ {sub(/.*GB_per_s=/, ""); sub(/\/s.*/, ""); printf "%.1f", $0}'
}
rate=""
if [ -x "$(dirname "$sa2va")/bench/read_rate_bench" ]; then rate=$(read_rate); echo "read rate: $rate GB/s"; fi
declare -A token_mb=([bf16]=988 [q8_0]=525 [q4_0]=278)
echo "isa: $(grep -o -m1 'avx512_bf16\|avx512_vnni' /proc/cpuinfo | sort -u | tr '\n' ' ')$(grep -q avx512f /proc/cpuinfo || echo avx2-only)"
printf "%-6s %-8s %-5s %10s %10s %7s  %s\n" round test format "ours t/s" "llama t/s" ratio load
for round in $(seq 1 "$rounds"); do
  for test in decode prefill; do
    for f in bf16 q8_0 q4_0; do
      dir=$model; peer_format=f16
      [ "$f" = bf16 ] || { dir=$model-$f; peer_format=$f; }
      load0=$(cut -d' ' -f1 /proc/loadavg)
      if [ "$test" = decode ]; then a=$(ours "$dir"); b=$(peer_tg "$peer_format")
      else a=$(ours_prefill "$dir"); b=$(peer_pp "$peer_format"); fi
      load1=$(cut -d' ' -f1 /proc/loadavg)
      bound=""
      if [ -n "$rate" ] && [ "$test" = decode ]; then
        bound=$(awk -v a="$a" -v mb="${token_mb[$f]}" -v r="$rate" 'BEGIN {printf "  %.0f%% of the bound", 100 * a * mb / 1000 / r}')
      fi
      printf "%-6s %-8s %-5s %10s %10s %7s  %s -> %s%s\n" "$round" "$test" "$f" "$a" "$b" \
        "$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2fx", a / b}')" "$load0" "$load1" "$bound"
    done
  done
done
if [ -n "$rate" ]; then echo "read rate after: $(read_rate) GB/s"; fi
