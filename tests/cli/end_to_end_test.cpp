// The `sa2va` program end to end: make-model, run (text, image, video), dump, chat, tokenize,
// and its handling of bad input (a clear one-line error and a non-zero exit, never a crash).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/config.h"
#include "io/image.h"
#include "io/mask_io.h"
#include "io/safetensors.h"
#include "models/make_model.h"
#include "test_util.h"

namespace sa2va {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

std::string sa2va_cmd(const std::string& args) { return test::cli_path() + " --threads 2 " + args; }

// Runs the program; returns the exit code and the output.
int run(const std::string& args, std::string* out = nullptr) {
  std::string output;
  const int rc = test::run_command(sa2va_cmd(args), &output);
  if (out) *out = output;
  return rc;
}

// A program failure must be one "error: ..." line naming `needle`, with exit code 1 (not a crash).
void expect_clean_failure(const std::string& args, const std::string& needle) {
  std::string out;
  const int rc = run(args, &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("error: "), std::string::npos) << out;
  EXPECT_NE(out.find(needle), std::string::npos) << "expected '" << needle << "' in: " << out;
}

const std::string& tiny_model() {
  static std::string dir;
  if (dir.empty()) {
    dir = test::temp_dir("tiny-model");
    std::string out;
    EXPECT_EQ(run("make-model --preset tiny --out " + dir, &out), 0) << out;
  }
  return dir;
}

json read_json(const std::string& path) {
  json j;
  std::ifstream(path) >> j;
  return j;
}

TEST(EndToEnd, MakeModelTinyHasTheFixtureTensorList) {
  const std::string dir = tiny_model();
  Checkpoint made = Checkpoint::open(dir);
  EXPECT_TRUE(fs::exists(dir + "/config.json"));
  EXPECT_TRUE(fs::exists(dir + "/tokenizer.json"));
  // Every tensor the components bind is present with its shape.
  const auto declared = declare_checkpoint(preset_config("tiny"));
  EXPECT_EQ(made.names().size(), declared.size());
  for (const auto& d : declared) {
    ASSERT_TRUE(made.has(d.name)) << d.name;
    EXPECT_EQ(made.info(d.name).shape, d.shape) << d.name;
    EXPECT_EQ(made.info(d.name).dtype, DType::BF16) << d.name;
  }
  // And the list is exactly the real (fixture) checkpoint's.
  const std::string fixture = test::fixture_path("sa2va-tiny");
  if (fixture.empty()) GTEST_SKIP() << "fixture sa2va-tiny not found";
  Checkpoint real = Checkpoint::open(fixture);
  EXPECT_EQ(made.names(), real.names());
  for (const auto& name : real.names()) EXPECT_EQ(made.info(name).shape, real.info(name).shape) << name;
}

// The Sa2VA-InternVL3 presets: their config.json loads as a Sa2VA config with the real geometry,
// and the components enumerate the release's tensor list (declaring mode, no weights written).
TEST(EndToEnd, InternVl3PresetsLoadWithTheirTensorLists) {
  struct Want {
    const char* preset;
    int hidden, layers, heads, kv_heads, ffn;
  };
  for (const Want& w : {Want{"internvl3-2b", 1536, 28, 12, 2, 8960}, Want{"internvl3-8b", 3584, 28, 28, 4, 18944},
                        Want{"internvl3-14b", 5120, 48, 40, 8, 13824}}) {
    SCOPED_TRACE(w.preset);
    const std::string folder = test::temp_dir(std::string("preset-") + w.preset);
    std::ofstream(folder + "/config.json") << config_to_json(preset_config(w.preset)).dump(2);
    const ModelConfig c = load_config(folder);
    EXPECT_EQ(c.template_name, "qwen_chat");
    EXPECT_EQ(c.llm.arch, LlmArch::Qwen2);
    EXPECT_EQ(c.llm.hidden_size, w.hidden);
    EXPECT_EQ(c.llm.num_layers, w.layers);
    EXPECT_EQ(c.llm.num_heads, w.heads);
    EXPECT_EQ(c.llm.num_kv_heads, w.kv_heads);
    EXPECT_EQ(c.llm.head_dim, 128);
    EXPECT_EQ(c.llm.intermediate_size, w.ffn);
    EXPECT_EQ(c.llm.vocab_size, 151679);
    EXPECT_EQ(c.llm.rope_scaling_type, "dynamic");
    EXPECT_EQ(c.llm.rope_scaling_factor, 2.f);
    EXPECT_EQ(c.llm.rms_norm_eps, 1e-6f);
    EXPECT_EQ(c.vision.hidden_size, 1024);
    EXPECT_EQ(c.vision.num_layers, 24);
    EXPECT_EQ(c.num_image_tokens(), 256);

    std::map<std::string, Shape> shapes;
    for (const auto& d : declare_checkpoint(c)) EXPECT_TRUE(shapes.emplace(d.name, d.shape).second) << d.name;
    auto shape = [&](const std::string& name) {
      const auto it = shapes.find(name);
      EXPECT_NE(it, shapes.end()) << name;
      return it == shapes.end() ? Shape{} : it->second;
    };
    const int64_t D = w.hidden, q = int64_t{w.heads} * 128, kv = int64_t{w.kv_heads} * 128;
    const std::string last = "language_model.model.layers." + std::to_string(w.layers - 1) + ".";
    EXPECT_EQ(shape("language_model.model.embed_tokens.weight"), (Shape{151679, D}));
    EXPECT_EQ(shape("language_model.lm_head.weight"), (Shape{151679, D}));
    EXPECT_EQ(shape(last + "self_attn.q_proj.weight"), (Shape{q, D}));
    EXPECT_EQ(shape(last + "self_attn.k_proj.weight"), (Shape{kv, D}));
    EXPECT_EQ(shape(last + "self_attn.v_proj.bias"), (Shape{kv}));
    EXPECT_EQ(shape(last + "self_attn.o_proj.weight"), (Shape{D, q}));
    EXPECT_EQ(shape(last + "mlp.gate_proj.weight"), (Shape{w.ffn, D}));
    EXPECT_EQ(shape(last + "mlp.down_proj.weight"), (Shape{D, w.ffn}));
    EXPECT_EQ(shapes.count("language_model.model.layers." + std::to_string(w.layers) + ".mlp.up_proj.weight"), 0u);
    EXPECT_EQ(shape("language_model.model.norm.weight"), (Shape{D}));
    EXPECT_EQ(shape("mlp1.1.weight"), (Shape{D, 4096}));
    EXPECT_EQ(shape("mlp1.3.weight"), (Shape{D, D}));
    EXPECT_EQ(shape("text_hidden_fcs.0.weight"), (Shape{D, D}));
    EXPECT_EQ(shape("text_hidden_fcs.2.weight"), (Shape{256, D}));
    EXPECT_EQ(shape("vision_model.encoder.layers.23.attn.qkv.weight"), (Shape{3072, 1024}));
    EXPECT_EQ(shape("grounding_encoder.sam2_model.image_encoder.trunk.blocks.47.mlp.layers.1.weight"),
              (Shape{1152, 4608}));
    // Everything but the LLM is the 1B's: the same count of non-LLM tensors.
    auto non_llm = [](const std::vector<DeclaredTensor>& all) {
      return std::count_if(all.begin(), all.end(), [](const DeclaredTensor& d) {
        return d.name.rfind("language_model.", 0) != 0 && d.name.rfind("mlp1.", 0) != 0 &&
               d.name.rfind("text_hidden_fcs.", 0) != 0;
      });
    };
    EXPECT_EQ(non_llm(declare_checkpoint(c)), non_llm(declare_checkpoint(preset_config("1b"))));
  }
  try {
    preset_config("internvl3-4b");
    FAIL() << "no error for an unknown preset";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("internvl3-14b"), std::string::npos) << e.what();
  }
  std::string out;
  EXPECT_NE(run("make-model --preset internvl3-4b --out " + test::temp_dir("preset-unknown"), &out), 0) << out;
  EXPECT_NE(out.find("internvl3-14b"), std::string::npos) << out;  // the choices are listed
}

