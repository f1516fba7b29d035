#include "server/server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/random.h>
#include <strings.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <random>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "core/profile.h"
#include "io/image.h"
#include "io/mask_io.h"
#include "server/web_assets.h"

namespace sa2va::server {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// ---- admission: `parallel` running, `queue` waiting, the rest refused ---------------------------------

class Admission {
 public:
  Admission(int parallel, int queue) : parallel_(parallel), capacity_(parallel + queue) {}

  // A place in line; run() waits for a turn, taken in the order of arrival. Leaving the line
  // (destruction) frees the place.
  class Ticket {
   public:
    Ticket(Admission& a, uint64_t number) : a_(a), number_(number) {}
    ~Ticket() {
      std::lock_guard<std::mutex> lock(a_.mutex_);
      if (running_) --a_.running_;
      else --a_.waiting_;
      a_.ready_.erase(number_);
      a_.changed_.notify_all();
    }
    // Waits for a turn: a free slot, and no one who came earlier waiting here too (a request still
    // reading its media, or a session turn waiting for its session, holds no one up). False when
    // `give_up` said so first.
    bool run(const std::function<bool()>& give_up) {
      std::unique_lock<std::mutex> lock(a_.mutex_);
      a_.ready_.insert(number_);
      while (a_.running_ >= a_.parallel_ || *a_.ready_.begin() != number_) {
        if (give_up()) {
          a_.ready_.erase(number_);
          a_.changed_.notify_all();
          return false;
        }
        a_.changed_.wait_for(lock, std::chrono::milliseconds(50));
      }
      a_.ready_.erase(number_);
      --a_.waiting_;
      ++a_.running_;
      running_ = true;
      a_.changed_.notify_all();  // the next in line may take another free slot
      return true;
    }

   private:
    Admission& a_;
    const uint64_t number_;
    bool running_ = false;
  };

  // None when the line is full.
  std::shared_ptr<Ticket> enter() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (running_ + waiting_ >= capacity_) return nullptr;
    auto ticket = std::make_shared<Ticket>(*this, next_++);  // before the count: a failed allocation leaves it
    ++waiting_;
    return ticket;
  }
  int waiting() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return waiting_;
  }
  int running() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return running_;
  }

 private:
  const int parallel_, capacity_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  int running_ = 0, waiting_ = 0;
  std::set<uint64_t> ready_;  // tickets waiting in run(), by arrival: the first takes the next free slot
  uint64_t next_ = 0;
};

// ---- decoded media of requests in line ------------------------------------------------------------

// The pixels that requests in line (waiting or running) hold, bounded: a full queue of large frame
// lists would otherwise hold `queue` times the per-request limit. A request is always taken when
// nothing else is held, so that one at the per-request limit can run.
class MediaBudget {
 public:
  explicit MediaBudget(size_t limit) : limit_(limit) {}

  // Counts `bytes` until the returned hold is dropped; nullptr when they do not fit. `own`: what the
  // same request holds already (its earlier pictures), which does not count as someone else's.
  std::shared_ptr<void> hold(size_t bytes, size_t own = 0) {
    auto hold = std::make_shared<Hold>(*this, 0);  // allocated first: a failure leaves the count as it was
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (held_ > own && (bytes > limit_ || held_ > limit_ - bytes)) return nullptr;  // (hold's release: 0)
      held_ += bytes;
      hold->bytes = bytes;
    }
    return hold;
  }
  size_t held() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return held_;
  }

 private:
  struct Hold {
    Hold(MediaBudget& budget, size_t bytes) : budget(budget), bytes(bytes) {}
    ~Hold() {
      std::lock_guard<std::mutex> lock(budget.mutex_);
      budget.held_ -= bytes;
    }
    MediaBudget& budget;
    size_t bytes;
  };
  const size_t limit_;
  mutable std::mutex mutex_;
  size_t held_ = 0;
};

// ---- sessions ------------------------------------------------------------------------------------

struct Session {
  std::string id;
  std::unique_ptr<Media> media;
  std::shared_ptr<VisualCache> cache;
  std::timed_mutex mutex;  // one turn at a time; guards past_text and mask_prompts
  std::string past_text;
  // The first turn's visual prompts, which every later turn passes again; kept as runs (a few bytes
  // for a box), not as full-size masks for the session's whole life.
  std::vector<CocoRle> mask_prompts;
  std::atomic<int> turns{0};
  std::atomic<Clock::rep> last_used{Clock::now().time_since_epoch().count()};
  void touch() { last_used = Clock::now().time_since_epoch().count(); }
  double idle_s() const {
    return std::chrono::duration<double>(Clock::now().time_since_epoch() - Clock::duration(last_used.load())).count();
  }
};

