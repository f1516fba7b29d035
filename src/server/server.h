// `sa2va serve`: the HTTP server (docs/server.md). One model, loaded once, answers OpenAI-style
// chat completions with masks, /v1/segment, and sessions that keep one image or video and its
// vision work across turns; a web page at /; /health, /v1/models, /metrics. At most `parallel`
// predictions run at once and `queue` more wait; beyond that requests get 429.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "sa2va/sa2va.h"
#include "server/api.h"

namespace sa2va::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;              // 0 = any free port (see Server::bind)
  int parallel = 1;             // predictions running at once
  int queue = 64;               // requests waiting for a turn beyond those (429 when full)
  std::string api_key;          // when set, every API call needs "Authorization: Bearer <key>"
  size_t max_body_bytes = size_t{64} << 20;
  double timeout_s = 600;       // a request's whole time, waiting included (then 504 / an error event)
  Limits limits;                // pixels, frames, tokens, local files
  int max_sessions = 16;
  double session_idle_s = 900;  // a session unused this long ends
  size_t max_session_bytes = size_t{1} << 30;  // decoded media + cached vision work per session
  // Decoded media of all requests in line (waiting or running) together; beyond it 429. One request
  // is taken whatever its size (up to limits.max_media_bytes) when no other holds any.
  size_t max_held_media_bytes = size_t{4} << 30;
  std::string model_name;       // the id in /v1/models
  uint64_t model_bytes = 0;     // size of its weight files, reported by /v1/models
};

class Server {
 public:
  Server(std::shared_ptr<const Model> model, ServerOptions options);
  ~Server();
  // Binds host:port; returns the port (the one chosen when options.port is 0). Throws Error.
  int bind();
  // Serves until stop() (from another thread).
  void run();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sa2va::server