TEST(EndToEnd, MakeModelIsDeterministicPerSeed) {
  const std::string a = test::temp_dir("mm-a"), b = test::temp_dir("mm-b");
  ASSERT_EQ(run("make-model --preset tiny --seed 7 --out " + a), 0);
  ASSERT_EQ(run("make-model --preset tiny --seed 7 --out " + b), 0);
  const Tensor x = Checkpoint::open(a).get("mlp1.1.weight"), y = Checkpoint::open(b).get("mlp1.1.weight");
  EXPECT_EQ(x.to_vector(), y.to_vector());
  const Tensor z = Checkpoint::open(tiny_model()).get("mlp1.1.weight");
  EXPECT_NE(x.to_vector(), z.to_vector());
  // A folder that holds anything (say, a real checkpoint) is not written over.
  expect_clean_failure("make-model --preset tiny --seed 8 --out " + a, "not an empty folder");
  EXPECT_EQ(Checkpoint::open(a).get("mlp1.1.weight").to_vector(), x.to_vector());
}

// Outputs are whole or absent: an earlier run's masks and overlay go before a run into the same
// folder (a folder never mixes two runs), --no-overlay writes none, and a full disk is an error, not
// an empty result.json under its final name.
TEST(EndToEnd, OutputFoldersHoldOneRunsWholeOutputs) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const std::string out_dir = test::temp_dir("run-again");
  const std::string image = " --precision f32 --image " + dir + "/inputs/image.png --prompt '<image>Please segment it.'";
  std::string out;
  ASSERT_EQ(run("run --model " + dir + image + " --answer '[SEG] [SEG] [SEG]' --out " + out_dir, &out), 0) << out;
  ASSERT_TRUE(fs::exists(out_dir + "/masks/2.png"));
  std::ofstream(out_dir + "/masks/ground-truth.png") << "not ours";  // a user's file stays
  ASSERT_EQ(run("run --model " + dir + image + " --answer 'Sure, [SEG].' --no-overlay --out " + out_dir, &out), 0) << out;
  EXPECT_TRUE(fs::exists(out_dir + "/masks/0.png"));
  EXPECT_FALSE(fs::exists(out_dir + "/masks/1.png")) << "an earlier run's mask was left beside this run's";
  EXPECT_TRUE(fs::exists(out_dir + "/masks/ground-truth.png")) << "a file the program did not write was removed";
  EXPECT_FALSE(fs::exists(out_dir + "/overlay.png"));
  EXPECT_EQ(read_json(out_dir + "/result.json")["masks"].size(), 1u);
  if (fs::exists("/dev/full")) {  // a write that fails when the file is closed
    const std::string full = test::temp_dir("run-full");
    fs::create_symlink("/dev/full", full + "/result.json.partial");
    // The folder's probe passes (its own file); the result cannot be written.
    expect_clean_failure("run --model " + dir + image + " --answer 'Sure, [SEG].' --out " + full, "result.json: write failed");
    EXPECT_FALSE(fs::exists(full + "/result.json"));
  }
}