// 128 bits from the kernel: a session id is the only key to its media and conversation.
std::string random_id(const char* prefix) {
  uint64_t words[2] = {0, 0};
  size_t got = 0;
  while (got < sizeof words) {
    const ssize_t n = getrandom(reinterpret_cast<char*>(words) + got, sizeof words - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
    else if (errno != EINTR) throw HttpError(500, "no random numbers for an id");
  }
  char id[48];
  std::snprintf(id, sizeof id, "%s%016llx%016llx", prefix, static_cast<unsigned long long>(words[0]),
                static_cast<unsigned long long>(words[1]));
  return id;
}

class Sessions {
 public:
  Sessions(int max_sessions, double idle_s) : max_(max_sessions), idle_s_(idle_s) {}

  // `cache_bytes`: what the session's vision work may keep.
  std::shared_ptr<Session> create(std::unique_ptr<Media> media, size_t cache_bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    expire_locked();
    if (static_cast<int>(sessions_.size()) >= max_)
      throw HttpError(429, "the server holds its limit of " + std::to_string(max_) + " sessions; delete one or retry later");
    auto s = std::make_shared<Session>();
    s->id = random_id("s-");
    s->cache = VisualCache::create(cache_bytes);
    s->media = std::move(media);
    sessions_[s->id] = s;
    return s;
  }
  std::shared_ptr<Session> get(const std::string& id) {
    std::lock_guard<std::mutex> lock(mutex_);
    expire_locked();
    const auto it = sessions_.find(id);
    if (it == sessions_.end()) throw HttpError(404, "no session " + id + " (it ended or expired)");
    it->second->touch();
    return it->second;
  }
  bool erase(const std::string& id) {
    std::shared_ptr<Session> ended;  // destroyed after the lock is released
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = sessions_.find(id);
    if (it == sessions_.end()) return false;
    ended = std::move(it->second);
    sessions_.erase(it);
    return true;
  }
  void expire() {
    std::lock_guard<std::mutex> lock(mutex_);
    expire_locked();
  }
  size_t count() {
    std::lock_guard<std::mutex> lock(mutex_);
    return sessions_.size();
  }

 private:
  // A session in use (its mutex held by a turn) is never idle. Ended sessions are destroyed by the
  // last holder of their pointer, never while their mutex is locked here.
  void expire_locked() {
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      Session& s = *it->second;
      bool idle = false;
      if (s.idle_s() > idle_s_ && s.mutex.try_lock()) {
        s.mutex.unlock();
        idle = true;
      }
      it = idle ? sessions_.erase(it) : std::next(it);
    }
  }
  const int max_;
  const double idle_s_;
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<Session>> sessions_;
};

// ---- metrics -------------------------------------------------------------------------------------

class Metrics {
 public:
  void count(const std::string& endpoint, int status) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++requests_[{endpoint, status}];
  }
  void generated(size_t tokens, double seconds) {
    std::lock_guard<std::mutex> lock(mutex_);
    tokens_ += tokens;
    predict_seconds_ += seconds;
    ++predictions_;
  }
  std::string text(int waiting, int running, size_t sessions, size_t media_held) const {
    std::ostringstream out;
    std::lock_guard<std::mutex> lock(mutex_);
    out << "# HELP sa2va_requests_total Requests answered, by endpoint and HTTP status.\n"
        << "# TYPE sa2va_requests_total counter\n";
    for (const auto& [key, n] : requests_)
      out << "sa2va_requests_total{endpoint=\"" << key.first << "\",status=\"" << key.second << "\"} " << n << "\n";
    out << "# HELP sa2va_queue_waiting Requests waiting for a turn.\n# TYPE sa2va_queue_waiting gauge\n"
        << "sa2va_queue_waiting " << waiting << "\n"
        << "# HELP sa2va_running Predictions running.\n# TYPE sa2va_running gauge\n"
        << "sa2va_running " << running << "\n"
        << "# HELP sa2va_sessions Open sessions.\n# TYPE sa2va_sessions gauge\n"
        << "sa2va_sessions " << sessions << "\n"
        << "# HELP sa2va_media_held_bytes Decoded media held by requests in line.\n# TYPE sa2va_media_held_bytes gauge\n"
        << "sa2va_media_held_bytes " << media_held << "\n"
        << "# HELP sa2va_predictions_total Predictions completed.\n# TYPE sa2va_predictions_total counter\n"
        << "sa2va_predictions_total " << predictions_ << "\n"
        << "# HELP sa2va_generated_tokens_total Answer tokens produced.\n# TYPE sa2va_generated_tokens_total counter\n"
        << "sa2va_generated_tokens_total " << tokens_ << "\n"
        << "# HELP sa2va_predict_seconds_total Time spent in predictions.\n# TYPE sa2va_predict_seconds_total counter\n"
        << "sa2va_predict_seconds_total " << predict_seconds_ << "\n";
    double decode_s = 0;
    int64_t decode_calls = 0;
    out << "# HELP sa2va_stage_seconds_total Time per pipeline stage.\n# TYPE sa2va_stage_seconds_total counter\n";
    const std::vector<profile::Entry> stages = profile::entries();
    for (const auto& e : stages) {
      out << "sa2va_stage_seconds_total{stage=\"" << e.stage << "\"} " << e.seconds << "\n";
      if (e.stage == "llm.decode_token") {
        decode_s = e.seconds;
        decode_calls = e.calls;
      }
    }
    out << "# HELP sa2va_stage_calls_total Calls per pipeline stage.\n# TYPE sa2va_stage_calls_total counter\n";
    for (const auto& e : stages) out << "sa2va_stage_calls_total{stage=\"" << e.stage << "\"} " << e.calls << "\n";
    out << "# HELP sa2va_decode_tokens_per_second Decoding speed over all requests.\n"
        << "# TYPE sa2va_decode_tokens_per_second gauge\n"
        << "sa2va_decode_tokens_per_second " << (decode_s > 0 ? static_cast<double>(decode_calls) / decode_s : 0.0) << "\n";
    return out.str();
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  uint64_t tokens_ = 0, predictions_ = 0;
  double predict_seconds_ = 0;
};

// ---- a plain request's client going away ----------------------------------------------------------

// The connection of a request, found among this process's sockets by its two ends (the HTTP
// library does not hand handlers the socket). -1 when not found.
int connection_socket(const httplib::Request& req) {
  DIR* fds = opendir("/proc/self/fd");
  if (fds == nullptr) return -1;
  int found = -1;
  while (const dirent* entry = readdir(fds)) {
    const int fd = std::atoi(entry->d_name);
    if (fd <= 2) continue;
    sockaddr_storage peer{}, local{};
    socklen_t peer_len = sizeof peer, local_len = sizeof local;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) != 0)
      continue;
    const auto port_of = [](const sockaddr_storage& a) {
      return a.ss_family == AF_INET ? ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port)
             : a.ss_family == AF_INET6 ? ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port)
                                       : 0;
    };
    const auto address_of = [](const sockaddr_storage& a) {
      char text[INET6_ADDRSTRLEN] = "";
      if (a.ss_family == AF_INET) inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(a).sin_addr, text, sizeof text);
      if (a.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(a).sin6_addr, text, sizeof text);
      return std::string(text);
    };
    if (port_of(peer) == req.remote_port && port_of(local) == req.local_port &&
        address_of(peer) == req.remote_addr && address_of(local) == req.local_addr) {
      found = fd;
      break;
    }
  }
  closedir(fds);
  return found;
}

