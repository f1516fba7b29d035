#include "io/config.h"

#include <limits>

#include "io/json_number.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace sa2va {
using json = nlohmann::json;

namespace {

// Field readers: `path` is the dotted field name used in messages.
struct Reader {
  const std::string& source;

  [[noreturn]] void fail(const std::string& path, const std::string& problem) const {
    throw Error(source + ": " + path + ": " + problem);
  }
  const json* find(const json& obj, const std::string& key) const {
    auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }
  int get_int(const json& obj, const std::string& key, const std::string& path, const int* fallback = nullptr) const {
    const json* v = find(obj, key);
    if (!v) {
      if (fallback) return *fallback;
      fail(path + key, "missing required field");
    }
    const auto i = json_integer(*v, std::numeric_limits<int>::min(), std::numeric_limits<int>::max());
    if (!i) fail(path + key, "must be an integer that fits an int, got " + v->dump());
    return static_cast<int>(*i);
  }
  float get_float(const json& obj, const std::string& key, const std::string& path, const float* fallback = nullptr) const {
    const json* v = find(obj, key);
    if (!v) {
      if (fallback) return *fallback;
      fail(path + key, "missing required field");
    }
    const auto f = json_float(*v);
    if (!f) fail(path + key, "must be a finite number a float can hold, got " + v->dump());
    return *f;
  }
  bool get_bool(const json& obj, const std::string& key, const std::string& path, bool fallback) const {
    const json* v = find(obj, key);
    if (!v) return fallback;
    if (v->is_boolean()) return v->get<bool>();
    if (v->is_number_integer()) return !(v->is_number_unsigned() ? v->get<uint64_t>() == 0 : v->get<int64_t>() == 0);
    fail(path + key, "must be a boolean, got " + v->dump());
  }
  std::string get_string(const json& obj, const std::string& key, const std::string& path,
                         const std::string* fallback = nullptr) const {
    const json* v = find(obj, key);
    if (!v) {
      if (fallback) return *fallback;
      fail(path + key, "missing required field");
    }
    if (!v->is_string()) fail(path + key, "must be a string, got " + v->dump());
    return v->get<std::string>();
  }
  std::vector<int> get_ints(const json& obj, const std::string& key, const std::string& path,
                            const std::vector<int>& fallback) const {
    const json* v = find(obj, key);
    if (!v) return fallback;
    if (!v->is_array()) fail(path + key, "must be an array of integers");
    std::vector<int> out;
    for (const json& e : *v) {
      const auto i = json_integer(e, std::numeric_limits<int>::min(), std::numeric_limits<int>::max());
      if (!i) fail(path + key, "must be an array of integers that fit an int");
      out.push_back(static_cast<int>(*i));
    }
    return out;
  }
  const json& object(const json& obj, const std::string& key, const std::string& path) const {
    const json* v = find(obj, key);
    if (!v) fail(path + key, "missing required object");
    if (!v->is_object()) fail(path + key, "must be an object");
    return *v;
  }
};

std::string architecture_of(const Reader& r, const json& obj, const std::string& path) {
  const json* v = r.find(obj, "architectures");
  if (!v) r.fail(path + "architectures", "missing required field");
  if (!v->is_array() || v->empty() || !(*v)[0].is_string()) r.fail(path + "architectures", "must be a list of names");
  return (*v)[0].get<std::string>();
}

VisionConfig parse_vision(const Reader& r, const json& v) {
  const std::string p = "vision_config.";
  VisionConfig c;
  c.hidden_size = r.get_int(v, "hidden_size", p);
  c.num_layers = r.get_int(v, "num_hidden_layers", p);
  c.num_heads = r.get_int(v, "num_attention_heads", p);
  c.intermediate_size = r.get_int(v, "intermediate_size", p);
  c.patch_size = r.get_int(v, "patch_size", p);
  c.image_size = r.get_int(v, "image_size", p);
  const int three = 3;
  c.num_channels = r.get_int(v, "num_channels", p, &three);
  c.qkv_bias = r.get_bool(v, "qkv_bias", p, true);
  c.qk_normalization = r.get_bool(v, "qk_normalization", p, false);
  const std::string ln = "layer_norm";
  c.norm_type = r.get_string(v, "norm_type", p, &ln);
  const float eps = 1e-6f;
  c.layer_norm_eps = r.get_float(v, "layer_norm_eps", p, &eps);
  if (c.norm_type != "layer_norm") r.fail(p + "norm_type", "unsupported value '" + c.norm_type + "' (expected layer_norm)");
  if (c.qk_normalization) r.fail(p + "qk_normalization", "true is not supported (InternViT-300M uses false)");
  if (c.num_heads <= 0 || c.hidden_size % c.num_heads) r.fail(p + "num_attention_heads", "must divide hidden_size");
  if (c.patch_size <= 0 || c.image_size % c.patch_size) r.fail(p + "patch_size", "must divide image_size");
  if (!(c.layer_norm_eps > 0)) r.fail(p + "layer_norm_eps", "must be positive");
  return c;
}

LlmConfig parse_llm(const Reader& r, const json& v) {
  const std::string p = "llm_config.";
  LlmConfig c;
  c.architecture = architecture_of(r, v, p);
  if (c.architecture == "Qwen2ForCausalLM") c.arch = LlmArch::Qwen2;
  else if (c.architecture == "InternLM2ForCausalLM") c.arch = LlmArch::InternLM2;
  else r.fail(p + "architectures", "unknown language model '" + c.architecture +
                                       "' (supported: Qwen2ForCausalLM, InternLM2ForCausalLM)");
  c.hidden_size = r.get_int(v, "hidden_size", p);
  c.num_layers = r.get_int(v, "num_hidden_layers", p);
  c.num_heads = r.get_int(v, "num_attention_heads", p);
  c.num_kv_heads = r.get_int(v, "num_key_value_heads", p, &c.num_heads);
  if (c.num_heads <= 0 || c.hidden_size % c.num_heads) r.fail(p + "num_attention_heads", "must divide hidden_size");
  if (c.num_kv_heads <= 0 || c.num_heads % c.num_kv_heads) r.fail(p + "num_key_value_heads", "must divide num_attention_heads");
  const int hd = c.hidden_size / c.num_heads;
  c.head_dim = r.get_int(v, "head_dim", p, &hd);
  c.intermediate_size = r.get_int(v, "intermediate_size", p);
  c.vocab_size = r.get_int(v, "vocab_size", p);
  const int mpe = 32768;
  c.max_position_embeddings = r.get_int(v, "max_position_embeddings", p, &mpe);
  // Absent fields take the defaults of upstream's config classes (docs/checkpoint.md §2.3): for
  // InternLM2 (Sa2VA's own InternLM2Config) rms_norm_eps 1e-6, rope_theta 10000 and bias true; the
  // released configs all state their values (8B: 1e-5, 1e6, false).
  const float eps = 1e-6f, theta = c.arch == LlmArch::Qwen2 ? 1e6f : 1e4f;
  c.rms_norm_eps = r.get_float(v, "rms_norm_eps", p, &eps);
  c.rope_theta = r.get_float(v, "rope_theta", p, &theta);
  c.tie_word_embeddings = r.get_bool(v, "tie_word_embeddings", p, false);
  c.attention_bias = c.arch == LlmArch::Qwen2 ? true : r.get_bool(v, "bias", p, true);
  const int none = -1;
  c.bos_token_id = r.get_int(v, "bos_token_id", p, &none);
  c.eos_token_id = r.get_int(v, "eos_token_id", p, &none);
  if (const json* rs = r.find(v, "rope_scaling")) {
    if (!rs->is_object()) r.fail(p + "rope_scaling", "must be an object or null");
    const std::string empty;
    std::string type = r.get_string(*rs, "type", p + "rope_scaling.", &empty);
    if (type.empty()) type = r.get_string(*rs, "rope_type", p + "rope_scaling.", &empty);
    if (type != "dynamic" && type != "default" && !type.empty())
      r.fail(p + "rope_scaling.type", "unsupported RoPE scaling '" + type + "' (supported: dynamic)");
    c.rope_scaling_type = type == "default" ? "" : type;
    const float one = 1.f;
    c.rope_scaling_factor = r.get_float(*rs, "factor", p + "rope_scaling.", &one);
    if (!(c.rope_scaling_factor >= 1.f)) r.fail(p + "rope_scaling.factor", "must be at least 1");
  }
  // Values that would not fail later but make every answer noise.
  if (!(c.rms_norm_eps > 0)) r.fail(p + "rms_norm_eps", "must be positive");
  if (!(c.rope_theta > 0)) r.fail(p + "rope_theta", "must be positive");
  if (c.max_position_embeddings <= 0) r.fail(p + "max_position_embeddings", "must be positive");
  return c;
}

Sam2Config parse_sam2(const Reader& r, const json& s) {
  const std::string p = "sam2_config.";
  Sam2Config c;
  c.image_size = r.get_int(s, "image_size", p, &c.image_size);
  c.hidden_dim = r.get_int(s, "hidden_dim", p, &c.hidden_dim);
  c.mem_dim = r.get_int(s, "mem_dim", p, &c.mem_dim);
  c.num_maskmem = r.get_int(s, "num_maskmem", p, &c.num_maskmem);
  c.backbone_stride = r.get_int(s, "backbone_stride", p, &c.backbone_stride);
  if (const json* h = r.find(s, "hiera")) {
    const std::string q = p + "hiera.";
    c.embed_dim = r.get_int(*h, "embed_dim", q, &c.embed_dim);
    c.num_heads = r.get_int(*h, "num_heads", q, &c.num_heads);
    c.q_pool = r.get_int(*h, "q_pool", q, &c.q_pool);
    c.stages = r.get_ints(*h, "stages", q, c.stages);
    c.global_att_blocks = r.get_ints(*h, "global_att_blocks", q, c.global_att_blocks);
    c.window_spec = r.get_ints(*h, "window_spec", q, c.window_spec);
    c.q_stride = r.get_ints(*h, "q_stride", q, c.q_stride);
    c.window_pos_embed_bkg_spatial_size =
        r.get_ints(*h, "window_pos_embed_bkg_spatial_size", q, c.window_pos_embed_bkg_spatial_size);
    c.dim_mul = r.get_float(*h, "dim_mul", q, &c.dim_mul);
    c.head_mul = r.get_float(*h, "head_mul", q, &c.head_mul);
    c.mlp_ratio = r.get_float(*h, "mlp_ratio", q, &c.mlp_ratio);
  }
  if (const json* f = r.find(s, "fpn")) {
    const std::string q = p + "fpn.";
    c.backbone_channel_list = r.get_ints(*f, "backbone_channel_list", q, c.backbone_channel_list);
    c.fpn_top_down_levels = r.get_ints(*f, "fpn_top_down_levels", q, c.fpn_top_down_levels);
    c.fpn_d_model = r.get_int(*f, "d_model", q, &c.fpn_d_model);
    c.scalp = r.get_int(*f, "scalp", q, &c.scalp);
  }
  if (const json* m = r.find(s, "memory_attention")) {
    const std::string q = p + "memory_attention.";
    c.mem_attn_layers = r.get_int(*m, "num_layers", q, &c.mem_attn_layers);
    c.mem_attn_ffn = r.get_int(*m, "dim_feedforward", q, &c.mem_attn_ffn);
    c.mem_attn_heads = r.get_int(*m, "num_heads", q, &c.mem_attn_heads);
    c.mem_attn_kv_dim = r.get_int(*m, "kv_in_dim", q, &c.mem_attn_kv_dim);
    c.mem_attn_rope_theta = r.get_float(*m, "rope_theta", q, &c.mem_attn_rope_theta);
  }
  if (const json* m = r.find(s, "memory_encoder")) {
    const std::string q = p + "memory_encoder.";
    c.fuser_layers = r.get_int(*m, "fuser_num_layers", q, &c.fuser_layers);
    c.fuser_kernel = r.get_int(*m, "cx_kernel_size", q, &c.fuser_kernel);
    c.mem_out_dim = r.get_int(*m, "out_dim", q, &c.mem_out_dim);
  }
  if (const json* m = r.find(s, "mask_decoder")) {
    const std::string q = p + "mask_decoder.";
    c.decoder_depth = r.get_int(*m, "transformer_depth", q, &c.decoder_depth);
    c.decoder_heads = r.get_int(*m, "num_heads", q, &c.decoder_heads);
    c.decoder_mlp_dim = r.get_int(*m, "mlp_dim", q, &c.decoder_mlp_dim);
    c.num_multimask_outputs = r.get_int(*m, "num_multimask_outputs", q, &c.num_multimask_outputs);
  }
  if (c.stages.size() != 4) r.fail(p + "hiera.stages", "must list 4 stages");
  if (c.window_spec.size() != 4) r.fail(p + "hiera.window_spec", "must list 4 window sizes");
  if (c.backbone_channel_list.size() != 4) r.fail(p + "fpn.backbone_channel_list", "must list 4 channel counts");
  return c;
}

}  // namespace