// --stop: generation ends where the text appears; result.json's content stops before it.
TEST(EndToEnd, StopStringsEndTheAnswer) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const std::string whole_dir = test::temp_dir("run-unstopped"), stopped_dir = test::temp_dir("run-stopped");
  std::string out;
  ASSERT_EQ(run("run --model " + dir + " --precision f32 --prompt 'Tell me a story.' --max-new-tokens 24 --out " +
                    whole_dir, &out), 0) << out;
  const std::string content = read_json(whole_dir + "/result.json")["content"];
  const std::string stop = test::middle_characters(content, 1);
  ASSERT_FALSE(stop.empty() || stop == "'") << content;
  ASSERT_EQ(run("run --model " + dir + " --precision f32 --prompt 'Tell me a story.' --max-new-tokens 24 --stop '" +
                    stop + "' --out " + stopped_dir, &out), 0) << out;
  const json stopped = read_json(stopped_dir + "/result.json");
  EXPECT_EQ(stopped["content"], content.substr(0, content.find(stop))) << stop;
  EXPECT_EQ(stopped["finish_reason"], "stop");
}

TEST(EndToEnd, RunTextOnly) {
  std::string out;
  ASSERT_EQ(run("run --model " + tiny_model() + " --prompt 'Hello there' --max-new-tokens 5", &out), 0) << out;
  EXPECT_FALSE(out.empty());
}

