// `sa2va tokenize` end to end: ids for --text and --jsonl, and clear errors for bad input.
#include <filesystem>
#include <fstream>

#include "test_util.h"

namespace sa2va {
namespace {

// A folder holding only the project's Qwen2 tokenizer.json, as a model folder would.
std::string tokenizer_folder() {
  static const std::string dir = [] {
    const std::string d = test::temp_dir("tokenizer-folder");
    std::filesystem::create_symlink(test::project_data("qwen2-sa2va-tokenizer.json"), d + "/tokenizer.json");
    return d;
  }();
  return dir;
}

std::string tokenize(const std::string& args, int* status) {
  std::string output;
  *status = test::run_command(test::cli_path() + " tokenize " + args, &output);
  return output;
}

TEST(TokenizeCli, TextAndJsonl) {
  const std::string model = tokenizer_folder();
  int status = 0;
  EXPECT_EQ(tokenize("--model " + model + " --text 'Hello, world!'", &status), "{\"ids\":[9707,11,1879,0]}\n");
  EXPECT_EQ(status, 0);
  const std::string jsonl = test::temp_dir("tokenize-cli") + "/in.jsonl";
  std::ofstream(jsonl) << "{\"text\": \"Hello, world!\"}\n\n{\"text\": \"[SEG]<|im_end|>\"}\n";
  EXPECT_EQ(tokenize("--model " + model + " --jsonl " + jsonl, &status),
            "{\"ids\":[9707,11,1879,0]}\n{\"ids\":[151674,151645]}\n");
  EXPECT_EQ(status, 0);
}

TEST(TokenizeCli, BadInputFailsWithAMessage) {
  const std::string model = tokenizer_folder();
  const std::string dir = test::temp_dir("tokenize-cli-bad");
  int status = 0;
  std::string out = tokenize("--model " + dir + " --text hi", &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("error:"), std::string::npos) << out;
  out = tokenize("--model " + model + " --text \"$(printf 'bad \\377')\"", &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("UTF-8"), std::string::npos) << out;
  std::ofstream(dir + "/bad.jsonl") << "{\"txt\": 1}\n";
  out = tokenize("--model " + model + " --jsonl " + dir + "/bad.jsonl", &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("bad.jsonl:1"), std::string::npos) << out;
  out = tokenize("--model " + model, &status);
  EXPECT_NE(status, 0);
}

}  // namespace
}  // namespace sa2va
