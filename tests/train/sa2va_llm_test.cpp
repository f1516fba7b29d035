// The language side of the upstream training step (fixture sa2va-tiny-train): mlp1, the Qwen2 model
// with LoRA, the token loss and text_hidden_fcs forward; backward to every LoRA tensor, mlp1,
// text_hidden_fcs and the tied embedding. The gradient that reaches the [SEG] embeddings from SAM2's
// mask losses is recovered exactly from the stored gradient of text_hidden_fcs.2.weight (which is
// Σ_seg d(embedding)·relu(h1)ᵀ, with three independent relu(h1) here).
#include "train/sa2va_llm.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ops/ops.h"
#include "test_util.h"
#include "train/gradient_check.h"

namespace sa2va {
namespace {

using test::rel_l2;

std::vector<int64_t> ids(const Tensor& t) {
  return std::vector<int64_t>(t.data<int64_t>(), t.data<int64_t>() + t.numel());
}

// The tiny model with the training fixture's LoRA initialisation.
train::TrainableLanguageModel fixture_model(const std::string& dir, const std::string& model_dir) {
  const auto inputs = SafetensorsFile::open(dir + "/inputs.safetensors");
  const auto meta = nlohmann::json::parse(std::ifstream(dir + "/meta.json"));
  std::map<std::string, std::pair<Tensor, Tensor>> lora;
  for (const auto& [name, info] : inputs->tensors())
    if (name.rfind("lora.", 0) == 0 && name.size() > 2 && name.compare(name.size() - 2, 2, ".A") == 0) {
      const std::string path = name.substr(5, name.size() - 7);
      lora[path] = {inputs->get(name), inputs->get("lora." + path + ".B")};
    }
  EXPECT_EQ(lora.size(), 14u);
  train::TrainableLanguageModel m = train::TrainableLanguageModel::load(
      Checkpoint::open(model_dir), load_config(model_dir), lora, meta["hyper"]["lora_scale"].get<float>());
  m.img_context_id = 151667;
  m.seg_id = 151674;
  return m;
}

TEST(TrainLanguageModel, ForwardAndBackwardMatchTheUpstreamStep) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-train");
  SA2VA_REQUIRE_FIXTURE(model_dir, "sa2va-tiny");
  const auto inputs = SafetensorsFile::open(dir + "/inputs.safetensors");
  const auto forward = SafetensorsFile::open(dir + "/forward.safetensors");
  const auto grads = SafetensorsFile::open(dir + "/grads.safetensors");
  train::TrainableLanguageModel m = fixture_model(dir, model_dir);

  std::vector<train::TrainableLanguageModel::Sample> samples;
  std::vector<train::TrainableLanguageModel::Forward> outs;
  int64_t supervised = 0;
  for (const std::string s : {"s0", "s1"}) {
    train::TrainableLanguageModel::Sample sample{ids(inputs->get(s + ".input_ids")), ids(inputs->get(s + ".labels")),
                                                 inputs->get(s + ".mlp1_input"), {}};
    const auto f = m.forward(sample);
    EXPECT_LE(rel_l2(f.vit_embeds, forward->get(s + ".vit_embeds")), 1e-5) << s;
    EXPECT_LE(rel_l2(f.last_hidden, forward->get(s + ".llm.last_hidden")), 1e-4) << s;
    EXPECT_LE(rel_l2(Tensor::from_vector(f.token_ce, {static_cast<int64_t>(f.token_ce.size())}),
                     forward->get(s + ".token_ce")), 1e-5) << s;
    EXPECT_LE(rel_l2(f.seg_hidden, forward->get(s + ".seg.hidden")), 1e-4) << s;
    EXPECT_LE(rel_l2(f.seg_embeds, forward->get(s + ".seg.embeds")), 1e-4) << s;
    supervised += static_cast<int64_t>(f.token_ce.size());
    samples.push_back(std::move(sample));
    outs.push_back(f);
  }
  ASSERT_EQ(supervised, 24);

