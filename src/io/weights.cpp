#include "io/weights.h"

#include "core/error.h"

namespace sa2va {

WeightFormat LoadPolicy::format_for(MatrixUse use) const {
  if (use == MatrixUse::LanguageModel && is_quantized(llm_format)) return llm_format;
  return precision == Precision::F32 ? WeightFormat::F32 : WeightFormat::BF16;
}

Weights::Weights(const Checkpoint& checkpoint, const LoadPolicy& policy) : checkpoint_(&checkpoint), policy_(policy) {
  check(policy.device.is_cpu(), "device " + policy.device.name() + ": this build of sa2va runs on the CPU only");
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

Tensor Weights::fetch(const std::string& name, const Shape& shape, Init init, bool optional) {
  if (!checkpoint_) {
    if (!optional) declared_.push_back({name, shape, init});
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

WeightMatrix Weights::prepare(const Tensor& matrix, MatrixUse use) const {
  // A 1×1 convolution [N, K, 1, 1] is a Linear layer.
  if (matrix.defined() && matrix.dim() == 4 && matrix.size(2) == 1 && matrix.size(3) == 1)
    return WeightMatrix::prepare(matrix.view({matrix.size(0), matrix.size(1)}), policy_.format_for(use));
  return WeightMatrix::prepare(matrix, policy_.format_for(use));
}

WeightMatrix Weights::matrix(const std::string& name, const Shape& shape, Init init, MatrixUse use) {
  return prepare(fetch(name, shape, init, false), use);
}

WeightMatrix Weights::optional_matrix(const std::string& name, const Shape& shape, Init init, MatrixUse use) {
  return prepare(fetch(name, shape, init, true), use);
}

Tensor Weights::stored(const std::string& name, const Shape& shape, Init init) {
  return fetch(name, shape, init, false);
}

ConvWeight Weights::conv(const std::string& name, const Shape& shape, Init init) {
  return ConvWeight::prepare(fetch(name, shape, init, false));
}

ConvWeight Weights::conv_transposed_2x2(const std::string& name, const Shape& shape, Init init) {
  return ConvWeight::prepare_transposed_2x2(fetch(name, shape, init, false));
}

Tensor Weights::f32(const std::string& name, const Shape& shape, Init init) {
  const Tensor t = fetch(name, shape, init, false);
  return !t.defined() || t.dtype() == DType::F32 ? t : t.to(DType::F32);
}

void Weights::finish() const {
  if (problems_.empty()) return;
  std::string msg = checkpoint_->dir() + ": " + std::to_string(problems_.size()) + " weight problem(s): ";
  for (size_t i = 0; i < problems_.size(); ++i) msg += (i ? "; " : "") + problems_[i];
  throw Error(msg);
}

}  // namespace sa2va