TEST(EndToEnd, RunWithQuantizedWeightsAndDevice) {
  for (const char* format : {"q8_0", "q4_0"}) {
    std::string out;
    ASSERT_EQ(run("run --model " + tiny_model() + " --prompt 'Hello there' --max-new-tokens 5 --weights " + format, &out),
              0)
        << out;
    EXPECT_FALSE(out.empty());
  }
  expect_clean_failure("run --model " + tiny_model() + " --prompt hi --device cuda:1", "cuda:1");
  expect_clean_failure("run --model " + tiny_model() + " --prompt hi --device gpu", "gpu");
  std::string out;
  EXPECT_NE(run("run --model " + tiny_model() + " --prompt hi --weights q5_k", &out), 0) << out;
}

TEST(EndToEnd, LaterTurnFromTheCommandLine) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const std::string first = test::temp_dir("turn-1"), second = test::temp_dir("turn-2");
  std::string out;
  ASSERT_EQ(run("run --model " + dir + " --precision f32 --image " + dir +
                    "/inputs/image.png --prompt '<image>What is this?' --answer 'A circle.' --out " + first,
                &out),
            0)
      << out;
  const std::string past = read_json(first + "/result.json")["past_text"];
  ASSERT_NE(past.find("<IMG_CONTEXT>"), std::string::npos);
  ASSERT_EQ(past.find('\''), std::string::npos);  // quoted for the shell below
  // The next turn without the image: a [SEG] in the answer cannot become a mask (no crash).
  ASSERT_EQ(run("run --model " + dir + " --precision f32 --past-text '" + past +
                    "' --prompt 'Please segment it.' --answer 'Sure, [SEG].' --out " + second,
                &out),
            0)
      << out;
  const json result = read_json(second + "/result.json");
  EXPECT_TRUE(result["masks"].empty());
  EXPECT_EQ(result["past_text"].get<std::string>().rfind(past, 0), 0u);  // the conversation goes on
}

TEST(EndToEnd, RunImageWritesMasksOverlayAndJson) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const std::string out_dir = test::temp_dir("run-image");
  std::string out;
  ASSERT_EQ(run("run --model " + dir + " --precision f32 --image " + dir +
                    "/inputs/image.png --prompt '<image>Please segment the red circle.' --answer 'Sure, [SEG].' --out " +
                    out_dir,
                &out),
            0)
      << out;
  EXPECT_NE(out.find("Sure, [SEG].<|im_end|>"), std::string::npos) << out;
  const Image mask = load_image(out_dir + "/masks/0.png");
  EXPECT_EQ(mask.width, 600);
  EXPECT_EQ(mask.height, 280);
  EXPECT_TRUE(fs::exists(out_dir + "/overlay.png"));
  const json result = read_json(out_dir + "/result.json");
  EXPECT_EQ(result["content"], "Sure, [SEG].");
  EXPECT_EQ(result["finish_reason"], "stop");
  ASSERT_EQ(result["masks"].size(), 1u);
  const json& m = result["masks"][0];
  EXPECT_EQ(m["rle"]["size"], json({280, 600}));
  // The RLE decodes to the PNG mask, which matches the golden mask.
  CocoRle rle{280, 600, rle_counts_from_string(m["rle"]["counts"].get<std::string>())};
  const std::vector<uint8_t> decoded = rle_decode(rle);
  int64_t area = 0;
  Tensor png = Tensor::empty({280, 600}, DType::U8);
  for (size_t i = 0; i < decoded.size(); ++i) {
    EXPECT_EQ(decoded[i] != 0, mask.rgb[3 * i] != 0);
    png.data<uint8_t>()[i] = mask.rgb[3 * i] != 0;
    area += decoded[i];
  }
  EXPECT_EQ(m["area"].get<int64_t>(), area);
  EXPECT_GE(test::mask_iou(png, test::load_golden(dir + "/goldens/image.safetensors", "seg0.mask")), 0.999);
}