  // The mask losses' gradient at the three [SEG] embeddings: solve G = DE·Aᵀ for DE with A = relu(h1).
  std::vector<std::vector<double>> a;  // per [SEG]: relu(h1) [64]
  for (const auto& f : outs)
    for (int64_t i = 0; i < f.seg_h1.size(0); ++i) {
      std::vector<double> row;
      for (int64_t j = 0; j < f.seg_h1.size(1); ++j) row.push_back(std::max(0.0f, f.seg_h1.f32()[i * f.seg_h1.size(1) + j]));
      a.push_back(row);
    }
  ASSERT_EQ(a.size(), 3u);
  double gram[3][3];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      gram[i][j] = 0;
      for (size_t k = 0; k < a[0].size(); ++k) gram[i][j] += a[i][k] * a[j][k];
    }
  // Inverse of the 3x3 Gram matrix by cofactors.
  const double det = gram[0][0] * (gram[1][1] * gram[2][2] - gram[1][2] * gram[2][1]) -
                     gram[0][1] * (gram[1][0] * gram[2][2] - gram[1][2] * gram[2][0]) +
                     gram[0][2] * (gram[1][0] * gram[2][1] - gram[1][1] * gram[2][0]);
  ASSERT_GT(std::fabs(det), 1e-12);
  double inv[3][3];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      const int r0 = (j + 1) % 3, r1 = (j + 2) % 3, c0 = (i + 1) % 3, c1 = (i + 2) % 3;
      inv[i][j] = (gram[r0][c0] * gram[r1][c1] - gram[r0][c1] * gram[r1][c0]) / det;
    }
  const Tensor gw2 = grads->get("grad.text_hidden_fcs.2.weight");  // [256, 64]
  const int64_t e = gw2.size(0), h = gw2.size(1);
  std::vector<Tensor> d_seg = {Tensor::empty({1, e}), Tensor::empty({2, e})};
  for (int64_t r = 0; r < e; ++r) {
    double ga[3] = {0, 0, 0};  // (G·A)[r, s]
    for (int s = 0; s < 3; ++s)
      for (int64_t k = 0; k < h; ++k) ga[s] += gw2.f32()[r * h + k] * a[static_cast<size_t>(s)][static_cast<size_t>(k)];
    for (int s = 0; s < 3; ++s) {
      double v = 0;
      for (int t = 0; t < 3; ++t) v += ga[t] * inv[t][s];
      (s == 0 ? d_seg[0].f32()[r] : d_seg[1].f32()[(s - 1) * e + r]) = static_cast<float>(v);
    }
  }

  train::TrainableLanguageModel::Grads g = m.zero_grads();
  EXPECT_FALSE(g.embedding_lookup.defined());  // training does not pay for it
  g.embedding_lookup = Tensor::zeros(g.embedding.shape());
  for (size_t i = 0; i < samples.size(); ++i)
    m.backward(samples[i], outs[i], 1.0f / static_cast<float>(supervised), d_seg[i], g);

  for (const auto& [name, grad] : g.tensors)
    EXPECT_LE(rel_l2(grad, grads->get("grad." + name)), 1e-4) << name;
  EXPECT_EQ(g.tensors.size(), 10u);  // mlp1 x 6, text_hidden_fcs x 4
  for (const auto& [path, lg] : g.lora) {
    EXPECT_LE(rel_l2(lg.da, grads->get("grad.lora." + path + ".A")), 1e-4) << path;
    EXPECT_LE(rel_l2(lg.db, grads->get("grad.lora." + path + ".B")), 1e-4) << path;
  }
  EXPECT_EQ(g.lora.size(), 14u);
  const std::string embed = "language_model.model.embed_tokens.weight";
  const std::vector<int64_t> rows = ids(grads->get("rows." + embed));
  EXPECT_LE(rel_l2(ops::gather_rows(g.embedding, rows), grads->get("grad." + embed)), 1e-4);
  EXPECT_LE(rel_l2(ops::gather_rows(g.embedding_lookup, rows), grads->get("grad_lookup." + embed)), 1e-4);
}

