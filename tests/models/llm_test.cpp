// Language model: conformance with the tiny Sa2VA fixture (Qwen2), the image-embedding splice,
// KV-cache decoding, and InternLM2's packed wqkv against a plain reference written here.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <memory>
#include <random>

#include "core/allocator.h"
#include "core/error.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "models/generation.h"
#include "models/llm.h"
#include "models/seg_projector.h"
#include "test_util.h"
#include "tiny_llm.h"

namespace sa2va {
namespace {

using test::kImEnd;
using test::kImgContext;
using test::kSegId;
using test::to_ids;

const Tensor* find_stage(const StageRecorder& rec, const std::string& name) {
  for (const auto& [n, t] : rec.stages())
    if (n == name) return &t;
  return nullptr;
}

std::string golden(const std::string& dir, const std::string& name) { return dir + "/goldens/" + name + ".safetensors"; }

// Teacher-forced pass over the golden LLM input of a case: prompt rows from llm.inputs_embeds,
// answer ids re-embedded by the model.
GenerationResult run_golden_case(const LanguageModel& lm, const std::string& file, StageRecorder* rec) {
  const std::vector<int32_t> ids = to_ids(test::load_golden(file, "input_ids"));
  const int64_t prompt_len = test::load_golden(file, "prompt_ids").numel();
  const Tensor embeds = test::load_golden(file, "llm.inputs_embeds");
  const std::vector<int32_t> answer(ids.begin() + prompt_len, ids.end());
  return teacher_forced(lm, embeds.slice(0, 0, prompt_len), answer, kImEnd, ExecContext::recording(rec));
}

TEST(LlmConformance, ImageCaseAllStages) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  auto m = test::load_tiny_language_model(dir, Precision::F32);
  m->weights->finish();
  const std::string file = golden(dir, "image");
  StageRecorder rec;
  const GenerationResult r = run_golden_case(m->lm, file, &rec);

  for (const char* name : {"llm.inputs_embeds", "llm.hidden_states", "llm.last_hidden_state", "llm.logits_last8",
                           "llm.logits_last"}) {
    const Tensor* got = find_stage(rec, name);
    ASSERT_NE(got, nullptr) << name;
    const Tensor want = test::load_golden(file, name);
    EXPECT_EQ(got->shape(), want.shape()) << name;
    EXPECT_TRUE(test::close_rel(*got, want, 1e-4)) << name;
    std::cout << "[f32] " << name << " max|diff|/rms " << test::compare(*got, want).rel() << "\n";
  }
  const Tensor* argmax = find_stage(rec, "llm.argmax");
  ASSERT_NE(argmax, nullptr);
  EXPECT_EQ(to_ids(*argmax), to_ids(test::load_golden(file, "llm.argmax")));

  // [SEG]: selected the way predict_forward does it, and at the golden positions.
  const Tensor seg_hidden = seg_hidden_states(r, kSegId);
  EXPECT_TRUE(test::close_rel(seg_hidden, test::load_golden(file, "seg.hidden"), 1e-4));
  const std::vector<int32_t> positions = to_ids(test::load_golden(file, "seg.positions"));
  ASSERT_EQ(positions.size(), 1u);
  EXPECT_TRUE(test::close_rel(r.hidden.slice(0, positions[0], positions[0] + 1), seg_hidden, 1e-6));
  EXPECT_TRUE(test::close_rel(m->seg.forward(seg_hidden), test::load_golden(file, "seg.embeds"), 1e-4));
}

TEST(LlmConformance, VideoAndVisualPromptSegHidden) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  auto m = test::load_tiny_language_model(dir, Precision::F32);
  for (const char* name : {"video", "vp"}) {
    const std::string file = golden(dir, name);
    const GenerationResult r = run_golden_case(m->lm, file, nullptr);
    if (std::string(name) == "video") {  // every position but the last (never fed back)
      const Tensor want = test::load_golden(file, "llm.last_hidden_state");
      EXPECT_TRUE(test::close_rel(r.hidden, want.slice(0, 0, want.size(0) - 1), 1e-4));
    }
    const Tensor seg_hidden = seg_hidden_states(r, kSegId);
    EXPECT_TRUE(test::close_rel(seg_hidden, test::load_golden(file, "seg.hidden"), 1e-4)) << name;
    EXPECT_TRUE(test::close_rel(m->seg.forward(seg_hidden), test::load_golden(file, "seg.embeds"), 1e-4)) << name;
  }
}

