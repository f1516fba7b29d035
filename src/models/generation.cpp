#include "models/generation.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "core/error.h"
#include "core/profile.h"
#include "ops/ops.h"

namespace sa2va {
namespace {

// splitmix64: a small, portable generator so a seed gives the same tokens everywhere.
uint64_t next_random(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double uniform01(uint64_t& state) { return static_cast<double>(next_random(state) >> 11) * 0x1.0p-53; }

void check_options(const SamplingOptions& o, const StopRules& stop) {
  check_sampling(o);
  check((stop.stop_words.empty() && stop.stop_strings.empty()) || static_cast<bool>(stop.decode),
        "generation: stop words need a decode function");
}

}  // namespace

void check_sampling(const SamplingOptions& o) {
  check(o.max_new_tokens >= 1, "generation: max_new_tokens must be at least 1 (got " +
                                   std::to_string(o.max_new_tokens) + ")");
  check(std::isfinite(o.temperature) && o.temperature >= 0.f,
        "generation: temperature must be >= 0 (0 = greedy), got " + std::to_string(o.temperature));
  // Scores are divided by it: a temperature whose inverse is not a float would make them inf - inf.
  check(o.temperature == 0.f || std::isfinite(1.f / o.temperature),
        "generation: temperature " + std::to_string(o.temperature) + " is too small to divide by (0 = greedy)");
  check(o.top_k >= 0, "generation: top_k must be >= 0 (0 = no limit), got " + std::to_string(o.top_k));
  check(o.top_p > 0.f && o.top_p <= 1.f, "generation: top_p must be in (0, 1], got " + std::to_string(o.top_p));
}

size_t first_stop_string(const std::string& text, const std::vector<std::string>& stops) {
  size_t first = std::string::npos;
  for (const std::string& s : stops)
    if (!s.empty()) first = std::min(first, text.find(s));
  return first;
}

size_t stop_string_safe_length(const std::string& text, const std::vector<std::string>& stops) {
  const size_t end = std::min(text.size(), first_stop_string(text, stops));
  size_t held = 0;  // the longest tail before `end` that begins a stop string waits
  for (const std::string& s : stops)
    for (size_t n = std::min(s.empty() ? 0 : s.size() - 1, end); n > held; --n)
      if (text.compare(end - n, n, s, 0, n) == 0) {
        held = n;
        break;
      }
  return end - held;
}

std::optional<StopReason> stop_after(const std::vector<int32_t>& generated, const StopRules& stop) {
  if (generated.empty()) return std::nullopt;
  if (generated.back() == stop.eos_id) return StopReason::Eos;
  if (stop.stop_words.empty() && stop.stop_strings.empty()) return std::nullopt;
  check(static_cast<bool>(stop.decode), "generation: stop words need a decode function");
  return stop_in_text(stop.decode(generated), generated.back(), stop);
}

std::optional<StopReason> stop_in_text(std::string text, int32_t newest, const StopRules& stop) {
  if (newest == stop.eos_id) return StopReason::Eos;
  if (first_stop_string(text, stop.stop_strings) != std::string::npos) return StopReason::StopWord;
  std::erase_if(text, [](char c) { return c == '\r' || c == '\n'; });
  for (const std::string& word : stop.stop_words)
    if (!word.empty() && text.ends_with(word)) return StopReason::StopWord;
  return std::nullopt;
}

int64_t argmax(const float* values, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (values[i] > values[best]) best = i;
  return best;
}

int32_t choose_token(const float* logits, int64_t vocab, const SamplingOptions& options, uint64_t& rng_state) {
  check(vocab > 0, "generation: empty logits");
  if (options.temperature == 0.f) return static_cast<int32_t>(argmax(logits, vocab));

  const float inv_t = 1.f / options.temperature;
  std::vector<float> s(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) s[i] = logits[i] * inv_t;
  // Candidates in order of decreasing score (first index on ties).
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) order[i] = static_cast<int32_t>(i);
  auto better = [&](int32_t a, int32_t b) { return s[a] > s[b] || (s[a] == s[b] && a < b); };

  int64_t kept = options.top_k > 0 ? std::min<int64_t>(options.top_k, vocab) : vocab;
  if (kept < vocab) std::nth_element(order.begin(), order.begin() + kept, order.end(), better);
  const float max_score = s[*std::min_element(order.begin(), order.begin() + kept, better)];
  double total = 0;
  for (int64_t j = 0; j < kept; ++j) total += std::exp(static_cast<double>(s[order[j]] - max_score));

