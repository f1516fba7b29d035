// `sa2va tokenize`: token ids of text with a model folder's tokenizer, one JSON line per input.
#include <filesystem>
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "core/error.h"
#include "text/tokenizer.h"

namespace sa2va::cli {
namespace {

void print_ids(const std::vector<int32_t>& ids) { std::cout << nlohmann::json{{"ids", ids}}.dump() << "\n"; }

SA2VA_COMMAND("tokenize", "Print the token ids of text ({\"ids\":[...]} per input line)", [](CLI::App& app) {
  auto model = std::make_shared<std::string>();
  auto text = std::make_shared<std::string>();
  auto jsonl = std::make_shared<std::string>();
  app.add_option("--model", *model, "Model folder (tokenizer.json or tokenizer.model)")->required();
  auto* text_option = app.add_option("--text", *text, "Text to tokenize");
  auto* jsonl_option = app.add_option("--jsonl", *jsonl, "File with one {\"text\": ...} object per line");
  text_option->excludes(jsonl_option);
  jsonl_option->excludes(text_option);
  return [=]() -> int {
    check(!text_option->empty() || !jsonl_option->empty(), "tokenize: give --text or --jsonl");
    const auto tokenizer = Tokenizer::load(*model);
    if (!text_option->empty()) {
      print_ids(tokenizer->encode(*text));
      return 0;
    }
    std::error_code ec;
    check(!std::filesystem::is_directory(*jsonl, ec), *jsonl + ": a folder, not a JSON Lines file");
    std::ifstream file(*jsonl);
    check(bool(file), *jsonl + ": cannot open");
    size_t line_number = 0;
    for (std::string line; std::getline(file, line);) {
      ++line_number;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const std::string where = *jsonl + ":" + std::to_string(line_number);
      nlohmann::json entry;
      try {
        entry = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        throw Error(where + ": invalid JSON: " + e.what());
      }
      check(entry.is_object() && entry.contains("text") && entry["text"].is_string(),
            where + ": expected an object with a \"text\" string");
      print_ids(tokenizer->encode(entry["text"].get<std::string>()));
    }
    return 0;
  };
});

}  // namespace
}  // namespace sa2va::cli
