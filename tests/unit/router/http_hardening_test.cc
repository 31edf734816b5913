// The router's HTTP front under hostile or heavy clients (issue 12's findings, each reproduced):
// a deeply nested body, slow and idle connections, a burst of simultaneous connects, 1,000
// concurrent SSE streams, HTTP/1.0 clients, a POST without Content-Length, the connection limit,
// 100-continue, X-Request-Id and API keys. Over stub backends (no model).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "boost/asio.hpp"
#include "boost/asio/ssl.hpp"
#include "core/comm/throwaway_ca.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "router/http_server.h"
#include "tests/unit/router/fake_backend.h"
#include "tests/unit/router/router_fixture.h"

namespace moemesh::router {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

int Connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  timeval timeout{20, 0};  // no test read waits longer
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  return fd;
}

bool SendAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

// Everything until the peer closes (or the 20 s receive timeout).
std::string ReadToClose(int fd, bool* closed = nullptr) {
  std::string out;
  char buffer[8192];
  while (true) {
    ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) {
      if (closed != nullptr) *closed = n == 0;
      break;
    }
    out.append(buffer, static_cast<size_t>(n));
  }
  return out;
}

// Reads until `needle` arrived (or close / timeout).
std::string ReadUntil(int fd, const std::string& needle) {
  std::string out;
  char buffer[8192];
  while (out.find(needle) == std::string::npos) {
    ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    out.append(buffer, static_cast<size_t>(n));
  }
  return out;
}

std::string Post(const std::string& path, const std::string& body, const char* version = "1.1",
                 const std::string& extra_headers = "") {
  return absl::StrCat("POST ", path, " HTTP/", version, "\r\nHost: x\r\n",
                      "Content-Type: application/json\r\nContent-Length: ", body.size(), "\r\n",
                      extra_headers, "\r\n", body);
}

// The response's header block in lower case.
std::string LowerHead(const std::string& response) {
  return absl::AsciiStrToLower(response.substr(0, response.find("\r\n\r\n")));
}

// Raises the soft open-file limit to the hard one; false when fewer than `needed` are possible.
bool EnsureFileLimit(rlim_t needed) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return false;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  return limit.rlim_cur >= needed;
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

const char kChat[] = R"({"model":"tiny-r1","messages":[{"role":"user","content":"hi"}])";

