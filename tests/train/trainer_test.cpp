// `sa2va train` pieces on the public fixtures: a data sample becomes exactly the token ids, labels and
// frozen features upstream trains on; the schedule; a short run that resumes bit for bit from its
// checkpoint; and the merged model folder, loaded by the inference pipeline, gives the trained
// model's outputs.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>

#include "io/image.h"
#include "io/mask_io.h"
#include "io/safetensors.h"
#include "models/quantize.h"
#include "models/sa2va_model.h"
#include "test_util.h"
#include "train/batch_step.h"
#include "train/losses.h"
#include "train/trainer.h"

namespace sa2va {
namespace {

using nlohmann::json;

// A fixture mask PNG (255 = object) as the RLE the training format takes.
json rle_of_png(const std::string& path) {
  const Image png = load_image(path, kDefaultMaxPixels);
  std::vector<uint8_t> mask(static_cast<size_t>(png.width) * png.height);
  for (size_t i = 0; i < mask.size(); ++i) mask[i] = png.rgb[3 * i] > 127;
  const CocoRle rle = rle_encode({mask.data(), png.height, png.width});
  return {{"size", {png.height, png.width}}, {"counts", rle_counts_to_string(rle.counts)}};
}

const char* kGcgQuestion =
    "<image>\nCould you please give me a brief description of the image? Please respond with interleaved "
    "segmentation masks for the corresponding parts of the answer.";

// Inference of `model` on `request` (an answer forced) reads the token ids training prepared (up to
// the separator after the answer) and gives the trained language model's [SEG] embedding (f32).
void expect_inference_matches_training(const Sa2vaModel& model, const Request& request,
                                       const train::BatchSample& prepared,
                                       const train::TrainableLanguageModel::Forward& f) {
  StageRecorder rec;
  model.predict(request, &rec);
  Tensor seg_embeds, input_ids;
  for (const auto& [name, t] : rec.stages()) {
    if (name == "seg.embeds") seg_embeds = t;
    if (name == "input_ids") input_ids = t.to(DType::I64);
  }
  ASSERT_TRUE(seg_embeds.defined() && input_ids.defined());
  ASSERT_LE(input_ids.numel(), static_cast<int64_t>(prepared.text.input_ids.size()));
  for (int64_t i = 0; i < input_ids.numel(); ++i)
    ASSERT_EQ(input_ids.data<int64_t>()[i], prepared.text.input_ids[static_cast<size_t>(i)]) << "token " << i;
  EXPECT_LE(test::compare(seg_embeds.view(f.seg_embeds.shape()), f.seg_embeds).rel(), 1e-4)
      << "[SEG] embedding of inference vs training";
}

// The trained model (a checkpoint's tensors) and the merged folder it exported, given one image and
// question with the answer "Sure, [SEG].": inference on the merged folder (f32) must give the trained
// model's [SEG] embedding and the token ids training prepared (up to the separator after the answer).
void expect_merged_model_matches_trained(const train::TrainOptions& options, const std::string& checkpoint,
                                         const std::string& merged_dir, const std::string& image,
                                         const std::string& question) {
  train::Trainer trained(options);
  trained.load_parameters(checkpoint);
  train::TrainingSample sample;
  sample.where = "check";
  sample.images = {image};
  sample.turns = {{"<image>\n" + question, "Sure, [SEG]."}};
  sample.seg_count = 1;
  sample.masks = {{json::array({json::array({1, 1, 9, 1, 9, 9})}).dump()}};
  const train::BatchSample prepared = trained.prepare(sample);
  const train::TrainableLanguageModel::Forward f = trained.model().llm.forward(prepared.text);

  const auto merged = Sa2vaModel::load(merged_dir, Precision::F32);
  Request request;
  request.image = load_image(image, kDefaultMaxPixels);
  request.text = question;
  request.forced_answer = "Sure, [SEG].";
  expect_inference_matches_training(*merged, request, prepared, f);
}

train::TrainOptions tiny_options(const std::string& model, const std::string& data, const std::string& out) {
  train::TrainOptions o;
  o.model_dir = model;
  o.data_path = data;
  o.out_dir = out;
  o.lora_r = 4;
  o.lora_alpha = 8;
  o.lr = 1e-3f;
  o.batch = 1;
  o.grad_accum = 2;
  o.mask_points = 300;
  o.threads = 1;
  o.seed = 5;
  return o;
}

// The grounded-caption sample of the training fixture (two [SEG]), whose prompt is the model's own template.
train::TrainingSample gcg_sample(const std::string& dir) {
  train::TrainingSample sample;
  sample.where = "gcg";
  sample.images = {dir + "/inputs/gcg.png"};
  sample.turns = {{kGcgQuestion, "<p> a circle </p> [SEG] and <p> a box </p> [SEG]."}};
  sample.seg_count = 2;
  sample.masks = {{rle_of_png(dir + "/inputs/gcg_mask0.png").dump()}, {rle_of_png(dir + "/inputs/gcg_mask1.png").dump()}};
  return sample;
}

TEST(Trainer, ASampleBecomesTheTokensLabelsAndFeaturesUpstreamTrainsOn) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-train");
  SA2VA_REQUIRE_FIXTURE(model, "sa2va-tiny");
  const train::TrainingSample sample = gcg_sample(dir);
  const train::Trainer trainer(tiny_options(model, "", ""));
  const train::BatchSample prepared = trainer.prepare(sample);
  const auto inputs = SafetensorsFile::open(dir + "/inputs.safetensors");
  const Tensor ids = inputs->get("s1.input_ids"), labels = inputs->get("s1.labels");
  EXPECT_EQ(prepared.text.input_ids, std::vector<int64_t>(ids.data<int64_t>(), ids.data<int64_t>() + ids.numel()));
  EXPECT_EQ(prepared.text.labels, std::vector<int64_t>(labels.data<int64_t>(), labels.data<int64_t>() + labels.numel()));
  const test::Diff vision = test::compare(prepared.text.vision, inputs->get("s1.mlp1_input"));
  EXPECT_LE(vision.rel(), 1e-4) << "frozen InternViT features";
  // The targets: the ground truth resized to 256² as the fixture's step does.
  const Tensor gt = inputs->get("s1.gt_masks");
  const Tensor expected = train::resize_masks_nearest(gt.data<uint8_t>(), gt.size(0), gt.size(1), gt.size(2), 256);
  ASSERT_EQ(prepared.targets.size(), 1u);
  EXPECT_EQ(test::compare(prepared.targets[0], expected).max_abs, 0.0);
  ASSERT_EQ(prepared.frames.size(), 1u);
  EXPECT_EQ(prepared.frames[0].embedding.dim(), 3);
}

// More [SEG] than objects per frame: the decoder runs for the drawn ones only, and each drawn
// object's loss is the one it has when every [SEG] is drawn (same points).
TEST(Trainer, ASubsetOfTheSegTokensDrawnGivesTheirOwnLosses) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-train");
  SA2VA_REQUIRE_FIXTURE(model, "sa2va-tiny");
  const train::TrainingSample sample = gcg_sample(dir);
  const train::Trainer trainer(tiny_options(model, "", ""));
  const std::vector<train::BatchSample> batch{trainer.prepare(sample)};
  const auto losses_with = [&](std::vector<int64_t> drawn) {
    train::BatchChoices choices;
    choices.objects = [drawn](int64_t segs) {
      EXPECT_EQ(segs, 2);
      return drawn;
    };
    choices.points = [](const Tensor& logits) {  // the same 50 points for every object
      Tensor points = Tensor::empty({logits.size(0), 50, 2});
      for (int64_t i = 0; i < points.numel(); ++i) points.f32()[i] = static_cast<float>((i % 100 * 37) % 101) / 101.0f;
      return points;
    };
    train::BatchGrads grads = trainer.model().zero_grads();
    return trainer.model().forward_backward(batch, choices, 2.0f, 0.5f, 1.0f, grads);
  };
  const train::BatchLosses both = losses_with({0, 1}), second = losses_with({1}), first = losses_with({0});
  ASSERT_EQ(both.dice_per_mask.size(), 2u);
  ASSERT_EQ(second.dice_per_mask.size(), 1u);
  EXPECT_EQ(second.objects, 1);
  EXPECT_FLOAT_EQ(second.dice_per_mask[0], both.dice_per_mask[1]);
  EXPECT_FLOAT_EQ(first.dice_per_mask[0], both.dice_per_mask[0]);
  EXPECT_NE(first.dice_per_mask[0], second.dice_per_mask[0]);
}

