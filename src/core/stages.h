// StageRecorder: collects named intermediate tensors while a forward pass runs, for
// `sa2va dump` (names follow the conformance fixtures' README). Components take an optional
// pointer and record only when it is set, so normal runs pay nothing.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace sa2va {

class StageRecorder {
 public:
  // Stores a contiguous copy (the caller may reuse its buffer afterwards).
  // Keeps a host copy (from any device).
  void record(const std::string& name, const Tensor& t) {
    stages_.emplace_back(name, t.device().is_cpu() ? t.clone() : t.to(Device::cpu()));
  }
  const std::vector<std::pair<std::string, Tensor>>& stages() const { return stages_; }

 private:
  std::vector<std::pair<std::string, Tensor>> stages_;
};

inline void record(StageRecorder* recorder, const std::string& name, const Tensor& t) {
  if (recorder) recorder->record(name, t);
}

}  // namespace sa2va