TEST(LlmConformance, SegProjectorFromGoldenHidden) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  auto m = test::load_tiny_language_model(dir, Precision::F32);
  const std::string file = golden(dir, "multiseg");
  EXPECT_TRUE(test::close_rel(m->seg.forward(test::load_golden(file, "seg.hidden")),
                              test::load_golden(file, "seg.embeds"), 1e-4));
  EXPECT_EQ(m->seg.forward(Tensor::zeros({0, 64})).shape(), (Shape{0, 256}));
  EXPECT_THROW(m->seg.forward(Tensor::zeros({1, 63})), Error);
}

// ---- splice --------------------------------------------------------------------------------

TEST(LlmSplice, ImageAndVideoReproduceGoldenInputs) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  auto m = test::load_tiny_language_model(dir, Precision::F32);
  for (const char* name : {"image", "video"}) {
    const std::string file = golden(dir, name);
    const std::vector<int32_t> ids = to_ids(test::load_golden(file, "input_ids"));
    const Tensor rows = image_replacement_rows(test::load_golden(file, "vit_embeds"));
    const Tensor spliced = splice_image_embeddings(m->lm.embed(ids), ids, kImgContext, rows);
    EXPECT_TRUE(test::close_rel(spliced, test::load_golden(file, "llm.inputs_embeds"), 1e-6)) << name;
  }
}

TEST(LlmSplice, VisualPromptRegionsFollowTheLastTile) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  auto m = test::load_tiny_language_model(dir, Precision::F32);
  const std::string file = golden(dir, "vp");
  const std::vector<int32_t> ids = to_ids(test::load_golden(file, "input_ids"));
  // Same image as the image case, hence the same features.
  const Tensor vit = test::load_golden(golden(dir, "image"), "vit_embeds");
  const Tensor regions = test::load_golden(file, "mask_prompts_16x16");
  const Tensor rows = image_replacement_rows(vit, {0, 0, 1}, regions);
  EXPECT_EQ(rows.size(0), 768 + 19 + 12);
  const Tensor spliced = splice_image_embeddings(m->lm.embed(ids), ids, kImgContext, rows);
  EXPECT_TRUE(test::close_rel(spliced, test::load_golden(file, "llm.inputs_embeds"), 1e-6));

  // The region order matters: swapping the two regions must not match.
  const Tensor swapped = Tensor::empty(regions.shape(), regions.dtype());
  std::memcpy(swapped.raw(), regions.select(0, 1).raw(), 256);
  std::memcpy(static_cast<uint8_t*>(swapped.raw()) + 256, regions.select(0, 0).raw(), 256);
  const Tensor wrong = splice_image_embeddings(m->lm.embed(ids), ids, kImgContext,
                                               image_replacement_rows(vit, {0, 0, 1}, swapped));
  EXPECT_FALSE(test::close_rel(wrong, test::load_golden(file, "llm.inputs_embeds"), 1e-3));
}

TEST(LlmSplice, CountMismatchNamesBothCounts) {
  const std::vector<int32_t> ids = {1, 7, 7, 2};
  const Tensor embeds = Tensor::zeros({4, 3});
  try {
    splice_image_embeddings(embeds, ids, 7, Tensor::zeros({3, 3}));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find('2'), std::string::npos) << msg;
    EXPECT_NE(msg.find('3'), std::string::npos) << msg;
  }
  const Tensor ok = splice_image_embeddings(embeds.clone(), ids, 7, Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3}));
  EXPECT_EQ(ok.to_vector(), (std::vector<float>{0, 0, 0, 1, 2, 3, 4, 5, 6, 0, 0, 0}));
  EXPECT_THROW(image_replacement_rows(Tensor::zeros({2, 4, 3}), {1}, Tensor::zeros({1, 4}, DType::U8)), Error);
  EXPECT_THROW(image_replacement_rows(Tensor::zeros({1, 4, 3}), {1}, Tensor::zeros({1, 5}, DType::U8)), Error);
}