// A fixture mask PNG (255 = object) as a visual prompt of the inference API.
Mask mask_of_png(const std::string& path) {
  const Image png = load_image(path, kDefaultMaxPixels);
  Mask m{png.width, png.height, std::vector<uint8_t>(static_cast<size_t>(png.width) * png.height)};
  for (size_t i = 0; i < m.data.size(); ++i) m.data[i] = png.rgb[3 * i] > 127;
  return m;
}

// Visual prompts (regions): a sample trains on what inference reads for the same image, regions and
// question: the same token ids (region1<vp>…</vp> after the image), and the language model, with the
// regions' rows spliced in after the thumbnail's, gives the same [SEG] embedding (LoRA starts at zero).
// gcg.png is one tile; res.png (600x280) two tiles and the thumbnail, whose cells the regions take.
TEST(Trainer, ASampleWithRegionsTrainsOnWhatInferenceReadsForItsMaskPrompts) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-train");
  SA2VA_REQUIRE_FIXTURE(model, "sa2va-tiny");
  const train::Trainer trainer(tiny_options(model, "", ""));
  const auto inference = Sa2vaModel::load(model, Precision::F32);
  const std::string question = "What is region1, and where is region2?";
  for (const std::string name : {"gcg", "res"}) {
    SCOPED_TRACE(name);
    const std::string image = dir + "/inputs/" + name + ".png";
    const std::vector<std::string> region_files = {dir + "/inputs/" + name + "_mask0.png",
                                                   name == "gcg" ? dir + "/inputs/gcg_mask1.png" : ""};
    train::TrainingSample sample;
    sample.where = "regions";
    sample.images = {image};
    sample.turns = {{"<image>\n" + question, "Sure, [SEG]."}};
    sample.seg_count = 1;
    sample.masks = {{rle_of_png(region_files[0]).dump()}};
    Request request;
    request.image = load_image(image, kDefaultMaxPixels);
    request.text = question;
    request.forced_answer = "Sure, [SEG].";
    request.mask_prompts = {mask_of_png(region_files[0])};
    if (!region_files[1].empty()) {
      request.mask_prompts.push_back(mask_of_png(region_files[1]));
    } else {  // a second region: the lower right quarter
      Mask quarter{request.image.width, request.image.height,
                   std::vector<uint8_t>(static_cast<size_t>(request.image.width) * request.image.height)};
      for (int y = quarter.height / 2; y < quarter.height; ++y)
        for (int x = quarter.width / 2; x < quarter.width; ++x) quarter.data[static_cast<size_t>(y) * quarter.width + x] = 1;
      request.mask_prompts.push_back(quarter);
    }
    for (const Mask& m : request.mask_prompts) {
      const CocoRle rle = rle_encode({m.data.data(), m.height, m.width});
      sample.regions.push_back(json{{"size", {m.height, m.width}}, {"counts", rle_counts_to_string(rle.counts)}}.dump());
    }
    const train::BatchSample prepared = trainer.prepare(sample);
    const train::TrainableLanguageModel::Forward f = trainer.model().llm.forward(prepared.text);
    const int64_t tiles = prepared.text.vision.size(0), tokens = prepared.text.vision.size(1);
    EXPECT_EQ(tiles, name == "gcg" ? 1 : 3);
    ASSERT_GT(static_cast<int64_t>(prepared.text.image_rows.size()), tiles * tokens);
    for (size_t i = static_cast<size_t>(tiles * tokens); i < prepared.text.image_rows.size(); ++i)
      ASSERT_GE(prepared.text.image_rows[i], (tiles - 1) * tokens) << "a region row outside the thumbnail";

    expect_inference_matches_training(*inference, request, prepared, f);

    // A region not at the image's size is refused, naming it.
    train::TrainingSample wrong = sample;
    wrong.regions[1] = R"({"size": [3, 4], "counts": [12]})";
    try {
      trainer.prepare(wrong);
      ADD_FAILURE() << "a region of another size was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("regions: region 2"), std::string::npos) << e.what();
    }
  }
}

