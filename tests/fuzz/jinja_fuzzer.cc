// libFuzzer target: the Jinja engine (core/text/jinja_*) on hostile templates and inputs. The
// input is a template, optionally followed by a NUL byte and a JSON object of variables (else
// a small chat conversation is used). Beyond "no crash, no hang": compiling never throws past
// the Status boundary, a render stays within its limits, and rendering twice gives the same
// result (the engine keeps no state between renders). The limits are lower than the server's
// (20,000 steps, 64 KiB) so that loops that hit them cost little; what is checked is the same.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/text/jinja_template.h"
#include "nlohmann/json.hpp"

namespace {

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "fuzz check failed: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moemesh::text::jinja;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t split = input.find('\0');
  const std::string_view source = input.substr(0, split);
  nlohmann::ordered_json variables = {
      {"messages", {{{"role", "system"}, {"content", "S"}},
                    {{"role", "user"}, {"content", "Hi"}},
                    {{"role", "assistant"}, {"content", nullptr},
                     {"tool_calls", {{{"type", "function"},
                                      {"function", {{"name", "f"}, {"arguments", "{\"a\": 1}"}}}}}}},
                    {{"role", "tool"}, {"content", "r"}}}},
      {"tools", {{{"type", "function"}, {"function", {{"name", "f"}}}}}},
      {"add_generation_prompt", true},
      {"bos_token", "<s>"}};
  if (split != std::string_view::npos) {
    nlohmann::ordered_json given =
        nlohmann::ordered_json::parse(input.substr(split + 1), nullptr, /*allow_exceptions=*/false);
    if (given.is_object()) variables = std::move(given);
  }
  auto compiled = Template::Parse(source);
  if (!compiled.ok()) return 0;
  RenderOptions options;
  options.limits.max_output_bytes = 1 << 16;
  options.limits.max_steps = 20000;
  options.limits.max_call_depth = 64;
  options.now = 0;
  auto first = (*compiled)->Render(variables, options);
  auto second = (*compiled)->Render(variables, options);
  Check(first.ok() == second.ok(), "two renders disagree on success");
  if (first.ok()) {
    Check(*first == *second, "two renders disagree on the text");
    Check(first->size() <= options.limits.max_output_bytes, "output past its limit");
  }
  return 0;
}
