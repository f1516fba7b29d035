// The tiny fixture's language model and [SEG] projector loaded on their own (no vision, no SAM2),
// shared by the LLM and generation tests; plus the fixture's special-token ids.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/config.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "models/llm.h"
#include "models/seg_projector.h"

namespace sa2va::test {

constexpr int32_t kImgContext = 151667;
constexpr int32_t kSegId = 151674;
constexpr int32_t kImEnd = 151645;

struct TinyLanguageModel {
  Checkpoint checkpoint;
  ModelConfig config;
  std::unique_ptr<Weights> weights;
  LanguageModel lm;
  SegProjector seg;
};

inline std::unique_ptr<TinyLanguageModel> load_tiny_language_model(const std::string& dir, Precision precision) {
  auto m = std::make_unique<TinyLanguageModel>();
  m->checkpoint = Checkpoint::open(dir);
  m->config = load_config(dir);
  m->weights = std::make_unique<Weights>(m->checkpoint, precision);
  m->lm = LanguageModel::load(*m->weights, m->config);
  m->seg = SegProjector::load(*m->weights, m->config);
  return m;
}

// An I64 golden tensor of token ids as int32.
inline std::vector<int32_t> to_ids(const Tensor& t) {
  std::vector<int32_t> ids;
  const Tensor c = t.contiguous();
  for (int64_t i = 0; i < c.numel(); ++i) ids.push_back(static_cast<int32_t>(c.data<int64_t>()[i]));
  return ids;
}

}  // namespace sa2va::test
