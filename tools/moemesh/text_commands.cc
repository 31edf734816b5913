// The text-layer subcommands (core/text):
//   moemesh tokenize --tokenizer DIR      text on stdin -> JSON array of token ids
//   moemesh detokenize --tokenizer DIR    JSON array of token ids on stdin -> text
//   moemesh render-chat --tokenizer DIR [--no-generation-prompt]
//                                         JSON array of OpenAI messages -> prompt text
// Output is written exactly, with no added newline.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "core/text/chat_template.h"
#include "core/text/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tools/moemesh/arguments.h"
#include "tools/moemesh/commands.h"

namespace moemesh::cli {
namespace {

std::string ReadStdin() {
  std::cin >> std::noskipws;
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

void Write(const std::string& text) { std::fwrite(text.data(), 1, text.size(), stdout); }

// Parses --tokenizer DIR (and the command's flags); prints usage / errors. Returns the exit
// code to stop with, or -1 to go on.
int ParseTextArguments(const char* command, const char* usage, const Arguments& arguments,
                       std::vector<OptionSpec> specs, ParsedArguments* parsed) {
  specs.push_back({"tokenizer"});
  specs.push_back({"help", true});
  absl::StatusOr<ParsedArguments> result = ParseArguments(arguments, specs);
  if (!result.ok()) {
    std::fprintf(stderr, "%s: %s\n%s", command, std::string(result.status().message()).c_str(),
                 usage);
    return 2;
  }
  if (result->Has("help")) {
    std::fputs(usage, stdout);
    return 0;
  }
  if (!result->Get("tokenizer") || !result->positionals().empty()) {
    std::fputs(usage, stderr);
    return 2;
  }
  *parsed = std::move(*result);
  return -1;
}

absl::StatusOr<std::unique_ptr<text::Tokenizer>> LoadTokenizer(const ParsedArguments& parsed) {
  return text::Tokenizer::FromFile(*parsed.Get("tokenizer"));
}

}  // namespace

int RunTokenize(const Arguments& arguments) {
  constexpr char kUsage[] =
      "usage: moemesh tokenize --tokenizer DIR < text\n"
      "  Prints the token ids of stdin's text (no BOS added) as a JSON array; DIR holds\n"
      "  tokenizer.json (or give the file itself).\n";
  ParsedArguments parsed;
  if (int code = ParseTextArguments("tokenize", kUsage, arguments, {}, &parsed); code >= 0) {
    return code;
  }
  absl::StatusOr<std::unique_ptr<text::Tokenizer>> tokenizer = LoadTokenizer(parsed);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "tokenize: %s\n", std::string(tokenizer.status().message()).c_str());
    return 1;
  }
  Write(nlohmann::json((*tokenizer)->Encode(ReadStdin())).dump());
  return 0;
}

int RunDetokenize(const Arguments& arguments) {
  constexpr char kUsage[] =
      "usage: moemesh detokenize --tokenizer DIR [--skip-special-tokens] < ids.json\n"
      "  Prints the text of a JSON array of token ids; ids outside the vocabulary print\n"
      "  nothing.\n";
  ParsedArguments parsed;
  if (int code = ParseTextArguments("detokenize", kUsage, arguments,
                                    {{"skip-special-tokens", true}}, &parsed);
      code >= 0) {
    return code;
  }
  const nlohmann::json ids = nlohmann::json::parse(ReadStdin(), nullptr, false);
  std::vector<text::TokenId> token_ids;
  bool valid = ids.is_array();
  for (const nlohmann::json& id : valid ? ids : nlohmann::json::array()) {
    if (!id.is_number_integer()) {
      valid = false;
      break;
    }
    const int64_t value = id.get<int64_t>();
    // Out-of-range ids decode to nothing, like any id outside the vocabulary.
    token_ids.push_back(value < 0 || value > INT32_MAX ? -1 : static_cast<text::TokenId>(value));
  }
  if (!valid) {
    std::fputs("detokenize: stdin is not a JSON array of integer token ids\n", stderr);
    return 1;
  }
  absl::StatusOr<std::unique_ptr<text::Tokenizer>> tokenizer = LoadTokenizer(parsed);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "detokenize: %s\n", std::string(tokenizer.status().message()).c_str());
    return 1;
  }
  Write((*tokenizer)->Decode(token_ids, parsed.Has("skip-special-tokens")));
  return 0;
}

int RunRenderChat(const Arguments& arguments) {
  constexpr char kUsage[] =
      "usage: moemesh render-chat --tokenizer DIR [--no-generation-prompt] < messages.json\n"
      "  Prints the prompt text for a JSON array of OpenAI messages, rendered with the chat\n"
      "  template (DeepSeek-V3 or -R1) named by DIR/tokenizer_config.json.\n";
  ParsedArguments parsed;
  if (int code = ParseTextArguments("render-chat", kUsage, arguments,
                                    {{"no-generation-prompt", true}}, &parsed);
      code >= 0) {
    return code;
  }
  absl::StatusOr<text::ChatTemplate> chat_template =
      text::LoadChatTemplate(*parsed.Get("tokenizer"));
  if (!chat_template.ok()) {
    std::fprintf(stderr, "render-chat: %s\n",
                 std::string(chat_template.status().message()).c_str());
    return 1;
  }
  const nlohmann::json messages = nlohmann::json::parse(ReadStdin(), nullptr, false);
  if (messages.is_discarded()) {
    std::fputs("render-chat: stdin is not JSON\n", stderr);
    return 1;
  }
  absl::StatusOr<std::string> prompt =
      text::RenderChat(*chat_template, messages, !parsed.Has("no-generation-prompt"));
  if (!prompt.ok()) {
    std::fprintf(stderr, "render-chat: %s\n", std::string(prompt.status().message()).c_str());
    return 1;
  }
  Write(*prompt);
  return 0;
}

}  // namespace moemesh::cli
