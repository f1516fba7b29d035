#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "core/allocator.h"
#include "core/error.h"

namespace sa2va {

std::string shape_str(const Shape& shape) {
  std::ostringstream s;
  s << '[';
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << ']';
  return s.str();
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

static Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) check(d >= 0, "negative tensor dimension in " + shape_str(shape));
  Tensor t;
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  try {
    t.storage_ = allocator_for(device).allocate(bytes);
  } catch (const Error& e) {
    throw Error(std::string(e.what()) + " (tensor " + shape_str(shape) + " " + dtype_name(dtype) + ")");
  }
  t.device_ = device;
  t.base_ = t.storage_.get();
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  allocator_for(device).fill_zero(t.base_, t.nbytes());
  return t;
}

Tensor Tensor::borrow(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> keep_alive) {
  Tensor t;
  t.storage_ = keep_alive ? std::move(keep_alive) : std::shared_ptr<void>(data, [](void*) {});
  t.base_ = data;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& values, const Shape& shape) {
  check(static_cast<int64_t>(values.size()) == shape_numel(shape),
        "from_vector: " + std::to_string(values.size()) + " values for shape " + shape_str(shape));
  Tensor t = empty(shape, DType::F32);
  if (!values.empty()) std::memcpy(t.base_, values.data(), values.size() * sizeof(float));
  return t;
}

int64_t Tensor::size(int64_t d) const {
  if (d < 0) d += dim();
  check(d >= 0 && d < dim(), "tensor dimension index out of range");
  return shape_[static_cast<size_t>(d)];
}

bool Tensor::is_contiguous() const { return strides_ == contiguous_strides(shape_); }

void Tensor::throw_not_on_host() const {
  throw Error("host access to a " + shape_str(shape_) + " tensor that lives on " + device_.name());
}

float* Tensor::f32() const {
  if (dtype_ != DType::F32) throw Error(std::string("expected an F32 tensor, got ") + dtype_name(dtype_));
  return data<float>();
}

float* Tensor::kernel_f32() const {
  if (dtype_ != DType::F32) throw Error(std::string("expected an F32 tensor, got ") + dtype_name(dtype_));
  return static_cast<float*>(device_data());
}

void Tensor::copy_from(const Tensor& src) const {
  check(src.numel() == numel() && src.dtype() == dtype_ && is_contiguous() && src.is_contiguous(),
        "tensor copy: " + shape_str(src.shape()) + " " + dtype_name(src.dtype()) + " into " + shape_str(shape_) + " " +
            dtype_name(dtype_) + " (both contiguous, same size and dtype)");
  if (nbytes() == 0) return;
  if (src.device() == device_) {
    if (device_.is_cpu()) std::memcpy(device_data(), src.device_data(), nbytes());
    else allocator_for(device_).copy_within(device_data(), src.device_data(), nbytes());
  } else if (src.device().is_cpu()) {
    allocator_for(device_).copy_from_host(device_data(), src.device_data(), nbytes());
  } else if (device_.is_cpu()) {
    allocator_for(src.device()).copy_to_host(device_data(), src.device_data(), nbytes());
  } else {
    copy_from(src.to(Device::cpu()));
  }
}

uint16_t* Tensor::bf16() const {
  if (dtype_ != DType::BF16) throw Error(std::string("expected a BF16 tensor, got ") + dtype_name(dtype_));
  return data<uint16_t>();
}

Tensor Tensor::view(const Shape& shape) const {
  check(is_contiguous(), "view() of a non-contiguous tensor");
  Shape s = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) { check(infer < 0, "view(): more than one -1"); infer = static_cast<int64_t>(i); }
    else known *= s[i];
  }
  if (infer >= 0) s[static_cast<size_t>(infer)] = known ? numel() / known : 0;
  check(shape_numel(s) == numel(), "view(): cannot view " + shape_str(shape_) + " as " + shape_str(shape));
  Tensor t = *this;
  t.shape_ = s;
  t.strides_ = contiguous_strides(s);
  return t;
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end) const {
  if (d < 0) d += dim();
  check(d >= 0 && d < dim() && 0 <= start && start <= end && end <= shape_[d],
        "slice out of range on " + shape_str(shape_));
  Tensor t = *this;
  t.offset_ += start * strides_[d];
  t.shape_[d] = end - start;
  return t;
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  if (d < 0) d += dim();
  check(d >= 0 && d < dim() && index >= 0 && index < shape_[d], "select out of range on " + shape_str(shape_));
  Tensor t = *this;
  t.offset_ += index * strides_[d];
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  return t;
}

