#include "train/train_step.h"

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/config.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "models/preprocess.h"
#include "models/sam2/sam2_image.h"
#include "ops/ops.h"
#include "train/losses.h"
#include "train/lora.h"
#include "train/mask_decoder.h"
#include "train/optimizer.h"
#include "train/sa2va_llm.h"

namespace sa2va::train {
namespace {

const std::string kDecoderPrefix = "grounding_encoder.sam2_model.sam_mask_decoder.";

std::vector<int64_t> ids_of(const Tensor& t) {
  check(t.dtype() == DType::I64, "training fixture: token ids and labels must be I64");
  return std::vector<int64_t>(t.data<int64_t>(), t.data<int64_t>() + t.numel());
}

Tensor scalar(float v) { return Tensor::from_vector({v}, {1}); }

}  // namespace

namespace {
std::vector<std::pair<std::string, Tensor>> run_step(const std::string& model_dir, const std::string& fixture_dir);
}

std::vector<std::pair<std::string, Tensor>> run_fixture_step(const std::string& model_dir, const std::string& fixture_dir) {
  try {
    return run_step(model_dir, fixture_dir);
  } catch (const nlohmann::json::exception& e) {  // a field of meta.json missing or of the wrong type
    throw Error(fixture_dir + "/meta.json: not a training fixture's description (" + e.what() + ")");
  }
}

namespace {

std::vector<std::pair<std::string, Tensor>> run_step(const std::string& model_dir, const std::string& fixture_dir) {
  nlohmann::json meta;
  {
    std::ifstream in(fixture_dir + "/meta.json");
    check(in.good(), fixture_dir + "/meta.json: cannot open (not a training fixture folder?)");
    try {
      meta = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw Error(fixture_dir + "/meta.json: malformed JSON (" + e.what() + ")");
    }
  }
  for (const char* field : {"hyper", "samples", "trainable", "special_tokens", "merged_layers"})
    check(meta.contains(field), fixture_dir + "/meta.json: not a training fixture's description (no \"" + field + "\")");
  const nlohmann::json& hyper = meta.at("hyper");
  const auto inputs = SafetensorsFile::open(fixture_dir + "/inputs.safetensors");
  const Checkpoint checkpoint = Checkpoint::open(model_dir);
  const ModelConfig config = load_config(model_dir);

  // ---- the language side
  std::map<std::string, std::pair<Tensor, Tensor>> lora;
  for (const auto& [name, info] : inputs->tensors())
    if (name.rfind("lora.", 0) == 0 && name.compare(name.size() - 2, 2, ".A") == 0) {
      const std::string path = name.substr(5, name.size() - 7);
      lora[path] = {inputs->get(name), inputs->get("lora." + path + ".B")};
    }
  const float lora_scale = hyper.at("lora_scale").get<float>();
  TrainableLanguageModel llm = TrainableLanguageModel::load(checkpoint, config, lora, lora_scale);
  llm.img_context_id = meta.at("special_tokens").at("img_context").get<int32_t>();
  llm.seg_id = meta.at("special_tokens").at("seg").get<int32_t>();
  const size_t n_samples = meta.at("samples").size();
  std::vector<TrainableLanguageModel::Sample> samples;
  std::vector<TrainableLanguageModel::Forward> lang;
  int64_t supervised = 0;
  double ce_sum = 0;
  for (size_t i = 0; i < n_samples; ++i) {
    const std::string s = "s" + std::to_string(i);
    samples.push_back({ids_of(inputs->get(s + ".input_ids")), ids_of(inputs->get(s + ".labels")),
                       inputs->get(s + ".mlp1_input")});
    lang.push_back(llm.forward(samples.back()));
    for (float ce : lang.back().token_ce) ce_sum += ce;
    supervised += static_cast<int64_t>(lang.back().token_ce.size());
  }
  check(supervised > 0, fixture_dir + ": no supervised tokens");
  const float llm_loss = static_cast<float>(ce_sum / static_cast<double>(supervised));

  // ---- the SAM2 side: one decoder run per [SEG], objects cycled to a fixed number per frame
  Weights weights(checkpoint, Precision::F32);
  const sam2::Sam2Image sam = sam2::Sam2Image::load(weights, config);
  weights.finish();
  const TrainableMaskDecoder decoder = TrainableMaskDecoder::load(checkpoint, kDecoderPrefix);
  const int64_t per_frame = hyper.at("fix_obj_number").get<int64_t>();
  std::vector<TrainableMaskDecoder::Output> runs;
  std::vector<int64_t> chosen, run_sample;
  std::vector<int64_t> object_run;  // run index of each object
  std::vector<Tensor> run_targets;  // ground truth at 256 x 256 per run
  for (size_t i = 0; i < n_samples; ++i) {
    const nlohmann::json& sm = meta["samples"][i];
    const Tensor x = preprocess::sam2_normalize(
        preprocess::sam2_resize(load_image(fixture_dir + "/" + sm.at("image").get<std::string>())),
        preprocess::Sam2Constants::Float32);
    const std::vector<sam2::TokenMap> levels = sam.neck.forward(sam.trunk.forward(x));
    sam2::FrameFeatures features;
    features.fpn2 = levels[2].to_chw();
    const Tensor embedding = sam.conditioning_embedding(features);
    const Tensor& seg = lang[i].seg_embeds;
    const Tensor gt = inputs->get("s" + std::to_string(i) + ".gt_masks");
    check(gt.dim() == 3 && gt.size(0) == seg.size(0), fixture_dir + ": sample " + std::to_string(i) + " has " +
                                                          std::to_string(seg.size(0)) + " [SEG] but " +
                                                          std::to_string(gt.dim() == 3 ? gt.size(0) : 0) + " masks");
    const Tensor targets = resize_masks_nearest(gt.data<uint8_t>(), gt.size(0), gt.size(1), gt.size(2), 256);
    const int64_t first_run = static_cast<int64_t>(runs.size());
    for (int64_t k = 0; k < seg.size(0); ++k) {
      TrainableMaskDecoder::Inputs in;
      in.image_embedding = embedding;
      in.image_pe = sam.prompt_encoder.dense_pe();
      in.dense = sam.prompt_encoder.no_mask.view({embedding.size(0)});
      in.sparse = sam.prompt_encoder.sparse_embeddings(seg.f32() + k * seg.size(1));
      in.fpn0 = levels[0].tokens;
      in.fpn1 = levels[1].tokens;
      TrainableMaskDecoder::Output out = decoder.forward(in);
      int64_t pick = 1;  // multimask: tokens 1..3, the highest predicted IoU
      for (int64_t m = 2; m < out.iou.numel(); ++m)
        if (out.iou.f32()[m] > out.iou.f32()[pick]) pick = m;
      runs.push_back(std::move(out));
      chosen.push_back(pick);
      run_sample.push_back(static_cast<int64_t>(i));
      run_targets.push_back(targets.select(0, k).contiguous());
    }
    for (int64_t o = 0; o < per_frame; ++o) object_run.push_back(first_run + o % seg.size(0));
  }
  const int64_t objects = static_cast<int64_t>(object_run.size());
  Tensor object_logits = Tensor::empty({objects, 256, 256}), object_targets = Tensor::empty({objects, 256, 256});
  for (int64_t o = 0; o < objects; ++o) {
    const size_t r = static_cast<size_t>(object_run[static_cast<size_t>(o)]);
    std::copy_n(runs[r].masks.select(0, chosen[r]).contiguous().f32(), 65536, object_logits.f32() + o * 65536);
    std::copy_n(run_targets[r].f32(), 65536, object_targets.f32() + o * 65536);
  }
  const Tensor points = inputs->get("points.coords");
  const MaskLosses mask_losses =
      point_mask_losses(point_sample(object_logits, points), point_sample(object_targets, points),
                        {hyper.at("loss_mask_weight").get<float>(), hyper.at("loss_dice_weight").get<float>()});
  const float total = (mask_losses.mask + mask_losses.dice) + llm_loss;

  // ---- backward: mask losses -> decoder -> [SEG] embeddings -> language side
  Tensor d_objects = Tensor::zeros({objects, 256, 256});
  point_sample_backward(mask_losses.grad_logits, points, d_objects);
  TrainableMaskDecoder::Grads dec_grads;
  std::vector<Tensor> d_seg(n_samples);
  for (size_t i = 0; i < n_samples; ++i) d_seg[i] = Tensor::zeros(lang[i].seg_embeds.shape());
  std::vector<int64_t> seg_in_sample(runs.size());
  for (size_t r = 0, k = 0; r < runs.size(); ++r) {
    k = (r > 0 && run_sample[r] == run_sample[r - 1]) ? k + 1 : 0;
    seg_in_sample[r] = static_cast<int64_t>(k);
  }
  for (size_t r = 0; r < runs.size(); ++r) {
    Tensor d_mask = Tensor::zeros({256, 256});
    for (int64_t o = 0; o < objects; ++o)
      if (object_run[static_cast<size_t>(o)] == static_cast<int64_t>(r))
        ops::add(d_mask.f32(), d_objects.f32() + o * 65536, d_mask.f32(), 65536);
    decoder.backward(runs[r], chosen[r], d_mask, dec_grads);
    const Tensor& ds = dec_grads.sparse;  // the language embedding is the last prompt token
    const int64_t c = ds.size(1);
    std::copy_n(ds.f32() + (ds.size(0) - 1) * c, c,
                d_seg[static_cast<size_t>(run_sample[r])].f32() + seg_in_sample[r] * c);
  }
  TrainableLanguageModel::Grads lang_grads = llm.zero_grads();
  for (size_t i = 0; i < n_samples; ++i)
    llm.backward(samples[i], lang[i], 1.0f / static_cast<float>(supervised), d_seg[i], lang_grads);

  // ---- every trainable tensor: its value and raw gradient, in the fixture's order
  struct Trainable {
    std::string name;
    Tensor value, grad;
  };
  std::vector<Trainable> trainables;
  for (const auto& entry : meta.at("trainable")) {
    const std::string name = entry.at("name");
    Trainable t{name, Tensor(), Tensor()};
    if (name.rfind("lora.", 0) == 0) {
      const std::string path = name.substr(5, name.size() - 7);
      const bool is_a = name.back() == 'A';
      t.value = inputs->get(name).to(DType::F32);
      const auto it = lang_grads.lora.find(path);
      check(it != lang_grads.lora.end(), "training: no gradient for " + name);
      t.grad = is_a ? it->second.da : it->second.db;
    } else {
      t.value = checkpoint.get(name).to(DType::F32);
      if (name == "language_model.model.embed_tokens.weight") {
        t.grad = lang_grads.embedding;
      } else if (const auto it = lang_grads.tensors.find(name); it != lang_grads.tensors.end()) {
        t.grad = it->second;
      } else if (name.rfind(kDecoderPrefix, 0) == 0) {
        const auto d = dec_grads.tensors.find(name.substr(kDecoderPrefix.size()));
        t.grad = d != dec_grads.tensors.end() ? d->second : Tensor::zeros(t.value.shape());  // unreached
      } else {
        throw Error("training: " + name + " is not a tensor this step trains");
      }
    }
    check(t.grad.numel() == t.value.numel(), "training: gradient of " + name + " has the wrong size");
    t.grad = t.grad.contiguous().view(t.value.shape());
    trainables.push_back(std::move(t));
  }

  // ---- clip, one AdamW step, merge
  std::vector<std::pair<const float*, int64_t>> all;
  for (const Trainable& t : trainables) all.emplace_back(t.grad.f32(), t.grad.numel());
  const double norm = global_grad_norm(all);
  const float coef = clip_coefficient(norm, hyper.at("max_norm").get<float>());
  AdamWOptions options;
  options.lr = hyper.at("lr").get<float>();
  options.beta1 = hyper.at("betas")[0].get<float>();
  options.beta2 = hyper.at("betas")[1].get<float>();
  options.eps = hyper.at("eps").get<float>();
  options.weight_decay = hyper.at("weight_decay").get<float>();
  std::vector<Tensor> stepped;
  for (const Trainable& t : trainables) {
    Tensor p = t.value.clone();
    AdamWState state;
    adamw_step(p.f32(), t.grad.f32(), coef, p.numel(), state, 1, options);
    stepped.push_back(p);
  }

  std::vector<std::pair<std::string, Tensor>> out;
  out.emplace_back("loss.total", scalar(total));
  out.emplace_back("loss.mask", scalar(mask_losses.mask));
  out.emplace_back("loss.dice", scalar(mask_losses.dice));
  out.emplace_back("loss.llm", scalar(llm_loss));
  out.emplace_back("loss.dice_per_mask",
                   Tensor::from_vector(mask_losses.dice_per_mask, {static_cast<int64_t>(mask_losses.dice_per_mask.size())}));
  for (const Trainable& t : trainables) out.emplace_back("grad." + t.name, t.grad);
  out.emplace_back("optim.grad_norm", scalar(static_cast<float>(norm)));
  out.emplace_back("optim.clip_coef", scalar(coef));
  for (size_t i = 0; i < trainables.size(); ++i) out.emplace_back("step1." + trainables[i].name, stepped[i]);
  std::map<std::string, Tensor> after;
  for (size_t i = 0; i < trainables.size(); ++i) after[trainables[i].name] = stepped[i];
  for (const auto& layer : meta.at("merged_layers")) {
    const std::string p = "language_model.model.layers." + std::to_string(layer.get<int>());
    for (const char* module : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}) {
      const std::string path = p + "." + module;
      out.emplace_back("merged." + path + ".weight", merge_lora(checkpoint.get(path + ".weight"),
                                                                after.at("lora." + path + ".A"),
                                                                after.at("lora." + path + ".B"), lora_scale));
    }
  }
  return out;
}

}  // namespace
}  // namespace sa2va::train