TEST(EndToEnd, RunVideoWritesPerFrameMasks) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const std::string frames = test::temp_dir("video-frames");
  for (int i = 0; i < 6; ++i)
    fs::copy_file(dir + "/inputs/video_frame" + std::to_string(i) + ".png", frames + "/frame" + std::to_string(i) + ".png");
  const std::string out_dir = test::temp_dir("run-video");
  std::string out;
  ASSERT_EQ(run("--profile run --model " + dir + " --precision f32 --video " + frames +
                    " --prompt '<image>Please segment the moving red ball.' --answer 'Sure, [SEG].' --out " + out_dir,
                &out),
            0)
      << out;
  // --profile: 5 key frames conditioned on the prompt, 1 tracked through memory attention,
  // memories encoded for the 5 frames before it, 6 frames written.
  auto calls = [&](const std::string& stage) {
    const size_t at = out.find("\n" + stage + " ");
    return at == std::string::npos ? -1 : std::stoi(out.substr(at + 1 + stage.size()));
  };
  EXPECT_EQ(calls("sam2.image_encoder"), 6) << out;
  EXPECT_EQ(calls("sam2.mask_decoder"), 6) << out;
  EXPECT_EQ(calls("sam2.memory_attention"), 1) << out;
  EXPECT_EQ(calls("sam2.memory_encoder"), 5) << out;
  EXPECT_EQ(calls("output.write_frame"), 6) << out;
  EXPECT_EQ(calls("llm.prefill"), 1) << out;
  EXPECT_EQ(calls("vision.internvit"), 1) << out;
  const Tensor golden = test::load_golden(dir + "/goldens/video.safetensors", "seg0.mask");
  for (int t = 0; t < 6; ++t) {
    char name[32];
    std::snprintf(name, sizeof(name), "/masks/0/%05d.png", t);
    const Image m = load_image(out_dir + name);
    Tensor got = Tensor::empty({240, 320}, DType::U8);
    for (int64_t i = 0; i < 240 * 320; ++i) got.data<uint8_t>()[i] = m.rgb[3 * i] != 0;
    EXPECT_GE(test::mask_iou(got, golden.select(0, t)), 0.999) << "frame " << t;
  }
  const json result = read_json(out_dir + "/result.json");
  EXPECT_EQ(result["content"], "Sure, [SEG].");
  EXPECT_EQ(result["masks"][0]["frames"].size(), 6u);
  EXPECT_TRUE(fs::exists(out_dir + "/overlay.mp4"));
}

TEST(EndToEnd, DumpWritesFixtureNamedStages) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const std::string out = test::temp_dir("dump") + "/stages.safetensors";
  std::string log;
  ASSERT_EQ(run("dump --model " + dir + " --image " + dir +
                    "/inputs/image.png --prompt '<image>Please segment the red circle.' --answer 'Sure, [SEG].' --out " + out,
                &log),
            0)
      << log;
  auto f = SafetensorsFile::open(out);
  for (const char* name : {"tiles_u8", "vit.last_hidden_state", "vit_embeds", "prompt_ids", "input_ids", "llm.inputs_embeds",
                           "llm.hidden_states", "llm.last_hidden_state", "llm.logits_last8", "seg.hidden", "seg.embeds",
                           "sam.trunk.0", "sam.fpn.2", "sam.feat_s0", "seg0.mask_logits_lowres", "seg0.mask_logits",
                           "seg0.mask"})
    EXPECT_TRUE(f->has(name)) << name;
  EXPECT_TRUE(test::close_rel(f->get("vit.last_hidden_state"),
                              test::load_golden(dir + "/goldens/image.safetensors", "vit.last_hidden_state"), 1e-4));
}