// ---- KV cache --------------------------------------------------------------------------------

TEST(LlmState, PiecewiseDecodeEqualsFullRecompute) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  auto m = test::load_tiny_language_model(dir, Precision::F32);
  const Tensor embeds = test::load_golden(golden(dir, "image"), "llm.inputs_embeds").slice(0, 700, 790).contiguous();
  LlmState full_state = m->lm.new_state(90);
  const Tensor full = m->lm.forward(embeds, full_state).clone();

  // Prefill, single-token steps, multi-token chunks, in one state allocated at its final capacity.
  LlmState state = m->lm.new_state(90, 50);
  std::vector<Tensor> parts;
  int64_t at = 0;
  for (int64_t len : {50, 1, 1, 1, 3, 6, 28}) {
    parts.push_back(m->lm.forward(embeds.slice(0, at, at + len).contiguous(), state).clone());
    at += len;
  }
  ASSERT_EQ(at, 90);
  EXPECT_EQ(state.length(), 90);
  int64_t row = 0;
  for (const Tensor& p : parts) {
    EXPECT_TRUE(test::close_rel(p, full.slice(0, row, row + p.size(0)), 1e-5)) << "rows from " << row;
    row += p.size(0);
  }
  // Re-running the tail after truncation gives the same states again.
  state.truncate(60);
  EXPECT_TRUE(test::close_rel(m->lm.forward(embeds.slice(0, 60, 90).contiguous(), state), full.slice(0, 60, 90), 1e-5));
  // The state never grows: past its capacity or its largest step is an error, and it stays usable.
  EXPECT_THROW(m->lm.forward(embeds.slice(0, 0, 1).contiguous(), state), Error);
  state.truncate(10);
  EXPECT_THROW(m->lm.forward(embeds.slice(0, 0, 51).contiguous(), state), Error);
  EXPECT_EQ(state.length(), 10);
}

TEST(LlmState, DecodeStepsAllocateNothing) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  for (Precision precision : {Precision::F32, Precision::BF16}) {
    auto m = test::load_tiny_language_model(dir, precision);
    const std::vector<int32_t> prompt = {151644, 872, 198, 9707, 151645, 198, 151644, 77091, 198};
    LlmState state = m->lm.new_state(static_cast<int>(prompt.size()) + 8, static_cast<int>(prompt.size()));
    m->lm.forward(m->lm.embed(prompt), state);
    const float* logits = m->lm.last_logits(state);
    const Allocator& cpu = allocator_for(Device::cpu());
    std::vector<int32_t> tokens;
    const uint64_t before = cpu.allocations();
    for (int step = 0; step < 8; ++step) {
      tokens.push_back(static_cast<int32_t>(argmax(logits, m->lm.vocab_size())));
      m->lm.forward_token(tokens.back(), state);
      logits = m->lm.last_logits(state);
    }
    EXPECT_EQ(cpu.allocations(), before) << "decode steps allocated tensors";
    EXPECT_EQ(state.length(), static_cast<int>(prompt.size()) + 8);
    EXPECT_THROW(m->lm.forward_token(0, state), Error);  // capacity reached
    // The same tokens fed as embeddings in one step give the same last logits.
    std::vector<int32_t> all = prompt;
    all.insert(all.end(), tokens.begin(), tokens.end());
    LlmState whole = m->lm.new_state(static_cast<int>(all.size()));
    m->lm.forward(m->lm.embed(all), whole);
    const Tensor want = Tensor::from_vector(std::vector<float>(logits, logits + m->lm.vocab_size()), {m->lm.vocab_size()});
    const float* got = m->lm.last_logits(whole);
    const Tensor have = Tensor::from_vector(std::vector<float>(got, got + m->lm.vocab_size()), {m->lm.vocab_size()});
    EXPECT_TRUE(test::close_rel(have, want, precision == Precision::F32 ? 1e-4 : 0.1));
  }
}