class HardeningTest : public ::testing::Test {
 protected:
  void Start(HttpServerOptions options = {}, AttentionBackend* backend = nullptr) {
    options.request_timeout_seconds = 60;
    options.threads = 2;
    server_ = std::make_unique<HttpServer>(Model().info, backend ? backend : &backend_, options);
    ASSERT_TRUE(server_->Start().ok());
    port_ = server_->port();
  }
  void TearDown() override {
    for (int fd : fds_) close(fd);
    if (server_) server_->Stop();
  }
  int Open() {
    int fd = Connect(port_);
    if (fd >= 0) fds_.push_back(fd);
    return fd;
  }
  template <typename F>
  bool Eventually(F condition, int seconds = 20) {
    const auto until = Clock::now() + std::chrono::seconds(seconds);
    while (!condition() && Clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return condition();
  }
  // Seconds one non-streaming completion takes (over keep-alive-free httplib).
  double TimeOneRequest() {
    httplib::Client client("127.0.0.1", port_);
    client.set_read_timeout(30, 0);
    const auto start = Clock::now();
    auto res = client.Post("/v1/completions", R"({"prompt":[1,2],"max_tokens":2})",
                           "application/json");
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    EXPECT_TRUE(res && res->status == 200) << (res ? res->body : "no response");
    return seconds;
  }

  FakeBackend backend_;
  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
  std::vector<int> fds_;
};

TEST_F(HardeningTest, DeeplyNestedBodiesAre400AndTheRouterLives) {
  Start();
  const std::string open(60000, '['), close_(60000, ']');
  const std::vector<std::string> bodies = {
      absl::StrCat(R"({"messages":)", open, close_, "}"),
      absl::StrCat(R"({"messages":[{"role":"user","content":)", open, close_, "}]}"),
      absl::StrCat(R"({"prompt":)", open, close_, "}"),
      std::string(60000, '{'),
  };
  httplib::Client client("127.0.0.1", port_);
  for (const std::string& body : bodies) {
    for (const char* path : {"/v1/chat/completions", "/v1/completions"}) {
      auto res = client.Post(path, body, "application/json");
      ASSERT_TRUE(res) << path;
      EXPECT_EQ(res->status, 400) << path;
      json error = json::parse(res->body)["error"];
      EXPECT_EQ(error["type"], "invalid_request_error");
      if (body[0] == '{' && body[1] == '"') {
        EXPECT_EQ(error["code"], "json_too_deep") << error.dump();
      }
    }
  }
  auto health = client.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
}

TEST_F(HardeningTest, SlowAndIdleConnectionsDoNotDelayOtherRequests) {
  ASSERT_TRUE(EnsureFileLimit(1200));
  backend_.script = {Tokens({100, 101}, Event::LENGTH)};
  HttpServerOptions options;
  options.transport.header_timeout_seconds = 120;  // the slow ones stay for the whole test
  Start(options);
  std::vector<double> idle;
  for (int i = 0; i < 7; ++i) idle.push_back(TimeOneRequest());

  // 250 idle connections and 250 that send a header line now and then, never finishing.
  std::vector<int> slow;
  for (int i = 0; i < 500; ++i) {
    int fd = Open();
    ASSERT_GE(fd, 0);
    if (i % 2 == 1) {
      ASSERT_TRUE(SendAll(fd, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"));
      slow.push_back(fd);
    }
  }
  ASSERT_TRUE(Eventually([&] { return server_->transport_stats()->open_connections >= 500; }));
  std::atomic<bool> quit{false};
  std::thread trickle([&] {
    while (!quit) {
      for (int fd : slow) SendAll(fd, "X-Slow: 1\r\n");
      for (int i = 0; i < 20 && !quit; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  std::vector<double> loaded;
  for (int i = 0; i < 7; ++i) loaded.push_back(TimeOneRequest());
  quit = true;
  trickle.join();
  const double idle_median = Median(idle), loaded_median = Median(loaded);
  // Correctness, not speed: every request above was answered (200) while all 500 connections
  // were still open (the thread-per-connection server answered none until they left). The
  // latency ratio is measured by bench/http/run_http_bench.sh (bench/README.md); here it is only
  // reported.
  EXPECT_GE(server_->transport_stats()->open_connections, 500);
  RecordProperty("idle_median_ms", static_cast<int>(idle_median * 1000));
  RecordProperty("slow_median_ms", static_cast<int>(loaded_median * 1000));
  std::printf("median request latency: idle %.2f ms, with 500 slow/idle connections %.2f ms\n",
              idle_median * 1000, loaded_median * 1000);
}

TEST_F(HardeningTest, HeaderAndIdleDeadlinesCloseConnections) {
  HttpServerOptions options;
  options.transport.header_timeout_seconds = 0.5;
  options.transport.idle_timeout_seconds = 0.5;
  Start(options);
  int slow = Open();
  ASSERT_TRUE(SendAll(slow, "GET /health HTTP/1.1\r\nHost: x\r\n"));  // never finishes
  bool closed = false;
  ReadToClose(slow, &closed);
  EXPECT_TRUE(closed);

  int keep_alive = Open();
  ASSERT_TRUE(SendAll(keep_alive, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"));
  std::string response = ReadToClose(keep_alive, &closed);
  EXPECT_TRUE(absl::StartsWith(response, "HTTP/1.1 200")) << response;
  EXPECT_TRUE(closed);  // closed by the idle deadline after the answer
  EXPECT_GE(server_->transport_stats()->timed_out, 2u);
}

TEST_F(HardeningTest, ThousandConcurrentStreamsAllComplete) {
  constexpr int kStreams = 1000;
  ASSERT_TRUE(EnsureFileLimit(2 * kStreams + 200));
  GatedBackend backend({Tokens(Ids("Hello")), Tokens(Ids(" world")), Tokens({1}, Event::STOP)});
  Start({}, &backend);
  const std::string request =
      Post("/v1/completions", R"({"prompt":"x","max_tokens":8,"stream":true})", "1.1",
           "Connection: close\r\n");
  std::vector<int> fds;
  for (int i = 0; i < kStreams; ++i) {
    int fd = Open();
    ASSERT_GE(fd, 0) << i;
    ASSERT_TRUE(SendAll(fd, request));
    fds.push_back(fd);
  }
  // Every stream is open at once: all sequences started, none released yet.
  ASSERT_TRUE(Eventually([&] { return backend.started() == kStreams; }, 60));
  backend.Release();
  std::vector<std::string> received(kStreams);
  std::vector<bool> done(kStreams, false);
  int remaining = kStreams;
  const auto until = Clock::now() + std::chrono::seconds(120);
  while (remaining > 0 && Clock::now() < until) {
    std::vector<pollfd> polls;
    std::vector<int> index;
    for (int i = 0; i < kStreams; ++i) {
      if (!done[i]) {
        polls.push_back({fds[i], POLLIN, 0});
        index.push_back(i);
      }
    }
    if (poll(polls.data(), polls.size(), 1000) <= 0) continue;
    for (size_t p = 0; p < polls.size(); ++p) {
      if (polls[p].revents == 0) continue;
      char buffer[8192];
      ssize_t n = recv(polls[p].fd, buffer, sizeof(buffer), MSG_DONTWAIT);
      if (n > 0) {
        received[index[p]].append(buffer, static_cast<size_t>(n));
      } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
        done[index[p]] = true;
        --remaining;
      }
    }
  }
  EXPECT_EQ(remaining, 0);
  int complete = 0;
  for (const std::string& response : received) {
    const bool ok = absl::StartsWith(response, "HTTP/1.1 200") &&
                    absl::StrContains(response, "data: [DONE]\n\n") &&
                    absl::StrContains(response, "Hello") &&
                    absl::StrContains(response, " world") &&
                    absl::EndsWith(response, "0\r\n\r\n");
    if (ok) ++complete;
  }
  EXPECT_EQ(complete, kStreams);
  EXPECT_EQ(backend.completed(), kStreams);
}

TEST_F(HardeningTest, BurstOfSimultaneousConnectsHasNoResets) {
  constexpr int kClients = 200;
  Start();
  std::latch go(kClients);
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&] {
      go.arrive_and_wait();
      int fd = Connect(port_);
      if (fd < 0) {
        ++failed;
        return;
      }
      std::string response;
      if (SendAll(fd, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")) {
        response = ReadToClose(fd);
      }
      close(fd);
      if (absl::StartsWith(response, "HTTP/1.1 200")) {
        ++ok;
      } else {
        ++failed;
      }
    });
  }
  for (std::thread& client : clients) client.join();
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(ok, kClients);
}

TEST_F(HardeningTest, Http10ClientsGetNoChunkedEncoding) {
  for (int i = 0; i < 3; ++i) backend_.script.push_back(Tokens(Ids(" word")));
  backend_.script.push_back(Tokens({1}, Event::STOP));
  Start();
  int stream = Open();
  ASSERT_TRUE(SendAll(stream, Post("/v1/completions",
                                   R"({"prompt":"x","max_tokens":8,"stream":true})", "1.0")));
  bool closed = false;
  std::string response = ReadToClose(stream, &closed);
  EXPECT_TRUE(closed);
  EXPECT_TRUE(absl::StartsWith(response, "HTTP/1.0 200")) << response;
  const std::string head = LowerHead(response);
  EXPECT_FALSE(absl::StrContains(head, "transfer-encoding")) << head;
  EXPECT_TRUE(absl::StrContains(head, "content-type: text/event-stream; charset=utf-8")) << head;
  EXPECT_TRUE(absl::EndsWith(response, "data: [DONE]\n\n")) << response;

  int whole = Open();
  ASSERT_TRUE(SendAll(whole, Post("/v1/completions", R"({"prompt":"x","max_tokens":8})", "1.0")));
  response = ReadToClose(whole, &closed);
  EXPECT_TRUE(closed);
  EXPECT_TRUE(absl::StartsWith(response, "HTTP/1.0 200")) << response;
  EXPECT_TRUE(absl::StrContains(LowerHead(response), "content-length:"));
  EXPECT_FALSE(absl::StrContains(LowerHead(response), "transfer-encoding"));
}

TEST_F(HardeningTest, PostWithoutContentLengthIs411AndChunkedBodiesWork) {
  backend_.script = {Tokens({100}, Event::LENGTH)};
  Start();
  int fd = Open();
  ASSERT_TRUE(SendAll(fd, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n"));
  std::string response = ReadToClose(fd);
  EXPECT_TRUE(absl::StartsWith(response, "HTTP/1.1 411")) << response;
  json error = json::parse(response.substr(response.find("\r\n\r\n") + 4));
  EXPECT_TRUE(error["error"]["message"].is_string());

  const std::string body = R"({"prompt":[1,2],"max_tokens":1})";
  int chunked = Open();
  ASSERT_TRUE(SendAll(chunked, absl::StrCat("POST /v1/completions HTTP/1.1\r\nHost: x\r\n",
                                            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                                            absl::StrFormat("%x", body.size()), "\r\n", body,
                                            "\r\n0\r\n\r\n")));
  response = ReadToClose(chunked);
  EXPECT_TRUE(absl::StartsWith(response, "HTTP/1.1 200")) << response;
}

TEST_F(HardeningTest, ConnectionLimitAnswers503WithAnErrorBody) {
  HttpServerOptions options;
  options.transport.max_connections = 3;
  Start(options);
  for (int i = 0; i < 3; ++i) ASSERT_GE(Open(), 0);
  ASSERT_TRUE(Eventually([&] { return server_->transport_stats()->open_connections == 3; }));
  int extra = Open();
  ASSERT_TRUE(SendAll(extra, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"));
  std::string response = ReadToClose(extra);
  EXPECT_TRUE(absl::StartsWith(response, "HTTP/1.1 503")) << response;
  json error = json::parse(response.substr(response.find("\r\n\r\n") + 4));
  EXPECT_EQ(error["error"]["type"], "service_unavailable_error");
  EXPECT_GE(server_->transport_stats()->rejected_over_limit, 1u);
}

TEST_F(HardeningTest, ExpectContinueIsAnswered) {
  backend_.script = {Tokens({100}, Event::LENGTH)};
  Start();
  const std::string body = R"({"prompt":[1,2],"max_tokens":1})";
  int fd = Open();
  ASSERT_TRUE(SendAll(fd, absl::StrCat("POST /v1/completions HTTP/1.1\r\nHost: x\r\n",
                                       "Content-Length: ", body.size(), "\r\n",
                                       "Expect: 100-continue\r\nConnection: close\r\n\r\n")));
  std::string interim = ReadUntil(fd, "\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(interim, "HTTP/1.1 100")) << interim;
  ASSERT_TRUE(SendAll(fd, body));
  std::string response = ReadToClose(fd);
  EXPECT_TRUE(absl::StrContains(response, "HTTP/1.1 200")) << response;
}

TEST_F(HardeningTest, RequestIdIsEchoedOrGenerated) {
  for (int i = 0; i < 2; ++i) backend_.script.push_back(Tokens(Ids(" a")));
  backend_.script.push_back(Tokens({1}, Event::STOP));
  Start();
  httplib::Client client("127.0.0.1", port_);
  auto given = client.Get("/health", {{"X-Request-Id", "trace-42.a_b:c"}});
  ASSERT_TRUE(given);
  EXPECT_EQ(given->get_header_value("X-Request-Id"), "trace-42.a_b:c");
  auto generated = client.Get("/health");
  ASSERT_TRUE(generated);
  const std::string id = generated->get_header_value("X-Request-Id");
  EXPECT_EQ(id.size(), 32u);
  auto invalid = client.Get("/health", {{"X-Request-Id", "bad id with spaces"}});
  ASSERT_TRUE(invalid);
  EXPECT_EQ(invalid->get_header_value("X-Request-Id").size(), 32u);
  auto error = client.Post("/v1/completions", {{"X-Request-Id", "err-1"}}, "{", "application/json");
  ASSERT_TRUE(error);
  EXPECT_EQ(error->status, 400);
  EXPECT_EQ(error->get_header_value("X-Request-Id"), "err-1");
  auto stream = client.Post("/v1/completions", {{"X-Request-Id", "sse-1"}},
                            R"({"prompt":"x","max_tokens":4,"stream":true})", "application/json");
  ASSERT_TRUE(stream);
  EXPECT_EQ(stream->status, 200);
  EXPECT_EQ(stream->get_header_value("X-Request-Id"), "sse-1");
}

HttpRoute AdminRoute() {
  return {"POST", "/v1/placement/rebalance",
          [](const HttpRequest&) { return MakeResponse(200, R"({"ok":true})"); }};
}

TEST_F(HardeningTest, ApiKeysGuardTheApiAndAdminKeysTheAdminPaths) {
  HttpServerOptions options;
  options.auth.api_keys = {"key-one", "key-two"};
  options.auth.admin_api_keys = {"admin-key"};
  options.routes = {AdminRoute()};
  Start(options);
  httplib::Client client("127.0.0.1", port_);
  auto missing = client.Get("/v1/models");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 401);
  json error = json::parse(missing->body)["error"];
  EXPECT_EQ(error["code"], "invalid_api_key");
  EXPECT_EQ(error["type"], "invalid_request_error");
  EXPECT_EQ(missing->get_header_value("WWW-Authenticate"), "Bearer");
  auto wrong = client.Get("/v1/models", {{"Authorization", "Bearer key-three"}});
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);
  auto prefix = client.Get("/v1/models", {{"Authorization", "Bearer key-on"}});
  ASSERT_TRUE(prefix);
  EXPECT_EQ(prefix->status, 401);
  auto basic = client.Get("/v1/models", {{"Authorization", "Basic key-one"}});
  ASSERT_TRUE(basic);
  EXPECT_EQ(basic->status, 401);
  auto post = client.Post("/v1/completions", R"({"prompt":[1],"max_tokens":1})",
                          "application/json");
  ASSERT_TRUE(post);
  EXPECT_EQ(post->status, 401);
  for (const char* key : {"key-one", "key-two", "admin-key"}) {
    auto right = client.Get("/v1/models", {{"Authorization", absl::StrCat("Bearer ", key)}});
    ASSERT_TRUE(right);
    EXPECT_EQ(right->status, 200) << key;
  }
  EXPECT_EQ(client.Get("/health")->status, 200);  // operations stay open by default
  auto admin_with_api_key = client.Post("/v1/placement/rebalance",
                                        {{"Authorization", "Bearer key-one"}}, "{}",
                                        "application/json");
  ASSERT_TRUE(admin_with_api_key);
  EXPECT_EQ(admin_with_api_key->status, 401);
  auto admin = client.Post("/v1/placement/rebalance", {{"Authorization", "Bearer admin-key"}},
                           "{}", "application/json");
  ASSERT_TRUE(admin);
  EXPECT_EQ(admin->status, 200);
}

TEST_F(HardeningTest, ProtectedOperationsAndAdminWithoutAdminKeys) {
  HttpServerOptions options;
  options.auth.api_keys = {"key-one"};
  options.auth.protect_operations = true;
  options.routes = {AdminRoute()};
  Start(options);
  httplib::Client client("127.0.0.1", port_);
  EXPECT_EQ(client.Get("/health")->status, 401);
  EXPECT_EQ(client.Get("/health", {{"Authorization", "Bearer key-one"}})->status, 200);
  auto admin = client.Post("/v1/placement/rebalance", {{"Authorization", "Bearer key-one"}}, "{}",
                           "application/json");
  ASSERT_TRUE(admin);
  EXPECT_EQ(admin->status, 403);  // no admin key configured: admin paths are off
}

TEST_F(HardeningTest, HttpsOnTheRouterPort) {
  const std::string dir = ::testing::TempDir() + "/moemesh_https_test";
  std::filesystem::create_directories(dir);
  ASSERT_TRUE(comm::GenerateThrowawayCertificates(dir).ok());
  HttpServerOptions options;
  options.transport.tls_cert_file = dir + "/node.pem";
  options.transport.tls_key_file = dir + "/node.key";
  Start(options);
  namespace net = boost::asio;
  namespace ssl = boost::asio::ssl;
  net::io_context io;
  ssl::context context(ssl::context::tls_client);
  context.load_verify_file(dir + "/ca.pem");
  context.set_verify_mode(ssl::verify_peer);
  ssl::stream<net::ip::tcp::socket> stream(io, context);
  stream.lowest_layer().connect({net::ip::make_address("127.0.0.1"),
                                 static_cast<unsigned short>(port_)});
  stream.handshake(ssl::stream_base::client);  // verifies the router's certificate
  const std::string request = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  net::write(stream, net::buffer(request));
  std::string response;
  boost::system::error_code ec;
  char buffer[4096];
  while (true) {
    const size_t n = stream.read_some(net::buffer(buffer), ec);
    response.append(buffer, n);
    if (ec) break;
  }
  EXPECT_TRUE(absl::StartsWith(response, "HTTP/1.1 200")) << response;
  EXPECT_TRUE(absl::StrContains(response, R"({"status":"ok"})"));
  // Plain HTTP on the TLS port gets no HTTP answer.
  int plain = Open();
  ASSERT_TRUE(SendAll(plain, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_FALSE(absl::StartsWith(ReadToClose(plain), "HTTP/1.1 200"));
}

TEST(ApiAuthTest, CollectsKeysFromFlagsFileAndEnv) {
  const std::string path = ::testing::TempDir() + "/moemesh_keys.txt";
  {
    std::ofstream out(path);
    out << "# comment\nfile-key-1\n\n  file-key-2  \n";
  }
  auto keys = CollectApiKeys({"a,b", "c"}, path, "env-1,env-2");
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(*keys, (std::vector<std::string>{"a", "b", "c", "env-1", "env-2", "file-key-1",
                                             "file-key-2"}));
  EXPECT_FALSE(CollectApiKeys({}, path + ".missing", nullptr).ok());
  EXPECT_EQ(ClassifyPath("/v1/placement"), PathClass::kAdmin);
  EXPECT_EQ(ClassifyPath("/admin/drain"), PathClass::kAdmin);
  EXPECT_EQ(ClassifyPath("/v1/placementx"), PathClass::kApi);
  EXPECT_EQ(ClassifyPath("/v1/models"), PathClass::kApi);
  EXPECT_EQ(ClassifyPath("/metrics"), PathClass::kOperations);
}

}  // namespace
}  // namespace moemesh::router
