// Quantized model folders (`sa2va quantize`): what they hold, that they load without conversion,
// that they equal quantizing at load, and their errors.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "models/quantize.h"
#include "test_util.h"
#include "tiny_llm.h"

namespace sa2va {
namespace {

namespace fs = std::filesystem;

std::string quantized_copy(const std::string& dir, WeightFormat format) {
  const std::string out = test::temp_dir(std::string("quantized-") + weight_format_name(format)) + "/model";
  const QuantizeReport report = quantize_model({dir, out, format});
  EXPECT_GT(report.matrices_quantized, 0u);
  EXPECT_GT(report.bytes_out, 0u);  // (the tiny model grows: its tied head is mostly vocabulary)
  return out;
}

LanguageModel load_llm(const Checkpoint& ck, const ModelConfig& config, WeightFormat format) {
  LoadPolicy policy(Precision::BF16);
  policy.llm_format = format;
  Weights w(ck, policy);
  LanguageModel lm = LanguageModel::load(w, config);
  w.finish();
  return lm;
}

TEST(QuantizeModel, FolderLoadsWithoutConversionAndEqualsQuantizingAtLoad) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const ModelConfig config = load_config(dir);
  const Tensor embeds =
      test::load_golden(dir + "/goldens/image.safetensors", "llm.inputs_embeds").slice(0, 700, 760).contiguous();
  for (WeightFormat format : {WeightFormat::Q8_0, WeightFormat::Q4_0}) {
    const std::string out = quantized_copy(dir, format);
    for (const char* file : {"config.json", "tokenizer.json"}) EXPECT_TRUE(fs::exists(fs::path(out) / file)) << file;

    const Checkpoint quantized = Checkpoint::open(out);
    const std::string down = "language_model.model.layers.0.mlp.down_proj.weight";
    EXPECT_EQ(quantized.info(down).dtype, DType::U8);
    EXPECT_EQ(quantized.info(down + kScalesSuffix).dtype, DType::F16);
    EXPECT_TRUE(quantized.has(LanguageModel::head_name(config.llm.arch)));  // the tied head, quantized
    EXPECT_EQ(quantized.info("vision_model.embeddings.class_embedding").dtype,
              Checkpoint::open(dir).info("vision_model.embeddings.class_embedding").dtype);  // copied as stored

    // The default policy (bf16) takes the stored format; the matrices are the stored bytes, unconverted
    // (copied into the weight arena's huge pages on a CPU).
    const LanguageModel stored = load_llm(quantized, config, WeightFormat::BF16);
    EXPECT_EQ(stored.layers[0].w_down.format(), format);
    EXPECT_EQ(stored.layers[0].wqkv.format(), format);
    EXPECT_EQ(stored.lm_head.format(), format);
    EXPECT_EQ(stored.embedding.format(), WeightFormat::BF16);  // the lookup keeps the stored rows
    const WeightMatrix mapped = WeightMatrix::from_parts(format, config.llm.hidden_size, config.llm.intermediate_size,
                                                         quantized.get(down), quantized.get(down + kScalesSuffix));
    if (ops::kernel_layout(mapped).interleaved()) {
      // Rows interleaved for the CPU kernel: the same codes and scales, rearranged.
      EXPECT_TRUE(stored.layers[0].w_down.interleaved());
      EXPECT_EQ(stored.layers[0].w_down.dequantize().to_vector(), mapped.dequantize().to_vector());
    } else {
      const auto same_bytes = [](const Tensor& a, const Tensor& b) {
        return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
      };
      EXPECT_TRUE(same_bytes(stored.layers[0].w_down.values(), quantized.get(down))) << "converted at load";
      EXPECT_TRUE(same_bytes(stored.layers[0].w_down.scales(), quantized.get(down + kScalesSuffix)));
    }

    // Same numbers as converting the original checkpoint at load.
    const Checkpoint original = Checkpoint::open(dir);
    const LanguageModel converted = load_llm(original, config, format);
    EXPECT_EQ(converted.lm_head.format(), format);
    LlmState a = stored.new_state(60), b = converted.new_state(60);
    const Tensor ha = stored.forward(embeds, a).clone(), hb = converted.forward(embeds, b).clone();
    EXPECT_EQ(ha.to_vector(), hb.to_vector()) << weight_format_name(format);
    EXPECT_EQ(stored.logits(ha).to_vector(), converted.logits(hb).to_vector()) << weight_format_name(format);
  }
}

TEST(QuantizeModel, ErrorsNameTheProblem) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const std::string q8 = quantized_copy(dir, WeightFormat::Q8_0);
  auto message = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  // Quantizing twice, into a used folder, or to an unquantized format.
  EXPECT_NE(message([&] { quantize_model({q8, test::temp_dir("q-again") + "/m", WeightFormat::Q4_0}); })
                .find("already quantized"), std::string::npos);
  EXPECT_NE(message([&] { quantize_model({dir, q8, WeightFormat::Q8_0}); }).find("not empty"), std::string::npos);
  EXPECT_NE(message([&] { quantize_model({dir, test::temp_dir("q-bf16") + "/m", WeightFormat::BF16}); }).find("q8_0 or q4_0"),
            std::string::npos);
  // A stored q8_0 folder asked for q4_0.
  const Checkpoint ck = Checkpoint::open(q8);
  const std::string wrong_format = message([&] { load_llm(ck, load_config(q8), WeightFormat::Q4_0); });
  EXPECT_NE(wrong_format.find("cannot be loaded as q4_0"), std::string::npos) << wrong_format;
  // The same cause for every matrix: the first few are listed, then a count (not one line per matrix).
  EXPECT_NE(wrong_format.find("and 9 more"), std::string::npos) << wrong_format;
  EXPECT_LT(wrong_format.size(), 1200u) << wrong_format;
  // Scales missing: a folder whose quantized matrix lost its scales.
  const std::string broken = test::temp_dir("q-broken");
  {
    const std::string m = "language_model.model.layers.0.mlp.up_proj.weight";
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (const std::string& name : ck.names())
      if (name != m + kScalesSuffix) tensors.emplace_back(name, ck.get(name));
    write_safetensors(broken + "/model.safetensors", tensors, {{kQuantLayoutKey, kQuantLayout}});
    fs::copy_file(fs::path(q8) / "config.json", fs::path(broken) / "config.json");
    EXPECT_NE(message([&] { load_llm(Checkpoint::open(broken), load_config(broken), WeightFormat::BF16); })
                  .find("its scales '" + m + kScalesSuffix + "' are missing"),
              std::string::npos);
    // The same tensors without the layout mark (a folder of another version) are refused, not misread.
    tensors.emplace_back(m + kScalesSuffix, ck.get(m + kScalesSuffix));
    write_safetensors(broken + "/model.safetensors", tensors);
    EXPECT_NE(message([&] { load_llm(Checkpoint::open(broken), load_config(broken), WeightFormat::BF16); })
                  .find("re-run sa2va quantize"),
              std::string::npos);
    // A scale that is not finite (a damaged file) is refused, naming the matrix, row and block.
    Tensor scales = ck.get(m + kScalesSuffix).clone();
    scales.data<uint16_t>()[scales.size(1) + 1] = 0x7e00;  // f16 NaN: row 1, block 1
    tensors.back().second = scales;
    write_safetensors(broken + "/model.safetensors", tensors, {{kQuantLayoutKey, kQuantLayout}});
    const std::string why = message([&] { load_llm(Checkpoint::open(broken), load_config(broken), WeightFormat::BF16); });
    EXPECT_NE(why.find("'" + m + "': q8_0 matrix"), std::string::npos) << why;
    EXPECT_NE(why.find("scale 1 of row 1 is not finite"), std::string::npos) << why;
  }
}