TEST(LlmErrors, BadInputsThrow) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  auto m = test::load_tiny_language_model(dir, Precision::F32);
  EXPECT_THROW(m->lm.embed({0, 151936}), Error);
  EXPECT_THROW(m->lm.embed({-1}), Error);
  LlmState state = m->lm.new_state(4);
  EXPECT_THROW(m->lm.forward(Tensor::zeros({2, 63}), state), Error);
  EXPECT_THROW(m->lm.forward_token(151936, state), Error);
  EXPECT_THROW(m->lm.last_logits(state), Error);  // nothing run yet
  EXPECT_THROW(m->lm.logits(Tensor::zeros({2, 65})), Error);
  EXPECT_EQ(state.length(), 0);
}

TEST(LlmPrecision, Bf16ModeError) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  auto m = test::load_tiny_language_model(dir, Precision::BF16);
  m->weights->finish();
  const std::string file = golden(dir, "image");
  StageRecorder rec;
  const GenerationResult r = run_golden_case(m->lm, file, &rec);
  const test::Diff hidden = test::compare(*find_stage(rec, "llm.last_hidden_state"),
                                          test::load_golden(file, "llm.last_hidden_state"));
  const test::Diff logits = test::compare(*find_stage(rec, "llm.logits_last8"), test::load_golden(file, "llm.logits_last8"));
  const std::vector<int32_t> got = to_ids(*find_stage(rec, "llm.argmax")), want = to_ids(test::load_golden(file, "llm.argmax"));
  int same = 0;
  for (size_t i = 0; i < got.size(); ++i) same += got[i] == want[i];
  std::cout << "[bf16] last_hidden_state max|diff|/rms " << hidden.rel() << ", logits_last8 " << logits.rel()
            << ", argmax agreement " << same << "/" << got.size() << "\n";
  RecordProperty("bf16_hidden_rel", std::to_string(hidden.rel()));
  RecordProperty("bf16_logits_rel", std::to_string(logits.rel()));
  EXPECT_LT(hidden.rel(), 0.15);
  EXPECT_LT(logits.rel(), 0.15);
  EXPECT_GE(same, static_cast<int>(got.size() * 90 / 100));
  EXPECT_TRUE(test::close_rel(seg_hidden_states(r, kSegId), test::load_golden(file, "seg.hidden"), 0.15));
}

// ---- InternLM2: packed wqkv against a plain reference ------------------------------------------

struct RefModel {
  int D = 32, L = 2, H = 4, KV = 2, hd = 8, I = 48, V = 50;
  float eps = 1e-5f, theta = 10000.f;
};

