// sa2va serve, in process on a free port, against the tiny fixture model: every endpoint, streams,
// sessions, limits and bad requests, compared with the library's own answers.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <mutex>
#include <thread>

#include "io/image.h"
#include "io/mask_io.h"
#include "server/api.h"
#include "server/server.h"
#include "test_util.h"

namespace sa2va::server {
namespace {

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string data_uri(const std::string& path) {
  const std::string bytes = file_bytes(path);
  return "data:image/png;base64," + base64_encode(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

std::shared_ptr<const Model> tiny_model(const std::string& dir) {
  static std::shared_ptr<const Model> model;
  if (!model) {
    ModelOptions o;
    o.precision = Precision::F32;
    model = Model::load(dir, o);
  }
  return model;
}

// A server on a free port, serving until destroyed.
struct RunningServer {
  RunningServer(const std::string& dir, ServerOptions options) {
    options.port = 0;
    options.model_name = "sa2va-tiny";
    server = std::make_unique<Server>(tiny_model(dir), options);
    port = server->bind();
    thread = std::thread([this] { server->run(); });
  }
  ~RunningServer() {
    server->stop();
    thread.join();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(120, 0);
    return c;
  }
  std::unique_ptr<Server> server;
  std::thread thread;
  int port = 0;
};

json post(const RunningServer& s, const std::string& path, const json& body, int* status = nullptr,
          const httplib::Headers& headers = {}) {
  auto res = s.client().Post(path, headers, body.dump(), "application/json");
  if (!res) {
    ADD_FAILURE() << "no response from " << path;
    return json();
  }
  if (status) *status = res->status;
  return json::parse(res->body, nullptr, false);
}

std::vector<uint8_t> decode_rle(const json& rle) {
  CocoRle coco;
  coco.height = rle["size"][0].get<int>();
  coco.width = rle["size"][1].get<int>();
  coco.counts = rle_counts_from_string(rle["counts"].get<std::string>());
  return rle_decode(coco);
}

std::vector<json> ndjson_lines(const std::string& body) {
  std::vector<json> lines;
  size_t start = 0;
  for (size_t end; (end = body.find('\n', start)) != std::string::npos; start = end + 1)
    lines.push_back(json::parse(body.substr(start, end - start)));
  return lines;
}

json image_message(const std::string& image_uri, const std::string& text) {
  return {{"role", "user"},
          {"content", {{{"type", "image_url"}, {"image_url", {{"url", image_uri}}}}, {{"type", "text"}, {"text", text}}}}};
}

struct Tiny {
  std::string dir, image, image_uri;
};

#define TINY_OR_SKIP(t)                              \
  SA2VA_REQUIRE_FIXTURE(tiny_dir__, "sa2va-tiny");   \
  const Tiny t{tiny_dir__, tiny_dir__ + "/inputs/image.png", data_uri(tiny_dir__ + "/inputs/image.png")}

Prediction predict_directly(const Tiny& t, const std::string& text, const std::string& past_text = "") {
  Request r;
  r.image = load_image(t.image, 100'000'000);
  r.text = text;
  r.past_text = past_text;
  r.forced_answer = "Sure, [SEG].";
  return tiny_model(t.dir)->predict(r);
}

TEST(Server, HealthModelsAndMetrics) {
  TINY_OR_SKIP(t);
  RunningServer s(t.dir, {});
  auto c = s.client();
  auto health = c.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  const json models = json::parse(c.Get("/v1/models")->body);
  EXPECT_EQ(models["data"][0]["id"], "sa2va-tiny");
  EXPECT_EQ(models["data"][0]["sa2va"]["template"], "qwen_chat");
  const json caps = models["data"][0]["sa2va"]["capabilities"];
  for (const char* cap : {"segmentation", "video", "gcg", "visual_prompts"})
    EXPECT_NE(std::find(caps.begin(), caps.end(), cap), caps.end()) << cap;
  auto page = c.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->get_header_value("Content-Type").find("text/html"), std::string::npos);
  EXPECT_NE(c.Get("/app.js")->get_header_value("Content-Type").find("javascript"), std::string::npos);
  EXPECT_NE(c.Get("/style.css")->get_header_value("Content-Type").find("text/css"), std::string::npos);
  const std::string metrics = c.Get("/metrics")->body;
  EXPECT_NE(metrics.find("sa2va_requests_total{endpoint=\"/v1/models\",status=\"200\"} 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("sa2va_queue_waiting 0"), std::string::npos);
}

TEST(Server, ChatCompletionWithMasksMatchesTheLibrary) {
  TINY_OR_SKIP(t);
  RunningServer s(t.dir, {});
  const json body = {{"model", "sa2va-tiny"},
                     {"messages", {image_message(t.image_uri, "Please segment the red circle.")}},
                     {"sa2va", {{"answer", "Sure, [SEG]."}}}};
  int status = 0;
  const json reply = post(s, "/v1/chat/completions", body, &status);
  ASSERT_EQ(status, 200) << reply.dump();
  EXPECT_EQ(reply["object"], "chat.completion");
  EXPECT_EQ(reply["choices"][0]["message"]["content"], "Sure, [SEG].");
  EXPECT_EQ(reply["choices"][0]["finish_reason"], "stop");
  // The first turn's text has no <image>: the model puts it first, as it does for the server.
  const Prediction want = predict_directly(t, "Please segment the red circle.");
  ASSERT_EQ(reply["sa2va"]["masks"].size(), 1u);
  const json& mask = reply["sa2va"]["masks"][0];
  EXPECT_EQ(decode_rle(mask["rle"]), want.masks[0][0].data);
  EXPECT_EQ(mask["frames"].size(), 1u);
  EXPECT_EQ(mask["area"], std::count(want.masks[0][0].data.begin(), want.masks[0][0].data.end(), 1));
  EXPECT_NEAR(mask["score"].get<double>(), want.scores[0], 1e-6);

  // A later turn from the messages list: past_text rebuilt from the first turn and its answer.
  const json later = {{"messages", {image_message(t.image_uri, "Please segment the red circle."),
                                    {{"role", "assistant"}, {"content", "Sure, [SEG]."}},
                                    {{"role", "user"}, {"content", "And the blue box?"}}}},
                      {"sa2va", {{"answer", "Sure, [SEG]."}}}};
  const json second = post(s, "/v1/chat/completions", later, &status);
  ASSERT_EQ(status, 200) << second.dump();
  const Prediction want2 = predict_directly(t, "And the blue box?", want.past_text);
  EXPECT_EQ(decode_rle(second["sa2va"]["masks"][0]["rle"]), want2.masks[0][0].data);
}

TEST(Server, StreamedChatAddsUpToTheWholeAnswer) {
  TINY_OR_SKIP(t);
  RunningServer s(t.dir, {});
  const json body = {{"messages", {image_message(t.image_uri, "Describe it.")}}, {"max_tokens", 12}};
  const json whole = post(s, "/v1/chat/completions", body);
  json streaming = body;
  streaming["stream"] = true;
  auto res = s.client().Post("/v1/chat/completions", streaming.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/event-stream");
  std::string content, finish;
  json last;
  bool done = false;
  size_t start = 0;
  for (size_t end; (end = res->body.find("\n\n", start)) != std::string::npos; start = end + 2) {
    const std::string event = res->body.substr(start, end - start);
    ASSERT_EQ(event.rfind("data: ", 0), 0u) << event;
    if (event == "data: [DONE]") {
      done = true;
      continue;
    }
    const json chunk = json::parse(event.substr(6));
    const json& delta = chunk["choices"][0]["delta"];
    if (delta.contains("content")) content += delta["content"].get<std::string>();
    if (!chunk["choices"][0]["finish_reason"].is_null()) last = chunk;
  }
  EXPECT_TRUE(done);
  EXPECT_EQ(content, whole["choices"][0]["message"]["content"].get<std::string>());
  EXPECT_GT(whole["usage"]["prompt_tokens"].get<int>(), 256);  // the image's tokens at least
  EXPECT_EQ(whole["usage"]["completion_tokens"], 12);
  EXPECT_EQ(last["choices"][0]["finish_reason"], whole["choices"][0]["finish_reason"]);
  EXPECT_EQ(last["sa2va"]["text"], whole["sa2va"]["text"]);

  // A forced answer streams as one piece of content.
  json forced = streaming;
  forced["sa2va"] = {{"answer", "Sure, [SEG]."}};
  auto forced_res = s.client().Post("/v1/chat/completions", forced.dump(), "application/json");
  ASSERT_TRUE(forced_res);
  EXPECT_NE(forced_res->body.find("\"delta\":{\"content\":\"Sure, [SEG].\"}"), std::string::npos) << forced_res->body;
}

TEST(Server, VideoFramesAndSegmentInEveryFormat) {
  TINY_OR_SKIP(t);
  RunningServer s(t.dir, {});
  json frames = json::array();
  for (int i = 0; i < 6; ++i) frames.push_back(data_uri(t.dir + "/inputs/video_frame" + std::to_string(i) + ".png"));
  json content = json::array();
  for (const auto& f : frames) content.push_back({{"type", "image_url"}, {"image_url", {{"url", f}}}});
  content.push_back({{"type", "text"}, {"text", "Please segment the moving red ball."}});
  int status = 0;
  const json video = post(s, "/v1/chat/completions",
                          {{"messages", {{{"role", "user"}, {"content", content}}}}, {"sa2va", {{"answer", "Sure, [SEG]."}}}},
                          &status);
  ASSERT_EQ(status, 200) << video.dump();
  ASSERT_EQ(video["sa2va"]["masks"].size(), 1u);
  EXPECT_EQ(video["sa2va"]["masks"][0]["frames"].size(), 6u);
  EXPECT_EQ(video["sa2va"]["masks"][0]["frames"][5]["rle"]["size"], json({240, 320}));

  std::vector<uint8_t> rle_mask;
  for (const std::string format : {"rle", "png", "polygon"}) {
    const json reply = post(s, "/v1/segment",
                            {{"image", t.image_uri}, {"expressions", {"the red circle", "the blue box"}},
                             {"format", format}, {"answer", "Sure, [SEG]."}},
                            &status);
    ASSERT_EQ(status, 200) << reply.dump();
    ASSERT_EQ(reply["results"].size(), 2u);
    EXPECT_EQ(reply["results"][1]["expression"], "the blue box");
    const json& mask = reply["results"][0]["masks"][0];
    ASSERT_TRUE(mask.contains(format)) << mask.dump();
    if (format == "rle") rle_mask = decode_rle(mask["rle"]);
    if (format == "png") {
      const std::vector<uint8_t> png = base64_decode(mask["png"].get<std::string>(), "png");
      const Image image = decode_image(png.data(), png.size(), "mask.png", 1'000'000);
      ASSERT_EQ(image.width, 600);
      for (size_t i = 0; i < rle_mask.size(); ++i) ASSERT_EQ(image.rgb[3 * i] > 127, rle_mask[i] != 0) << i;
    }
    if (format == "polygon") {
      EXPECT_FALSE(mask["polygon"].empty());
    }
  }
}

TEST(Server, SessionsKeepTheMediaAndTheConversation) {
  TINY_OR_SKIP(t);
  RunningServer s(t.dir, {});
  int status = 0;
  const json session = post(s, "/v1/sessions", {{"image", t.image_uri}}, &status);
  ASSERT_EQ(status, 200) << session.dump();
  EXPECT_EQ(session["kind"], "image");
  EXPECT_EQ(session["width"], 600);
  const std::string id = session["id"];
  auto c = s.client();
  std::string past;
  for (const std::string text : {"Please segment the red circle.", "And the blue box?"}) {
    auto res = c.Post("/v1/sessions/" + id + "/chat", json{{"text", text}, {"answer", "Sure, [SEG]."}}.dump(),
                      "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->get_header_value("Content-Type"), "application/x-ndjson");
    const std::vector<json> lines = ndjson_lines(res->body);
    ASSERT_EQ(lines.size(), 3u) << res->body;
    EXPECT_EQ(lines[0]["type"], "answer");
    EXPECT_EQ(lines[0]["content"], "Sure, [SEG].");
    EXPECT_EQ(lines[1]["type"], "frame");
    EXPECT_EQ(lines[2]["type"], "done");
    const Prediction want = predict_directly(t, text, past);
    EXPECT_EQ(decode_rle(lines[1]["masks"][0]["rle"]), want.masks[0][0].data) << text;
    past = want.past_text;
  }
  auto frame = c.Get("/v1/sessions/" + id + "/frames/0");
  ASSERT_TRUE(frame);
  EXPECT_EQ(frame->get_header_value("Content-Type"), "image/png");
  const Image shown = decode_image(reinterpret_cast<const uint8_t*>(frame->body.data()), frame->body.size(), "frame", 1 << 24);
  EXPECT_EQ(shown.rgb, load_image(t.image, 1 << 24).rgb);
  EXPECT_EQ(c.Get("/v1/sessions/" + id + "/frames/1")->status, 404);
  EXPECT_NE(c.Get("/metrics")->body.find("frames\",status=\"200\"} 1"), std::string::npos);
  EXPECT_EQ(c.Get("/v1/sessions/" + id + "/frames/99999999999999999999999")->status, 404);
  EXPECT_EQ(json::parse(c.Get("/v1/sessions/" + id)->body)["turns"], 2);
  EXPECT_EQ(c.Delete("/v1/sessions/" + id)->status, 200);
  EXPECT_EQ(c.Get("/v1/sessions/" + id)->status, 404);

  // A video session streams one line per frame, in order.
  json frames = json::array();
  for (int i = 0; i < 6; ++i) frames.push_back(data_uri(t.dir + "/inputs/video_frame" + std::to_string(i) + ".png"));
  const std::string vid = post(s, "/v1/sessions", {{"frames", frames}})["id"];
  auto res = c.Post("/v1/sessions/" + vid + "/chat",
                    json{{"text", "Please segment the moving red ball."}, {"answer", "Sure, [SEG]."}}.dump(),
                    "application/json");
  const std::vector<json> lines = ndjson_lines(res->body);
  ASSERT_EQ(lines.size(), 8u) << res->body;
  for (int f = 0; f < 6; ++f) EXPECT_EQ(lines[static_cast<size_t>(f) + 1]["frame"], f);
}

// A conversation that began with visual prompts goes on: the session keeps the first turn's regions,
// and the messages of a chat completion take the sa2va.mask_prompts for every turn; the answers are
// the library's own for the same regions. A later turn's "<image>", or a region of another size, is 400.
TEST(Server, VisualPromptsLastTheirConversation) {
  TINY_OR_SKIP(t);
  RunningServer s(t.dir, {});
  auto c = s.client();
  const json box = {{"box", {150, 100, 150, 100}}};
  Mask region;
  region.width = 600;
  region.height = 280;
  region.data.assign(600 * 280, 0);
  for (int y = 100; y < 200; ++y) std::fill_n(region.data.begin() + y * 600 + 150, 150, 1);
  Request first;
  first.image = load_image(t.image, 100'000'000);
  first.text = "<image>Please segment region1.";
  first.mask_prompts = {region};
  first.forced_answer = "Sure, [SEG].";
  const Prediction p1 = tiny_model(t.dir)->predict(first);
  Request second = first;
  second.text = "And region1 again?";
  second.past_text = p1.past_text;
  const Prediction p2 = tiny_model(t.dir)->predict(second);

  const std::string id = post(s, "/v1/sessions", {{"image", t.image_uri}})["id"];
  const auto turn = [&](const json& body) {
    auto res = c.Post("/v1/sessions/" + id + "/chat", body.dump(), "application/json");
    return res ? ndjson_lines(res->body) : std::vector<json>{};
  };
  std::vector<json> lines = turn({{"text", first.text}, {"answer", "Sure, [SEG]."}, {"mask_prompts", {box}}});
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(decode_rle(lines[1]["masks"][0]["rle"]), p1.masks[0][0].data);
  lines = turn({{"text", second.text}, {"answer", "Sure, [SEG]."}});
  ASSERT_EQ(lines.size(), 3u) << lines.back().dump();
  EXPECT_EQ(lines.back()["type"], "done") << lines.back().dump();
  EXPECT_EQ(decode_rle(lines[1]["masks"][0]["rle"]), p2.masks[0][0].data);
  int status = 0;
  json error = post(s, "/v1/sessions/" + id + "/chat", {{"text", "<image>Once more?"}}, &status);
  EXPECT_EQ(status, 400) << error.dump();
  EXPECT_NE(error.dump().find("a later turn's text holds"), std::string::npos) << error.dump();

  const json messages = {image_message(t.image_uri, first.text), {{"role", "assistant"}, {"content", "Sure, [SEG]."}},
                         {{"role", "user"}, {"content", second.text}}};
  const json reply = post(s, "/v1/chat/completions",
                          {{"messages", messages}, {"sa2va", {{"mask_prompts", {box}}, {"answer", "Sure, [SEG]."}}}}, &status);
  ASSERT_EQ(status, 200) << reply.dump();
  EXPECT_EQ(decode_rle(reply["sa2va"]["masks"][0]["rle"]), p2.masks[0][0].data);
  const json other_size = {{"rle", {{"size", {10, 10}}, {"counts", {100}}}}};
  error = post(s, "/v1/chat/completions", {{"messages", {image_message(t.image_uri, first.text)}},
                                           {"sa2va", {{"mask_prompts", {other_size}}}}}, &status);
  EXPECT_EQ(status, 400);
  EXPECT_NE(error.dump().find("a 10x10 mask for a 600x280 image"), std::string::npos) << error.dump();
}

// Bare base64 is taken as it comes; a JPEG's starts with "/9j/", which is not a path.
TEST(Server, BareBase64JpegIsAnImage) {
  TINY_OR_SKIP(t);
  RunningServer s(t.dir, {});
  const std::string jpeg = file_bytes(std::string(SA2VA_TEST_DATA_DIR) + "/images/baseline.jpg");
  const std::string bare = base64_encode(reinterpret_cast<const uint8_t*>(jpeg.data()), jpeg.size());
  ASSERT_EQ(bare.rfind("/9j/", 0), 0u);
  int status = 0;
  const json session = post(s, "/v1/sessions", {{"image", bare}}, &status);
  EXPECT_EQ(status, 200) << session.dump();
  EXPECT_EQ(session["kind"], "image");
}

TEST(Server, BadRequestsGetJsonErrors) {
  TINY_OR_SKIP(t);
  ServerOptions o;
  o.api_key = "secret";
  o.max_body_bytes = 4 << 20;
  o.limits.max_frames = 3;
  o.limits.max_tokens = 64;
  RunningServer s(t.dir, o);
  const httplib::Headers auth = {{"Authorization", "Bearer secret"}};
  int status = 0;
  const json chat = {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_tokens", 2}};
  post(s, "/v1/chat/completions", chat, &status);
  EXPECT_EQ(status, 401);
  post(s, "/v1/chat/completions", chat, &status, {{"Authorization", "Bearer wrong"}});
  EXPECT_EQ(status, 401);
  EXPECT_EQ(s.client().Get("/health")->status, 200);  // no key needed
  post(s, "/v1/chat/completions", chat, &status, auth);
  EXPECT_EQ(status, 200);

  const auto expect_error = [&](const std::string& path, const std::string& body, int want, const std::string& words) {
    auto res = s.client().Post(path, auth, body, "application/json");
    ASSERT_TRUE(res) << path;
    EXPECT_EQ(res->status, want) << body.substr(0, 200) << " -> " << res->body;
    const json error = json::parse(res->body, nullptr, false);
    ASSERT_TRUE(error.contains("error")) << res->body;
    EXPECT_NE(error["error"]["message"].get<std::string>().find(words), std::string::npos) << res->body;
  };
  const auto chat_with = [](const json& content, const json& extra = json::object()) {
    json body = {{"messages", {{{"role", "user"}, {"content", content}}}}};
    body.update(extra);
    return body.dump();
  };
  const auto image_part = [](const std::string& url) { return json{{"type", "image_url"}, {"image_url", {{"url", url}}}}; };
  expect_error("/v1/chat/completions", "{not json", 400, "not valid JSON");
  expect_error("/v1/chat/completions", json{{"messages", json::array()}}.dump(), 400, "messages");
  expect_error("/v1/chat/completions", chat_with("Hi", {{"max_tokens", 1000}}), 400, "limit of 64");
  expect_error("/v1/chat/completions", chat_with("Hi", {{"temperature", "hot"}}), 400, "temperature");
  expect_error("/v1/chat/completions", chat_with(json::array({image_part("data:image/png;base64,@@@@")})), 400, "base64");
  expect_error("/v1/chat/completions", chat_with(json::array({image_part("data:image/png;base64,aGVsbG8=")})), 400,
               "image");
  expect_error("/v1/chat/completions", chat_with(json::array({image_part("https://example.com/a.png")})), 400, "remote");
  expect_error("/v1/chat/completions", chat_with(json::array({image_part(t.image)})), 403, "--allow-files");
  json frames = json::array();
  for (int i = 0; i < 4; ++i) frames.push_back(t.image_uri);
  expect_error("/v1/sessions", json{{"frames", frames}}.dump(), 400, "limit of 3");
  expect_error("/v1/sessions", json{{"image", t.image_uri}, {"video", t.image_uri}}.dump(), 400, "exactly one");
  expect_error("/v1/sessions/s-nope/chat", json{{"text", "hi"}}.dump(), 404, "no session");
  // An endpoint asked with another method: 405 naming the ones it takes; an unknown path: 404.
  expect_error("/v1/models", "{}", 405, "POST is not allowed on /v1/models (allowed: GET)");
  {
    auto res = s.client().Get("/v1/chat/completions", auth);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 405);
    EXPECT_EQ(res->get_header_value("Allow"), "POST");
    res = s.client().Delete("/v1/sessions/s-any/chat", auth);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 405);
    res = s.client().Put("/v1/sessions/s-any", auth, "{}", "application/json");  // a path with two methods
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 405);
    EXPECT_EQ(res->get_header_value("Allow"), "GET, DELETE");
    EXPECT_EQ(s.client().Get("/v1/nothing", auth)->status, 404);
  }
  expect_error("/v1/segment", json{{"image", t.image_uri}, {"expressions", json::array()}}.dump(), 400, "expressions");
  expect_error("/v1/segment", json{{"image", t.image_uri}, {"expressions", {"x"}}, {"format", "svg"}}.dump(), 400, "svg");
  expect_error("/v1/chat/completions", std::string(5 << 20, ' '), 413, "too large");
  expect_error("/v1/sessions", json{{"video", "data:video/mp4;base64,aGVsbG8gd29ybGQ="}}.dump(), 400, "video");
  // A playlist naming a local file is not a video this server opens.
  const std::string playlist = "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n" + t.image + "\n#EXT-X-ENDLIST\n";
  expect_error("/v1/sessions",
               json{{"video", "data:application/vnd.apple.mpegurl;base64," +
                                  base64_encode(reinterpret_cast<const uint8_t*>(playlist.data()), playlist.size())}}
                   .dump(),
               400, "video");
  expect_error("/v1/chat/completions", std::string(100, '[') + std::string(100, ']'), 400, "nests deeper");
  expect_error("/v1/chat/completions", chat_with(json::array({image_part("data:,x")})), 400, "base64");
  expect_error("/v1/segment", json{{"image", t.image_uri}, {"expressions", {"x"}}, {"format", 3}}.dump(), 400, "format");
  json many_regions = json::array();
  for (int i = 0; i < 65; ++i) many_regions.push_back({{"box", {0, 0, 1, 1}}});
  expect_error("/v1/chat/completions",
               chat_with(json::array({image_part(t.image_uri), {{"type", "text"}, {"text", "region1?"}}}),
                         {{"sa2va", {{"mask_prompts", many_regions}}}}),
               400, "limit of 64");
  expect_error("/v1/chat/completions",
               chat_with(json::array({image_part(t.image_uri), {{"type", "text"}, {"text", "region1?"}}}),
                         {{"sa2va", {{"mask_prompts", {{{"box", {1e308, 0, 1e308, 1}}}}}}}}),
               400, "finite");
  // RLE runs and sizes beyond their types (found by fuzzing: undefined behaviour when converted).
  expect_error("/v1/chat/completions",
               chat_with(json::array({image_part(t.image_uri), {{"type", "text"}, {"text", "region1?"}}}),
                         {{"sa2va", {{"mask_prompts", {{{"rle", {{"size", {280, 600}}, {"counts", {1, 5.5e72}}}}}}}}}}),
               400, "runs must be integers");
  expect_error("/v1/chat/completions",
               chat_with(json::array({image_part(t.image_uri), {{"type", "text"}, {"text", "region1?"}}}),
                         {{"sa2va", {{"mask_prompts", {{{"rle", {{"size", {int64_t{1} << 32, 1}}, {"counts", {1}}}}}}}}}}),
               400, "out of range");
  expect_error("/v1/chat/completions",
               chat_with(json::array({{{"type", "text"}, {"text", "Hi"}}}), {{"temperature", 1e300}}), 400,
               "temperature");
  expect_error("/v1/chat/completions",
               chat_with(json::array({{{"type", "video_url"}, {"video_url", {{"url", "data:video/mp4;base64,AAAA"}}}}})),
               400, "video");
  expect_error("/v1/chat/completions",
               json{{"messages", {{{"role", "assistant"}, {"content", "Hi"}}}}}.dump(), 400, "alternate");
  expect_error("/v1/chat/completions", chat_with("Hi", {{"n", 2}}), 400, "n = 1");
  expect_error("/v1/chat/completions", chat_with("Hi", {{"sa2va", "x"}}), 400, "sa2va: expected an object");
  expect_error("/v1/chat/completions", chat_with("Hi", {{"stop", {"a", "b", "c", "d", "e"}}}), 400, "up to 4");
  expect_error("/v1/chat/completions", chat_with("Hi", {{"stop", ""}}), 400, "stop string is empty");
  expect_error("/v1/chat/completions", chat_with("Hi", {{"stream_options", {{"include_usage", 1}}}}), 400,
               "include_usage");
  expect_error("/v1/chat/completions", chat_with(json::array({image_part("photos/cat.png")})), 400,
               "neither a data URI nor base64");
  // Any case of the scheme, as HTTP has it.
  post(s, "/v1/chat/completions", chat, &status, {{"Authorization", "bearer secret"}});
  EXPECT_EQ(status, 200);
}

// What a body must be is checked before it is read: a declared length (the size limit holds only
// for one), and JSON (a web page can send a form or text to any address without asking first).
TEST(Server, BodiesAreCheckedBeforeTheyAreRead) {
  TINY_OR_SKIP(t);
  ServerOptions o;
  o.max_body_bytes = 1 << 10;
  RunningServer s(t.dir, o);
  auto text = s.client().Post("/v1/chat/completions", R"({"messages":[{"role":"user","content":"Hi"}]})", "text/plain");
  ASSERT_TRUE(text);
  EXPECT_EQ(text->status, 415) << text->body;
  // A refused body is never read as the next request of the connection (request smuggling): the
  // refusal closes it. Raw HTTP: a body that is itself a request, sent after the headers.
  // The chunked one is refused for its form alone (411), before a byte of its body is read.
  // (A POST without a length has no body, by HTTP's rules: what follows it is a next request.)
  for (const auto& [head, status] : std::vector<std::pair<std::string, std::string>>{
           {"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 38\r\n\r\n",
            "415"},
           {"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "411"},
           // No length at all: refused, not read until the client closes.
           {"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n", "411"},
           // A length that is not a number, or a method the endpoint does not take, before the body's type.
           {"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 38x\r\n\r\n",
            "400"},
           {"POST /v1/models HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 38\r\n\r\n", "405"},
           // A declared length over the limit: refused on the header, before its bytes come.
           {"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 209715200\r\n\r\n",
            "413"}}) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(s.port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    const std::string smuggled = "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n";  // 38 bytes
    ASSERT_EQ(send(fd, head.data(), head.size(), MSG_NOSIGNAL), static_cast<ssize_t>(head.size()));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    send(fd, smuggled.data(), smuggled.size(), MSG_NOSIGNAL);
    timeval wait{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
    std::string answers;
    char buffer[4096];
    for (ssize_t n; (n = recv(fd, buffer, sizeof buffer, 0)) > 0;) answers.append(buffer, static_cast<size_t>(n));
    close(fd);
    size_t count = 0;
    for (size_t at = 0; (at = answers.find("HTTP/1.1 ", at)) != std::string::npos; at += 9) ++count;
    EXPECT_EQ(count, head.find("Content-Length") == std::string::npos && head.find("chunked") == std::string::npos ? 2u : 1u)
        << answers;
    EXPECT_TRUE(answers.rfind("HTTP/1.1 " + status, 0) == 0) << answers;
  }
  EXPECT_EQ(s.client().Get("/v1/nothing-here")->status, 404);
  const std::string metrics = s.client().Get("/metrics")->body;
  for (const char* line : {"endpoint=\"bad body\",status=\"411\"} 2", "endpoint=\"bad body\",status=\"413\"} 1",
                           "endpoint=\"(no endpoint)\",status=\"404\"} 1"})
    EXPECT_NE(metrics.find(line), std::string::npos) << line << " in " << metrics;
  auto json_with_charset = s.client().Post("/v1/chat/completions",
                                           R"({"messages":[{"role":"user","content":"Hi"}],"max_tokens":2})",
                                           "Application/JSON; charset=utf-8");
  ASSERT_TRUE(json_with_charset);
  EXPECT_EQ(json_with_charset->status, 200) << json_with_charset->body;
}

// OpenAI's options beside the messages: stop strings, the usage chunk of a stream, an assistant
// message without content, the model's creation time.
TEST(Server, OpenAiStopUsageAndNullContent) {
  TINY_OR_SKIP(t);
  RunningServer s(t.dir, {});
  int status = 0;
  const json ask = {{"messages", {{{"role", "user"}, {"content", "Tell me a story."}}}}, {"max_tokens", 24}};
  const json whole = post(s, "/v1/chat/completions", ask, &status);
  ASSERT_EQ(status, 200) << whole.dump();
  const std::string content = whole["choices"][0]["message"]["content"];
  ASSERT_GE(content.size(), 12u) << content;
  const std::string stop = test::middle_characters(content, 2);
  ASSERT_FALSE(stop.empty()) << content;
  json with_stop = ask;
  with_stop["stop"] = stop;
  const json stopped = post(s, "/v1/chat/completions", with_stop, &status);
  EXPECT_EQ(stopped["choices"][0]["message"]["content"], content.substr(0, content.find(stop))) << stopped.dump();
  EXPECT_EQ(stopped["choices"][0]["finish_reason"], "stop");

  json streamed = with_stop;
  streamed["stream"] = true;
  streamed["stream_options"] = {{"include_usage", true}};
  auto res = s.client().Post("/v1/chat/completions", streamed.dump(), "application/json");
  ASSERT_TRUE(res);
  std::vector<json> events;
  for (size_t at = 0; (at = res->body.find("data: ", at)) != std::string::npos; at += 6) {
    const std::string data = res->body.substr(at + 6, res->body.find("\n\n", at) - at - 6);
    if (data != "[DONE]") events.push_back(json::parse(data));
  }
  ASSERT_GE(events.size(), 3u) << res->body;
  std::string deltas;
  for (const json& e : events)
    if (!e["choices"].empty() && e["choices"][0]["delta"].contains("content")) deltas += e["choices"][0]["delta"]["content"];
  EXPECT_EQ(deltas, content.substr(0, content.find(stop)));  // the stop string is never sent
  const json& usage = events.back();
  EXPECT_TRUE(usage["choices"].empty()) << usage.dump();
  EXPECT_EQ(usage["usage"]["completion_tokens"], stopped["usage"]["completion_tokens"]) << usage.dump();

  const json later = {{"messages", {{{"role", "user"}, {"content", "Hi"}}, {{"role", "assistant"}, {"content", nullptr}},
                                    {{"role", "user"}, {"content", "Again?"}}}},
                      {"max_tokens", 2}};
  post(s, "/v1/chat/completions", later, &status);
  EXPECT_EQ(status, 200);
  // An assistant message holds no media (they go in the first user message).
  const json assistant_image = {{"messages", {image_message(t.image_uri, "Hi"), image_message(t.image_uri, "Hello"),
                                              {{"role", "user"}, {"content", "Again?"}}}}};
  json with_role = assistant_image;
  with_role["messages"][1]["role"] = "assistant";
  const json refused = post(s, "/v1/chat/completions", with_role, &status);
  EXPECT_EQ(status, 400);
  EXPECT_NE(refused.dump().find("messages[1].content[0]: media go in the first user message"), std::string::npos)
      << refused.dump();
  // Sampling without a seed differs from call to call, as OpenAI's; with one it repeats.
  const auto sampled = [&](const json& extra) {
    json body = {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_tokens", 8}, {"temperature", 1.0}};
    body.update(extra);
    return post(s, "/v1/chat/completions", body)["sa2va"]["text"].get<std::string>();
  };
  EXPECT_NE(sampled(json::object()), sampled(json::object()));
  EXPECT_EQ(sampled({{"seed", 7}}), sampled({{"seed", 7}}));
  EXPECT_NE(json::parse(s.client().Get("/v1/models")->body)["data"][0]["created"].get<int64_t>(), 0);
}

// An uploaded video is read from a temporary file whose name never reaches a client, whichever
// stage fails on it.
TEST(ServerApi, ErrorsNameAnUploadAsTheUploadedVideo) {
  const std::string upload = (std::filesystem::temp_directory_path() / "sa2va-upload-").string();
  const json error = error_body(400, upload + "Ab12Cd: only 5 of 6 frames could be decoded ('" + upload + "Zz99yY')");
  EXPECT_EQ(error["error"]["message"], "the uploaded video: only 5 of 6 frames could be decoded ('the uploaded video')");
  EXPECT_EQ(error["error"]["code"], 400);
}

// Files named by path: relative names under the allowed folder, never a 500 for a name the file
// system refuses, a folder or a name without a dot under the folder.
TEST(Server, FileReferencesUnderTheAllowedFolder) {
  TINY_OR_SKIP(t);
  const std::string dir = test::temp_dir("server-files");
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir + "/sub");
  std::filesystem::copy_file(t.image, dir + "/sub/image.png");
  std::filesystem::copy_file(t.image, dir + "/noext");
  ServerOptions o;
  o.limits.files_dir = dir;
  RunningServer s(t.dir, o);
  const auto session = [&](const std::string& reference, int* status) {
    return post(s, "/v1/sessions", {{"image", reference}}, status);
  };
  int status = 0;
  const json relative = session("./sub/image.png", &status);
  EXPECT_EQ(status, 200) << relative.dump();
  const json no_dot = session(dir + "/noext", &status);
  EXPECT_EQ(status, 200) << no_dot.dump();
  const json folder = session(dir + "/sub", &status);
  EXPECT_EQ(status, 400) << folder.dump();
  // A NUL would end the name the file system sees: "image.png\0x" is not image.png.
  const json nul = session(dir + "/sub/image.png" + std::string(1, '\0') + "x", &status);
  EXPECT_EQ(status, 400) << nul.dump();
  EXPECT_NE(nul.dump().find("NUL"), std::string::npos) << nul.dump();
  EXPECT_NE(folder["error"]["message"].get<std::string>().find("not a file"), std::string::npos) << folder.dump();
  const json long_name = session(dir + "/" + std::string(300, 'a') + ".png", &status);
  EXPECT_EQ(status, 400) << long_name.dump();
  const json outside = session("../" + std::filesystem::path(dir).filename().string() + "-elsewhere/x.png", &status);
  EXPECT_EQ(status, 403) << outside.dump();
}

// An uploaded video is opened under the server's pixel limit (the codec refuses frames far over it
// before allocating them), and a refusal speaks of the upload, not of the server's temporary file.
TEST(Server, UploadedVideosFollowTheServerLimits) {
  TINY_OR_SKIP(t);
  const std::string dir = test::temp_dir("server-video");
  std::string out;
  if (test::run_command("ffmpeg -hide_banner -loglevel error -nostdin -y -f lavfi -i testsrc=size=64x48:rate=10 "
                        "-frames:v 3 -c:v ffv1 " + dir + "/v.mkv", &out) != 0)
    GTEST_SKIP() << "the ffmpeg program is needed to write the video: " << out;
  std::ifstream in(dir + "/v.mkv", std::ios::binary);
  const std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  const std::string video = "data:video/x-matroska;base64," + base64_encode(bytes.data(), bytes.size());
  int status = 0;
  {
    RunningServer s(t.dir, {});
    const json session = post(s, "/v1/sessions", {{"video", video}}, &status);
    EXPECT_EQ(status, 200) << session.dump();
    EXPECT_EQ(session["kind"], "video");
    // Frames shown out of order come from the page's own decoder, equal to the predictions' frames.
    const std::string id = session["id"];
    const auto frame_file = Video::open(dir + "/v.mkv");
    for (const int t : {2, 0, 1}) {
      auto frame = s.client().Get("/v1/sessions/" + id + "/frames/" + std::to_string(t));
      ASSERT_TRUE(frame);
      ASSERT_EQ(frame->status, 200);
      const Image shown = decode_image(reinterpret_cast<const uint8_t*>(frame->body.data()), frame->body.size(), "f", 1 << 20);
      EXPECT_EQ(shown.rgb, frame_file->frame(t).rgb) << t;
    }
  }
  ServerOptions o;
  o.limits.max_pixels = 64 * 48 - 1;
  RunningServer s(t.dir, o);
  const json refused = post(s, "/v1/sessions", {{"video", video}}, &status);
  EXPECT_EQ(status, 400) << refused.dump();
  const std::string message = refused["error"]["message"];
  EXPECT_NE(message.find("the uploaded video"), std::string::npos) << message;
  // Refused when the video was opened under the server's limit (its own size check says "this server's").
  EXPECT_NE(message.find("exceed the limit (3071 pixels)"), std::string::npos) << message;
  EXPECT_EQ(message.find("sa2va-upload"), std::string::npos) << message;
}

TEST(Server, SessionsAreBoundedInNumberAndTime) {
  TINY_OR_SKIP(t);
  ServerOptions o;
  o.max_sessions = 2;
  o.session_idle_s = 1;
  RunningServer s(t.dir, o);
  int status = 0;
  const std::string first = post(s, "/v1/sessions", {{"image", t.image_uri}}, &status)["id"];
  post(s, "/v1/sessions", {{"image", t.image_uri}}, &status);
  EXPECT_EQ(status, 200);
  post(s, "/v1/sessions", {{"image", t.image_uri}}, &status);
  EXPECT_EQ(status, 429);
  std::this_thread::sleep_for(std::chrono::milliseconds(1300));
  EXPECT_EQ(s.client().Get("/v1/sessions/" + first)->status, 404);  // idle too long: ended
  post(s, "/v1/sessions", {{"image", t.image_uri}}, &status);
  EXPECT_EQ(status, 200);
}

// A long stream, read chunk by chunk until `go_away` (then the client leaves), on its own thread.
struct LongStream {
  LongStream(const RunningServer& s, const std::string& path, const json& body)
      : client(std::make_unique<httplib::Client>("127.0.0.1", s.port)) {
    client->set_read_timeout(120, 0);
    reader = std::thread([this, path, body] {
      httplib::Request req;
      req.method = "POST";
      req.path = path;
      req.body = body.dump();
      req.set_header("Content-Type", "application/json");
      req.content_receiver = [this](const char*, size_t, uint64_t, uint64_t) {
        ++chunks;
        return !go_away.load();
      };
      client->send(req);
    });
  }
  ~LongStream() {  // the client leaves: its socket is closed even while no chunk comes
    go_away = true;
    client->stop();
    reader.join();
  }
  void wait_for_chunks(int n) const {
    while (chunks.load() < n) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::unique_ptr<httplib::Client> client;
  std::atomic<int> chunks{0};
  std::atomic<bool> go_away{false};
  std::thread reader;
};

// /metrics, polled until it holds every one of `lines` (at most ~10 s).
std::string metrics_with(const RunningServer& s, const std::vector<std::string>& lines) {
  std::string metrics;
  for (int i = 0; i < 400; ++i) {
    if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(25));
    metrics = s.client().Get("/metrics")->body;
    if (std::all_of(lines.begin(), lines.end(), [&](const std::string& l) { return metrics.find(l) != std::string::npos; }))
      break;
  }
  return metrics;
}

TEST(Server, FullQueueGets429AndDisconnectCancels) {
  TINY_OR_SKIP(t);
  ServerOptions o;
  o.parallel = 1;
  o.queue = 0;
  RunningServer s(t.dir, o);
  // A long stream holds the only place; the client reads until the second request has been turned
  // away (not a fixed number of chunks: on a busy machine the stream could end first), then goes away.
  int status = 0;
  {
    LongStream stream(s, "/v1/chat/completions",
                      {{"messages", {{{"role", "user"}, {"content", "Tell me everything."}}}}, {"max_tokens", 2048},
                       {"stream", true}});
    stream.wait_for_chunks(2);
    const json busy = post(s, "/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}}, &status);
    EXPECT_EQ(status, 429) << busy.dump();
  }
  // The abandoned stream stops well before its 2048 tokens and frees the place.
  std::string metrics = metrics_with(s, {"(stream)\",status=\"499\"} 1", "sa2va_running 0"});
  EXPECT_NE(metrics.find("(stream)\",status=\"499\"} 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("sa2va_running 0"), std::string::npos) << metrics;
  post(s, "/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_tokens", 2}}, &status);
  EXPECT_EQ(status, 200);

  // A plain request whose client stops waiting is cancelled too.
  {
    httplib::Client impatient("127.0.0.1", s.port);
    impatient.set_read_timeout(0, 300'000);  // 0.3 s
    const json body = {{"messages", {{{"role", "user"}, {"content", "Tell me everything."}}}}, {"max_tokens", 2048}};
    EXPECT_FALSE(impatient.Post("/v1/chat/completions", body.dump(), "application/json"));
  }
  metrics = metrics_with(s, {"completions\",status=\"499\"} 1", "sa2va_running 0"});
  EXPECT_NE(metrics.find("completions\",status=\"499\"} 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("sa2va_running 0"), std::string::npos) << metrics;
}

// The decoded media of requests in line are bounded together: one more that would pass the budget
// is turned away while the queue still has room, and a request is taken again once the first is done.
TEST(Server, DecodedMediaOfRequestsInLineAreBounded) {
  TINY_OR_SKIP(t);
  const size_t image_bytes = load_image(t.image, 100'000'000).rgb.size();
  ServerOptions o;
  o.parallel = 1;
  o.queue = 4;
  o.max_held_media_bytes = image_bytes + image_bytes / 2;
  o.limits.max_tokens = 16384;  // a stream that outlasts the checks below on a fast machine
  RunningServer s(t.dir, o);
  const json long_chat = {{"messages", {image_message(t.image_uri, "Tell me everything.")}}, {"max_tokens", 16384},
                          {"stream", true}};
  int status = 0;
  {
    LongStream running(s, "/v1/chat/completions", long_chat);
    running.wait_for_chunks(2);
    const std::string held = "sa2va_media_held_bytes " + std::to_string(image_bytes) + "\n";
    std::string metrics = metrics_with(s, {held});
    EXPECT_NE(metrics.find(held), std::string::npos) << metrics;
    json busy = post(s, "/v1/segment", {{"image", t.image_uri}, {"expressions", {"it"}}}, &status);
    EXPECT_EQ(status, 429) << busy.dump();
    EXPECT_NE(busy.dump().find("decoded media"), std::string::npos) << busy.dump();
    busy = post(s, "/v1/chat/completions", {{"messages", {image_message(t.image_uri, "Hi")}}}, &status);
    EXPECT_EQ(status, 429) << busy.dump();
    // Counted before it is decoded: the first frame is refused by name.
    busy = post(s, "/v1/segment", {{"frames", {t.image_uri, t.image_uri}}, {"expressions", {"it"}}}, &status);
    EXPECT_EQ(status, 429) << busy.dump();
    EXPECT_NE(busy.dump().find("frames[0] needs"), std::string::npos) << busy.dump();
    busy = post(s, "/v1/sessions", {{"image", t.image_uri}}, &status);  // decoding counts for a session too
    EXPECT_EQ(status, 429) << busy.dump();
    metrics = s.client().Get("/metrics")->body;
    EXPECT_NE(metrics.find(held), std::string::npos) << "refused requests hold nothing: " << metrics;
  }
  const std::string metrics = metrics_with(s, {"sa2va_media_held_bytes 0\n", "sa2va_running 0"});
  EXPECT_NE(metrics.find("sa2va_media_held_bytes 0\n"), std::string::npos) << metrics;
  post(s, "/v1/segment", {{"image", t.image_uri}, {"expressions", {"it"}}, {"max_tokens", 4}}, &status);
  EXPECT_EQ(status, 200);
  // A request alone is taken even when its own pictures pass the limit (two images: 2x of 1.5x).
  const json two = post(s, "/v1/segment", {{"frames", {t.image_uri, t.image_uri}}, {"expressions", {"it"}},
                                           {"max_tokens", 4}}, &status);
  EXPECT_EQ(status, 200) << two.dump();
  // A session's media, once decoded, count against the session limits only.
  const json session = post(s, "/v1/sessions", {{"image", t.image_uri}}, &status);
  EXPECT_EQ(status, 200) << session.dump();
  EXPECT_NE(metrics_with(s, {"sa2va_media_held_bytes 0\n"}).find("sa2va_media_held_bytes 0\n"), std::string::npos);
}

// A request cut short because the server stops says so (503), not that its time was up.
TEST(Server, RequestsCutShortByAStopGet503) {
  TINY_OR_SKIP(t);
  ServerOptions o;
  o.limits.max_tokens = 16384;
  RunningServer s(t.dir, o);
  int status = 0;
  json answer;
  std::thread client([&] {
    answer = post(s, "/v1/chat/completions",
                  {{"messages", {{{"role", "user"}, {"content", "Tell me everything."}}}}, {"max_tokens", 16384}}, &status);
  });
  const std::string metrics = metrics_with(s, {"sa2va_running 1"});
  EXPECT_NE(metrics.find("sa2va_running 1"), std::string::npos) << metrics;
  s.server->stop();
  client.join();
  EXPECT_EQ(status, 503) << answer.dump();
  EXPECT_NE(answer.dump().find("the server is stopping"), std::string::npos) << answer.dump();
}

// Waiting requests take their turns in the order they came.
TEST(Server, TheQueueIsFirstComeFirstServed) {
  TINY_OR_SKIP(t);
  ServerOptions o;
  o.parallel = 1;
  o.queue = 8;
  o.limits.max_tokens = 16384;
  RunningServer s(t.dir, o);
  std::mutex mutex;
  std::vector<int> finished;
  std::vector<std::thread> clients;
  {
    LongStream running(s, "/v1/chat/completions",
                       {{"messages", {{{"role", "user"}, {"content", "Tell me everything."}}}}, {"max_tokens", 16384},
                        {"stream", true}});
    running.wait_for_chunks(2);
    for (int i = 0; i < 6; ++i) {
      clients.emplace_back([&, i] {
        int status = 0;
        // Each answer takes long enough that the next one cannot finish before this client hears it.
        post(s, "/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_tokens", 64}}, &status);
        std::lock_guard<std::mutex> lock(mutex);
        finished.push_back(status == 200 ? i : -1);
      });
      const std::string waiting = "sa2va_queue_waiting " + std::to_string(i + 1) + "\n";
      const std::string metrics = metrics_with(s, {waiting});  // in line before the next one comes
      EXPECT_NE(metrics.find(waiting), std::string::npos) << metrics;
    }
  }  // the long stream's client leaves: the six run one at a time
  for (std::thread& c : clients) c.join();
  EXPECT_EQ(finished, (std::vector<int>{0, 1, 2, 3, 4, 5}));
}

// Clients that leave are noticed wherever their requests are: a stream waiting in the queue (nothing
// is written to it yet) gives its place back, and /v1/segment stops between tokens.
TEST(Server, ClientsThatLeaveAreNoticedWhileQueuedAndWhileSegmenting) {
  TINY_OR_SKIP(t);
  ServerOptions o;
  o.parallel = 1;
  o.queue = 1;
  o.limits.max_tokens = 16384;  // a stream that outlasts the checks below on a fast machine
  RunningServer s(t.dir, o);
  const json long_chat = {{"messages", {{{"role", "user"}, {"content", "Tell me everything."}}}}, {"max_tokens", 16384},
                          {"stream", true}};
  {
    LongStream running(s, "/v1/chat/completions", long_chat);
    running.wait_for_chunks(2);
    {
      LongStream queued(s, "/v1/chat/completions", long_chat);
      const std::string waiting = metrics_with(s, {"sa2va_queue_waiting 1"});
      ASSERT_NE(waiting.find("sa2va_queue_waiting 1"), std::string::npos) << waiting;
    }  // its client leaves while it waits
    const std::string metrics = metrics_with(s, {"sa2va_queue_waiting 0", "(stream)\",status=\"499\"} 1"});
    EXPECT_NE(metrics.find("sa2va_queue_waiting 0"), std::string::npos) << metrics;
    EXPECT_NE(metrics.find("sa2va_running 1"), std::string::npos) << "the first stream should still run: " << metrics;
    EXPECT_NE(metrics.find("(stream)\",status=\"499\"} 1"), std::string::npos) << metrics;
  }
  {
    httplib::Client impatient("127.0.0.1", s.port);
    impatient.set_read_timeout(0, 300'000);  // 0.3 s
    const json body = {{"image", t.image_uri}, {"expressions", {"everything", "all the rest"}}, {"max_tokens", 2048}};
    EXPECT_FALSE(impatient.Post("/v1/segment", body.dump(), "application/json"));
  }
  const std::string metrics = metrics_with(s, {"segment\",status=\"499\"} 1", "sa2va_running 0"});
  EXPECT_NE(metrics.find("segment\",status=\"499\"} 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("sa2va_running 0"), std::string::npos) << metrics;
}

// A session's turn waits for the one before it without holding a prediction slot, and the page
// gets the session's frames while a turn runs.
TEST(Server, ATurnWaitingForItsSessionHoldsNoSlotAndFramesComeDuringATurn) {
  TINY_OR_SKIP(t);
  ServerOptions o;
  o.parallel = 2;
  RunningServer s(t.dir, o);
  json frames = json::array();
  for (int i = 0; i < 3; ++i) frames.push_back(data_uri(t.dir + "/inputs/video_frame" + std::to_string(i) + ".png"));
  const std::string id = post(s, "/v1/sessions", {{"frames", frames}})["id"];
  const json long_turn = {{"text", "Tell me everything about this video."}, {"max_tokens", 2048}};
  LongStream first(s, "/v1/sessions/" + id + "/chat", long_turn);
  first.wait_for_chunks(2);
  LongStream second(s, "/v1/sessions/" + id + "/chat", long_turn);
  const std::string waiting = metrics_with(s, {"sa2va_queue_waiting 1"});
  EXPECT_NE(waiting.find("sa2va_running 1\n"), std::string::npos) << waiting;
  int status = 0;
  post(s, "/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_tokens", 2}}, &status);
  EXPECT_EQ(status, 200);
  auto frame = s.client().Get("/v1/sessions/" + id + "/frames/1");
  ASSERT_TRUE(frame);
  EXPECT_EQ(frame->status, 200);
  const std::string during = s.client().Get("/metrics")->body;
  EXPECT_NE(during.find("sa2va_running 1\n"), std::string::npos) << during;
  EXPECT_NE(during.find("sa2va_queue_waiting 1\n"), std::string::npos) << "the first turn should still run: " << during;
}

// The program: SIGTERM ends it cleanly (exit 0), removing the files of uploaded videos, whichever of
// its threads (its libraries start some before main) the kernel gives the signal to.
TEST(ServeCommand, SigtermEndsItCleanlyAndRemovesUploads) {
  TINY_OR_SKIP(t);
  namespace fs = std::filesystem;
  const std::string dir = test::temp_dir("serve-signal");
  fs::remove_all(dir);
  fs::create_directories(dir + "/tmp");
  std::string out;
  if (test::run_command("ffmpeg -hide_banner -loglevel error -nostdin -y -f lavfi -i testsrc=size=64x48:rate=10 "
                        "-frames:v 3 -c:v ffv1 " + dir + "/v.mkv", &out) != 0)
    GTEST_SKIP() << "the ffmpeg program is needed to write the video: " << out;
  // Everything the child needs is made before fork(): it only opens, duplicates and executes.
  const std::string cli = test::cli_path(), err_path = dir + "/stderr";
  std::string tmp = "TMPDIR=" + dir + "/tmp";
  std::vector<std::string> args = {cli, "--threads", "2", "serve", "--model", t.dir, "--port", "0"};
  std::vector<char*> argv, envp;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::string path_env = std::string("PATH=") + (getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
  envp = {tmp.data(), path_env.data(), nullptr};
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const int fd = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) dup2(fd, 2);
    execve(cli.c_str(), argv.data(), envp.data());
    _exit(127);
  }
  const auto read_err = [&] {
    std::ifstream in(err_path);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  int port = 0;
  for (int i = 0; i < 600 && port == 0; ++i) {
    int early = 0;
    if (waitpid(pid, &early, WNOHANG) == pid) FAIL() << "the program ended before serving: " << read_err();
    const std::string err = read_err();
    const size_t at = err.find("on http://127.0.0.1:");
    if (at != std::string::npos && err.find('/', at + 20) != std::string::npos) port = std::stoi(err.substr(at + 20));
    else std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (port == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    FAIL() << "the server did not start: " << read_err();
  }
  std::ifstream in(dir + "/v.mkv", std::ios::binary);
  const std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(60, 0);
  const json body = {{"video", "data:video/x-matroska;base64," + base64_encode(bytes.data(), bytes.size())}};
  auto res = c.Post("/v1/sessions", body.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(std::distance(fs::directory_iterator(dir + "/tmp"), fs::directory_iterator()), 1);  // the upload
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  int status = 0;
  pid_t ended = 0;
  for (int i = 0; i < 300 && ended == 0; ++i) {
    ended = waitpid(pid, &status, WNOHANG);
    if (ended == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (ended == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    FAIL() << "the server did not end within 30 s of SIGTERM";
  }
  EXPECT_TRUE(WIFEXITED(status)) << "ended by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  EXPECT_EQ(WIFEXITED(status) ? WEXITSTATUS(status) : -1, 0) << read_err();
  EXPECT_EQ(std::distance(fs::directory_iterator(dir + "/tmp"), fs::directory_iterator()), 0)
      << "the uploaded video's file was left behind";
}

TEST(Server, ConcurrentClientsGetTheAnswersTheyWouldGetAlone) {
  TINY_OR_SKIP(t);
  ServerOptions o;
  o.parallel = 2;
  RunningServer s(t.dir, o);
  const int kClients = 12;
  const auto body = [&](int i) {
    return json{{"messages", {{{"role", "user"}, {"content", "Question number " + std::to_string(i)}}}},
                {"max_tokens", 6 + i % 5}};
  };
  std::vector<json> alone(kClients), together(kClients);
  for (int i = 0; i < kClients; ++i) alone[static_cast<size_t>(i)] = post(s, "/v1/chat/completions", body(i));
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i)
    clients.emplace_back([&, i] { together[static_cast<size_t>(i)] = post(s, "/v1/chat/completions", body(i)); });
  for (auto& c : clients) c.join();
  for (int i = 0; i < kClients; ++i)
    EXPECT_EQ(together[static_cast<size_t>(i)]["sa2va"]["text"], alone[static_cast<size_t>(i)]["sa2va"]["text"]) << i;
}

}  // namespace
}  // namespace sa2va::server
