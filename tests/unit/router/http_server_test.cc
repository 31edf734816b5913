// The router's HTTP server in process, over a fake AttentionBackend: endpoints, SSE framing,
// errors (400/404/503/504 and node errors, streaming and not), stop strings and client
// disconnects cancelling the sequence.
#include "router/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/unit/router/router_fixture.h"
#include "httplib.h"

namespace moemesh::router {
namespace {

using nlohmann::json;
using text::TokenId;
using Event = moemesh::v1::SequenceEvent;


std::vector<TokenId> Ids(const std::string& text) { return Model().tokenizer->Encode(text); }

Event Tokens(const std::vector<TokenId>& ids, Event::FinishReason finish = Event::NOT_FINISHED) {
  Event event;
  for (TokenId id : ids) event.add_tokens()->set_token_id(static_cast<uint32_t>(id));
  event.set_finish_reason(finish);
  return event;
}

// Emits `script` (one event per `delay`) for every sequence; then, when `hang`, waits for Cancel.
class FakeBackend : public AttentionBackend {
 public:
  std::atomic<bool> available{true};
  std::atomic<bool> ready{false};
  std::vector<Event> script;
  std::chrono::milliseconds delay{0};
  bool hang = false;
  std::atomic<int> started{0};
  std::atomic<int> cancelled{0};
  std::atomic<int> ended{0};
  std::mutex mutex;
  std::vector<moemesh::v1::AddSequenceRequest> requests;

  absl::Status Ready() override {
    return ready ? absl::OkStatus() : absl::UnavailableError("0 of 2 expert nodes registered");
  }

  absl::StatusOr<std::unique_ptr<SequenceHandle>> AddSequence(
      const moemesh::v1::AddSequenceRequest& request, SequenceObserver observer) override {
    if (!available) return absl::UnavailableError("no healthy attention node");
    {
      std::lock_guard<std::mutex> lock(mutex);
      requests.push_back(request);
    }
    ++started;
    return std::unique_ptr<SequenceHandle>(new Sequence(this, std::move(observer)));
  }

 private:
  class Sequence : public SequenceHandle {
   public:
    Sequence(FakeBackend* backend, SequenceObserver observer) : backend_(backend) {
      thread_ = std::thread([this, observer = std::move(observer)] {
        for (const Event& event : backend_->script) {
          for (auto waited = std::chrono::milliseconds(0); waited < backend_->delay && !cancel_;
               waited += std::chrono::milliseconds(2)) {
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
          }
          if (cancel_) break;
          observer.on_event(event);
        }
        while (backend_->hang && !cancel_) std::this_thread::sleep_for(std::chrono::milliseconds(2));
        ++backend_->ended;
        observer.on_end(cancel_ ? absl::CancelledError("cancelled") : absl::OkStatus());
      });
    }
    ~Sequence() override {
      Cancel();
      thread_.join();
    }
    void Cancel() override {
      if (!cancel_.exchange(true)) ++backend_->cancelled;
    }