// Straightforward per-token InternLM2, reading wqkv by the layout of docs/llm.md §3.2 (double precision).
std::vector<std::vector<double>> reference_internlm2(const RefModel& s, const Checkpoint& ck, bool bias,
                                                    const std::vector<int32_t>& ids) {
  auto get = [&](const std::string& name) { return ck.get(name).to_vector(); };
  auto matvec = [](const std::vector<float>& w, const std::vector<double>& x, int64_t rows) {
    std::vector<double> y(static_cast<size_t>(rows), 0.0);
    const int64_t cols = static_cast<int64_t>(x.size());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) y[r] += w[r * cols + c] * x[c];
    return y;
  };
  auto rms = [&](const std::vector<double>& x, const std::vector<float>& w) {
    double ms = 0;
    for (double v : x) ms += v * v;
    const double inv = 1.0 / std::sqrt(ms / x.size() + s.eps);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * w[i];
    return y;
  };
  auto rope = [&](double* v, int64_t pos) {
    const int half = s.hd / 2;
    for (int k = 0; k < half; ++k) {
      const double ang = pos / std::pow(static_cast<double>(s.theta), 2.0 * k / s.hd);
      const double a = v[k], b = v[k + half];
      v[k] = a * std::cos(ang) - b * std::sin(ang);
      v[k + half] = b * std::cos(ang) + a * std::sin(ang);
    }
  };
  const std::vector<float> emb = get("language_model.model.tok_embeddings.weight");
  const int64_t T = static_cast<int64_t>(ids.size()), n_rep = s.H / s.KV, group = (n_rep + 2) * s.hd;
  std::vector<std::vector<double>> x(T, std::vector<double>(s.D));
  for (int64_t t = 0; t < T; ++t)
    for (int d = 0; d < s.D; ++d) x[t][d] = emb[ids[t] * s.D + d];
  for (int l = 0; l < s.L; ++l) {
    const std::string p = "language_model.model.layers." + std::to_string(l) + ".";
    const std::vector<float> wqkv = get(p + "attention.wqkv.weight"), wo = get(p + "attention.wo.weight");
    const std::vector<float> bqkv = bias ? get(p + "attention.wqkv.bias") : std::vector<float>(wqkv.size() / s.D, 0.f);
    const std::vector<float> bo = bias ? get(p + "attention.wo.bias") : std::vector<float>(s.D, 0.f);
    // q[t][h][d], k/v[t][g][d]
    std::vector<std::vector<double>> q(T, std::vector<double>(s.H * s.hd)), k(T, std::vector<double>(s.KV * s.hd)),
        v(T, std::vector<double>(s.KV * s.hd));
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> qkv = matvec(wqkv, rms(x[t], get(p + "attention_norm.weight")), group * s.KV);
      for (size_t i = 0; i < qkv.size(); ++i) qkv[i] += bqkv[i];
      for (int qh = 0; qh < s.H; ++qh)
        for (int d = 0; d < s.hd; ++d) q[t][qh * s.hd + d] = qkv[(qh / n_rep) * group + (qh % n_rep) * s.hd + d];
      for (int g = 0; g < s.KV; ++g)
        for (int d = 0; d < s.hd; ++d) {
          k[t][g * s.hd + d] = qkv[g * group + n_rep * s.hd + d];
          v[t][g * s.hd + d] = qkv[g * group + (n_rep + 1) * s.hd + d];
        }
      for (int qh = 0; qh < s.H; ++qh) rope(&q[t][qh * s.hd], t);
      for (int g = 0; g < s.KV; ++g) rope(&k[t][g * s.hd], t);
    }
    std::vector<std::vector<double>> next = x;
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> heads(s.H * s.hd, 0.0);
      for (int qh = 0; qh < s.H; ++qh) {
        const int g = qh / n_rep;
        std::vector<double> score(t + 1);
        double mx = -1e300, sum = 0;
        for (int64_t j = 0; j <= t; ++j) {
          double dot = 0;
          for (int d = 0; d < s.hd; ++d) dot += q[t][qh * s.hd + d] * k[j][g * s.hd + d];
          score[j] = dot / std::sqrt(static_cast<double>(s.hd));
          mx = std::max(mx, score[j]);
        }
        for (auto& sc : score) sum += (sc = std::exp(sc - mx));
        for (int64_t j = 0; j <= t; ++j)
          for (int d = 0; d < s.hd; ++d) heads[qh * s.hd + d] += score[j] / sum * v[j][g * s.hd + d];
      }
      const std::vector<double> o = matvec(wo, heads, s.D);
      for (int d = 0; d < s.D; ++d) next[t][d] += o[d] + bo[d];
      const std::vector<double> h2 = rms(next[t], get(p + "ffn_norm.weight"));
      const std::vector<double> gate = matvec(get(p + "feed_forward.w1.weight"), h2, s.I);
      const std::vector<double> up = matvec(get(p + "feed_forward.w3.weight"), h2, s.I);
      std::vector<double> act(s.I);
      for (int i = 0; i < s.I; ++i) act[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
      const std::vector<double> down = matvec(get(p + "feed_forward.w2.weight"), act, s.D);
      for (int d = 0; d < s.D; ++d) next[t][d] += down[d];
    }
    x = next;
  }
  const std::vector<float> norm = get("language_model.model.norm.weight");
  for (auto& row : x) row = rms(row, norm);
  return x;
}

