// `moemesh chat`: a minimal streaming client of the OpenAI chat API, for trying a server by hand.
// Prints the reasoning (R1's reasoning_content) and the answer as they arrive.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/json_field.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tools/moemesh/arguments.h"
#include "tools/moemesh/commands.h"

namespace moemesh::cli {
namespace {

constexpr char kUsage[] =
    "usage: moemesh chat [--url http://127.0.0.1:8000] [--model NAME] [--max-tokens N]\n"
    "                    [--temperature T] [--system TEXT] MESSAGE\n"
    "Sends MESSAGE as a streaming /v1/chat/completions request and prints the reasoning and the\n"
    "answer as they arrive. Without --model, the server's first model is used.\n";

}  // namespace

int RunChat(const Arguments& arguments) {
  auto parsed = ParseArguments(arguments, {{"url"}, {"model"}, {"max-tokens"}, {"temperature"},
                                           {"system"}, {"help", true}});
  if (!parsed.ok() || parsed->Has("help") || parsed->positionals().size() != 1) {
    if (!parsed.ok()) std::fprintf(stderr, "moemesh chat: %s\n", std::string(parsed.status().message()).c_str());
    std::fputs(kUsage, parsed.ok() && parsed->Has("help") ? stdout : stderr);
    return parsed.ok() && parsed->Has("help") ? 0 : 2;
  }
  std::string url = parsed->Get("url").value_or("http://127.0.0.1:8000");
  // Accept the API base URL as OpenAI clients take it (".../v1") as well as the server's.
  while (!url.empty() && url.back() == '/') url.pop_back();
  if (url.size() >= 3 && url.compare(url.size() - 3, 3, "/v1") == 0) url.resize(url.size() - 3);
  auto max_tokens = parsed->GetInt("max-tokens", 64);
  auto temperature = parsed->GetDouble("temperature", 0.6);
  if (!max_tokens.ok() || !temperature.ok()) {
    std::fprintf(stderr, "moemesh chat: --max-tokens and --temperature take numbers\n");
    return 2;
  }
  httplib::Client client(url);
  client.set_read_timeout(600, 0);
  // A router started with --api-key wants it as a Bearer token (MOEMESH_API_KEY, as the router).
  if (const char* key = std::getenv("MOEMESH_API_KEY"); key != nullptr && *key != '\0') {
    const std::string keys = key;
    client.set_bearer_token_auth(keys.substr(0, keys.find(',')));  // the first of a list
  }
  std::string model = parsed->Get("model").value_or("");
  if (model.empty()) {
    auto models = client.Get("/v1/models");
    if (!models) {
      std::fprintf(stderr, "moemesh chat: cannot reach %s: %s\n", url.c_str(),
                   httplib::to_string(models.error()).c_str());
      return 1;
    }
    if (models->status != 200) {
      std::fprintf(stderr, "moemesh chat: GET %s/v1/models answered HTTP %d: %s\n", url.c_str(),
                   models->status, models->body.c_str());
      return 1;
    }
    auto body = nlohmann::json::parse(models->body, nullptr, false);
    if (body.is_discarded() || !body.contains("data") || !body["data"].is_array() ||
        body["data"].empty()) {
      std::fprintf(stderr, "moemesh chat: %s/v1/models lists no model\n", url.c_str());
      return 1;
    }
    model = FieldOr(body["data"][0], "id", std::string());
  }
  nlohmann::json messages = nlohmann::json::array();
  if (auto system = parsed->Get("system")) messages.push_back({{"role", "system"}, {"content", *system}});
  messages.push_back({{"role", "user"}, {"content", parsed->positionals()[0]}});
  const nlohmann::json request = {{"model", model},
                                  {"messages", messages},
                                  {"max_tokens", *max_tokens},
                                  {"temperature", *temperature},
                                  {"stream", true},
                                  {"stream_options", {{"include_usage", true}}}};

  const bool color = ::isatty(STDOUT_FILENO);
  const char* dim = color ? "\033[2m" : "";
  const char* reset = color ? "\033[0m" : "";
  enum class Section { kNone, kReasoning, kAnswer } section = Section::kNone;
  std::string pending;  // SSE bytes not yet ending in a blank line
  std::string error;
  nlohmann::json usage;
  std::string finish_reason;
  auto handle_event = [&](const std::string& data) {
    if (data == "[DONE]") return;
    auto chunk = nlohmann::json::parse(data, nullptr, false);
    if (chunk.is_discarded()) return;
    if (chunk.contains("error")) {
      error = FieldOr(chunk["error"], "message", chunk["error"].dump());
      return;
    }
    if (chunk.contains("usage") && chunk["usage"].is_object()) usage = chunk["usage"];
    if (!chunk.contains("choices")) return;
    for (const auto& choice : chunk["choices"]) {
      const nlohmann::json delta = FieldOr(choice, "delta", nlohmann::json::object());
      if (delta.contains("reasoning_content") && delta["reasoning_content"].is_string()) {
        if (section != Section::kReasoning) {
          std::printf("%s[reasoning]%s\n%s", dim, reset, dim);
          section = Section::kReasoning;
        }
        std::printf("%s", delta["reasoning_content"].get<std::string>().c_str());
      }
      if (delta.contains("content") && delta["content"].is_string() &&
          !delta["content"].get<std::string>().empty()) {
        if (section != Section::kAnswer) {
          std::printf("%s\n[answer]\n", reset);
          section = Section::kAnswer;
        }
        std::printf("%s", delta["content"].get<std::string>().c_str());
      }
      if (choice.contains("finish_reason") && choice["finish_reason"].is_string()) {
        finish_reason = choice["finish_reason"].get<std::string>();
      }
      std::fflush(stdout);
    }
  };
  int status = 0;
  httplib::Request post;
  post.method = "POST";
  post.path = "/v1/chat/completions";
  post.body = request.dump();
  post.set_header("Content-Type", "application/json");
  post.content_receiver = [&](const char* data, size_t length, uint64_t, uint64_t) {
    pending.append(data, length);
    for (size_t end; (end = pending.find("\n\n")) != std::string::npos;) {
      const std::string event = pending.substr(0, end);
      pending.erase(0, end + 2);
      if (event.rfind("data: ", 0) == 0) handle_event(event.substr(6));
    }
    return true;
  };
  auto result = client.send(post);
  if (!result) {
    std::fprintf(stderr, "\nmoemesh chat: request to %s failed: %s\n", url.c_str(),
                 httplib::to_string(result.error()).c_str());
    return 1;
  }
  status = result->status;
  std::printf("%s\n", reset);
  if (status != 200) {
    auto body = nlohmann::json::parse(pending, nullptr, false);
    std::fprintf(stderr, "moemesh chat: HTTP %d: %s\n", status,
                 body.is_discarded() ? pending.c_str() : body.dump().c_str());
    return 1;
  }
  if (!error.empty()) {
    std::fprintf(stderr, "moemesh chat: server error: %s\n", error.c_str());
    return 1;
  }
  std::printf("[finish_reason: %s, usage: %s]\n", finish_reason.c_str(),
              usage.is_null() ? "n/a" : usage.dump().c_str());
  return 0;
}

}  // namespace moemesh::cli