int ModelConfig::num_image_tokens() const {
  const int grid = force_image_size / vision.patch_size;
  return static_cast<int>(std::lround(grid * grid * downsample_ratio * downsample_ratio));
}

ModelConfig parse_config(const json& j, const std::string& source) {
  Reader r{source};
  if (!j.is_object()) r.fail("(top level)", "must be a JSON object");
  ModelConfig c;
  const std::string arch = architecture_of(r, j, "");
  if (arch != "Sa2VAChatModel")
    r.fail("architectures", "'" + arch + "' is not a Sa2VA checkpoint (expected Sa2VAChatModel)");
  std::string tmpl = r.get_string(j, "template", "");
  for (char& ch : tmpl)
    if (ch == '-') ch = '_';
  c.template_name = tmpl;
  const int minus_one = -1, size448 = 448;
  c.select_layer = r.get_int(j, "select_layer", "", &minus_one);
  const float half = 0.5f;
  c.downsample_ratio = r.get_float(j, "downsample_ratio", "", &half);
  const std::string v2 = "v2";
  c.ps_version = r.get_string(j, "ps_version", "", &v2);
  if (c.ps_version != "v2") r.fail("ps_version", "unsupported pixel-shuffle version '" + c.ps_version + "' (expected v2)");
  if (c.downsample_ratio != 0.5f) r.fail("downsample_ratio", "only 0.5 is supported");
  c.vision = parse_vision(r, r.object(j, "vision_config", ""));
  c.force_image_size = r.get_int(j, "force_image_size", "", &c.vision.image_size);
  if (c.force_image_size != c.vision.image_size)  // the tiles are the vision encoder's input
    r.fail("force_image_size", "must equal vision_config.image_size (" + std::to_string(c.vision.image_size) + ")");
  (void)size448;
  c.llm = parse_llm(r, r.object(j, "llm_config", ""));
  if (const json* s = r.find(j, "sam2_config")) {
    if (!s->is_object()) r.fail("sam2_config", "must be an object");
    c.sam2 = parse_sam2(r, *s);
    c.has_sam2_override = true;
  }
  if (c.select_layer >= 0 || -c.select_layer > c.vision.num_layers)
    r.fail("select_layer", "must be in [-" + std::to_string(c.vision.num_layers) + ", -1]");
  return c;
}

