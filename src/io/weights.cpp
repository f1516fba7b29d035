#include "io/weights.h"

#include "core/error.h"

namespace sa2va {

Weights::Weights(const Checkpoint& checkpoint, Precision precision) : checkpoint_(&checkpoint), precision_(precision) {}

Weights Weights::declaring(Precision precision) {
  Weights w;
  w.precision_ = precision;
  return w;
}

bool Weights::has(const std::string& name) const { return checkpoint_ && checkpoint_->has(name); }

Tensor Weights::fetch(const std::string& name, const Shape& shape, Init init, bool as_matrix, bool optional) {
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
  Tensor t = checkpoint_->get(name);
  const DType want = as_matrix && precision_ == Precision::BF16 ? DType::BF16 : DType::F32;
  // Already in the compute dtype: used in place from the map (the reader guarantees element
  // alignment; kernels use unaligned vector loads), no copy.
  if (t.dtype() == want) return t;
  if (t.dtype() == DType::F16 && want == DType::BF16) return t.to(DType::F32).to(DType::BF16);
  return t.to(want);
}

Tensor Weights::matrix(const std::string& name, const Shape& shape, Init init) {
  return fetch(name, shape, init, true, false);
}

Tensor Weights::f32(const std::string& name, const Shape& shape, Init init) {
  return fetch(name, shape, init, false, false);
}

Tensor Weights::optional_matrix(const std::string& name, const Shape& shape, Init init) {
  return fetch(name, shape, init, true, true);
}

void Weights::finish() const {
  if (problems_.empty()) return;
  std::string msg = checkpoint_->dir() + ": " + std::to_string(problems_.size()) + " weight problem(s): ";
  for (size_t i = 0; i < problems_.size(); ++i) msg += (i ? "; " : "") + problems_[i];
  throw Error(msg);
}

}  // namespace sa2va