// --max-length cuts a sample as upstream does, but one cut before its first answer token would train
// on nothing: it is refused, naming the sample.
TEST(Trainer, AMaxLengthThatCutsOffEveryAnswerIsRefused) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-train");
  SA2VA_REQUIRE_FIXTURE(model, "sa2va-tiny");
  const train::TrainingSample sample = gcg_sample(dir);
  train::TrainOptions options = tiny_options(model, "", "");
  const std::vector<int64_t> labels = train::Trainer(options).prepare(sample).text.labels;
  const int64_t first = std::find_if(labels.begin(), labels.end(), [](int64_t l) { return l != -100; }) - labels.begin();
  ASSERT_LT(first, static_cast<int64_t>(labels.size()));
  options.max_length = first + 1;  // one answer token left
  const train::BatchSample cut = train::Trainer(options).prepare(sample);
  EXPECT_EQ(static_cast<int64_t>(cut.text.labels.size()), first + 1);
  EXPECT_NE(cut.text.labels.back(), -100);
  options.max_length = first;
  try {
    train::Trainer(options).prepare(sample);
    ADD_FAILURE() << "a sample without an answer token was prepared";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gcg: --max-length " + std::to_string(first) + " cuts off every answer"),
              std::string::npos) << e.what();
  }
}

TEST(Trainer, ScheduleWarmsUpLinearlyThenFollowsTheCosineToZero) {
  const float lr = 4e-5f;
  EXPECT_FLOAT_EQ(train::scheduled_lr(0, 100, lr, 0.05f), lr * 1e-5f);  // 5 warm-up iterations
  EXPECT_NEAR(train::scheduled_lr(2, 100, lr, 0.05f), lr * (1e-5f + (1 - 1e-5f) * 0.4f), 1e-12);
  EXPECT_FLOAT_EQ(train::scheduled_lr(5, 100, lr, 0.05f), lr);  // the cosine starts at the peak
  EXPECT_NEAR(train::scheduled_lr(52, 100, lr, 0.05f), lr * 0.5f * (1 + std::cos(M_PI * 47 / 95)), 1e-12);
  EXPECT_NEAR(train::scheduled_lr(99, 100, lr, 0.05f), lr * 0.5f * (1 + std::cos(M_PI * 94 / 95)), 1e-12);
  EXPECT_FLOAT_EQ(train::scheduled_lr(0, 10, lr, 0.05f), lr);  // under one warm-up iteration: none
}

