// One Qwen2 decoder layer with LoRA on its seven linear layers, forward and backward, for training
// (docs/training.md §5): the activations the backward pass needs are kept per layer; attention
// probabilities are recomputed.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "train/lora.h"

namespace sa2va::train {

struct DecoderLayerWeights {
  Tensor input_norm, post_norm;  // RMSNorm weights [D]
  LoraLinear q, k, v, o;         // q/k/v with biases (Qwen2), o without
  LoraLinear gate, up, down;     // SwiGLU MLP
  int64_t heads = 1, kv_heads = 1, head_dim = 0;
  float rms_eps = 1e-6f, rope_theta = 1e6f;
};

struct DecoderLayerSaved {
  Tensor x, n1, q_rot, k_rot, v, attn, h, n2, gate, up, act;
  LoraSaved q, k, v_in, o, gate_in, up_in, down;
};

// y [N, D] for hidden states x [N, D] at `positions` (one sequence, causal).
Tensor decoder_layer_forward(const DecoderLayerWeights& w, const Tensor& x, const std::vector<int64_t>& positions,
                             DecoderLayerSaved* saved);

struct DecoderLayerGrads {
  Tensor dx;
  std::map<std::string, LoraGrads> lora;  // "q_proj", "k_proj", ..., "down_proj": dA, dB
};
DecoderLayerGrads decoder_layer_backward(const DecoderLayerWeights& w, const DecoderLayerSaved& saved,
                                         const std::vector<int64_t>& positions, const Tensor& dy);

}  // namespace sa2va::train