// Answers a request on its connection and closes it: for a request refused before its body is read.
// The server's own later write then fails, which ends the connection on its side too. Closing with
// unread input would reset the connection, which can discard the answer at the client: what the
// client still sends is read and dropped for up to a second (or 4 MiB) first, as a lingering close.
void answer_and_close(const httplib::Request& req, const httplib::Response& res) {
  const int fd = connection_socket(req);
  if (fd < 0) return;
  const int status = res.status;
  const char* reason = status == 401 ? "Unauthorized" : status == 405 ? "Method Not Allowed"
                     : status == 411 ? "Length Required" : status == 413 ? "Payload Too Large"
                     : status == 415 ? "Unsupported Media Type" : "Bad Request";
  std::string answer = "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\n";
  for (const auto& [name, value] : res.headers) answer += name + ": " + value + "\r\n";  // Content-Type, Allow
  answer += "Content-Length: " + std::to_string(res.body.size()) + "\r\nConnection: close\r\n\r\n" + res.body;
  for (size_t sent = 0; sent < answer.size();) {
    const ssize_t n = send(fd, answer.data() + sent, answer.size() - sent, MSG_NOSIGNAL);
    if (n > 0) sent += static_cast<size_t>(n);
    else if (n < 0 && errno == EINTR) continue;
    else break;
  }
  shutdown(fd, SHUT_WR);
  const auto until = Clock::now() + std::chrono::seconds(1);
  char scratch[16384];
  for (size_t drained = 0; drained < (size_t{64} << 20);) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || poll(&p, 1, static_cast<int>(left)) <= 0) break;
    const ssize_t n = recv(fd, scratch, sizeof scratch, MSG_DONTWAIT);
    if (n <= 0) break;  // the client closed (or an error): nothing left to reset
    drained += static_cast<size_t>(n);
  }
  shutdown(fd, SHUT_RD);
}

// Whether the client closed its connection (checked between tokens and frames; nothing is
// consumed: a peek that finds the end of the stream, or an error).
bool client_hung_up(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLHUP | POLLERR)) return true;
  char byte;
  const ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

// ---- streaming helpers ---------------------------------------------------------------------------

// Text pieces as they are generated, minus what ends the turn: the newest piece is held back until
// the next one (the end-of-turn marker comes as a piece of its own), and leading whitespace is
// dropped, so that the pieces sent add up to Prediction::content.
class ContentStream {
 public:
  // `whole_when_not_streamed`: a forced answer (no pieces) is sent whole by finish().
  ContentStream(std::function<void(const std::string&)> send, bool whole_when_not_streamed)
      : send_(std::move(send)), streaming_(whole_when_not_streamed) {}
  void piece(const std::string& p) {
    if (!held_.empty()) emit(held_);
    held_ = p;
    streaming_ = true;
  }
  // The rest of the final content, once it is known.
  void finish(const std::string& content) {
    if (streaming_ && content.size() > sent_.size() && content.compare(0, sent_.size(), sent_) == 0)
      send_(content.substr(sent_.size()));
  }

 private:
  void emit(const std::string& p) {
    std::string text = p;
    if (sent_.empty()) text.erase(0, text.find_first_not_of(" \t\r\n"));
    if (text.empty()) return;
    sent_ += text;
    send_(text);
  }
  std::function<void(const std::string&)> send_;
  std::string held_, sent_;
  bool streaming_ = false;
};

// The masks of one frame, gathered as the tracker hands them over (on_mask per [SEG], then
// on_progress once the frame is complete).
struct FrameMasks {
  int64_t frame = 0;
  std::vector<Mask> masks;
};

}  // namespace

// ---- the server ------------------------------------------------------------------------------------

