// sa2va serve: the HTTP server (src/server/server.h) around one model loaded once.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "cli/command.h"
#include "core/error.h"
#include "server/server.h"

namespace sa2va::cli {
namespace {

struct ServeArgs {
  std::string model_dir, precision = "bf16", weights = "bf16", device = "cpu";
  server::ServerOptions options;
  double max_body_mb = 64;
  double max_session_mb = 1024;
  double max_media_mb = 2048;
  double max_held_media_mb = 4096;
};

// SIGINT and SIGTERM are written to a pipe by the handler, whatever thread the kernel picks
// (libraries start threads of their own, some before main); one thread of the server reads them.
int g_stop_pipe[2] = {-1, -1};

void catch_stop_signals() {
  check(pipe2(g_stop_pipe, O_CLOEXEC) == 0, "serve: cannot create a pipe for signals");
  struct sigaction on_stop {};
  on_stop.sa_handler = [](int received) {
    const int saved = errno;  // the interrupted thread's errno stays as it was
    const char byte = static_cast<char>(received);
    [[maybe_unused]] const ssize_t written = write(g_stop_pipe[1], &byte, 1);
    errno = saved;
  };
  sigemptyset(&on_stop.sa_mask);
  on_stop.sa_flags = SA_RESTART;
  sigaction(SIGINT, &on_stop, nullptr);
  sigaction(SIGTERM, &on_stop, nullptr);
}

// The next signal caught, waiting at most `timeout_ms` (-1: for ever); 0 when none came.
int next_stop_signal(int timeout_ms = -1) {
  pollfd p{g_stop_pipe[0], POLLIN, 0};
  int ready;
  while ((ready = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR) {
  }
  if (ready <= 0) return 0;
  char byte = 0;
  while (read(g_stop_pipe[0], &byte, 1) < 0 && errno == EINTR) {
  }
  return static_cast<int>(byte);
}

SA2VA_COMMAND("serve", "HTTP server: OpenAI-style chat with masks, /v1/segment, sessions, a web page", [](CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  server::ServerOptions& o = a->options;
  app.add_option("--model", a->model_dir, "Model folder (Hugging Face layout)")->required();
  app.add_option("--host", o.host, "Address to listen on")->capture_default_str();
  app.add_option("--port", o.port, "Port (0 = any free port)")->check(CLI::Range(0, 65535))->capture_default_str();
  app.add_option("--parallel", o.parallel, "Predictions running at once")->check(CLI::Range(1, 256))->capture_default_str();
  app.add_option("--queue", o.queue, "Requests that may wait beyond those (then 429)")->check(CLI::Range(0, 4096))->capture_default_str();
  app.add_option("--api-key", o.api_key, "Require \"Authorization: Bearer KEY\" on the API");
  app.add_option("--max-body-mb", a->max_body_mb, "Largest request body")->check(CLI::Range(0.001, 4096.0))->capture_default_str();
  app.add_option("--max-frames", o.limits.max_frames, "Most frames of a video")->check(CLI::Range(1, 100000))->capture_default_str();
  app.add_option("--max-pixels", o.limits.max_pixels, "Most pixels of an image or frame")->check(CLI::Range(int64_t{1}, int64_t{1} << 31))->capture_default_str();
  app.add_option("--max-tokens", o.limits.max_tokens, "Most answer tokens a request may ask for")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  app.add_option("--timeout", o.timeout_s, "Seconds a request may take, waiting included")->check(CLI::Range(0.1, 1e6))->capture_default_str();
  app.add_option("--allow-files", o.limits.files_dir, "Folder whose files requests may name by path (default: none)")->check(CLI::ExistingDirectory);
  app.add_option("--max-sessions", o.max_sessions, "Sessions held at once")->check(CLI::Range(1, 100000))->capture_default_str();
  app.add_option("--session-idle", o.session_idle_s, "Seconds after which an unused session ends")->check(CLI::Range(1.0, 1e7))->capture_default_str();
  app.add_option("--max-media-mb", a->max_media_mb, "Decoded frames of one request's frame list")->check(CLI::Range(1.0, 1e6))->capture_default_str();
  app.add_option("--max-held-media-mb", a->max_held_media_mb, "Decoded media of all requests in line together (then 429)")->check(CLI::Range(1.0, 1e7))->capture_default_str();
  app.add_option("--max-session-mb", a->max_session_mb, "Memory per session (decoded media, cached vision work)")->check(CLI::Range(1.0, 1e6))->capture_default_str();
  app.add_option("--precision", a->precision, "bf16 or f32")->check(CLI::IsMember({"bf16", "f32"}))->capture_default_str();
  app.add_option("--weights", a->weights, "bf16, q8_0 or q4_0")->check(CLI::IsMember({"bf16", "q8_0", "q4_0"}))->capture_default_str();
  app.add_option("--device", a->device, "cpu (cuda[:N] in CUDA builds)")->capture_default_str();
  return [a]() -> int {
    server::ServerOptions& o = a->options;
    o.max_body_bytes = static_cast<size_t>(a->max_body_mb * (1 << 20));
    o.max_session_bytes = static_cast<size_t>(a->max_session_mb * (1 << 20));
    o.limits.max_media_bytes = static_cast<size_t>(a->max_media_mb * (1 << 20));
    o.max_held_media_bytes = static_cast<size_t>(a->max_held_media_mb * (1 << 20));
    o.model_name = std::filesystem::path(a->model_dir).lexically_normal().filename().string();
    if (o.model_name.empty()) o.model_name = std::filesystem::path(a->model_dir).lexically_normal().parent_path().filename().string();
    for (const auto& entry : std::filesystem::directory_iterator(a->model_dir))
      if (entry.path().extension() == ".safetensors") o.model_bytes += entry.file_size();
    ModelOptions mo;
    mo.precision = a->precision == "f32" ? Precision::F32 : Precision::BF16;
    mo.weights = a->weights == "q8_0" ? WeightFormat::Q8_0 : a->weights == "q4_0" ? WeightFormat::Q4_0 : WeightFormat::BF16;
    mo.device = a->device;
    signal(SIGPIPE, SIG_IGN);  // a client that went away is noticed by the failed write
    // SIGINT / SIGTERM end the server cleanly (running requests are cancelled, sessions' uploaded
    // files removed); see catch_stop_signals. While the model loads there is nothing to wind down:
    // a signal ends the process, as does a second one while the server winds down.
    catch_stop_signals();
    struct Serving {
      std::mutex mutex;
      server::Server* server = nullptr;
      bool finished = false;
    };
    auto serving = std::make_shared<Serving>();
    std::thread([serving] {
      int received = next_stop_signal();
      // Asked again until run() returns: a stop that comes before the server listens does nothing.
      for (;;) {
        {
          std::lock_guard<std::mutex> lock(serving->mutex);
          if (serving->finished) break;
          if (serving->server == nullptr) std::_Exit(128 + received);  // still loading: nothing to wind down
          serving->server->stop();
        }
        if (const int again = next_stop_signal(100)) std::_Exit(128 + again);
      }
      received = next_stop_signal();
      std::_Exit(128 + received);
    }).detach();
    std::shared_ptr<const Model> model = Model::load(a->model_dir, mo);
    server::Server server(model, o);
    const int port = server.bind();
    std::fprintf(stderr, "sa2va serve: %s on http://%s:%d/ (%d parallel, queue %d%s)\n", o.model_name.c_str(),
                 o.host.c_str(), port, o.parallel, o.queue, o.api_key.empty() ? "" : ", API key required");
    {
      std::lock_guard<std::mutex> lock(serving->mutex);
      serving->server = &server;
    }
    server.run();
    std::lock_guard<std::mutex> lock(serving->mutex);
    serving->server = nullptr;  // a later signal ends the process (the server is being destroyed)
    serving->finished = true;
    return 0;
  };
});

}  // namespace
}  // namespace sa2va::cli
