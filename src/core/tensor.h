// Tensor: a typed, shaped, strided view over shared storage on one device.
// Storage either comes from the device's allocator (core/allocator.h) or is borrowed from a
// memory map that the storage handle keeps alive, so checkpoint weights are used in place
// without copies. Host pointers (raw, data<T>, f32, bf16) are for CPU tensors only and say so
// with an Error when asked of a tensor on another device.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"

namespace sa2va {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& shape);  // "[2, 3, 4]"
int64_t shape_numel(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;

  // New contiguous tensor; contents zeroed.
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  // New contiguous tensor from the device's allocator; contents uninitialised (for outputs
  // that are fully written).
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  // Borrow external memory; `keep_alive` owns whatever backs `data` (e.g. a memory map).
  static Tensor borrow(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> keep_alive);
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape);

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool is_contiguous() const;

  // Host pointers to the first element: the tensor must live on the CPU.
  void* raw() const {
    if (!device_.is_cpu()) throw_not_on_host();
    return static_cast<char*>(base_) + offset_ * static_cast<int64_t>(dtype_size(dtype_));
  }
  template <typename T> T* data() const { return static_cast<T*>(raw()); }
  // Pointer to the first element in the memory of the tensor's own device, whichever it is: for
  // the kernels of that device (op fronts), never dereferenced on the host unless on the CPU.
  void* device_data() const {
    return static_cast<char*>(base_) + offset_ * static_cast<int64_t>(dtype_size(dtype_));
  }
  // The same for an F32 tensor (dtype checked): what model code hands to the ops, on any device.
  float* kernel_f32() const;
  float* f32() const;        // also checks dtype F32
  uint16_t* bf16() const;    // also checks dtype BF16

  // Views (share storage).
  Tensor view(const Shape& shape) const;             // contiguous only; one -1 allowed
  Tensor slice(int64_t d, int64_t start, int64_t end) const;
  Tensor select(int64_t d, int64_t index) const;     // drops dimension d
  Tensor permute(const std::vector<int64_t>& order) const;
  Tensor transpose(int64_t a, int64_t b) const;

  Tensor contiguous() const;                          // self if already contiguous
  Tensor clone() const;  // always a new contiguous copy, on the same device (a device view must be contiguous)
  Tensor to(DType dtype) const;                       // F32/BF16/F16 conversions; contiguous result
  // A contiguous copy on `device` (self when already there and contiguous). A device tensor must be
  // contiguous to leave its device (views of device memory are copied by kernels, not here).
  Tensor to(Device device) const;
  // Copies all of src (same number of elements and dtype, contiguous) into this contiguous tensor,
  // across devices as needed.
  void copy_from(const Tensor& src) const;
  std::vector<float> to_vector() const;               // any float dtype, as f32

 private:
  [[noreturn]] void throw_not_on_host() const;

  std::shared_ptr<void> storage_;
  void* base_ = nullptr;
  int64_t offset_ = 0;  // in elements
  Shape shape_, strides_;
  DType dtype_ = DType::F32;
  Device device_;
};

}  // namespace sa2va
