#include "io/weights.h"

#include <algorithm>

#include "core/error.h"
#include "ops/ops.h"

namespace sa2va {

WeightFormat LoadPolicy::format_for(MatrixUse use) const {
  if (use == MatrixUse::LanguageModel && is_quantized(llm_format)) return llm_format;
  return precision == Precision::F32 ? WeightFormat::F32 : WeightFormat::BF16;
}

Weights::Weights(const Checkpoint& checkpoint, const LoadPolicy& policy) : checkpoint_(&checkpoint), policy_(policy) {
  // A GPU that cannot be used says why (no driver, no such device, too old) before anything loads.
  if (!policy.device.is_cpu()) const DeviceScope probe(policy.device);
  check(!is_quantized(policy.llm_format) || policy.llm_format == WeightFormat::Q8_0 ||
            policy.llm_format == WeightFormat::Q4_0,
        "unsupported language-model weight format");
}

Weights Weights::declaring(const LoadPolicy& policy) {
  Weights w;
  w.policy_ = policy;
  return w;
}

bool Weights::has(const std::string& name) const { return checkpoint_ && checkpoint_->has(name); }

Tensor Weights::fetch(const std::string& name, const Shape& shape, Init init, bool optional, MatrixUse use) {
  if (!checkpoint_) {
    if (!optional) declared_.push_back({name, shape, init, use});
    return Tensor();
  }
  if (!checkpoint_->has(name)) {
    if (!optional) problems_.push_back("missing '" + name + "' " + shape_str(shape));
    return Tensor();
  }
  const TensorInfo& info = checkpoint_->info(name);
  if (info.shape != shape) {
    problems_.push_back("'" + name + "' has shape " + shape_str(info.shape) + ", expected " + shape_str(shape));
    return Tensor();
  }
  if (info.dtype != DType::F32 && info.dtype != DType::BF16 && info.dtype != DType::F16) {
    problems_.push_back("'" + name + "' has dtype " + dtype_name(info.dtype) + ", expected a float type");
    return Tensor();
  }
  // Used in place from the map (the reader guarantees element alignment; kernels use unaligned
  // vector loads); prepare() copies only what changes format.
  return checkpoint_->get(name);
}

WeightMatrix Weights::prepare(const Tensor& stored, MatrixUse use) const {
  // Conversions and quantization run on the host; the result goes to the policy's device.
  const Tensor matrix = stored.defined() && !stored.device().is_cpu() ? stored.to(Device::cpu()) : stored;
  // A 1×1 convolution [N, K, 1, 1] is a Linear layer.
  const bool one_by_one = matrix.defined() && matrix.dim() == 4 && matrix.size(2) == 1 && matrix.size(3) == 1;
  const WeightMatrix m = place(WeightMatrix::prepare(
      one_by_one ? matrix.view({matrix.size(0), matrix.size(1)}) : matrix, policy_.format_for(use)));
  return use == MatrixUse::ImageTokens ? ops::many_rows_layout(m, arena_.get()) : m;
}

WeightMatrix Weights::place(const WeightMatrix& m) const {
  return policy_.device.is_cpu() || !m.defined() ? m : m.to(policy_.device);
}

Tensor Weights::place(const Tensor& t) const {
  return policy_.device.is_cpu() || !t.defined() ? t : t.to(policy_.device);
}

ConvWeight Weights::place(ConvWeight c) const {
  c.matrix = place(c.matrix);
  return c;
}

bool Weights::stored_quantized(const std::string& name) const {
  return checkpoint_ && checkpoint_->has(name) && checkpoint_->info(name).dtype == DType::U8;
}

WeightMatrix Weights::quantized(const std::string& name, const Shape& shape, MatrixUse use) {
  const TensorInfo& info = checkpoint_->info(name);
  if (use != MatrixUse::LanguageModel || shape.size() != 2) {
    problems_.push_back("'" + name + "' is stored quantized, which only the language model's matrices may be");
    return WeightMatrix();
  }
  if (checkpoint_->file_metadata(name, kQuantLayoutKey) != kQuantLayout) {
    problems_.push_back("'" + name + "' is stored quantized in a layout this version does not know (metadata " +
                        std::string(kQuantLayoutKey) + " is not " + kQuantLayout +
                        "; re-run sa2va quantize on the original checkpoint)");
    return WeightMatrix();
  }
  const int64_t rows = shape[0], cols = shape[1];
  WeightFormat format = WeightFormat::Q8_0;
  if (info.shape.size() == 2 && info.shape[1] == WeightMatrix::quantized_row_bytes(WeightFormat::Q4_0, cols))
    format = WeightFormat::Q4_0;
  if (is_quantized(policy_.llm_format) && policy_.llm_format != format) {
    problems_.push_back("'" + name + "' is stored as " + weight_format_name(format) + " and cannot be loaded as " +
                        weight_format_name(policy_.llm_format) + " (quantize the original checkpoint instead)");
    return WeightMatrix();
  }
  const std::string scales = name + kScalesSuffix;
  if (!checkpoint_->has(scales)) {
    problems_.push_back("'" + name + "' is stored quantized but its scales '" + scales + "' are missing");
    return WeightMatrix();
  }
  try {
    return place(WeightMatrix::from_parts(format, rows, cols, checkpoint_->get(name), checkpoint_->get(scales)));
  } catch (const Error& e) {
    problems_.push_back("'" + name + "': " + e.what());
    return WeightMatrix();
  }
}

void Weights::release(const Tensor& stored_tensor) const {
  if (checkpoint_) checkpoint_->release(stored_tensor);
}

namespace {

// The prepared form is a copy (another format): the stored bytes are no longer needed in memory.
void release_if_copied(const Weights& w, const Tensor& stored, const Tensor& prepared) {
  if (stored.defined() && prepared.defined() && prepared.device_data() != stored.device_data()) w.release(stored);
}

}  // namespace

WeightMatrix Weights::matrix(const std::string& name, const Shape& shape, Init init, MatrixUse use) {
  if (stored_quantized(name)) return quantized(name, shape, use);
  const Tensor stored = fetch(name, shape, init, false, use);
  WeightMatrix m = prepare(stored, use);
  if (m.defined()) release_if_copied(*this, stored, m.values());
  return m;
}

WeightMatrix Weights::optional_matrix(const std::string& name, const Shape& shape, Init init, MatrixUse use) {
  if (stored_quantized(name)) return quantized(name, shape, use);
  const Tensor stored = fetch(name, shape, init, true, use);
  WeightMatrix m = prepare(stored, use);
  if (m.defined()) release_if_copied(*this, stored, m.values());
  return m;
}

Tensor Weights::stored(const std::string& name, const Shape& shape, Init init) {
  return fetch(name, shape, init, false);
}

ConvWeight Weights::conv(const std::string& name, const Shape& shape, Init init) {
  const Tensor stored = fetch(name, shape, init, false);
  const ConvWeight c = place(ConvWeight::prepare(stored));
  if (c.matrix.defined()) release_if_copied(*this, stored, c.matrix.values());
  return c;
}

ConvWeight Weights::conv_transposed_2x2(const std::string& name, const Shape& shape, Init init) {
  return place(ConvWeight::prepare_transposed_2x2(fetch(name, shape, init, false)));
}

Tensor Weights::f32(const std::string& name, const Shape& shape, Init init) {
  const Tensor t = fetch(name, shape, init, false);
  if (!t.defined()) return t;
  const Tensor converted = t.dtype() == DType::F32 ? t : t.to(DType::F32);
  const Tensor placed = place(converted);
  if (placed.device_data() != t.device_data()) release(t);
  return placed;
}

void Weights::finish() const {
  if (problems_.empty()) return;
  std::string msg = checkpoint_->dir() + ": " + std::to_string(problems_.size()) + " weight problem(s): ";
  // The first few in full: one cause (a wrong format, another model) usually repeats for every matrix.
  constexpr size_t kListed = 6;
  for (size_t i = 0; i < std::min(problems_.size(), kListed); ++i) msg += (i ? "; " : "") + problems_[i];
  if (problems_.size() > kListed) msg += "; and " + std::to_string(problems_.size() - kListed) + " more";
  throw Error(msg);
}

}  // namespace sa2va
