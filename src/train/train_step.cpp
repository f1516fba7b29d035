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
#include "train/batch_step.h"

namespace sa2va::train {
namespace {

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
  Weights weights(checkpoint, Precision::F32);
  const sam2::Sam2Image sam = sam2::Sam2Image::load(weights, config);
  weights.finish();
  Sa2vaTrainable model{TrainableLanguageModel::load(checkpoint, config, lora, lora_scale),
                       TrainableMaskDecoder::load(checkpoint, kMaskDecoderPrefix), &sam};
  model.llm.img_context_id = meta.at("special_tokens").at("img_context").get<int32_t>();
  model.llm.seg_id = meta.at("special_tokens").at("seg").get<int32_t>();

  std::vector<BatchSample> batch;
  for (size_t i = 0; i < meta.at("samples").size(); ++i) {
    const std::string s = "s" + std::to_string(i);
    const nlohmann::json& sm = meta["samples"][i];
    BatchSample sample;
    sample.text = {ids_of(inputs->get(s + ".input_ids")), ids_of(inputs->get(s + ".labels")),
                   inputs->get(s + ".mlp1_input"), {}};
    sample.frames.push_back(
        frozen_frame_features(sam, load_image(fixture_dir + "/" + sm.at("image").get<std::string>())));
    const Tensor gt = inputs->get(s + ".gt_masks");
    check(gt.dim() == 3 && gt.dtype() == DType::U8, fixture_dir + ": " + s + ".gt_masks must be U8 [S, H, W]");
    sample.targets.push_back(resize_masks_nearest(gt.data<uint8_t>(), gt.size(0), gt.size(1), gt.size(2), kLowResMask));
    batch.push_back(std::move(sample));
  }
  // The fixture fixes what upstream draws: objects cycled to fix_obj_number, the stored points.
  const int64_t per_frame = hyper.at("fix_obj_number").get<int64_t>();
  const Tensor points = inputs->get("points.coords");
  BatchChoices choices;
  choices.objects = [per_frame](int64_t segs) { return cycle_objects(segs, per_frame); };
  choices.points = [&](const Tensor& logits) {
    check(points.dim() == 3 && points.size(0) == logits.size(0),
          fixture_dir + ": points.coords " + shape_str(points.shape()) + " for " + std::to_string(logits.size(0)) +
              " objects");
    return points;
  };
  BatchGrads grads = model.zero_grads();
  const BatchLosses losses = model.forward_backward(batch, choices, hyper.at("loss_mask_weight").get<float>(),
                                                    hyper.at("loss_dice_weight").get<float>(), 1.0f, grads);
  check(losses.supervised_tokens > 0, fixture_dir + ": no supervised tokens");

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
      t.value = inputs->get(name).to(DType::F32);
    } else {
      t.value = checkpoint.get(name).to(DType::F32);
    }
    t.grad = model.gradient(grads, name);
    if (!t.grad.defined()) {
      check(name.rfind(kMaskDecoderPrefix, 0) == 0, "training: " + name + " is not a tensor this step trains");
      t.grad = Tensor::zeros(t.value.shape());  // a decoder head the loss does not reach
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
  out.emplace_back("loss.total", scalar(losses.total));
  out.emplace_back("loss.mask", scalar(losses.mask));
  out.emplace_back("loss.dice", scalar(losses.dice));
  out.emplace_back("loss.llm", scalar(losses.llm));
  out.emplace_back("loss.dice_per_mask",
                   Tensor::from_vector(losses.dice_per_mask, {static_cast<int64_t>(losses.dice_per_mask.size())}));
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
