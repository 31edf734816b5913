// The text-layer subcommands (core/text):
//   moemesh tokenize --tokenizer DIR      text on stdin -> JSON array of token ids
//   moemesh detokenize --tokenizer DIR    JSON array of token ids on stdin -> text
//   moemesh render-chat --tokenizer DIR [--chat-template FILE] [--no-generation-prompt]
//                                         messages (or {messages, tools, ...}) -> prompt text
// Output is written exactly, with no added newline.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <optional>
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
      "usage: moemesh render-chat --tokenizer DIR [--chat-template FILE] [--no-generation-prompt]\n"
      "                           < request.json\n"
      "  Prints the prompt text the chat template renders (no newline added). stdin is either\n"
      "  a JSON array of OpenAI messages or an object {\"messages\", \"tools\",\n"
      "  \"add_generation_prompt\", \"chat_template_kwargs\"}; messages reach the template as\n"
      "  given. The template is DIR/tokenizer_config.json's chat_template unless --chat-template\n"
      "  names a Jinja file. A template error exits 1 with the error on stderr.\n";
  ParsedArguments parsed;
  if (int code = ParseTextArguments("render-chat", kUsage, arguments,
                                    {{"no-generation-prompt", true}, {"chat-template"}}, &parsed);
      code >= 0) {
    return code;
  }
  const std::optional<std::string> template_file = parsed.Get("chat-template");
  absl::StatusOr<text::ChatTemplate> chat_template =
      text::LoadChatTemplate(*parsed.Get("tokenizer"), template_file.value_or(""));
  if (!chat_template.ok()) {
    std::fprintf(stderr, "render-chat: %s\n",
                 std::string(chat_template.status().message()).c_str());
    return 1;
  }
  const nlohmann::ordered_json request = nlohmann::ordered_json::parse(ReadStdin(), nullptr, false);
  text::ChatInput input;
  input.add_generation_prompt = !parsed.Has("no-generation-prompt");
  if (request.is_array()) {
    input.messages = request;
  } else if (request.is_object()) {
    if (request.contains("messages")) input.messages = request["messages"];
    if (request.contains("tools")) input.tools = request["tools"];
    if (request.contains("add_generation_prompt")) {
      if (!request["add_generation_prompt"].is_boolean()) {
        std::fputs("render-chat: add_generation_prompt must be a boolean\n", stderr);
        return 1;
      }
      input.add_generation_prompt = request["add_generation_prompt"].get<bool>();
    }
    if (request.contains("chat_template_kwargs") && !request["chat_template_kwargs"].is_null()) {
      input.kwargs = request["chat_template_kwargs"];
    }
  } else {
    std::fputs("render-chat: stdin is not a JSON array of messages or a JSON object\n", stderr);
    return 1;
  }
  absl::StatusOr<std::string> prompt = text::RenderChat(*chat_template, input);
  if (!prompt.ok()) {
    std::fprintf(stderr, "render-chat: %s\n", std::string(prompt.status().message()).c_str());
    return 1;
  }
  Write(*prompt);
  return 0;
}

}  // namespace moemesh::cli
