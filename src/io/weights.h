// Binding checkpoint tensors to model structs by name, and preparing them for their kernels.
//
// Every component's load() asks a Weights object for its tensors by their checkpoint name and
// expected shape. Against a checkpoint, Weights prepares each one as the load policy says
// (device, compute precision, weight format: matrices as WeightMatrix, conv weights in GEMM
// layout, norms and biases as F32) and records every missing or mis-shaped tensor; finish() then
// reports all of them at once. In declaring mode it reads nothing and records (name, shape, init)
// so that `make-model` can write a complete checkpoint from the same single source of names and
// shapes; every prepared weight is then undefined.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "core/weight_arena.h"
#include "io/safetensors.h"
#include "ops/weight_matrix.h"
#include "sa2va/sa2va.h"

namespace sa2va {

// Precision (F32 / BF16) is the public enum of sa2va.h.

// Which matrices a weight format applies to: the language model's linear layers take the
// policy's format (bf16, q8_0, q4_0); every other matrix follows the compute precision.
// ImageTokens: a matrix applied to every token or pixel of an image at once (InternViT and its
// projector; SAM2's Hiera, FPN neck, high-resolution convs and memory encoder), so its products
// always have many rows; it follows the compute precision and takes ops::many_rows_layout.
enum class MatrixUse { General, LanguageModel, ImageTokens };

// How weights are prepared at load.
struct LoadPolicy {
  Device device = Device::cpu();
  Precision precision = Precision::BF16;          // compute precision
  WeightFormat llm_format = WeightFormat::BF16;   // format of the language model's matrices

  LoadPolicy() = default;
  LoadPolicy(Precision p) : precision(p) {}  // NOLINT: a precision alone is a complete policy
  // F32 mode keeps unquantized matrices in f32; a quantized LLM format applies in both modes.
  WeightFormat format_for(MatrixUse use) const;
};

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
  MatrixUse use = MatrixUse::General;  // LanguageModel: a matrix a quantized folder stores quantized
};

// A quantized model folder (`sa2va quantize`) stores each language-model matrix W [N, K] as two
// tensors: W itself as U8 [N, blocks·32] (Q8_0) or [N, blocks·16] (Q4_0) holding the packed values,
// and W + kScalesSuffix as F16 [N, blocks] (layouts in ops/weight_matrix.h). Its metadata names the
// format under kWeightFormatKey.
// kQuantLayoutKey = kQuantLayout marks the code layout of ops/weight_matrix.h (unsigned codes with
// offsets 128 / 8); a U8 matrix in a file without it is refused rather than misread.
inline constexpr const char* kScalesSuffix = ".scales";
inline constexpr const char* kWeightFormatKey = "sa2va.weight_format";
inline constexpr const char* kQuantLayoutKey = "sa2va.quant_layout";
inline constexpr const char* kQuantLayout = "offset-codes-1";

class Weights {
 public:
  Weights(const Checkpoint& checkpoint, const LoadPolicy& policy);
  static Weights declaring(const LoadPolicy& policy = {});

  const LoadPolicy& policy() const { return policy_; }
  Precision precision() const { return policy_.precision; }
  bool declaring_only() const { return checkpoint_ == nullptr; }

  // A Linear weight [N, K] (or a 1×1 conv weight [N, K, 1, 1] used as one) in the format the
  // policy gives `use`. A language-model matrix stored quantized is used as stored (no copy); a
  // policy asking for another quantized format is a load error.
  WeightMatrix matrix(const std::string& name, const Shape& shape, Init init = Init::Linear,
                      MatrixUse use = MatrixUse::General);
  // Like matrix(), but absent tensors are not an error (returns an undefined matrix).
  WeightMatrix optional_matrix(const std::string& name, const Shape& shape, Init init = Init::Linear,
                               MatrixUse use = MatrixUse::General);
  // A tensor as stored (F32, BF16 or F16), on the host, for what is derived from it at load;
  // undefined in declaring mode or when it is missing or mis-shaped (recorded).
  Tensor stored(const std::string& name, const Shape& shape, Init init = Init::Linear);
  // A matrix prepared on the host from any tensor (a GPU one is copied back first), then placed.
  WeightMatrix prepare(const Tensor& matrix, MatrixUse use = MatrixUse::General) const;
  // Prepared weights go to the policy's device (a copy for a GPU; as they are for the CPU). Every
  // accessor above places what it returns, except stored(); loaders place what they derive.
  WeightMatrix place(const WeightMatrix& m) const;
  Tensor place(const Tensor& t) const;
  ConvWeight place(ConvWeight c) const;
  // Conv weights in GEMM layout: conv2d [Cout, Cin/groups, kh, kw]; transposed 2x2 [Cin, Cout, 2, 2].
  ConvWeight conv(const std::string& name, const Shape& shape, Init init = Init::Linear);
  ConvWeight conv_transposed_2x2(const std::string& name, const Shape& shape, Init init = Init::Linear);
  // Any tensor needed as F32 in both modes (norms, biases, embeddings added element-wise).
  Tensor f32(const std::string& name, const Shape& shape, Init init);
  bool has(const std::string& name) const;
  // Drops the resident pages of a stored tensor once a copy has replaced it (Checkpoint::release):
  // loaders call it for what they fuse or reorder; matrix(), conv() and f32() do it themselves for
  // what they convert.
  void release(const Tensor& stored_tensor) const;

  // Throws one Error listing every missing or mis-shaped tensor (no-op when all were found).
  void finish() const;
  const std::vector<DeclaredTensor>& declared() const { return declared_; }

 private:
  Weights() = default;
  // The stored tensor, checked against its expected shape and dtype (undefined when it is not usable).
  Tensor fetch(const std::string& name, const Shape& shape, Init init, bool optional,
               MatrixUse use = MatrixUse::General);
  // A matrix stored quantized (U8 values + scales); undefined (and a recorded problem) when unusable.
  WeightMatrix quantized(const std::string& name, const Shape& shape, MatrixUse use);
  bool stored_quantized(const std::string& name) const;

  const Checkpoint* checkpoint_ = nullptr;
  LoadPolicy policy_;
  std::vector<DeclaredTensor> declared_;
  std::vector<std::string> problems_;
  // Where image matrices rearranged for the CPU go (ops::many_rows_layout); shared by copies.
  std::shared_ptr<WeightArena> arena_ = std::make_shared<WeightArena>();
};

}  // namespace sa2va