TEST(EndToEnd, ChatKeepsTheConversation) {
  const std::string out_dir = test::temp_dir("chat");
  std::string out;
  const int rc = test::run_command("printf 'Hi\\nTell me more\\n' | " +
                                       sa2va_cmd("chat --model " + tiny_model() + " --max-new-tokens 3 --out " + out_dir),
                                   &out);
  EXPECT_EQ(rc, 0) << out;
  int lines = 0;
  for (char ch : out) lines += ch == '\n';
  EXPECT_EQ(lines, 2) << out;
  // Each turn keeps its result.json (past_text), masks or not.
  EXPECT_FALSE(read_json(out_dir + "/turn-2/result.json")["past_text"].get<std::string>().empty());
  // Lines from Windows lose their CR; a blank line ends the conversation like an empty one.
  const int ended = test::run_command("printf 'Hi\\r\\n   \\nNever asked\\n' | " +
                                          sa2va_cmd("chat --model " + tiny_model() + " --max-new-tokens 3"),
                                      &out);
  EXPECT_EQ(ended, 0) << out;
  lines = 0;
  for (char ch : out) lines += ch == '\n';
  EXPECT_EQ(lines, 1) << out;
  // A conversation about a region goes on past its first turn.
  const std::string region = out_dir + "/region.png", picture = out_dir + "/picture.png";
  {
    Image image(64, 48);
    for (size_t i = 0; i < image.rgb.size(); ++i) image.rgb[i] = static_cast<uint8_t>(i * 7);
    save_png_rgb(picture, image);
    std::vector<uint8_t> mask(static_cast<size_t>(image.width) * image.height, 0);
    for (int y = image.height / 4; y < image.height / 2; ++y)
      std::fill_n(mask.begin() + static_cast<std::ptrdiff_t>(y) * image.width + image.width / 4, image.width / 4, 255);
    save_png_gray(region, mask.data(), image.width, image.height);
  }
  const int regions = test::run_command("printf 'What is region1?\nAnd again?\n' | " +
                                            sa2va_cmd("chat --model " + tiny_model() + " --image " + picture +
                                                      " --mask-prompt " + region + " --max-new-tokens 3"),
                                        &out);
  EXPECT_EQ(regions, 0) << out;
}

// A frame folder with two frame sizes: masks and the overlay video at the first frame's size.
TEST(EndToEnd, RunVideoWithFramesOfDifferentSizes) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const std::string frames = test::temp_dir("video-mixed-sizes");
  for (int i = 0; i < 5; ++i)
    fs::copy_file(dir + "/inputs/video_frame" + std::to_string(i) + ".png", frames + "/frame" + std::to_string(i) + ".png");
  Image last = load_image(dir + "/inputs/video_frame5.png");
  Image smaller(last.width / 2, last.height / 2);  // every other pixel: 160x120
  for (int y = 0; y < smaller.height; ++y)
    for (int x = 0; x < smaller.width; ++x)
      for (int ch = 0; ch < 3; ++ch) smaller.row(y)[3 * x + ch] = last.row(2 * y)[6 * x + ch];
  save_png_rgb(frames + "/frame5.png", smaller);
  const std::string out_dir = test::temp_dir("run-video-mixed-sizes");
  std::string out;
  ASSERT_EQ(run("run --model " + dir + " --precision f32 --video " + frames +
                    " --prompt '<image>Please segment the moving red ball.' --answer 'Sure, [SEG].' --out " + out_dir,
                &out),
            0)
      << out;
  const json result = read_json(out_dir + "/result.json");
  EXPECT_EQ(result["width"], 320);
  EXPECT_EQ(result["height"], 240);
  ASSERT_EQ(result["masks"][0]["frames"].size(), 6u);
  EXPECT_EQ(result["masks"][0]["frames"][5]["rle"]["size"], json::array({240, 320}));
  const Image mask5 = load_image(out_dir + "/masks/0/00005.png");
  EXPECT_EQ(mask5.width, 320);
  EXPECT_EQ(mask5.height, 240);
  auto overlay = Video::open(out_dir + "/overlay.mp4");
  EXPECT_EQ(overlay->width(), 320);
  EXPECT_EQ(overlay->height(), 240);
  EXPECT_EQ(overlay->frame_count(), 6);
}