// Sa2VA's releases store lm_head beside tied embeddings: that head is quantized as well.
TEST(QuantizeModel, AStoredHeadOfATiedModelIsQuantized) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const ModelConfig config = load_config(dir);
  ASSERT_TRUE(config.llm.tie_word_embeddings);
  const std::string with_head = test::temp_dir("q-with-head");
  {
    const Checkpoint ck = Checkpoint::open(dir);
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (const std::string& name : ck.names()) tensors.emplace_back(name, ck.get(name));
    tensors.emplace_back(LanguageModel::head_name(config.llm.arch), ck.get(LanguageModel::embedding_name(config.llm.arch)));
    write_safetensors(with_head + "/model.safetensors", tensors);
    for (const char* file : {"config.json", "tokenizer.json"}) fs::copy_file(fs::path(dir) / file, fs::path(with_head) / file);
  }
  const std::string out = test::temp_dir("q-with-head-out") + "/m";
  quantize_model({with_head, out, WeightFormat::Q4_0});
  const Checkpoint q = Checkpoint::open(out);
  EXPECT_EQ(q.info(LanguageModel::head_name(config.llm.arch)).dtype, DType::U8);
  EXPECT_TRUE(q.has(LanguageModel::head_name(config.llm.arch) + kScalesSuffix));
  EXPECT_FALSE(fs::exists(fs::path(out) / "model.safetensors.partial"));
}

TEST(QuantizeCli, CommandLine) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const std::string out = test::temp_dir("q-cli") + "/m";
  std::string output;
  ASSERT_EQ(test::run_command(test::cli_path() + " quantize --model " + dir + " --out " + out + " --weights q4_0", &output), 0)
      << output;
  EXPECT_NE(output.find("quantized to q4_0"), std::string::npos) << output;
  EXPECT_EQ(Checkpoint::open(out).info("language_model.model.layers.0.mlp.up_proj.weight").shape[1],
            WeightMatrix::quantized_row_bytes(WeightFormat::Q4_0, load_config(dir).llm.hidden_size));
  // The folder runs the whole pipeline through the program: an answer with [SEG] gives its mask.
  const std::string run_out = test::temp_dir("q-cli-run");
  ASSERT_EQ(test::run_command(test::cli_path() + " run --model " + out + " --image " + dir +
                                  "/inputs/image.png --prompt '<image>Please segment the red circle.' --answer "
                                  "'Sure, [SEG].' --out " + run_out,
                              &output),
            0)
      << output;
  EXPECT_TRUE(fs::exists(run_out + "/masks/0.png")) << output;
  EXPECT_TRUE(fs::exists(run_out + "/result.json")) << output;
  EXPECT_NE(test::run_command(test::cli_path() + " quantize --model " + dir + " --out " + out + "2 --weights bf16", &output), 0);
  EXPECT_EQ(test::run_command(test::cli_path() + " quantize --model /no/such/folder --out " + out + "3", &output), 1) << output;
  EXPECT_NE(output.find("/no/such/folder"), std::string::npos) << output;
}

}  // namespace
}  // namespace sa2va
