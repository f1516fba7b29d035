// SAM2's mask decoder for training (docs/training.md §7): the same computation as the inference
// decoder (models/sam2/mask_decoder), in f32 from the checkpoint's tensors, keeping what the backward
// pass needs; backward from the gradient of the selected low-resolution mask to every decoder tensor
// (conv_s0/conv_s1 included) and to the prompt tokens (the [SEG] language embedding).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/safetensors.h"

namespace sa2va::train {

class TrainableMaskDecoder {
 public:
  // Binds `<prefix>*` (prefix ends with "sam_mask_decoder.") as f32.
  static TrainableMaskDecoder load(const Checkpoint& checkpoint, const std::string& prefix);

  struct Inputs {
    Tensor image_embedding;  // [C, g, g]: FPN level 2 + no_mem_embed (frozen)
    Tensor image_pe;         // [C, g, g]
    Tensor dense;            // [C]: no_mask_embed
    Tensor sparse;           // [S, C]: the prompt tokens (the last one the [SEG] embedding)
    Tensor fpn0, fpn1;       // FPN levels 0 and 1 as tokens [4g·4g, C], [2g·2g, C] (frozen)
  };
  struct Forward;  // activations
  struct Output {
    Tensor masks;  // [4, 4g, 4g] low-resolution logits of every mask token
    Tensor iou;    // [4] predicted IoUs (sigmoid)
    std::shared_ptr<Forward> saved;
  };
  Output forward(const Inputs& in) const;

  // Gradients by checkpoint name (without the prefix), summed over calls, and of the sparse prompt
  // tokens of the last call.
  struct Grads {
    std::map<std::string, Tensor> tensors;
    Tensor sparse;  // [S, C]: this call's
  };
  // Adds the gradient of <masks[mask_index], d_mask> (d_mask [4g, 4g]) to `grads.tensors` and sets
  // grads.sparse.
  void backward(const Output& out, int64_t mask_index, const Tensor& d_mask, Grads& grads) const;

  // Every trainable tensor name (without the prefix), in checkpoint order of the decoder.
  std::vector<std::string> tensor_names() const;
  // Those tensors, sharing storage with the decoder (an optimiser step on them changes the decoder).
  const std::vector<std::pair<std::string, Tensor>>& parameters() const { return params_; }

  struct Attention {  // SAM's attention: projections to an internal width, heads, output projection
    Tensor q_w, q_b, k_w, k_b, v_w, v_b, out_w, out_b;
    int64_t heads = 8, internal = 256;
  };
  struct Block {
    Attention self_attn, to_image, to_token;
    Tensor norm_w[4], norm_b[4];
    Tensor mlp_w1, mlp_b1, mlp_w2, mlp_b2;
  };
  struct Mlp {
    std::vector<Tensor> w, b;
  };

 private:
  int64_t dim_ = 256, num_mask_tokens_ = 4;
  Tensor obj_score_token_, iou_token_, mask_tokens_;
  std::vector<Block> blocks_;
  Attention final_attn_;
  Tensor final_norm_w_, final_norm_b_;
  Tensor up1_w_, up1_b_, up_norm_w_, up_norm_b_, up2_w_, up2_b_;  // ConvT weights [in, out, 2, 2]
  Tensor conv_s0_w_, conv_s0_b_, conv_s1_w_, conv_s1_b_;         // [out, in, 1, 1]
  std::vector<Mlp> hyper_;
  Mlp iou_head_, obj_head_;
  std::vector<std::pair<std::string, Tensor>> params_;
};

}  // namespace sa2va::train