TEST(LlmInternLM2, PackedWqkvMatchesReference) {
  const RefModel s;
  for (bool bias : {false, true}) {
    ModelConfig cfg;
    cfg.llm.arch = LlmArch::InternLM2;
    cfg.llm.architecture = "InternLM2ForCausalLM";
    cfg.llm.hidden_size = s.D;
    cfg.llm.num_layers = s.L;
    cfg.llm.num_heads = s.H;
    cfg.llm.num_kv_heads = s.KV;
    cfg.llm.head_dim = s.hd;
    cfg.llm.intermediate_size = s.I;
    cfg.llm.vocab_size = s.V;
    cfg.llm.rms_norm_eps = s.eps;
    cfg.llm.rope_theta = s.theta;
    cfg.llm.attention_bias = bias;
    cfg.llm.tie_word_embeddings = false;

    // Random checkpoint from the names and shapes load() declares.
    Weights decl = Weights::declaring(Precision::F32);
    LanguageModel::load(decl, cfg);
    std::mt19937 rng(bias ? 11 : 7);
    std::normal_distribution<float> normal(0.f, 1.f);
    std::vector<std::pair<std::string, Tensor>> tensors;
    bool has_output = false;
    for (const DeclaredTensor& d : decl.declared()) {
      Tensor t = Tensor::empty(d.shape);
      const double fan_in = d.shape.size() > 1 ? static_cast<double>(d.shape[1]) : 1.0;
      for (int64_t i = 0; i < t.numel(); ++i) {
        const float r = normal(rng);
        t.f32()[i] = d.init == Init::NormWeight ? 1.f + 0.1f * r
                     : d.init == Init::Linear   ? r * static_cast<float>(1.5 / std::sqrt(fan_in))
                                                : 0.3f * r;
      }
      has_output |= d.name == "language_model.output.weight";
      tensors.emplace_back(d.name, t);
    }
    ASSERT_TRUE(has_output);
    const std::string dir = test::temp_dir(bias ? "internlm2_bias" : "internlm2");
    write_safetensors(dir + "/model.safetensors", tensors);
    const Checkpoint ck = Checkpoint::open(dir);
    Weights w(ck, Precision::F32);
    const LanguageModel lm = LanguageModel::load(w, cfg);
    w.finish();

    const std::vector<int32_t> ids = {3, 17, 42, 0, 49, 8, 8, 21, 5};
    const auto ref = reference_internlm2(s, ck, bias, ids);
    Tensor want = Tensor::empty({static_cast<int64_t>(ids.size()), s.D});
    for (size_t t = 0; t < ids.size(); ++t)
      for (int d = 0; d < s.D; ++d) want.f32()[t * s.D + d] = static_cast<float>(ref[t][d]);

    // Prefill of 6 (blocked attention), then single-token decode steps.
    LlmState state = lm.new_state(static_cast<int>(ids.size()), 6);
    const Tensor a = lm.forward(lm.embed(std::vector<int32_t>(ids.begin(), ids.begin() + 6)), state);
    EXPECT_TRUE(test::close_rel(a, want.slice(0, 0, 6), 1e-4)) << "bias " << bias;
    for (size_t t = 6; t < ids.size(); ++t)
      EXPECT_TRUE(test::close_rel(lm.forward_token(ids[t], state), want.slice(0, t, t + 1), 1e-4))
          << "bias " << bias << " position " << t;

    // Untied head: logits use language_model.output.weight.
    const std::vector<float> head = ck.get("language_model.output.weight").to_vector();
    Tensor want_logits = Tensor::empty({1, s.V});
    for (int r = 0; r < s.V; ++r) {
      double acc = 0;
      for (int d = 0; d < s.D; ++d) acc += head[r * s.D + d] * ref.back()[d];
      want_logits.f32()[r] = static_cast<float>(acc);
    }
    EXPECT_TRUE(test::close_rel(lm.logits(want.slice(0, ids.size() - 1, ids.size())), want_logits, 1e-4));
  }
}

// A one-layer language model small enough to declare or write in a test.
ModelConfig small_llm_config() {
  ModelConfig cfg;
  cfg.llm.hidden_size = 16;
  cfg.llm.num_layers = 1;
  cfg.llm.num_heads = 2;
  cfg.llm.num_kv_heads = 1;
  cfg.llm.head_dim = 8;
  cfg.llm.intermediate_size = 24;
  cfg.llm.vocab_size = 10;
  return cfg;
}

