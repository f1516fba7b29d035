// Device checks shared by the op fronts (ops/*.cpp): everything an op reads and writes must live
// on one device, and that device must have kernels (today only the CPU, ops/cpu/). Raw pointers
// are host memory, so a front taking them compares its Tensor/WeightMatrix arguments with the CPU.
#pragma once
#include <string>

#include "core/device.h"
#include "core/error.h"

namespace sa2va::ops {

// "<op>: the <what> lives on <where>, the <other> on <other_where>" when the two differ.
inline void check_same_device(const char* op, const char* what, Device where, const char* other,
                              Device other_where) {
  if (where != other_where)
    throw Error(std::string(op) + ": the " + what + " lives on " + where.name() + ", the " + other + " on " +
                other_where.name());
}

// The device the kernels will run on: "<op>: no <device> kernel (the <what> lives on <device>)"
// until that device has kernels.
inline void check_kernel_device(const char* op, const char* what, Device where) {
  if (!where.is_cpu())
    throw Error(std::string(op) + ": no " + where.name() + " kernel (the " + what + " lives on " + where.name() +
                "; only CPU kernels exist so far)");
}

}  // namespace sa2va::ops