   private:
    FakeBackend* backend_;
    std::atomic<bool> cancel_{false};
    std::thread thread_;
  };
};

class HttpServerTest : public ::testing::Test {
 protected:
  void StartServer(double timeout_seconds = 30) {
    HttpServerOptions options;
    options.request_timeout_seconds = timeout_seconds;
    options.threads = 8;
    server_ = std::make_unique<HttpServer>(Model().info, &backend_, options);
    ASSERT_TRUE(server_->Start().ok());
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_read_timeout(30, 0);
  }
  void TearDown() override {
    client_.reset();
    if (server_) server_->Stop();
  }
  httplib::Result Post(const std::string& path, const std::string& body) {
    return client_->Post(path.c_str(), body, "application/json");
  }
  // Waits up to 5 s for `condition`.
  template <typename F>
  bool Eventually(F condition) {
    for (int i = 0; i < 500 && !condition(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return condition();
  }
  // `data:` payloads of an SSE body; checks the framing.
  static std::vector<std::string> SseData(const std::string& body) {
    std::vector<std::string> data;
    EXPECT_TRUE(body.size() >= 2 && body.substr(body.size() - 2) == "\n\n") << body;
    for (absl::string_view piece : absl::StrSplit(body, "\n\n", absl::SkipEmpty())) {
      std::string_view event(piece.data(), piece.size());
      if (event.starts_with(":")) continue;  // keep-alive comment
      EXPECT_TRUE(event.starts_with("data: ")) << event;
      data.emplace_back(event.substr(6));
    }
    return data;
  }

  FakeBackend backend_;
  std::unique_ptr<HttpServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

const char kChat[] = R"({"model":"tiny-r1","messages":[{"role":"user","content":"hi"}])";

TEST_F(HttpServerTest, HealthReadyAndModels) {
  StartServer();
  auto health = client_->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto ready = client_->Get("/ready");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 503);
  json error = json::parse(ready->body);
  EXPECT_EQ(error["error"]["message"], "0 of 2 expert nodes registered");
  EXPECT_EQ(error["error"]["type"], "service_unavailable_error");
  backend_.ready = true;
  EXPECT_EQ(client_->Get("/ready")->status, 200);
  auto models = client_->Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 200);
  json list = json::parse(models->body);
  EXPECT_EQ(list["data"][0]["id"], "tiny-r1");
  EXPECT_EQ(list["data"][0]["max_model_len"], 163840);
  auto unknown = client_->Get("/v1/nothing");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
  EXPECT_TRUE(json::parse(unknown->body)["error"]["message"].is_string());
}

TEST_F(HttpServerTest, NonStreamingChat) {
  std::vector<TokenId> ids = Ids("thinking</think>The answer.");
  ids.push_back(1);
  backend_.script = {Tokens(ids, Event::STOP)};
  StartServer();
  auto res = Post("/v1/chat/completions", std::string(kChat) + R"(,"max_tokens":50,"seed":3,"n":2})");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  json body = json::parse(res->body);
  EXPECT_EQ(body["object"], "chat.completion");
  ASSERT_EQ(body["choices"].size(), 2u);
  EXPECT_EQ(body["choices"][1]["message"]["reasoning_content"], "thinking");
  EXPECT_EQ(body["choices"][1]["message"]["content"], "The answer.");
  EXPECT_EQ(body["usage"]["completion_tokens"], 2 * ids.size());
  std::lock_guard<std::mutex> lock(backend_.mutex);
  ASSERT_EQ(backend_.requests.size(), 2u);
  EXPECT_NE(backend_.requests[0].sequence_id(), backend_.requests[1].sequence_id());
  EXPECT_EQ(backend_.requests[0].sampling().seed(), 3u);
  EXPECT_EQ(backend_.requests[1].sampling().seed(), 4u);
  EXPECT_EQ(backend_.requests[0].max_new_tokens(), 50u);
}

TEST_F(HttpServerTest, StreamingSseFraming) {
  std::vector<TokenId> ids = Ids("a</think>Hello world");
  for (TokenId id : ids) backend_.script.push_back(Tokens({id}));
  backend_.script.push_back(Tokens({1}, Event::STOP));
  StartServer();
  auto res = Post("/v1/chat/completions",
                  std::string(kChat) + R"(,"stream":true,"stream_options":{"include_usage":true}})");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/event-stream");
  std::vector<std::string> data = SseData(res->body);
  ASSERT_GE(data.size(), 4u);
  EXPECT_EQ(data.back(), "[DONE]");
  json first = json::parse(data[0]);
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  json usage = json::parse(data[data.size() - 2]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], ids.size() + 1);
  std::string content;
  for (size_t i = 0; i + 2 < data.size(); ++i) {
    json chunk = json::parse(data[i]);
    EXPECT_TRUE(chunk["usage"].is_null());
    const json& delta = chunk["choices"][0]["delta"];
    if (delta.contains("content")) content += delta["content"].get<std::string>();
  }
  EXPECT_EQ(content, "Hello world");
  EXPECT_EQ(json::parse(data[data.size() - 3])["choices"][0]["finish_reason"], "stop");
}

TEST_F(HttpServerTest, ErrorBodiesOverHttp) {
  StartServer();
  auto bad = Post("/v1/chat/completions", "{not json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(json::parse(bad->body)["error"]["type"], "invalid_request_error");
  auto surrogate = Post("/v1/completions", R"({"prompt":"\ud800"})");
  ASSERT_TRUE(surrogate);
  EXPECT_EQ(surrogate->status, 400);
  auto model = Post("/v1/completions", R"({"model":"nope","prompt":"x"})");
  ASSERT_TRUE(model);
  EXPECT_EQ(model->status, 404);
  EXPECT_EQ(json::parse(model->body)["error"]["code"], "model_not_found");
  auto param = Post("/v1/completions", R"({"prompt":"x","temperature":3})");
  ASSERT_TRUE(param);
  EXPECT_EQ(param->status, 400);
  EXPECT_EQ(json::parse(param->body)["error"]["param"], "temperature");
  backend_.available = false;
  auto unavailable = Post("/v1/chat/completions", std::string(kChat) + R"(,"stream":true})");
  ASSERT_TRUE(unavailable);
  EXPECT_EQ(unavailable->status, 503);
  EXPECT_EQ(json::parse(unavailable->body)["error"]["message"], "no healthy attention node");
}

TEST_F(HttpServerTest, NodeErrorNonStreamingAndStreaming) {
  Event error;
  error.set_finish_reason(Event::ERROR);
  error.set_error("expert node expert-1 failed");
  backend_.script = {Tokens(Ids("x")), error};
  StartServer();
  auto res = Post("/v1/completions", R"({"prompt":[1,2],"max_tokens":5})");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(json::parse(res->body)["error"]["message"], "expert node expert-1 failed");

  auto stream = Post("/v1/completions", R"({"prompt":[1,2],"max_tokens":5,"stream":true})");
  ASSERT_TRUE(stream);
  EXPECT_EQ(stream->status, 200);
  std::vector<std::string> data = SseData(stream->body);
  ASSERT_FALSE(data.empty());
  json last = json::parse(data.back());
  EXPECT_EQ(last["error"]["message"], "expert node expert-1 failed");
  EXPECT_EQ(last["error"]["type"], "service_unavailable_error");
}

TEST_F(HttpServerTest, StopStringCancelsTheSequence) {
  backend_.script = {Tokens(Ids("r</think>Hello STOP and more"))};
  backend_.hang = true;
  StartServer();
  auto res = Post("/v1/chat/completions", std::string(kChat) + R"(,"stop":"STOP"})");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  json body = json::parse(res->body);
  EXPECT_EQ(body["choices"][0]["message"]["content"], "Hello ");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(Eventually([&] { return backend_.cancelled == 1 && backend_.ended == 1; }));
}

TEST_F(HttpServerTest, ClientDisconnectCancelsTheSequence) {
  for (int i = 0; i < 1000; ++i) backend_.script.push_back(Tokens(Ids(" word")));
  backend_.delay = std::chrono::milliseconds(10);
  backend_.hang = true;
  StartServer();
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(server_->port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  std::string body = R"({"prompt":"once upon","max_tokens":1000,"stream":true})";
  std::string request = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  std::string received;
  char buffer[4096];
  while (received.find("data: ") == std::string::npos) {
    ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    ASSERT_GT(n, 0);
    received.append(buffer, static_cast<size_t>(n));
  }
  EXPECT_NE(received.find("text/event-stream"), std::string::npos);
  close(fd);
  EXPECT_TRUE(Eventually([&] { return backend_.cancelled == 1 && backend_.ended == 1; }));
  EXPECT_TRUE(Eventually([&] { return server_->stats().client_disconnects == 1; }));
  // The server still answers.
  EXPECT_EQ(client_->Get("/health")->status, 200);
}

TEST_F(HttpServerTest, NonStreamingClientDisconnectCancelsTheSequence) {
  backend_.hang = true;  // never finishes: only the disconnect can end it
  StartServer();
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(server_->port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  std::string body = R"({"prompt":"hi","max_tokens":3000,"ignore_eos":true})";
  std::string request = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  ASSERT_TRUE(Eventually([&] { return backend_.started == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(backend_.cancelled, 0);
  const auto closed = std::chrono::steady_clock::now();
  close(fd);
  EXPECT_TRUE(Eventually([&] { return backend_.cancelled == 1 && backend_.ended == 1; }));
  EXPECT_LT(std::chrono::steady_clock::now() - closed, std::chrono::seconds(2));
  EXPECT_TRUE(Eventually([&] { return server_->stats().client_disconnects == 1; }));
  // The server still answers, and a normal non-streaming request is not taken for a disconnect.
  EXPECT_EQ(client_->Get("/health")->status, 200);
  backend_.hang = false;
  backend_.script = {Tokens(Ids("ok"), Event::LENGTH)};
  auto res = Post("/v1/completions", R"({"prompt":"hi","max_tokens":1})");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(server_->stats().client_disconnects, 1u);
}

TEST_F(HttpServerTest, NonStreamingSlowRequestIsNotCancelled) {
  // A request that takes longer than a few socket checks, from a client that stays.
  for (int i = 0; i < 8; ++i) backend_.script.push_back(Tokens(Ids(" word")));
  backend_.script.push_back(Tokens({1}, Event::STOP));
  backend_.delay = std::chrono::milliseconds(100);
  StartServer();
  auto res = Post("/v1/completions", R"({"prompt":"hi","max_tokens":100})");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(json::parse(res->body)["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(server_->stats().client_disconnects, 0u);
}

TEST_F(HttpServerTest, ModelByIdAndWrongMethods) {
  StartServer();
  auto model = client_->Get("/v1/models/tiny-r1");
  ASSERT_TRUE(model);
  EXPECT_EQ(model->status, 200);
  json entry = json::parse(model->body);
  EXPECT_EQ(entry["id"], "tiny-r1");
  EXPECT_EQ(entry["object"], "model");
  auto unknown = client_->Get("/v1/models/gpt-4");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
  json error = json::parse(unknown->body)["error"];
  EXPECT_EQ(error["code"], "model_not_found");
  EXPECT_EQ(error["param"], "model");
  EXPECT_EQ(error["type"], "invalid_request_error");

  for (const char* path : {"/v1/completions", "/v1/chat/completions"}) {
    auto get = client_->Get(path);
    ASSERT_TRUE(get) << path;
    EXPECT_EQ(get->status, 405) << path;
    EXPECT_EQ(get->get_header_value("Allow"), "POST");
    json body = json::parse(get->body);
    EXPECT_EQ(body["error"]["type"], "invalid_request_error");
    EXPECT_TRUE(body["error"]["message"].is_string());
  }
  auto post_models = Post("/v1/models", "{}");
  ASSERT_TRUE(post_models);
  EXPECT_EQ(post_models->status, 405);
  EXPECT_EQ(post_models->get_header_value("Allow"), "GET");
  auto delete_model = client_->Delete("/v1/models/tiny-r1");
  ASSERT_TRUE(delete_model);
  EXPECT_EQ(delete_model->status, 405);
  EXPECT_TRUE(json::parse(delete_model->body).contains("error"));
  // Unknown paths stay 404; the right methods still work.
  EXPECT_EQ(client_->Get("/v1/nothing")->status, 404);
  EXPECT_EQ(client_->Get("/v1/models")->status, 200);
}

TEST_F(HttpServerTest, TimeoutIs504AndCancels) {
  backend_.hang = true;
  StartServer(/*timeout_seconds=*/0.3);
  auto res = Post("/v1/completions", R"({"prompt":"x","max_tokens":3})");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 504);
  EXPECT_EQ(json::parse(res->body)["error"]["type"], "timeout_error");
  EXPECT_TRUE(Eventually([&] { return backend_.cancelled == 1; }));
}

TEST_F(HttpServerTest, GarbageRequestsKeepTheServerUp) {
  StartServer();
  const std::vector<std::string> bodies = {"", "\xff\xff", "[]", "{\"messages\":[{}]}",
                                           std::string(1000, '{'), "{\"prompt\":[[[[1]]]]}"};
  for (const std::string& body : bodies) {
    for (const char* path : {"/v1/chat/completions", "/v1/completions"}) {
      auto res = Post(path, body);
      ASSERT_TRUE(res) << body;
      EXPECT_EQ(res->status, 400) << body;
      EXPECT_TRUE(json::parse(res->body).contains("error"));
    }
  }
  EXPECT_EQ(client_->Get("/health")->status, 200);
}

// vLLM's /tokenize and /detokenize and GET /version are routed (shapes: openai_features_test).
TEST_F(HttpServerTest, TokenizeDetokenizeAndVersionRoutes) {
  StartServer();
  auto tokens = Post("/tokenize", R"({"prompt":"Hello world","add_special_tokens":false})");
  ASSERT_TRUE(tokens);
  EXPECT_EQ(tokens->status, 200);
  EXPECT_EQ(json::parse(tokens->body)["tokens"], json({19923, 2058}));
  auto text = Post("/detokenize", R"({"tokens":[19923,2058]})");
  ASSERT_TRUE(text);
  EXPECT_EQ(json::parse(text->body)["prompt"], "Hello world");
  auto bad = Post("/detokenize", R"({"tokens":[-1]})");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  auto version = client_->Get("/version");
  ASSERT_TRUE(version);
  EXPECT_EQ(version->status, 200);
  EXPECT_TRUE(json::parse(version->body)["version"].is_string());
  auto wrong = client_->Get("/tokenize");
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 405);
}

}  // namespace
}  // namespace moemesh::router