TEST(LlmLoad, DeclaresTheCheckpointNames) {
  ModelConfig cfg = small_llm_config();
  for (bool tied : {true, false}) {
    cfg.llm.tie_word_embeddings = tied;
    Weights decl = Weights::declaring();
    LanguageModel::load(decl, cfg);
    std::vector<std::string> names;
    for (const DeclaredTensor& d : decl.declared()) names.push_back(d.name);
    EXPECT_EQ(names.size(), tied ? 14u : 15u);
    EXPECT_EQ(std::count(names.begin(), names.end(), "language_model.lm_head.weight"), tied ? 0 : 1);
    EXPECT_EQ(std::count(names.begin(), names.end(), "language_model.model.layers.0.self_attn.k_proj.bias"), 1);
  }
  cfg.llm.num_kv_heads = 3;
  Weights decl = Weights::declaring();
  EXPECT_THROW(LanguageModel::load(decl, cfg), Error);
}

// Upstream's rule: the checkpoint's own head when it has one, else the embedding matrix, whatever
// tie_word_embeddings says.
TEST(LlmLoad, HeadFallsBackToTheEmbeddingWithoutAHeadTensor) {
  for (LlmArch arch : {LlmArch::Qwen2, LlmArch::InternLM2}) {
    ModelConfig cfg = small_llm_config();
    cfg.llm.arch = arch;
    cfg.llm.architecture = arch == LlmArch::Qwen2 ? "Qwen2ForCausalLM" : "InternLM2ForCausalLM";
    cfg.llm.attention_bias = arch == LlmArch::Qwen2;
    const std::string head = arch == LlmArch::Qwen2 ? "language_model.lm_head.weight" : "language_model.output.weight";
    const std::string embedding = arch == LlmArch::Qwen2 ? "language_model.model.embed_tokens.weight"
                                                         : "language_model.model.tok_embeddings.weight";
    for (bool tied : {false, true}) {
      for (bool with_head : {false, true}) {
        cfg.llm.tie_word_embeddings = tied;
        Weights decl = Weights::declaring(Precision::F32);
        LanguageModel::load(decl, cfg);
        std::mt19937 rng(3);
        std::normal_distribution<float> normal(0.f, 1.f);
        std::vector<std::pair<std::string, Tensor>> tensors;
        for (const DeclaredTensor& d : decl.declared()) {
          if (d.name == head) continue;
          Tensor t = Tensor::empty(d.shape);
          for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = normal(rng);
          tensors.emplace_back(d.name, t);
        }
        Tensor head_weights = Tensor::empty({10, 16});
        for (int64_t i = 0; i < head_weights.numel(); ++i) head_weights.f32()[i] = normal(rng);
        if (with_head) tensors.emplace_back(head, head_weights);
        const std::string dir = test::temp_dir("untied-head");
        write_safetensors(dir + "/model.safetensors", tensors);
        const Checkpoint ck = Checkpoint::open(dir);
        Weights w(ck, Precision::F32);
        const LanguageModel lm = LanguageModel::load(w, cfg);
        EXPECT_NO_THROW(w.finish()) << "tied " << tied << ", head " << with_head;

        Tensor h = Tensor::empty({1, 16});
        for (int64_t i = 0; i < 16; ++i) h.f32()[i] = normal(rng);
        const std::vector<float> matrix = with_head ? head_weights.to_vector() : ck.get(embedding).to_vector();
        Tensor want = Tensor::empty({1, 10});
        for (int r = 0; r < 10; ++r) {
          double acc = 0;
          for (int d = 0; d < 16; ++d) acc += static_cast<double>(matrix[r * 16 + d]) * h.f32()[d];
          want.f32()[r] = static_cast<float>(acc);
        }
        EXPECT_TRUE(test::close_rel(lm.logits(h), want, 1e-5)) << "tied " << tied << ", head " << with_head;
      }
    }
  }
}

}  // namespace
}  // namespace sa2va
