// Text generation with the language model (docs/tokenizer-template.md §6, docs/llm.md §5-§6, docs/glue.md §2):
// prefill the prompt embeddings, then decode one token at a time with the KV cache, stopping on
// the eos id, a stop word or the token limit. Also the teacher-forced equivalent and the
// selection of the [SEG] hidden states.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/context.h"
#include "core/stages.h"
#include "core/tensor.h"
#include "models/llm.h"

namespace sa2va {

struct SamplingOptions {
  int max_new_tokens = 2048;
  float temperature = 0.f;  // 0 = greedy (argmax, first index on ties)
  int top_k = 0;            // 0 = no limit
  float top_p = 1.f;        // 1 = no nucleus cut
  uint64_t seed = 0;
};

// Throws Error for options no generation can use (max_new_tokens < 1, a temperature that is
// negative, not finite or too small to divide by, top_k < 0, top_p outside (0, 1]).
void check_sampling(const SamplingOptions& options);

struct StopRules {
  int32_t eos_id = -1;  // -1 = none
  // Upstream StopWordStoppingCriteria: decode all generated ids, delete '\r' and '\n', stop when
  // the text ends with a stop word. `decode` is required when stop_words is not empty.
  std::vector<std::string> stop_words;
  // The caller's stop strings: generation stops once the decoded text contains one (anywhere: a
  // token may carry text past it). `decode` is required for these too.
  std::vector<std::string> stop_strings;
  std::function<std::string(const std::vector<int32_t>&)> decode;
};

enum class StopReason { Eos, StopWord, MaxTokens };

// Where the first of `stops` begins in `text` (npos: none).
size_t first_stop_string(const std::string& text, const std::vector<std::string>& stops);
// How much of `text` may be handed over while stop strings are watched: up to the first stop string,
// less a tail that could be the start of one.
size_t stop_string_safe_length(const std::string& text, const std::vector<std::string>& stops);

// Whether generation stops after `generated` (all ids generated so far, the newest last): Eos when
// the newest id is stop.eos_id, StopWord when the decoded text contains a stop string or (without
// '\r' and '\n') ends with a stop word, nothing otherwise (the token limit is the caller's).
std::optional<StopReason> stop_after(const std::vector<int32_t>& generated, const StopRules& stop);
// The same for ids already decoded: `text` of all generated ids, `newest` the last of them.
std::optional<StopReason> stop_in_text(std::string text, int32_t newest, const StopRules& stop);

struct GenerationResult {
  std::vector<int32_t> ids;  // generated ids, including the token that stopped generation
  // Final-norm hidden state of every position fed to the model: the N prompt positions, then the
  // generated tokens but the last one (never fed back) → [N + G − 1, D].
  Tensor hidden;
  int64_t prompt_length = 0;
  StopReason stop_reason = StopReason::MaxTokens;
};

// Called with the logits [V] from which generated token `step` is chosen (before sampling).
using LogitsObserver = std::function<void(int step, const float* logits, int64_t vocab)>;
// Called with every id generated so far, the newest last, as soon as it is chosen (streaming,
// cancellation: it may throw to end the generation).
using TokenObserver = std::function<void(const std::vector<int32_t>& generated)>;

// Summaries of the logits of every generation step, for the stage dump: step_max_logit [G],
// step_top2_gap [G] (largest minus second largest), step_top5_ids [G, 5] and step_top5_logits
// [G, 5] (descending, the lower id first on ties), and step_logits [G, V] while they stay within
// kMaxRecordedLogits floats.
class StepLogits {
 public:
  void observe(const float* logits, int64_t vocab);
  void record(StageRecorder& recorder) const;

 private:
  std::vector<float> max_, gap_, top5_logits_, all_;
  std::vector<int32_t> top5_ids_;
  int64_t vocab_ = 0;
  bool keep_all_ = true;
};

// Prefills `prompt_embeds` [N, D] (already spliced with image features) and decodes.
// `rec` records the prefill stages (llm.inputs_embeds, llm.hidden_states, llm.last_hidden_state).
GenerationResult generate(const LanguageModel& lm, const Tensor& prompt_embeds, const SamplingOptions& options,
                          const StopRules& stop, const ExecContext& ctx = {},
                          const LogitsObserver& observer = nullptr, const TokenObserver& on_token = nullptr);

// Recorded logits of every position or step (llm.logits, step_logits) are kept only up to this many
// floats (256 MiB); larger runs record the per-position summaries only.
inline constexpr int64_t kMaxRecordedLogits = int64_t{1} << 26;

// One pass over prompt + answer, returning what generate() would have returned had it produced
// exactly `answer_ids` (stop_reason from the last answer id: Eos when it is stop.eos_id).
// With `rec` additionally records llm.logits_last8, llm.logits_last, llm.argmax (all positions)
// and llm.logits (all positions, when at most kMaxRecordedLogits floats).
GenerationResult teacher_forced(const LanguageModel& lm, const Tensor& prompt_embeds,
                                const std::vector<int32_t>& answer_ids, int32_t eos_id = -1,
                                const ExecContext& ctx = {});

// docs/glue.md §2 (upstream get_seg_hidden_states): the hidden states at the positions where a generated [SEG] was
// the input (the final generated token is ignored) → [S, D] in generation order (S may be 0).
Tensor seg_hidden_states(const GenerationResult& result, int32_t seg_id);

// Index of the largest value, the first one on ties.
int64_t argmax(const float* values, int64_t n);

// Chooses the next token from `logits` [V]: greedy when temperature is 0, otherwise temperature,
// then top-k, then top-p (as the reference logits warpers), and a draw from `rng_state`.
int32_t choose_token(const float* logits, int64_t vocab, const SamplingOptions& options, uint64_t& rng_state);

}  // namespace sa2va
