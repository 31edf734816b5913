#include "router/http_types.h"

#include <thread>

namespace moemesh::router {

std::optional<std::string_view> HttpRequest::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key == name) return std::string_view(value);
  }
  return std::nullopt;
}

std::optional<std::string> HttpRequest::QueryParam(std::string_view name) const {
  auto decode = [](std::string_view text) {
    std::string out;
    for (size_t i = 0; i < text.size(); ++i) {
      auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
      };
      if (text[i] == '+') {
        out.push_back(' ');
      } else if (text[i] == '%' && i + 2 < text.size() && hex(text[i + 1]) >= 0 &&
                 hex(text[i + 2]) >= 0) {
        out.push_back(static_cast<char>(hex(text[i + 1]) * 16 + hex(text[i + 2])));
        i += 2;
      } else {
        out.push_back(text[i]);
      }
    }
    return out;
  };
  std::string_view rest = query;
  while (!rest.empty()) {
    const size_t amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    const size_t eq = pair.find('=');
    if (decode(pair.substr(0, eq)) != name) continue;
    return eq == std::string_view::npos ? std::string() : decode(pair.substr(eq + 1));
  }
  return std::nullopt;
}

namespace {

// Answers once the worker thread has stored its response.
class BlockingProducer : public ResponseProducer {
 public:
  struct Result {
    std::mutex mutex;
    std::optional<HttpResponse> response;
  };
  explicit BlockingProducer(std::shared_ptr<Result> result) : result_(std::move(result)) {}
  void Poll(ResponseSink& sink) override {
    std::lock_guard<std::mutex> lock(result_->mutex);
    if (result_->response) sink.Respond(std::move(*result_->response));
  }
  void Cancel() override {}

 private:
  std::shared_ptr<Result> result_;
};

}  // namespace

HttpResponse RunBlocking(std::function<HttpResponse()> work) {
  auto result = std::make_shared<BlockingProducer::Result>();
  auto producer = std::make_shared<BlockingProducer>(result);
  std::weak_ptr<ResponseProducer> weak = producer;
  std::thread([work = std::move(work), result, weak] {
    HttpResponse response;
    try {
      response = work();
    } catch (...) {
      response = MakeResponse(
          500, R"({"error":{"message":"internal error","type":"server_error","param":null,"code":null}})");
    }
    {
      std::lock_guard<std::mutex> lock(result->mutex);
      result->response = std::move(response);
    }
    if (std::shared_ptr<ResponseProducer> alive = weak.lock()) alive->Wake();
  }).detach();
  HttpResponse response;
  response.producer = std::move(producer);
  return response;
}

}  // namespace moemesh::router
