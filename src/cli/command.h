// Sub-command registry: each src/cli/cmd_*.cpp registers itself with SA2VA_COMMAND, so adding
// a sub-command never touches main.cpp.
#pragma once
#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace sa2va::cli {

struct Command {
  std::string name;
  std::string description;
  // Adds options to `app`; returns the function that runs the command (exit code).
  std::function<std::function<int()>(CLI::App& app)> setup;
};

std::vector<Command>& commands();

struct Registrar {
  explicit Registrar(Command c) { commands().push_back(std::move(c)); }
};

}  // namespace sa2va::cli

#define SA2VA_CONCAT_INNER(a, b) a##b
#define SA2VA_CONCAT(a, b) SA2VA_CONCAT_INNER(a, b)
// Usage: SA2VA_COMMAND("tokenize", "Print token ids", [](CLI::App& app) { ...; return [=]{ ...; return 0; }; });
#define SA2VA_COMMAND(name, description, setup) \
  static ::sa2va::cli::Registrar SA2VA_CONCAT(sa2va_command_, __LINE__)({name, description, setup})
