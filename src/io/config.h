// config.json of a Sa2VA model folder, parsed into typed structs.
// Unknown architectures and missing or mistyped fields are reported with the field's path.
// SAM2 hyper-parameters are fixed in upstream code (Hiera-L); a folder may override them with a
// "sam2_config" object (the small conformance checkpoints do).
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace sa2va {

struct VisionConfig {
  int hidden_size = 1024, num_layers = 24, num_heads = 16, intermediate_size = 4096;
  int patch_size = 14, image_size = 448, num_channels = 3;
  bool qkv_bias = true, qk_normalization = false;
  std::string norm_type = "layer_norm";
  float layer_norm_eps = 1e-6f;
};

enum class LlmArch { Qwen2, InternLM2 };

struct LlmConfig {
  LlmArch arch = LlmArch::Qwen2;
  std::string architecture;  // as written in config.json
  int hidden_size = 0, num_layers = 0, num_heads = 0, num_kv_heads = 0, head_dim = 0, intermediate_size = 0;
  int vocab_size = 0, max_position_embeddings = 32768;
  float rms_norm_eps = 1e-6f, rope_theta = 1e6f;
  std::string rope_scaling_type;  // "" or "dynamic"
  float rope_scaling_factor = 1.f;
  bool tie_word_embeddings = false;
  bool attention_bias = true;  // q/k/v biases (Qwen2); InternLM2 has none
  int bos_token_id = -1, eos_token_id = -1;
};

struct Sam2Config {
  int image_size = 1024, hidden_dim = 256, mem_dim = 64, num_maskmem = 7, backbone_stride = 16;
  // Hiera trunk
  int embed_dim = 144, num_heads = 2, q_pool = 3;
  std::vector<int> stages{2, 6, 36, 4}, global_att_blocks{23, 33, 43}, window_spec{8, 4, 16, 8};
  std::vector<int> q_stride{2, 2}, window_pos_embed_bkg_spatial_size{7, 7};
  float dim_mul = 2.f, head_mul = 2.f, mlp_ratio = 4.f;
  // FPN neck
  std::vector<int> backbone_channel_list{1152, 576, 288, 144}, fpn_top_down_levels{2, 3};
  int fpn_d_model = 256, scalp = 1;
  // Memory attention / encoder
  int mem_attn_layers = 4, mem_attn_ffn = 2048, mem_attn_heads = 1, mem_attn_kv_dim = 64;
  float mem_attn_rope_theta = 10000.f;
  int fuser_layers = 2, fuser_kernel = 7, mem_out_dim = 64;
  // Mask decoder
  int decoder_depth = 2, decoder_heads = 8, decoder_mlp_dim = 2048, num_multimask_outputs = 3;
};

struct ModelConfig {
  std::string template_name = "qwen_chat";  // '-' replaced by '_'
  int select_layer = -1;
  float downsample_ratio = 0.5f;
  std::string ps_version = "v2";
  int force_image_size = 448;
  VisionConfig vision;
  LlmConfig llm;
  Sam2Config sam2;
  bool has_sam2_override = false;

  int num_image_tokens() const;  // tokens per 448 tile after pixel shuffle (256)
};

// Reads DIR/config.json. Throws Error("DIR/config.json: <field>: <problem>").
ModelConfig load_config(const std::string& model_dir);
ModelConfig parse_config(const nlohmann::json& j, const std::string& source);
// The config.json content for a model (used by make-model); parse_config(to_json(c)) == c.
nlohmann::json config_to_json(const ModelConfig& c);

}  // namespace sa2va