// Visual prompts place some image rows twice (a tile's token, then a region's): a sample whose
// image_rows repeat rows runs as one whose features hold those rows as copies, forward and backward
// (mlp1 works row by row, so its gradient is the copies' summed).
TEST(TrainLanguageModel, ImageRowsTakenTwiceActAsCopiesOfTheirFeatures) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-train");
  SA2VA_REQUIRE_FIXTURE(model_dir, "sa2va-tiny");
  const auto inputs = SafetensorsFile::open(dir + "/inputs.safetensors");
  const train::TrainableLanguageModel m = fixture_model(dir, model_dir);
  const Tensor vision = inputs->get("s0.mlp1_input");
  const int64_t rows = vision.size(0) * vision.size(1), width = vision.size(2);
  const std::vector<int64_t> repeated = {5, 9, 9, 0};

  train::TrainableLanguageModel::Sample by_index{ids(inputs->get("s0.input_ids")), ids(inputs->get("s0.labels")), vision, {}};
  const auto last_image = std::find(by_index.input_ids.rbegin(), by_index.input_ids.rend(), int64_t{151667}).base();
  const size_t at = static_cast<size_t>(last_image - by_index.input_ids.begin());
  by_index.input_ids.insert(by_index.input_ids.begin() + static_cast<std::ptrdiff_t>(at), repeated.size(), 151667);
  by_index.labels.insert(by_index.labels.begin() + static_cast<std::ptrdiff_t>(at), repeated.size(), -100);
  for (int64_t r = 0; r < rows; ++r) by_index.image_rows.push_back(r);
  by_index.image_rows.insert(by_index.image_rows.end(), repeated.begin(), repeated.end());

  Tensor copies = Tensor::empty({1, rows + static_cast<int64_t>(repeated.size()), width});
  const Tensor flat = vision.contiguous();
  std::copy_n(flat.f32(), rows * width, copies.f32());
  for (size_t i = 0; i < repeated.size(); ++i)
    std::copy_n(flat.f32() + repeated[i] * width, width, copies.f32() + (rows + static_cast<int64_t>(i)) * width);
  const train::TrainableLanguageModel::Sample by_copy{by_index.input_ids, by_index.labels, copies, {}};

  const auto fi = m.forward(by_index), fc = m.forward(by_copy);
  EXPECT_LE(rel_l2(fi.last_hidden, fc.last_hidden), 1e-6);
  ASSERT_EQ(fi.token_ce.size(), fc.token_ce.size());
  train::TrainableLanguageModel::Grads gi = m.zero_grads(), gc = m.zero_grads();
  const Tensor d_seg = test::random_normal(fi.seg_embeds.shape(), 3);
  m.backward(by_index, fi, 0.5f, d_seg, gi);
  m.backward(by_copy, fc, 0.5f, d_seg, gc);
  for (const std::string name : {"mlp1.0.weight", "mlp1.0.bias", "mlp1.1.weight", "mlp1.1.bias", "mlp1.3.weight",
                                 "mlp1.3.bias"})
    EXPECT_LE(rel_l2(gi.tensors.at(name), gc.tensors.at(name)), 1e-5) << name;
  EXPECT_LE(rel_l2(gi.embedding, gc.embedding), 1e-5);

  // A row outside the features, or fewer rows than image tokens, is refused.
  train::TrainableLanguageModel::Sample bad = by_index;
  bad.image_rows.back() = rows;
  EXPECT_THROW(m.forward(bad), Error);
  bad.image_rows.pop_back();
  EXPECT_THROW(m.forward(bad), Error);
}

}  // namespace
}  // namespace sa2va