struct Server::Impl {
  std::shared_ptr<const Model> model;
  ServerOptions options;
  httplib::Server http;
  Admission admission;
  MediaBudget media_budget;
  Sessions sessions;
  Metrics metrics;
  std::atomic<bool> stopping{false};
  const int64_t started = std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::system_clock::now().time_since_epoch()).count();
  std::thread janitor;
  std::mutex janitor_mutex;
  std::condition_variable janitor_wake;
  int port = -1;

  Impl(std::shared_ptr<const Model> m, ServerOptions o)
      : model(std::move(m)),
        options(std::move(o)),
        admission(options.parallel, options.queue),
        media_budget(options.max_held_media_bytes),
        sessions(options.max_sessions, options.session_idle_s) {
    routes();
  }

  // -- plumbing --

  static void send_json(httplib::Response& res, int status, const json& body) {
    res.status = status;
    res.set_content(text_of(body), "application/json");
  }

  // Invalid UTF-8 (say, from a client's bytes echoed in an error) is replaced, never thrown.
  static std::string text_of(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

  static json parse_body(const httplib::Request& req) {
    check_nesting(req.body);
    json body = json::parse(req.body, nullptr, false);
    if (body.is_discarded()) throw HttpError(400, "the body is not valid JSON");
    if (!body.is_object()) throw HttpError(400, "the body must be a JSON object");
    return body;
  }

  static std::string string_or(const json& body, const char* key, const std::string& fallback) {
    const auto it = body.find(key);
    if (it == body.end() || it->is_null()) return fallback;
    if (!it->is_string()) throw HttpError(400, std::string(key) + ": expected a string");
    return it->get<std::string>();
  }

  // Runs a handler: errors become JSON error answers; every answer is counted.
  void guarded(const std::string& endpoint, httplib::Response& res, const std::function<void()>& handler) {
    try {
      handler();
    } catch (const HttpError& e) {
      send_json(res, e.status, error_body(e.status, e.what()));
    } catch (const Cancelled&) {
      const json error = cancelled_error(false);
      send_json(res, error["error"]["code"].get<int>(), error);
    } catch (const Error& e) {
      send_json(res, 400, error_body(400, e.what()));
    } catch (const json::exception& e) {
      send_json(res, 400, error_body(400, e.what()));
    } catch (const std::out_of_range& e) {
      send_json(res, 400, error_body(400, std::string("a value is out of range: ") + e.what()));
    } catch (const std::exception& e) {
      send_json(res, 500, error_body(500, std::string("internal error: ") + e.what()));
    }
    if (res.status > 0) metrics.count(endpoint, res.status);  // streams count themselves when done
  }

  std::shared_ptr<Admission::Ticket> enter_line() {
    auto ticket = admission.enter();
    if (!ticket)
      throw HttpError(429, "the server is busy (" + std::to_string(options.parallel) + " running, " +
                               std::to_string(options.queue) + " waiting); retry later");
    return ticket;
  }

  std::string media_budget_refusal(size_t bytes, const std::string& what) const {
    return "the server is busy: requests in line hold " + mib(media_budget.held()) + " of decoded media (its limit is " +
           mib(options.max_held_media_bytes) + ", " + what + " needs " + mib(bytes) + "); retry later";
  }

  // The limits of a request in line: each picture of its media counted against the server's budget
  // before it is decoded (429 when it does not fit), until the media are dropped.
  Limits in_line_limits() {
    Limits limits = options.limits;
    limits.hold_decoded = [this, own = std::make_shared<size_t>(0)](size_t bytes, const std::string& what) {
      std::shared_ptr<void> hold = media_budget.hold(bytes, *own);
      if (!hold) throw HttpError(429, media_budget_refusal(bytes, what));
      *own += bytes;
      return hold;
    };
    return limits;
  }

  // The media of a request in line, counted against the server's budget until dropped (pictures
  // were counted as they were decoded; what else the media hold is counted here).
  std::unique_ptr<Media> held_media(std::unique_ptr<Media> media) {
    if (!media || !media->decoding_holds.empty()) return media;
    media->held = media_budget.hold(media->bytes());
    if (!media->held) throw HttpError(429, media_budget_refusal(media->bytes(), "this one"));
    return media;
  }

  Clock::time_point deadline() const {
    return Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(options.timeout_s * 1000));
  }

  // When a request stops waiting or working: its client gone (its connection hung up, or `gone` set by
  // a failed write), the server stopping, or its time up. Polled between tokens and frames.
  std::function<bool()> give_up_when(int client, std::shared_ptr<std::atomic<bool>> gone, Clock::time_point until) {
    return [this, client, gone = std::move(gone), until] {
      if (!gone->load() && client_hung_up(client)) gone->store(true);
      return gone->load() || stopping || Clock::now() > until;
    };
  }

  // The answer to a cancelled request: 499 when its client left, 503 when the server is stopping,
  // else 504 (its time was up).
  json cancelled_error(bool client_gone) const {
    return client_gone ? error_body(499, "the client went away")
           : stopping  ? error_body(503, "the server is stopping")
                       : error_body(504, "the request took longer than this server's limit");
  }

  // Waits for a turn, then predicts; `give_up` (client gone, time up) stops either.
  Prediction predict(Request& request, Admission::Ticket& ticket, const std::function<bool()>& give_up) {
    if (!ticket.run(give_up)) throw Cancelled();
    request.should_stop = give_up;
    const auto start = Clock::now();
    Prediction p = model->predict(request);
    metrics.generated(p.generated_ids.size(), seconds_since(start));
    return p;
  }

  json completion_json(const Prediction& p, const std::string& format, const std::string& id, int64_t created) const {
    return {{"id", id},
            {"object", "chat.completion"},
            {"created", created},
            {"model", options.model_name},
            {"choices", {{{"index", 0},
                          {"message", {{"role", "assistant"}, {"content", p.content}}},
                          {"finish_reason", p.finish_reason}}}},
            {"usage", {{"prompt_tokens", p.prompt_tokens},
                       {"completion_tokens", p.generated_ids.size()},
                       {"total_tokens", p.prompt_tokens + static_cast<int64_t>(p.generated_ids.size())}}},
            {"sa2va", sa2va_object(p, format)}};
  }

  // -- routes --

  // One table of the API's endpoints: routes() registers each handler, and the 405 check reads the
  // methods a path takes from the same patterns.
  using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;
  struct Endpoint {
    std::string method, pattern;
    Handler handler;
    std::regex compiled;
  };
  std::vector<Endpoint> endpoints;

  // Every method of the endpoints whose pattern is `path` ("GET, DELETE"; "" when none is).
  std::vector<std::string> allowed_methods(const std::string& path) const {
    std::vector<std::string> methods;
    for (const Endpoint& e : endpoints)
      if (std::regex_match(path, e.compiled) && std::find(methods.begin(), methods.end(), e.method) == methods.end())
        methods.push_back(e.method);
    return methods;
  }

  // A handler answering through guarded(), its answers counted under `metric`.
  Handler guarded_by(const char* metric, std::function<void(const httplib::Request&, httplib::Response&)> body) {
    return [this, metric, body = std::move(body)](const httplib::Request& req, httplib::Response& res) {
      guarded(metric, res, [&] { body(req, res); });
    };
  }

  std::vector<Endpoint> api_endpoints() {
    const auto json_answer = [](std::function<json()> answer) {
      return [answer = std::move(answer)](const httplib::Request&, httplib::Response& res) { send_json(res, 200, answer()); };
    };
    return {
        {"GET", "/health", json_answer([this] { return json{{"status", "ok"}, {"model", options.model_name}}; }), {}},
        {"GET", "/v1/models", guarded_by("/v1/models", json_answer([this] { return models_json(); })), {}},
        {"GET", "/metrics",
         [this](const httplib::Request&, httplib::Response& res) {
           res.set_content(metrics.text(admission.waiting(), admission.running(), sessions.count(), media_budget.held()),
                           "text/plain; version=0.0.4");
         },
         {}},
        {"POST", "/v1/chat/completions",
         guarded_by("/v1/chat/completions", [this](const auto& req, auto& res) { chat_completions(req, res); }), {}},
        {"POST", "/v1/segment", guarded_by("/v1/segment", [this](const auto& req, auto& res) { segment(req, res); }), {}},
        {"POST", "/v1/sessions",
         guarded_by("/v1/sessions", [this](const auto& req, auto& res) { create_session(req, res); }), {}},
        {"GET", R"(/v1/sessions/([A-Za-z0-9-]+))",
         guarded_by("/v1/sessions/{id}",
                    [this](const auto& req, auto& res) { send_json(res, 200, session_json(*sessions.get(req.matches[1]))); }),
         {}},
        {"DELETE", R"(/v1/sessions/([A-Za-z0-9-]+))",
         guarded_by("/v1/sessions/{id}",
                    [this](const auto& req, auto& res) {
                      if (!sessions.erase(req.matches[1])) throw HttpError(404, "no session " + std::string(req.matches[1]));
                      send_json(res, 200, {{"id", std::string(req.matches[1])}, {"deleted", true}});
                    }),
         {}},
        {"GET", R"(/v1/sessions/([A-Za-z0-9-]+)/frames/(\d+))",
         guarded_by("/v1/sessions/{id}/frames", [this](const auto& req, auto& res) { session_frame(req, res); }), {}},
        {"POST", R"(/v1/sessions/([A-Za-z0-9-]+)/chat)",
         guarded_by("/v1/sessions/{id}/chat", [this](const auto& req, auto& res) { session_chat(req, res); }), {}},
    };
  }

  void routes() {
    http.set_payload_max_length(options.max_body_bytes);
    http.new_task_queue = [threads = options.parallel + options.queue + 8] {
      return new httplib::ThreadPool(static_cast<size_t>(threads));
    };
    // Before the body is read: the key, then what a body must be.
    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      const std::string length = req.get_header_value("Content-Length");
      const bool malformed_length = req.get_header_value_count("Content-Length") > 1 ||
                                    (req.has_header("Content-Length") &&
                                     (length.empty() || length.size() > 19 ||
                                      length.find_first_not_of("0123456789") != std::string::npos));
      const auto refuse = [&](int status, const std::string& message, const char* counted) {
        send_json(res, status, error_body(status, message));
        // A body left unread must not be taken for the next request of a kept-alive connection:
        // such a refusal is written here and the connection closed.
        if (malformed_length || req.has_header("Transfer-Encoding") || req.get_header_value<uint64_t>("Content-Length") > 0)
          answer_and_close(req, res);
        metrics.count(counted, status);
        return httplib::Server::HandlerResponse::Handled;
      };
      // Where a body ends must be beyond doubt ("38x", "abc" or two lengths would be read as a number).
      if (malformed_length) return refuse(400, "a malformed or repeated Content-Length", "bad body");
      if (is_api(req.path) && !options.api_key.empty() && !authorized(req.get_header_value("Authorization"), options.api_key))
        return refuse(401, "missing or wrong API key (send Authorization: Bearer <key>)", "unauthorized");
      // An endpoint asked with a method it does not take: 405 before its body is judged.
      if (const std::vector<std::string> methods = allowed_methods(req.path);
          !methods.empty() && std::find(methods.begin(), methods.end(), req.method) == methods.end()) {
        std::string allowed;
        for (const std::string& m : methods) allowed += (allowed.empty() ? "" : ", ") + m;
        res.set_header("Allow", allowed);
        return refuse(405, req.method + " is not allowed on " + req.path + " (allowed: " + allowed + ")", "(no endpoint)");
      }
      if (!is_api(req.path) || req.method != "POST") return httplib::Server::HandlerResponse::Unhandled;
      // The body limit holds only for a declared length: a chunked body would be read whole first.
      if (req.has_header("Transfer-Encoding") || !req.has_header("Content-Length"))
        return refuse(411, "send the body with a Content-Length (chunked request bodies are not accepted)", "bad body");
      // Refused on its declared length, before a byte of it is read.
      if (req.get_header_value<uint64_t>("Content-Length") > options.max_body_bytes)
        return refuse(413, "the body is too large (over this server's limit of " + mib(options.max_body_bytes) + ")",
                      "bad body");
      // A web page can send a form or plain text to any address without asking: JSON it cannot.
      std::string type = req.get_header_value("Content-Type");
      type = type.substr(0, type.find(';'));
      std::transform(type.begin(), type.end(), type.begin(), [](unsigned char c) { return std::tolower(c); });
      type.erase(type.find_last_not_of(" \t") + 1);
      if (type != "application/json")
        return refuse(415, "send the body as Content-Type: application/json", "bad body");
      return httplib::Server::HandlerResponse::Unhandled;
    });
    // Called for every answer of status 400 or more; those without a body come from the HTTP layer
    // (no route, a body over the limit, a malformed request) and are counted here.
    http.set_error_handler([this](const httplib::Request&, httplib::Response& res) {
      if (!res.body.empty()) return;
      metrics.count(res.status == 404 ? "(no endpoint)" : "(request)", res.status);
      const std::string message = res.status == 413   ? "the body is too large (JSON bodies must be sent as Content-Type: application/json and within --max-body-mb)"
                                  : res.status == 404 ? "no such endpoint"
                                                      : "request failed";
      send_json(res, res.status, error_body(res.status, message));
    });

    for (size_t i = 0; i < kWebAssetCount; ++i) {
      const WebAsset& asset = kWebAssets[i];
      http.Get(asset.path, [&asset](const httplib::Request&, httplib::Response& res) {
        res.set_content(reinterpret_cast<const char*>(asset.data), asset.size, asset.content_type);
      });
    }
    endpoints = api_endpoints();
    for (Endpoint& e : endpoints) {
      e.compiled = std::regex(e.pattern);
      if (e.method == "GET") http.Get(e.pattern, e.handler);
      else if (e.method == "POST") http.Post(e.pattern, e.handler);
      else if (e.method == "DELETE") http.Delete(e.pattern, e.handler);
      else throw Error("server: no route for method " + e.method);
    }
  }

  static bool is_api(const std::string& path) { return path.rfind("/v1/", 0) == 0 || path == "/metrics"; }

  // "Bearer KEY" (the scheme in any case), compared in a time that does not depend on where it differs.
  static bool authorized(const std::string& header, const std::string& key) {
    if (header.size() < 7 || strncasecmp(header.c_str(), "Bearer ", 7) != 0) return false;
    const std::string given = header.substr(7);
    unsigned char differ = given.size() == key.size() ? 0 : 1;
    for (size_t i = 0; i < given.size(); ++i) differ |= static_cast<unsigned char>(given[i] ^ key[i % key.size()]);
    return differ == 0;
  }

  json models_json() const {
    return {{"object", "list"},
            {"data", {{{"id", options.model_name},
                       {"object", "model"},
                       {"created", started},
                       {"owned_by", "sa2va.cpp"},
                       {"sa2va", {{"template", model->template_name()},
                                  {"weights_bytes", options.model_bytes},
                                  {"capabilities", {"chat", "segmentation", "video", "gcg", "visual_prompts"}},
                                  {"limits", {{"max_tokens", options.limits.max_tokens},
                                              {"max_frames", options.limits.max_frames},
                                              {"max_pixels", options.limits.max_pixels}}}}}}}}};
  }

  // -- /v1/chat/completions --

  void chat_completions(const httplib::Request& req, httplib::Response& res) {
    auto ticket = enter_line();
    const json body = parse_body(req);
    auto call = std::make_shared<ChatCall>(chat_call_from_body(body, *model, in_line_limits()));
    call->media = held_media(std::move(call->media));
    const std::string id = random_id("chatcmpl-");
    const int64_t created = std::chrono::duration_cast<std::chrono::seconds>(
                                std::chrono::system_clock::now().time_since_epoch()).count();
    const auto until = deadline();
    // What the model would refuse is refused now, while the status can still say so.
    model->conversation_after(call->request, "");
    if (!call->stream) {
      const int client = connection_socket(req);
      const auto gone = std::make_shared<std::atomic<bool>>(false);
      try {
        const Prediction p = predict(call->request, *ticket, give_up_when(client, gone, until));
        send_json(res, 200, completion_json(p, call->mask_format, id, created));
      } catch (const Cancelled&) {
        if (!gone->load()) throw;
        send_json(res, 499, cancelled_error(true));  // nobody reads it; counted in /metrics
      }
      return;
    }
    // Server-sent events: a chunk per piece of text, then one with the finish reason and the masks.
    res.set_header("Cache-Control", "no-cache");
    const int client = connection_socket(req);  // held by this connection until the stream ends
    res.set_chunked_content_provider("text/event-stream", [this, call, ticket, id, created, until, client](
                                                              size_t, httplib::DataSink& sink) {
      auto gone = std::make_shared<std::atomic<bool>>(false);
      const auto send = [&](const json& chunk) {
        const std::string line = "data: " + text_of(chunk) + "\n\n";
        if (!gone->load() && !sink.write(line.data(), line.size())) gone->store(true);
      };
      const auto chunk = [&](const json& delta, const json& finish) {
        return json{{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", options.model_name},
                    {"choices", {{{"index", 0}, {"delta", delta}, {"finish_reason", finish}}}}};
      };
      send(chunk({{"role", "assistant"}, {"content", ""}}, nullptr));
      ContentStream content([&](const std::string& text) { send(chunk({{"content", text}}, nullptr)); }, true);
      call->request.on_text = [&](const std::string& piece) { content.piece(piece); };
      // Nothing is written while the request waits for its turn: a client gone then is seen on its socket.
      const auto give_up = give_up_when(client, gone, until);
      try {
        const Prediction p = predict(call->request, *ticket, give_up);
        content.finish(p.content);
        json last = chunk(json::object(), p.finish_reason);
        last["sa2va"] = sa2va_object(p, call->mask_format);
        send(last);
        if (call->include_usage) {  // OpenAI's last chunk: no choices, the usage
          json usage = chunk(json::object(), nullptr);
          usage["choices"] = json::array();
          usage["usage"] = completion_json(p, call->mask_format, id, created)["usage"];
          send(usage);
        }
        metrics.count("/v1/chat/completions (stream)", 200);
      } catch (const Cancelled&) {
        const json error = cancelled_error(gone->load());
        send(error);
        metrics.count("/v1/chat/completions (stream)", error["error"]["code"].get<int>());
      } catch (const std::exception& e) {
        send(error_body(400, e.what()));
        metrics.count("/v1/chat/completions (stream)", 400);
      }
      const std::string done = "data: [DONE]\n\n";
      if (!gone->load()) sink.write(done.data(), done.size());
      sink.done();
      return true;
    });
  }

  // -- /v1/segment --

  void segment(const httplib::Request& req, httplib::Response& res) {
    auto ticket = enter_line();
    const json body = parse_body(req);
    static const json kNone;
    const auto found = body.find("expressions");
    const json& expressions = found == body.end() ? kNone : *found;
    if (!expressions.is_array() || expressions.empty())
      throw HttpError(400, "expressions: expected a non-empty array of strings");
    for (const auto& e : expressions)
      if (!e.is_string() || e.get<std::string>().find_first_not_of(" \t\n") == std::string::npos)
        throw HttpError(400, "expressions: every expression must be a non-empty string");
    const std::string format = string_or(body, "format", "rle");
    check_mask_format(format);
    std::string prompt = string_or(body, "prompt", "Please segment {expression}.");
    if (prompt.find("{expression}") == std::string::npos)
      throw HttpError(400, "prompt: must contain {expression}");
    const std::unique_ptr<Media> media = held_media(media_from_body(body, in_line_limits()));
    const auto until = deadline();
    const int client = connection_socket(req);
    const auto gone = std::make_shared<std::atomic<bool>>(false);
    try {
      segment_expressions(body, expressions, prompt, format, *media, *ticket, give_up_when(client, gone, until), res);
    } catch (const Cancelled&) {
      if (!gone->load()) throw;
      send_json(res, 499, cancelled_error(true));  // nobody reads it; counted in /metrics
    }
  }

  void segment_expressions(const json& body, const json& expressions, const std::string& prompt, const std::string& format,
                           const Media& media, Admission::Ticket& ticket, const std::function<bool()>& give_up,
                           httplib::Response& res) {
    if (!ticket.run(give_up)) throw Cancelled();
    // One cache for all expressions: the image is encoded once.
    const std::shared_ptr<VisualCache> cache = VisualCache::create();
    json results = json::array();
    for (const auto& expression : expressions) {
      Request r;
      std::string text = prompt;
      text.replace(text.find("{expression}"), 12, expression.get<std::string>());
      r.text = "<image>" + text;
      if (media.is_video()) r.video = media.video.get();
      else r.image = media.image;
      r.cache = cache;
      apply_generation(body, options.limits, r);
      r.should_stop = give_up;
      const auto start = Clock::now();
      const Prediction p = model->predict(r);
      metrics.generated(p.generated_ids.size(), seconds_since(start));
      results.push_back({{"expression", expression}, {"text", p.text}, {"content", p.content},
                         {"masks", masks_json(p, format)}});
    }
    send_json(res, 200, {{"width", media.width()}, {"height", media.height()}, {"frames", media.frames()},
                         {"results", results}});
  }

  // -- sessions --

  json session_json(const Session& s) const {
    return {{"id", s.id},
            {"kind", s.media->is_video() ? "video" : "image"},
            {"width", s.media->width()},
            {"height", s.media->height()},
            {"frames", s.media->frames()},
            {"fps", s.media->is_video() ? s.media->video->fps() : 0.0},
            {"turns", s.turns.load()},
            {"expires_in", std::max(0.0, options.session_idle_s - s.idle_s())}};
  }

  void create_session(const httplib::Request& req, httplib::Response& res) {
    const json body = parse_body(req);
    // Counted with the requests in line while it decodes; then the session's own limit holds it.
    std::unique_ptr<Media> media = media_from_body(body, in_line_limits());
    media->decoding_holds.clear();
    if (media->bytes() > options.max_session_bytes)
      throw HttpError(413, "the decoded media take " + mib(media->bytes()) + ", over this server's limit of " +
                               mib(options.max_session_bytes) + " per session");
    const size_t media_bytes = media->bytes();
    const std::shared_ptr<Session> s = sessions.create(std::move(media), options.max_session_bytes - media_bytes);
    send_json(res, 200, session_json(*s));
  }

  void session_frame(const httplib::Request& req, httplib::Response& res) {
    const std::shared_ptr<Session> s = sessions.get(req.matches[1]);
    // Not behind the session's turn: media do not change, and a video decodes one frame at a time
    // for everyone who reads it, so the page gets its frames while a turn runs.
    const std::string index = req.matches[2];
    if (index.size() > 12) throw HttpError(404, "frame " + index + " does not exist");
    const Image frame = s->media->frame(std::stoll(index));
    const std::vector<uint8_t> png = encode_png(frame.rgb.data(), frame.width, frame.height, 3);
    res.status = 200;  // counted by guarded()
    res.set_content(reinterpret_cast<const char*>(png.data()), png.size(), "image/png");
  }

  // One turn of a session, answered as NDJSON: "delta" lines while the text is generated, the
  // "answer", one "frame" line per frame with its masks, then "done" (or "error").
  void session_chat(const httplib::Request& req, httplib::Response& res) {
    auto ticket = enter_line();
    const std::shared_ptr<Session> session = sessions.get(req.matches[1]);
    const json body = parse_body(req);
    auto request = std::make_shared<Request>();
    if (!body.contains("text") || !body["text"].is_string()) throw HttpError(400, "text: expected a string");
    request->text = body["text"].get<std::string>();
    apply_generation(body, options.limits, *request);
    const std::string format = string_or(body, "format", "rle");
    check_mask_format(format);
    if (body.contains("mask_prompts") && !body["mask_prompts"].empty()) {
      if (session->media->is_video()) throw HttpError(400, "mask_prompts: visual prompts need an image session");
      request->mask_prompts = mask_prompts_from_json(body["mask_prompts"], session->media->width(),
                                                     session->media->height(), options.limits);
    }
    if (!request->mask_prompts.empty() && session->turns > 0)
      throw HttpError(400, "mask_prompts: visual prompts go with a session's first turn");
    {
      Request check = *request;  // the model's own checks, on this turn as it will run
      if (session->media->is_video()) check.video = session->media->video.get();
      else check.image = session->media->image;
      check.past_text = session->turns > 0 ? "<image>" : "";  // a later turn of a conversation with media
      model->conversation_after(check, "");
    }
    const auto until = deadline();
    res.set_header("Cache-Control", "no-cache");
    const int client = connection_socket(req);
    res.set_chunked_content_provider("application/x-ndjson", [this, session, request, ticket, format, until, client](
                                                                 size_t, httplib::DataSink& sink) {
      auto gone = std::make_shared<std::atomic<bool>>(false);
      const auto send = [&](const json& line) {
        const std::string text = text_of(line) + "\n";
        if (!gone->load() && !sink.write(text.data(), text.size())) gone->store(true);
      };
      const auto give_up = give_up_when(client, gone, until);
      try {
        // The session's turn first, then a prediction slot: a turn waiting behind another of the same
        // session holds no slot that requests of other sessions could use.
        std::unique_lock<std::timed_mutex> turn(session->mutex, std::defer_lock);
        while (!turn.try_lock_for(std::chrono::milliseconds(50)))
          if (give_up()) throw Cancelled();
        if (!ticket->run(give_up)) throw Cancelled();
        session->touch();
        Request& r = *request;
        if (!r.mask_prompts.empty() && session->turns > 0)
          throw HttpError(400, "mask_prompts: visual prompts go with a session's first turn");
        r.past_text = session->past_text;
        if (session->turns > 0)
          for (const CocoRle& region : session->mask_prompts)
            r.mask_prompts.push_back(Mask{region.width, region.height, rle_decode(region)});
        if (session->media->is_video()) r.video = session->media->video.get();
        else r.image = session->media->image;
        r.cache = session->cache;
        r.should_stop = give_up;
        // A forced answer needs no deltas: the "answer" line has it whole.
        ContentStream content([&](const std::string& text) { send({{"type", "delta"}, {"content", text}}); }, false);
        r.on_text = [&](const std::string& piece) { content.piece(piece); };
        r.on_answer = [&](const Prediction& p) {
          content.finish(p.content);
          send({{"type", "answer"}, {"content", p.content}, {"text", p.text}, {"phrases", p.phrases},
                {"caption", p.caption}, {"finish_reason", p.finish_reason}});
        };
        FrameMasks pending;
        r.on_mask = [&](int seg, int64_t frame, const Mask& m) {
          if (pending.masks.size() <= static_cast<size_t>(seg)) pending.masks.resize(static_cast<size_t>(seg) + 1);
          pending.masks[static_cast<size_t>(seg)] = m;
          pending.frame = frame;
        };
        const auto send_frame = [&](int64_t frame, const std::vector<Mask>& masks) {
          json list = json::array();
          for (size_t k = 0; k < masks.size(); ++k) {
            json m = mask_json(masks[k], format);
            m["index"] = k;
            list.push_back(std::move(m));
          }
          send({{"type", "frame"}, {"frame", frame}, {"masks", list}});
        };
        r.on_progress = [&](int64_t, int64_t) {
          send_frame(pending.frame, pending.masks);
          pending = {};
        };
        const auto start = Clock::now();
        const Prediction p = model->predict(r);
        metrics.generated(p.generated_ids.size(), seconds_since(start));
        if (!session->media->is_video() && !p.masks.empty()) {
          std::vector<Mask> masks;
          for (const auto& per_seg : p.masks) masks.push_back(per_seg.front());
          send_frame(0, masks);
        }
        session->past_text = p.past_text;
        if (session->turns == 0)
          for (const Mask& region : r.mask_prompts)
            session->mask_prompts.push_back(rle_encode(MaskView{region.data.data(), region.height, region.width}));
        ++session->turns;

        send({{"type", "done"}, {"scores", p.scores}, {"finish_reason", p.finish_reason}, {"turns", session->turns.load()}});
        metrics.count("/v1/sessions/{id}/chat (stream)", 200);
      } catch (const Cancelled&) {
        const json error = cancelled_error(gone->load());
        send({{"type", "error"}, {"error", error["error"]}});
        metrics.count("/v1/sessions/{id}/chat (stream)", error["error"]["code"].get<int>());
      } catch (const HttpError& e) {
        send({{"type", "error"}, {"error", error_body(e.status, e.what())["error"]}});
        metrics.count("/v1/sessions/{id}/chat (stream)", e.status);
      } catch (const std::exception& e) {
        send({{"type", "error"}, {"error", error_body(400, e.what())["error"]}});
        metrics.count("/v1/sessions/{id}/chat (stream)", 400);
      }
      sink.done();
      return true;
    });
  }

  void janitor_loop() {
    std::unique_lock<std::mutex> lock(janitor_mutex);
    while (!stopping) {
      janitor_wake.wait_for(lock, std::chrono::seconds(5));
      sessions.expire();
    }
  }
};