TEST(EndToEnd, BadInputGivesCleanErrors) {
  const std::string model = tiny_model();
  const std::string bad = test::temp_dir("bad");
  // A folder for a JSON Lines file; output that cannot be written (a full disk) is an error.
  expect_clean_failure("tokenize --model " + model + " --jsonl " + bad, "a folder, not a JSON Lines file");
  if (fs::exists("/dev/full")) {
    std::string out;
    EXPECT_EQ(test::run_command("(" + sa2va_cmd("tokenize --model " + model + " --text hello") + " > /dev/full)", &out), 1);
    EXPECT_NE(out.find("error: cannot write the output"), std::string::npos) << out;
  }
  // A failed dump leaves an earlier one as it was.
  {
    std::ofstream(bad + "/earlier.safetensors") << "earlier";
    expect_clean_failure("dump --model " + model + " --image " + bad + "/none.png --prompt hi --out " + bad +
                             "/earlier.safetensors", "none.png");
    std::ifstream in(bad + "/earlier.safetensors");
    EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()), "earlier");
    EXPECT_FALSE(fs::exists(bad + "/earlier.safetensors.partial"));
  }
  // Truncated weights.
  const std::string truncated = bad + "/truncated";
  fs::create_directories(truncated);
  for (const auto& e : fs::directory_iterator(model)) fs::copy(e.path(), truncated + "/" + e.path().filename().string());
  fs::resize_file(truncated + "/model.safetensors", fs::file_size(truncated + "/model.safetensors") / 2);
  expect_clean_failure("run --model " + truncated + " --prompt hi", "model.safetensors");
  // Mistyped config field.
  const std::string mistyped = bad + "/mistyped";
  fs::create_directories(mistyped);
  for (const auto& e : fs::directory_iterator(model)) fs::copy(e.path(), mistyped + "/" + e.path().filename().string());
  json cfg = read_json(mistyped + "/config.json");
  cfg["llm_config"]["num_hidden_layers"] = "two";
  std::ofstream(mistyped + "/config.json") << cfg.dump();
  expect_clean_failure("run --model " + mistyped + " --prompt hi", "llm_config.num_hidden_layers");
  // Missing shard.
  const std::string sharded = bad + "/sharded";
  fs::create_directories(sharded);
  for (const auto& e : fs::directory_iterator(model)) fs::copy(e.path(), sharded + "/" + e.path().filename().string());
  fs::remove(sharded + "/model.safetensors");
  std::ofstream(sharded + "/model.safetensors.index.json")
      << R"({"weight_map": {"mlp1.0.weight": "model-00001-of-00002.safetensors"}})";
  expect_clean_failure("run --model " + sharded + " --prompt hi", "missing shard");
  // Not a model folder; missing/corrupt image; empty prompt; unwritable output.
  expect_clean_failure("run --model " + bad + " --prompt hi", "config.json");
  expect_clean_failure("run --model " + model + " --image " + bad + "/none.png --prompt hi", "none.png");
  std::ofstream(bad + "/garbage.png") << "not an image at all";
  expect_clean_failure("run --model " + model + " --image " + bad + "/garbage.png --prompt hi", "garbage.png");
  expect_clean_failure("run --model " + model + " --prompt '  '", "empty prompt");
  expect_clean_failure("run --model " + model + " --prompt hi --out /proc/sa2va-cannot-write", "/proc/sa2va-cannot-write");
  expect_clean_failure("run --model " + model + " --video " + bad + "/no-such-video.mp4 --prompt hi", "no-such-video.mp4");
  // Option values out of range: a usage error naming the option and a readable range (not 1.8e308);
  // seeds are any 64-bit integer.
  const auto expect_usage_error = [&](const std::string& args, const std::string& needle) {
    expect_clean_failure(args, needle);  // one error line and exit 1, as any other error
  };
  expect_usage_error("segmnet --model " + model, "'segmnet' is not a command");
  expect_usage_error("run --model " + model + " --prompt hi --precision fp16", "--precision: fp16 not in");
  expect_usage_error("run --model " + model + " --prompt hi --image a.png --video b.mp4", "--image excludes --video");
  // A dump into a folder is refused before the model runs; a still image given as a video says so.
  expect_clean_failure("dump --model " + model + " --prompt hi --out " + bad, "is a folder");
  save_png_rgb(bad + "/still.png", Image(8, 8));
  {
    std::string out;
    EXPECT_EQ(run("run --model " + model + " --video " + bad + "/still.png --prompt hi", &out), 1) << out;
    EXPECT_NE(out.find("still.png: is a still image (PNG), not a video"), std::string::npos) << out;
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << "FFmpeg's own log lines are not printed: " << out;
  }
  expect_usage_error("--threads -1 run --model " + model + " --prompt hi", "--threads: Value -1 not in range 0 to 4096");
  expect_usage_error("run --model " + model + " --prompt hi --temperature inf", "not in range 0.000000 to 1000000.000000");
  expect_usage_error("run --model " + model + " --prompt hi --seed 18446744073709551616", "--seed: '18446744073709551616' is");
  expect_usage_error("run --model " + model + " --prompt hi --seed 1.5", "not an integer that fits 64 bits");
  const auto sampled = [&](const std::string& seed) {
    std::string out;
    EXPECT_EQ(run("run --model " + model + " --prompt hi --max-new-tokens 6 --temperature 1 --seed " + seed, &out), 0)
        << out;
    return out;
  };
  EXPECT_EQ(sampled("-1"), sampled("18446744073709551615"));  // -1 is 2^64 - 1, as torch.manual_seed has it
}

