// The `sa2va` program: one binary, one sub-command per job (see README.md).
#include <cstdio>
#include <exception>
#include <memory>
#include <string>

#include "cli/command.h"
#include "core/block_pool.h"
#include "core/error.h"
#include "core/profile.h"
#include "core/threadpool.h"

namespace sa2va::cli {
std::vector<Command>& commands() {
  static std::vector<Command> list;
  return list;
}
}  // namespace sa2va::cli

int main(int argc, char** argv) {
  CLI::App app{"sa2va: Sa2VA dense grounded understanding of images and videos"};
  app.require_subcommand(1);
  app.fallthrough();
  int threads = 0;
  app.add_option("--threads", threads, "Worker threads (default: all cores)")->check(CLI::Range(0, 4096));
  bool profile = false;
  app.add_flag("--profile", profile, "Print wall time per stage (vision, LLM, SAM2 parts, output) to stderr at the end");
  std::function<int()> run;
  for (auto& command : sa2va::cli::commands()) {
    CLI::App* sub = app.add_subcommand(command.name, command.description);
    auto runner = std::make_shared<std::function<int()>>(command.setup(*sub));
    sub->callback([&run, runner] { run = *runner; });
  }
  // A first word that names no command is said so (CLI11 would only ask for a command).
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    if (word == "--threads") {
      ++i;
      continue;
    }
    if (word.empty() || word[0] == '-') continue;
    bool known = false;
    std::string names;
    for (const auto& command : sa2va::cli::commands()) {
      known = known || command.name == word;
      names += (names.empty() ? "" : ", ") + command.name;
    }
    if (!known) {
      std::fprintf(stderr, "error: '%s' is not a command (commands: %s; sa2va --help describes them)\n", word.c_str(),
                   names.c_str());
      return 1;
    }
    break;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // Usage errors read as every other error: one line, exit status 1.
    std::string where = "sa2va";
    for (const CLI::App* sub : app.get_subcommands()) where += " " + sub->get_name();
    std::fprintf(stderr, "error: %s (%s --help lists the options)\n", e.what(), where.c_str());
    return 1;
  }
  try {
    if (threads > 0) sa2va::set_num_threads(threads);
    sa2va::profile::set_enabled(profile);
    const int status = run ? run() : 1;
    if (profile) {
      const sa2va::block_pool::Stats pool = sa2va::block_pool::stats();
      std::fprintf(stderr, "%slarge buffers: %llu taken, peak %.1f MiB mapped\n", sa2va::profile::report().c_str(),
                   static_cast<unsigned long long>(pool.acquisitions), static_cast<double>(pool.peak_mapped_bytes) / (1 << 20));
    }
    // What was printed (answers, token ids) must have arrived: a full disk or closed pipe is an error.
    if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
      std::fprintf(stderr, "error: cannot write the output (standard output)\n");
      return 1;
    }
    return status;
  } catch (const sa2va::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