TEST(Trainer, ARunResumesBitForBitAndItsMergedModelGivesTheTrainedOutputs) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-train");
  SA2VA_REQUIRE_FIXTURE(model, "sa2va-tiny");
  const std::string work = test::temp_dir("trainer-run");
  std::filesystem::remove_all(work);
  std::filesystem::create_directories(work);
  // Two samples: the two fixture images, RLE and polygon masks, one and two [SEG].
  {
    std::ofstream data(work + "/data.jsonl");
    const json res = {{"image", dir + "/inputs/res.png"},
                      {"conversations", {{{"from", "human"}, {"value", "<image>\nPlease segment the red circle in this image."}},
                                         {{"from", "gpt"}, {"value", "Sure, [SEG]."}}}},
                      {"masks", {rle_of_png(dir + "/inputs/res_mask0.png")}}};
    const json gcg = {{"image", dir + "/inputs/gcg.png"},
                      {"conversations", {{{"from", "human"}, {"value", kGcgQuestion}},
                                         {{"from", "gpt"}, {"value", "<p> a circle </p> [SEG] and <p> a box </p> [SEG]."}}}},
                      {"masks", {rle_of_png(dir + "/inputs/gcg_mask0.png"), json::array({json::array({100, 100, 200, 100, 200, 220, 100, 220})})}}};
    data << res.dump() << "\n" << gcg.dump() << "\n";
  }
  train::TrainOptions o = tiny_options(model, work + "/data.jsonl", work + "/a");
  o.save_every = 1;  // 2 iterations of one sample, one step each: checkpoints 1 and 2
  o.grad_accum = 1;
  o.export_f32 = true;
  std::vector<float> losses;
  std::vector<std::string> notes;
  const train::TrainResult a = train::train(
      o, [&](const train::TrainProgress& p) { losses.push_back(p.loss); },
      [&](const std::string& note) { notes.push_back(note); });
  ASSERT_EQ(notes.size(), 1u);  // what the run will do, once the data are read
  EXPECT_EQ(notes[0], o.data_path + ": 2 samples (2 images, 0 videos; 2 with masks, 0 with visual prompts); "
                                    "2 optimiser steps, 1 sample each");
  ASSERT_EQ(a.steps, 2);
  ASSERT_EQ(losses.size(), 2u);
  ASSERT_TRUE(std::filesystem::exists(work + "/a/checkpoint-1/trainer_state.safetensors"));
  EXPECT_EQ(a.last_checkpoint, work + "/a/checkpoint-2");

  // Resumed from step 1 in another folder: the same final state, bit for bit.
  train::TrainOptions resumed = o;
  resumed.out_dir = work + "/b";
  resumed.resume_dir = work + "/a/checkpoint-1";
  const train::TrainResult b = train::train(resumed);
  EXPECT_EQ(b.steps, 2);
  const auto sa = SafetensorsFile::open(work + "/a/checkpoint-2/trainer_state.safetensors");
  const auto sb = SafetensorsFile::open(work + "/b/checkpoint-2/trainer_state.safetensors");
  size_t compared = 0;
  for (const auto& [name, info] : sa->tensors()) {
    ASSERT_TRUE(sb->has(name)) << name;
    EXPECT_EQ(test::compare(sa->get(name), sb->get(name)).max_abs, 0.0) << name;
    ++compared;
  }
  EXPECT_GT(compared, 100u);
  // Resumed in its own folder, after a crash that cut a log line short: each step is logged once.
  {
    std::ofstream(work + "/a/train_log.jsonl", std::ios::app) << "{\"step\": 3, \"lo";
    train::TrainOptions again = o;
    again.resume_dir = work + "/a/checkpoint-1";
    train::train(again);
    std::ifstream in(work + "/a/train_log.jsonl");
    std::vector<int64_t> steps;
    for (std::string line; std::getline(in, line);) steps.push_back(json::parse(line).at("step").get<int64_t>());
    EXPECT_EQ(steps, (std::vector<int64_t>{1, 2}));
    // A finished run resumed from its last checkpoint has no step left: it ends at that checkpoint.
    again.resume_dir = work + "/a/checkpoint-2";
    EXPECT_EQ(train::train(again).last_checkpoint, work + "/a/checkpoint-2");
  }
  // A resume with other options is refused with the option named.
  resumed.out_dir = work + "/c";
  resumed.lr = 2e-3f;
  try {
    train::train(resumed);
    ADD_FAILURE() << "a resume with another learning rate was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("lr"), std::string::npos) << e.what();
  }
  // So is a resume from another model of the same shapes (here the run's own merged model), or with
  // other data of the same sample count: both before the model loads.
  resumed.lr = o.lr;
  resumed.model_dir = a.merged_dir;
  try {
    train::train(resumed);
    ADD_FAILURE() << "a resume from another model was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("another model than " + a.merged_dir), std::string::npos) << e.what();
  }
  resumed.model_dir = o.model_dir;
  {
    std::ifstream in(work + "/data.jsonl");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    text.replace(text.find("Sure, [SEG]."), 12, "It is [SEG].");
    std::ofstream(work + "/other.jsonl") << text;
  }
  resumed.data_path = work + "/other.jsonl";
  try {
    train::train(resumed);
    ADD_FAILURE() << "a resume with other training data was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("other training data than " + work + "/other.jsonl"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(work + "/c/train_log.jsonl"));

  // The merged folder through the inference pipeline gives the trained model's outputs; its tensors
  // keep the checkpoint's names.
  expect_merged_model_matches_trained(o, a.last_checkpoint, a.merged_dir, dir + "/inputs/res.png",
                                      "Please segment the red circle in this image.");
  const Checkpoint source = Checkpoint::open(model), exported = Checkpoint::open(a.merged_dir);
  EXPECT_EQ(exported.names(), source.names());

  EXPECT_EQ(exported.info("mlp1.1.weight").dtype, DType::F32);

  // By default the merged model keeps the checkpoint's dtypes.
  train::Trainer plain(tiny_options(model, "", ""));
  plain.export_merged(work + "/merged-as-stored");
  const Checkpoint as_stored = Checkpoint::open(work + "/merged-as-stored");
  for (const std::string& name : {std::string("mlp1.1.weight"), std::string("language_model.model.layers.0.self_attn.q_proj.weight")})
    EXPECT_EQ(as_stored.info(name).dtype, source.info(name).dtype) << name;
}

