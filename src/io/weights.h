// Binding checkpoint tensors to model structs by name.
//
// Every component's load() asks a Weights object for its tensors by their checkpoint name and
// expected shape. Against a checkpoint, Weights converts to the compute precision and records
// every missing or mis-shaped tensor; finish() then reports all of them at once. In declaring
// mode it reads nothing and records (name, shape, init) so that `make-model` can write a
// complete checkpoint from the same single source of names and shapes.
#pragma once
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/safetensors.h"
#include "sa2va/sa2va.h"

namespace sa2va {

// Precision (F32 / BF16) is the public enum of sa2va.h.

// How make-model initialises a tensor so that activations of a random model stay O(1).
enum class Init {
  Linear,      // N(0, 1/fan_in), fan_in = product of all dims but the first
  Bias,        // N(0, 0.02)
  NormWeight,  // 1 + N(0, 0.02)
  NormBias,    // N(0, 0.02)
  Embedding,   // N(0, 1)
  Small,       // N(0, 0.1): layer scales, learned tokens, position embeddings
  Ones,        // exactly 1
  Gaussian,    // N(0, 1): random-feature matrices
};

struct DeclaredTensor {
  std::string name;
  Shape shape;
  Init init;
};

class Weights {
 public:
  Weights(const Checkpoint& checkpoint, Precision precision);
  static Weights declaring(Precision precision = Precision::BF16);

  Precision precision() const { return precision_; }
  bool declaring_only() const { return checkpoint_ == nullptr; }

  // A matrix used by GEMM-backed ops (linear, conv): BF16 in bf16 mode, F32 in f32 mode.
  Tensor matrix(const std::string& name, const Shape& shape, Init init = Init::Linear);
  // Any tensor needed as F32 in both modes (norms, biases, embeddings added element-wise).
  Tensor f32(const std::string& name, const Shape& shape, Init init);
  // Like matrix(), but absent tensors are not an error (returns an undefined Tensor).
  Tensor optional_matrix(const std::string& name, const Shape& shape, Init init = Init::Linear);
  bool has(const std::string& name) const;

  // Throws one Error listing every missing or mis-shaped tensor (no-op when all were found).
  void finish() const;
  const std::vector<DeclaredTensor>& declared() const { return declared_; }

 private:
  Weights() = default;
  Tensor fetch(const std::string& name, const Shape& shape, Init init, bool as_matrix, bool optional);

  const Checkpoint* checkpoint_ = nullptr;
  Precision precision_ = Precision::F32;
  std::vector<DeclaredTensor> declared_;
  std::vector<std::string> problems_;
};

}  // namespace sa2va