Tensor Tensor::permute(const std::vector<int64_t>& order) const {
  check(static_cast<int64_t>(order.size()) == dim(), "permute(): wrong number of dimensions");
  Tensor t = *this;
  for (size_t i = 0; i < order.size(); ++i) {
    t.shape_[i] = shape_[order[i]];
    t.strides_[i] = strides_[order[i]];
  }
  return t;
}

Tensor Tensor::transpose(int64_t a, int64_t b) const {
  std::vector<int64_t> order(shape_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  std::swap(order[a], order[b]);
  return permute(order);
}

Tensor Tensor::contiguous() const { return is_contiguous() ? *this : clone(); }

Tensor Tensor::clone() const {
  if (!device_.is_cpu()) {  // contiguous device memory: one copy on the device
    if (!is_contiguous()) throw Error("clone of a strided " + shape_str(shape_) + " view on " + device_.name());
    Tensor out = empty(shape_, dtype_, device_);
    out.copy_from(*this);
    return out;
  }
  Tensor out = empty(shape_, dtype_);
  const size_t esz = dtype_size(dtype_);
  const int64_t n = numel();
  if (n == 0) return out;
  if (is_contiguous()) {
    std::memcpy(out.base_, raw(), nbytes());
    return out;
  }
  // Copy the innermost dimension as runs; walk the outer ones with a counter.
  const int64_t nd = dim();
  const int64_t inner = nd ? shape_[nd - 1] : 1;
  const int64_t inner_stride = nd ? strides_[nd - 1] : 1;
  std::vector<int64_t> idx(static_cast<size_t>(nd), 0);
  char* dst = static_cast<char*>(out.base_);
  const char* src0 = static_cast<const char*>(base_);
  for (int64_t done = 0; done < n; done += inner) {
    int64_t off = offset_;
    for (int64_t i = 0; i + 1 < nd; ++i) off += idx[i] * strides_[i];
    if (inner_stride == 1) {
      std::memcpy(dst, src0 + off * static_cast<int64_t>(esz), inner * esz);
      dst += inner * esz;
    } else {
      for (int64_t j = 0; j < inner; ++j, dst += esz)
        std::memcpy(dst, src0 + (off + j * inner_stride) * static_cast<int64_t>(esz), esz);
    }
    for (int64_t i = nd - 2; i >= 0; --i) {
      if (++idx[i] < shape_[i]) break;
      idx[i] = 0;
    }
  }
  return out;
}

Tensor Tensor::to(DType target) const {
  Tensor src = contiguous();
  if (target == dtype_) return src;
  Tensor out = empty(shape_, target);
  const size_t n = static_cast<size_t>(numel());
  if (dtype_ == DType::BF16 && target == DType::F32) convert_bf16_to_f32(src.data<uint16_t>(), out.data<float>(), n);
  else if (dtype_ == DType::F16 && target == DType::F32) convert_f16_to_f32(src.data<uint16_t>(), out.data<float>(), n);
  else if (dtype_ == DType::F32 && target == DType::BF16) convert_f32_to_bf16(src.data<float>(), out.data<uint16_t>(), n);
  else if (dtype_ == DType::F32 && target == DType::F16) {
    for (size_t i = 0; i < n; ++i) out.data<uint16_t>()[i] = f32_to_f16(src.data<float>()[i]);
  } else if (dtype_ == DType::U8 && target == DType::F32) {
    for (size_t i = 0; i < n; ++i) out.data<float>()[i] = src.data<uint8_t>()[i];
  } else if (dtype_ == DType::BOOL && target == DType::F32) {
    for (size_t i = 0; i < n; ++i) out.data<float>()[i] = src.data<uint8_t>()[i] ? 1.f : 0.f;
  } else if (dtype_ == DType::I64 && target == DType::F32) {
    for (size_t i = 0; i < n; ++i) out.data<float>()[i] = static_cast<float>(src.data<int64_t>()[i]);
  } else {
    throw Error(std::string("unsupported conversion ") + dtype_name(dtype_) + " -> " + dtype_name(target));
  }
  return out;
}

Tensor Tensor::to(Device target) const {
  if (target == device_ && (is_contiguous() || target.is_cpu())) return contiguous();
  if (!device_.is_cpu() && !is_contiguous())
    throw Error("copying a strided " + shape_str(shape_) + " view off " + device_.name() +
                ": make it contiguous there first");
  Tensor out = empty(shape_, dtype_, target);
  out.copy_from(contiguous());
  return out;
}

std::vector<float> Tensor::to_vector() const {
  Tensor f = (device_.is_cpu() ? *this : to(Device::cpu())).to(DType::F32);
  const float* p = f.data<float>();
  return std::vector<float>(p, p + f.numel());
}

}  // namespace sa2va
