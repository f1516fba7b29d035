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

// The checkpoint names of a layer's linear modules (after "<layer path>."): Qwen2's by default.
struct LayerModuleNames {
  std::string q = "self_attn.q_proj", k = "self_attn.k_proj", v = "self_attn.v_proj", qkv;
  std::string o = "self_attn.o_proj", gate = "mlp.gate_proj", up = "mlp.up_proj", down = "mlp.down_proj";
};
inline LayerModuleNames internlm2_module_names() {
  LayerModuleNames n;
  n.q = n.k = n.v = "";
  n.qkv = "attention.wqkv";
  n.o = "attention.wo";
  n.gate = "feed_forward.w1";
  n.up = "feed_forward.w3";
  n.down = "feed_forward.w2";
  return n;
}

struct DecoderLayerWeights {
  Tensor input_norm, post_norm;  // RMSNorm weights [D]
  LoraLinear q, k, v, o;         // q/k/v with biases (Qwen2), o without
  // InternLM2: one LoRA layer on the fused projection, its rows (and LoRA B's) in the order all query
  // heads, all keys, all values (the checkpoint's grouped order is permuted at load).
  bool fused_qkv = false;
  LoraLinear qkv;
  LoraLinear gate, up, down;     // SwiGLU MLP
  LayerModuleNames names;
  int64_t heads = 1, kv_heads = 1, head_dim = 0;
  float rms_eps = 1e-6f, rope_theta = 1e6f;
};

struct DecoderLayerSaved {
  Tensor x, n1, q_rot, k_rot, v, attn, h, n2, gate, up, act;
  LoraSaved q, k, v_in, qkv, o, gate_in, up_in, down;
};

// y [N, D] for hidden states x [N, D] at `positions` (one sequence, causal).
Tensor decoder_layer_forward(const DecoderLayerWeights& w, const Tensor& x, const std::vector<int64_t>& positions,
                             DecoderLayerSaved* saved);

struct DecoderLayerGrads {
  Tensor dx;
  std::map<std::string, LoraGrads> lora;  // by module name (w.names): dA, dB
};
DecoderLayerGrads decoder_layer_backward(const DecoderLayerWeights& w, const DecoderLayerSaved& saved,
                                         const std::vector<int64_t>& positions, const Tensor& dy);

}  // namespace sa2va::train