Server::Server(std::shared_ptr<const Model> model, ServerOptions options)
    : impl_(std::make_unique<Impl>(std::move(model), std::move(options))) {
  check(impl_->options.parallel >= 1, "serve: --parallel must be at least 1");
  check(impl_->options.queue >= 0, "serve: --queue must not be negative");
  profile::set_enabled(true);  // stage times for /metrics
}

Server::~Server() {
  stop();
  if (impl_->janitor.joinable()) impl_->janitor.join();
}

int Server::bind() {
  Impl& s = *impl_;
  s.port = s.options.port == 0 ? s.http.bind_to_any_port(s.options.host)
                               : (s.http.bind_to_port(s.options.host, s.options.port) ? s.options.port : -1);
  check(s.port > 0, "serve: cannot listen on " + s.options.host + ":" + std::to_string(s.options.port) +
                        " (in use, or not an address of this machine)");
  return s.port;
}

void Server::run() {
  Impl& s = *impl_;
  if (s.port < 0) bind();
  s.janitor = std::thread([&s] { s.janitor_loop(); });
  s.http.listen_after_bind();
}

void Server::stop() {
  Impl& s = *impl_;
  s.stopping = true;
  s.janitor_wake.notify_all();
  s.http.stop();
}

}  // namespace sa2va::server