ModelConfig load_config(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  std::ifstream in(path);
  if (!in) throw Error(path + ": cannot open (is " + model_dir + " a Sa2VA model folder?)");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {  // syntax errors, and numbers out of range
    throw Error(path + ": malformed JSON (" + e.what() + ")");
  }
  return parse_config(j, path);
}

json config_to_json(const ModelConfig& c) {
  json vision = {{"architectures", {"InternVisionModel"}},
                 {"model_type", "intern_vit_6b"},
                 {"hidden_size", c.vision.hidden_size},
                 {"num_hidden_layers", c.vision.num_layers},
                 {"num_attention_heads", c.vision.num_heads},
                 {"intermediate_size", c.vision.intermediate_size},
                 {"patch_size", c.vision.patch_size},
                 {"image_size", c.vision.image_size},
                 {"num_channels", c.vision.num_channels},
                 {"qkv_bias", c.vision.qkv_bias},
                 {"qk_normalization", c.vision.qk_normalization},
                 {"norm_type", c.vision.norm_type},
                 {"layer_norm_eps", c.vision.layer_norm_eps},
                 {"hidden_act", "gelu"},
                 {"drop_path_rate", 0.0},
                 {"dropout", 0.0},
                 {"attention_dropout", 0.0},
                 {"initializer_factor", 0.1}};
  json llm = {{"architectures", {c.llm.architecture}},
              {"hidden_size", c.llm.hidden_size},
              {"num_hidden_layers", c.llm.num_layers},
              {"num_attention_heads", c.llm.num_heads},
              {"num_key_value_heads", c.llm.num_kv_heads},
              {"intermediate_size", c.llm.intermediate_size},
              {"vocab_size", c.llm.vocab_size},
              {"max_position_embeddings", c.llm.max_position_embeddings},
              {"rms_norm_eps", c.llm.rms_norm_eps},
              {"rope_theta", c.llm.rope_theta},
              {"tie_word_embeddings", c.llm.tie_word_embeddings},
              {"hidden_act", "silu"},
              {"torch_dtype", "bfloat16"}};
  if (c.llm.arch == LlmArch::Qwen2) {
    llm["model_type"] = "qwen2";
    llm["use_sliding_window"] = false;
  } else {
    llm["model_type"] = "internlm2";
    llm["bias"] = c.llm.attention_bias;
  }
  if (c.llm.bos_token_id >= 0) llm["bos_token_id"] = c.llm.bos_token_id;
  if (c.llm.eos_token_id >= 0) llm["eos_token_id"] = c.llm.eos_token_id;
  if (c.llm.head_dim != c.llm.hidden_size / c.llm.num_heads) llm["head_dim"] = c.llm.head_dim;
  if (!c.llm.rope_scaling_type.empty())
    llm["rope_scaling"] = {{"type", c.llm.rope_scaling_type}, {"factor", c.llm.rope_scaling_factor}};
  else
    llm["rope_scaling"] = nullptr;
  json j = {{"architectures", {"Sa2VAChatModel"}},
            {"model_type", "sa2va_chat"},
            {"auto_map",
             {{"AutoConfig", "configuration_sa2va_chat.Sa2VAChatConfig"},
              {"AutoModel", "modeling_sa2va_chat.Sa2VAChatModel"},
              {"AutoModelForCausalLM", "modeling_sa2va_chat.Sa2VAChatModel"}}},
            {"template", c.template_name},
            {"select_layer", c.select_layer},
            {"downsample_ratio", c.downsample_ratio},
            {"ps_version", c.ps_version},
            {"force_image_size", c.force_image_size},
            {"dynamic_image_size", true},
            {"use_thumbnail", true},
            {"min_dynamic_patch", 1},
            {"max_dynamic_patch", 12},
            {"use_backbone_lora", 0},
            {"use_llm_lora", 0},
            {"pad2square", false},
            {"tie_word_embeddings", false},
            {"torch_dtype", "bfloat16"},
            {"vision_config", vision},
            {"llm_config", llm}};
  if (c.has_sam2_override) {
    const Sam2Config& s = c.sam2;
    j["sam2_config"] = {
        {"image_size", s.image_size}, {"hidden_dim", s.hidden_dim}, {"mem_dim", s.mem_dim},
        {"num_maskmem", s.num_maskmem}, {"backbone_stride", s.backbone_stride},
        {"hiera", {{"embed_dim", s.embed_dim}, {"num_heads", s.num_heads}, {"q_pool", s.q_pool},
                   {"stages", s.stages}, {"global_att_blocks", s.global_att_blocks}, {"window_spec", s.window_spec},
                   {"q_stride", s.q_stride}, {"window_pos_embed_bkg_spatial_size", s.window_pos_embed_bkg_spatial_size},
                   {"dim_mul", s.dim_mul}, {"head_mul", s.head_mul}, {"mlp_ratio", s.mlp_ratio}}},
        {"fpn", {{"backbone_channel_list", s.backbone_channel_list}, {"fpn_top_down_levels", s.fpn_top_down_levels},
                 {"d_model", s.fpn_d_model}, {"scalp", s.scalp}}},
        {"memory_attention", {{"num_layers", s.mem_attn_layers}, {"dim_feedforward", s.mem_attn_ffn},
                              {"num_heads", s.mem_attn_heads}, {"kv_in_dim", s.mem_attn_kv_dim},
                              {"rope_theta", s.mem_attn_rope_theta}}},
        {"memory_encoder", {{"fuser_num_layers", s.fuser_layers}, {"cx_kernel_size", s.fuser_kernel},
                            {"out_dim", s.mem_out_dim}}},
        {"mask_decoder", {{"transformer_depth", s.decoder_depth}, {"num_heads", s.decoder_heads},
                          {"mlp_dim", s.decoder_mlp_dim}, {"num_multimask_outputs", s.num_multimask_outputs}}}};
  }
  return j;
}

}  // namespace sa2va