  if (options.top_p < 1.f) {
    // Nucleus: keep the best tokens until their probability reaches top_p (the one that crosses
    // it included). Sort only as many as needed, growing the sorted prefix when it falls short.
    int64_t sorted = std::min<int64_t>(kept, 64);
    for (;;) {
      std::partial_sort(order.begin(), order.begin() + sorted, order.begin() + kept, better);
      double cumulative = 0;
      int64_t j = 0;
      for (; j < sorted && cumulative < options.top_p; ++j)
        cumulative += std::exp(static_cast<double>(s[order[j]] - max_score)) / total;
      if (cumulative >= options.top_p || sorted == kept) {
        kept = std::max<int64_t>(j, 1);
        break;
      }
      sorted = std::min<int64_t>(kept, sorted * 8);
    }
    total = 0;
    for (int64_t j = 0; j < kept; ++j) total += std::exp(static_cast<double>(s[order[j]] - max_score));
  }

  const double target = uniform01(rng_state) * total;
  double cumulative = 0;
  for (int64_t j = 0; j < kept; ++j) {
    cumulative += std::exp(static_cast<double>(s[order[j]] - max_score));
    if (target < cumulative) return order[j];
  }
  return order[kept - 1];
}

void StepLogits::observe(const float* logits, int64_t vocab) {
  check(vocab >= 5, "step logits: a vocabulary of at least 5 tokens is needed");
  check(vocab_ == 0 || vocab_ == vocab, "step logits: the vocabulary size changed between steps");
  vocab_ = vocab;
  std::array<int32_t, 5> best{};
  int found = 0;
  // Insertion into the five best so far: strictly greater wins, so the lower id stays first on ties.
  for (int64_t i = 0; i < vocab; ++i) {
    int at = found;
    while (at > 0 && logits[i] > logits[best[static_cast<size_t>(at - 1)]]) --at;
    if (at >= 5) continue;
    for (int j = std::min(found, 4); j > at; --j) best[static_cast<size_t>(j)] = best[static_cast<size_t>(j - 1)];
    best[static_cast<size_t>(at)] = static_cast<int32_t>(i);
    found = std::min(found + 1, 5);
  }
  max_.push_back(logits[best[0]]);
  gap_.push_back(logits[best[0]] - logits[best[1]]);
  for (int32_t id : best) {
    top5_ids_.push_back(id);
    top5_logits_.push_back(logits[id]);
  }
  keep_all_ = keep_all_ && static_cast<int64_t>(all_.size()) + vocab <= kMaxRecordedLogits;
  if (keep_all_) all_.insert(all_.end(), logits, logits + vocab);
  else all_.clear();
}

void StepLogits::record(StageRecorder& recorder) const {
  const int64_t steps = static_cast<int64_t>(max_.size());
  if (steps == 0) return;
  recorder.record("step_max_logit", Tensor::from_vector(max_, {steps}));
  recorder.record("step_top2_gap", Tensor::from_vector(gap_, {steps}));
  Tensor ids = Tensor::empty({steps, 5}, DType::I64);
  for (size_t i = 0; i < top5_ids_.size(); ++i) ids.data<int64_t>()[i] = top5_ids_[i];
  recorder.record("step_top5_ids", ids);
  recorder.record("step_top5_logits", Tensor::from_vector(top5_logits_, {steps, 5}));
  if (keep_all_) recorder.record("step_logits", Tensor::from_vector(all_, {steps, vocab_}));
}

GenerationResult generate(const LanguageModel& lm, const Tensor& prompt_embeds, const SamplingOptions& options,
                          const StopRules& stop, const ExecContext& ctx, const LogitsObserver& observer,
                          const TokenObserver& on_token) {
  check_options(options, stop);
  check(prompt_embeds.defined() && prompt_embeds.dim() == 2 && prompt_embeds.size(0) >= 1,
        "generation: the prompt is empty");
  const int64_t n = prompt_embeds.size(0), D = lm.hidden_size();
  // Everything the request needs is allocated before the first step: the state at its final
  // capacity and the hidden-state rows (memory that is only reserved until a step writes it).
  const int64_t positions = n + options.max_new_tokens;
  const std::string asked = "a prompt of " + std::to_string(n) + " tokens and max_new_tokens " +
                            std::to_string(options.max_new_tokens) + " ask for " + std::to_string(positions) +
                            " positions";
  check(positions <= std::numeric_limits<int>::max(), "generation: " + asked + ", more than a state holds");
  LlmState state;
  Tensor hidden;
  try {
    state = lm.new_state(static_cast<int>(positions), static_cast<int>(n));
    hidden = Tensor::empty({positions - 1, D}, DType::F32, lm.device());
  } catch (const Error& e) {
    throw Error("generation: " + asked + "; their key/value cache does not fit (" + e.what() +
                "): lower max_new_tokens");
  }

  GenerationResult result;
  result.prompt_length = n;
  result.ids.reserve(static_cast<size_t>(std::min(options.max_new_tokens, 4096)));
  int64_t rows = n;
  const Tensor prefill = lm.forward(prompt_embeds, state, ctx);
  hidden.slice(0, 0, n).copy_from(prefill);
  const float* logits = lm.last_logits(state);
  const int64_t vocab = lm.vocab_size();

  uint64_t rng_state = options.seed;
  for (int step = 0;; ++step) {
    if (observer) observer(step, logits, vocab);
    const int32_t token = choose_token(logits, vocab, options, rng_state);
    result.ids.push_back(token);
    if (on_token) on_token(result.ids);
    if (const std::optional<StopReason> reason = stop_after(result.ids, stop)) {
      result.stop_reason = *reason;
      break;
    }
    if (step + 1 >= options.max_new_tokens) {
      result.stop_reason = StopReason::MaxTokens;
      break;
    }
    // One generated token, what a decoding speed counts: the layers and the output head.
    const profile::Scope timed("llm.decode_token");
    const Tensor h = lm.forward_token(token, state);
    hidden.slice(0, rows, rows + 1).copy_from(h);
    ++rows;
    logits = lm.last_logits(state);
  }
  result.hidden = hidden.slice(0, 0, rows);
  return result;
}

GenerationResult teacher_forced(const LanguageModel& lm, const Tensor& prompt_embeds,
                                const std::vector<int32_t>& answer_ids, int32_t eos_id, const ExecContext& ctx) {
  check(prompt_embeds.defined() && prompt_embeds.dim() == 2 && prompt_embeds.size(0) >= 1 &&
            prompt_embeds.size(1) == lm.hidden_size(),
        "teacher forcing: the prompt embeddings are empty or have the wrong width");
  check(!answer_ids.empty(), "teacher forcing: the answer has no tokens");
  const int64_t n = prompt_embeds.size(0), g = static_cast<int64_t>(answer_ids.size()), D = lm.hidden_size();
  const int64_t total = n + g;

  Tensor inputs = Tensor::empty({total, D}, DType::F32, lm.device());
  const Tensor prompt = prompt_embeds.dtype() == DType::F32 ? prompt_embeds.contiguous() : prompt_embeds.to(DType::F32);
  inputs.slice(0, 0, n).copy_from(prompt);
  inputs.slice(0, n, total).copy_from(lm.embed(answer_ids));

  LlmState state = lm.new_state(static_cast<int>(total));
  const Tensor hidden = lm.forward(inputs, state, ctx);

  if (ctx.recorder) {
    const int64_t V = lm.vocab_size(), tail = std::min<int64_t>(8, total);
    const Tensor last = lm.logits(hidden.slice(0, total - tail, total));
    ctx.recorder->record("llm.logits_last8", last);
    ctx.recorder->record("llm.logits_last", last.select(0, tail - 1));
    // Logits of every position, a block at a time (all at once would be N × V floats); they are
    // kept as llm.logits only when that stays small (kMaxRecordedLogits).
    Tensor ids = Tensor::empty({total}, DType::I64);
    Tensor all = total * V <= kMaxRecordedLogits ? Tensor::empty({total, V}) : Tensor();
    constexpr int64_t kBlock = 64;
    for (int64_t r0 = 0; r0 < total; r0 += kBlock) {
      const int64_t r1 = std::min(total, r0 + kBlock);
      const Tensor block = lm.logits(hidden.slice(0, r0, r1)).to(Device::cpu());
      for (int64_t r = r0; r < r1; ++r) ids.data<int64_t>()[r] = argmax(block.f32() + (r - r0) * V, V);
      if (all.defined()) std::memcpy(all.f32() + r0 * V, block.f32(), block.nbytes());
    }
    ctx.recorder->record("llm.argmax", ids);
    if (all.defined()) ctx.recorder->record("llm.logits", all);
  }

  GenerationResult result;
  result.ids = answer_ids;
  result.prompt_length = n;
  result.hidden = hidden.slice(0, 0, total - 1);
  result.stop_reason = answer_ids.back() == eos_id ? StopReason::Eos : StopReason::MaxTokens;
  return result;
}

Tensor seg_hidden_states(const GenerationResult& result, int32_t seg_id) {
  check(result.hidden.defined() && result.hidden.dim() == 2, "[SEG] selection: no hidden states");
  const int64_t rows = result.hidden.size(0);
  // The last generated id was never fed back, so only ids[0 .. G-2] have a hidden state.
  const int64_t n_out = result.ids.empty() ? 0 : static_cast<int64_t>(result.ids.size()) - 1;
  check(n_out <= rows, "[SEG] selection: " + std::to_string(rows) + " hidden states for " +
                           std::to_string(n_out) + " generated inputs");
  std::vector<int64_t> picked;
  for (int64_t j = 0; j < n_out; ++j)
    if (result.ids[static_cast<size_t>(j)] == seg_id) picked.push_back(rows - n_out + j);
  return ops::gather_rows(result.hidden, picked);
}

}  // namespace sa2va