TEST(EndToEnd, ExampleProgramUsesThePublicHeader) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  std::string out;
  const int rc = test::run_command(std::string(SA2VA_EXAMPLE_PATH) + " " + dir + " " + dir +
                                       "/inputs/image.png 'Please segment the red circle.' 8",
                                   &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_FALSE(out.empty());
  EXPECT_EQ(test::run_command(std::string(SA2VA_EXAMPLE_PATH) + " " + dir + " /no/such.png hi", &out), 1) << out;
  EXPECT_NE(out.find("error: "), std::string::npos) << out;
}

TEST(EndToEndSlow, MakeModel1bHasTheFullTensorList) {
  if (!std::getenv("SA2VA_SLOW_TESTS")) GTEST_SKIP() << "set SA2VA_SLOW_TESTS=1 to write a 1b model (about 2 GB)";
  const std::string dir = test::temp_dir("mm-1b");
  std::string out;
  ASSERT_EQ(run("make-model --preset 1b --out " + dir, &out), 0) << out;
  Checkpoint c = Checkpoint::open(dir);
  const auto declared = declare_checkpoint(preset_config("1b"));
  EXPECT_EQ(c.names().size(), declared.size());
  for (const auto& d : declared) EXPECT_EQ(c.info(d.name).shape, d.shape) << d.name;
  EXPECT_EQ(c.info("language_model.model.embed_tokens.weight").shape, (Shape{151679, 896}));
  EXPECT_EQ(c.info("grounding_encoder.sam2_model.image_encoder.trunk.blocks.47.mlp.layers.1.weight").shape,
            (Shape{1152, 4608}));
}

}  // namespace
}  // namespace sa2va