// What a run reads is never what it destroys, and a fresh run does not mix with an earlier one:
// all refused before the model loads.
TEST(Trainer, RefusesRunsThatWouldDestroyOrMixWithWhatTheyRead) {
  SA2VA_REQUIRE_FIXTURE(model, "sa2va-tiny");
  SA2VA_REQUIRE_FIXTURE(train_fixture, "sa2va-tiny-train");
  namespace fs = std::filesystem;
  const std::string work = test::temp_dir("trainer-refusals");
  fs::remove_all(work);
  fs::create_directories(work);
  const json sample = {{"image", train_fixture + "/inputs/res.png"},
                       {"conversations", {{{"from", "human"}, {"value", "<image>\nPlease segment the red circle."}},
                                          {{"from", "gpt"}, {"value", "Sure, [SEG]."}}}},
                       {"masks", {rle_of_png(train_fixture + "/inputs/res_mask0.png")}}};
  std::ofstream(work + "/data.jsonl") << sample.dump() << "\n";
  const auto refusal = [](const train::TrainOptions& o) -> std::string {
    try {
      train::train(o);
    } catch (const Error& e) {
      return e.what();
    }
    return "accepted";
  };
  // The model is the merged output of the run (a second round trained into the first round's folder).
  fs::create_directories(work + "/round1");
  fs::copy(model, work + "/round1/model", fs::copy_options::recursive);
  std::string message = refusal(tiny_options(work + "/round1/model", work + "/data.jsonl", work + "/round1"));
  EXPECT_NE(message.find("which the run replaces"), std::string::npos) << message;
  EXPECT_TRUE(fs::exists(work + "/round1/model/model.safetensors"));
  message = refusal(tiny_options(work + "/round1/model", work + "/data.jsonl", work + "/round1/model/.."));
  EXPECT_NE(message.find("which the run replaces"), std::string::npos) << message;
  // A fresh run into a folder that holds an earlier run's log.
  fs::create_directories(work + "/used");
  std::ofstream(work + "/used/train_log.jsonl") << "{\"step\": 1}\n";
  message = refusal(tiny_options(model, work + "/data.jsonl", work + "/used"));
  EXPECT_NE(message.find("holds an earlier run"), std::string::npos) << message;
  // An image that is not there is named before the model loads, not when its sample comes up.
  std::ofstream(work + "/missing.jsonl") << json{{"image", work + "/nowhere.png"}, {"conversations", sample["conversations"]},
                                                 {"masks", sample["masks"]}}.dump()
                                         << "\n";
  message = refusal(tiny_options(model, work + "/missing.jsonl", work + "/fresh"));
  EXPECT_NE(message.find(work + "/missing.jsonl:1: " + work + "/nowhere.png: no such image file"), std::string::npos) << message;
  // Options no run can use.
  train::TrainOptions o = tiny_options(model, work + "/data.jsonl", work + "/fresh");
  o.lr = std::numeric_limits<float>::infinity();
  message = refusal(o);
  EXPECT_NE(message.find("--lr"), std::string::npos) << message;
  o = tiny_options(model, work + "/data.jsonl", work + "/fresh");
  o.threads = -1;
  message = refusal(o);
  EXPECT_NE(message.find("--threads"), std::string::npos) << message;
  // A quantized folder holds 8-bit codes: refused when the trainer opens it, not after the run.
  QuantizeOptions q;
  q.model_dir = model;
  q.out_dir = work + "/q8";
  q.format = WeightFormat::Q8_0;
  quantize_model(q);
  message = refusal(tiny_options(work + "/q8", work + "/data.jsonl", work + "/fresh"));
  EXPECT_NE(message.find("is quantized"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(work + "/fresh/train_log.jsonl"));
}

// A sample that fails midway (here an image that stops decoding) names its line and file, and the
// run's state after its last optimiser step is saved so that --resume continues from it.
TEST(Trainer, AFailedRunNamesTheSampleAndKeepsItsProgress) {
  SA2VA_REQUIRE_FIXTURE(model, "sa2va-tiny");
  SA2VA_REQUIRE_FIXTURE(train_fixture, "sa2va-tiny-train");
  namespace fs = std::filesystem;
  const std::string work = test::temp_dir("trainer-failure");
  fs::remove_all(work);
  fs::create_directories(work);
  std::ofstream data(work + "/data.jsonl");
  for (const char* name : {"a.png", "b.png"}) {
    fs::copy_file(train_fixture + "/inputs/res.png", work + "/" + name);
    const json sample = {{"image", work + "/" + name},
                         {"conversations", {{{"from", "human"}, {"value", "<image>\nPlease segment the red circle."}},
                                            {{"from", "gpt"}, {"value", "Sure, [SEG]."}}}},
                         {"masks", {rle_of_png(train_fixture + "/inputs/res_mask0.png")}}};
    data << sample.dump() << "\n";
  }
  data.close();
  train::TrainOptions o = tiny_options(model, work + "/data.jsonl", work + "/run");
  o.grad_accum = 1;  // two steps of one sample each; no checkpoint before the last
  // After the first step both images break; the first sample's features are already cached.
  const auto break_images = [&](const train::TrainProgress&) {
    for (const char* name : {"a.png", "b.png"}) std::ofstream(work + "/" + name, std::ios::trunc) << "not a png";
  };
  std::string message;
  try {
    train::train(o, break_images);
    ADD_FAILURE() << "a run whose second image does not decode finished";
  } catch (const Error& e) {
    message = e.what();
  }
  EXPECT_NE(message.find(work + "/data.jsonl:"), std::string::npos) << message;
  EXPECT_NE(message.find(".png"), std::string::npos) << message;
  EXPECT_NE(message.find("--resume " + work + "/run/checkpoint-1"), std::string::npos) << message;
  ASSERT_TRUE(fs::exists(work + "/run/checkpoint-1/trainer_state.safetensors"));
  EXPECT_FALSE(fs::exists(work + "/run/model"));
  // Mended, the run continues from that state to the end and writes its merged model.
  for (const char* name : {"a.png", "b.png"}) {
    fs::remove(work + "/" + name);
    fs::copy_file(train_fixture + "/inputs/res.png", work + "/" + name);
  }
  // Counters that do not agree (an iteration past its step's accumulation group) are refused.
  {
    const auto state = SafetensorsFile::open(work + "/run/checkpoint-1/trainer_state.safetensors");
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (const auto& [name, info] : state->tensors()) tensors.emplace_back(name, state->get(name));
    std::map<std::string, std::string> metadata = state->metadata();
    metadata["iteration"] = "2";
    fs::create_directories(work + "/damaged");
    write_safetensors(work + "/damaged/trainer_state.safetensors", tensors, metadata);
  }
  o.resume_dir = work + "/damaged";
  o.out_dir = work + "/run-damaged";
  try {
    train::train(o);
    ADD_FAILURE() << "a checkpoint with damaged counters was resumed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("damaged counters"), std::string::npos) << e.what();
  }
  o.out_dir = work + "/run";
  o.resume_dir = work + "/run/checkpoint-1";
  const train::TrainResult resumed = train::train(o);
  EXPECT_EQ(resumed.steps, 2);
  EXPECT_TRUE(fs::exists(work + "/run/model/model.safetensors"));
  EXPECT_FALSE(fs::exists(work + "/run/model.partial"));
}

// Sa2VA-8B's layout: InternLM2 (fused grouped wqkv, its own output head, SentencePiece with BOS).
// Training follows that layout: the merged folder through inference gives the trained model's [SEG]
// embedding, so the fused projection's rows went back to the checkpoint's grouped order.
TEST(Trainer, TrainsTheInternLM2LayoutAndItsUntiedHead) {
  SA2VA_REQUIRE_FIXTURE(model, "sa2va-tiny-internlm2");
  SA2VA_REQUIRE_FIXTURE(train_fixture, "sa2va-tiny-train");
  const std::string work = test::temp_dir("trainer-internlm2");
  std::filesystem::remove_all(work);
  std::filesystem::create_directories(work);
  const json sample = {{"image", model + "/inputs/image.png"},
                       {"conversations", {{{"from", "human"}, {"value", "<image>\nPlease segment the object."}},
                                          {{"from", "gpt"}, {"value", "Sure, [SEG]."}}}},
                       {"masks", {json::array({json::array({2, 2, 40, 2, 40, 30, 2, 30})})}}};
  std::ofstream(work + "/data.jsonl") << sample.dump() << "\n" << sample.dump() << "\n";
  train::TrainOptions o = tiny_options(model, work + "/data.jsonl", work + "/run");
  o.export_f32 = true;
  o.lr = 5e-3f;
  const train::TrainResult result = train::train(o);
  ASSERT_EQ(result.steps, 1);

  train::Trainer trained(o);
  const auto names = trained.model().parameters();
  const auto has = [&](const std::string& n) {
    return std::any_of(names.begin(), names.end(), [&](const auto& p) { return p.first == n; });
  };
  EXPECT_TRUE(has("language_model.output.weight"));
  EXPECT_TRUE(has("language_model.model.tok_embeddings.weight"));
  EXPECT_TRUE(has("lora.language_model.model.layers.0.attention.wqkv.A"));
  EXPECT_TRUE(has("lora.language_model.model.layers.1.feed_forward.w2.B"));
  expect_merged_model_matches_trained(o, result.last_checkpoint, result.merged_dir, model + "/inputs/image.png",
                                      "Please segment the object.");
  // The step moved the head and the fused projection away from the checkpoint.
  const Checkpoint source = Checkpoint::open(model), exported = Checkpoint::open(result.merged_dir);
  for (const char* name : {"language_model.output.weight", "language_model.model.layers.0.attention.wqkv.weight"})
    EXPECT_GT(test::compare(exported.get(name), source.get(name)).max_abs, 0.0) << name;
}

}  // namespace
}  // namespace sa2va
