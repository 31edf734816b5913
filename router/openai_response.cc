// ResponseBuilder: SequenceEvents -> OpenAI streaming chunks and response bodies.
#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/text/utf8.h"
#include "router/openai_api.h"

namespace moemesh::router {

using nlohmann::json;
using text::TokenId;

struct ResponseBuilder::Choice {
  Choice(int index, int prompt, const text::Tokenizer& tokenizer, text::OutputOptions options)
      : index(index), prompt(prompt), processor(tokenizer, std::move(options)) {}
  struct Logprob {
    TokenId id;
    float logprob;
    std::vector<std::pair<TokenId, float>> top;
    int64_t text_offset;
  };
  int index;                           // the choice's index in the response
  int prompt;                          // which of the request's prompts it continues
  text::OutputProcessor processor;
  text::CompletedOutput output;        // joined deltas
  std::vector<TokenId> token_ids;      // consumed generated ids
  size_t token_ids_sent = 0;           // streaming: ids already attached to a chunk
  std::vector<Logprob> logprobs;
  size_t logprobs_sent = 0;
  int64_t text_offset = 0;             // completions logprobs text_offset
  double cumulative_logprob = 0;       // for best_of
  bool prompt_ids_sent = false;
  bool finished = false;
};

ResponseBuilder::ResponseBuilder(const PreparedRequest& request, const ModelInfo& model,
                                 std::string id, int64_t created)
    : request_(request),
      model_(model),
      id_(std::move(id)),
      created_(created),
      chat_(request.api.endpoint == Endpoint::kChatCompletions) {
  const int per_prompt = request.sequences_per_prompt();
  for (size_t i = 0; i < request.sequences.size(); ++i) {
    text::OutputOptions options = request.output_options;
    options.tool_call_id_prefix = absl::StrCat(options.tool_call_id_prefix, i, "_");
    const int index = static_cast<int>(i);
    choices_.push_back(
        std::make_unique<Choice>(index, index / per_prompt, *model.tokenizer, std::move(options)));
    // echo: the prompt's text starts the choice's text.
    if (!chat_ && request.api.echo) choices_.back()->output.content = request.prompts[index / per_prompt].text;
  }
}

ResponseBuilder::~ResponseBuilder() = default;

bool ResponseBuilder::finished(int choice) const {
  return choice >= 0 && choice < static_cast<int>(choices_.size()) && choices_[choice]->finished;
}

std::string ResponseBuilder::finish_reason(int choice) const {
  if (!finished(choice)) return "";
  return std::string(text::FinishReasonName(choices_[choice]->output.finish_reason));
}

bool ResponseBuilder::all_finished() const {
  for (const auto& c : choices_) {
    if (!c->finished) return false;
  }
  return true;
}

int64_t ResponseBuilder::prompt_tokens() const {
  int64_t total = 0;
  for (const PreparedPrompt& prompt : request_.prompts) total += static_cast<int64_t>(prompt.ids.size());
  return total;
}

int64_t ResponseBuilder::completion_tokens() const {
  int64_t total = 0;
  for (const auto& c : choices_) total += static_cast<int64_t>(c->token_ids.size());
  return total;
}

json ResponseBuilder::Usage() const {
  return json{{"prompt_tokens", prompt_tokens()},
              {"completion_tokens", completion_tokens()},
              {"total_tokens", prompt_tokens() + completion_tokens()}};
}

json ResponseBuilder::ChunkBase() const {
  json chunk = {{"id", id_},
                {"object", chat_ ? "chat.completion.chunk" : "text_completion"},
                {"created", created_},
                {"model", request_.api.model},
                {"system_fingerprint", model_.system_fingerprint}};
  if (request_.api.include_usage) chunk["usage"] = nullptr;
  return chunk;
}

namespace {

json TokenBytesJson(std::string_view bytes) {
  json out = json::array();
  for (unsigned char c : bytes) out.push_back(static_cast<int>(c));
  return out;
}

json ToolCallsJson(const std::vector<text::ToolCall>& calls) {
  json out = json::array();
  for (const text::ToolCall& call : calls) {
    out.push_back({{"index", call.index},
                   {"id", call.id},
                   {"type", call.type.empty() ? "function" : call.type},
                   {"function", {{"name", call.name}, {"arguments", call.arguments}}}});
  }
  return out;
}

}  // namespace

std::vector<std::string> ResponseBuilder::StartChunks() {
  std::vector<std::string> chunks;
  if (!chat_) {
    // echo: the prompt's text is each choice's first text.
    if (!request_.api.echo) return chunks;
    for (auto& c : choices_) {
      text::OutputDelta delta;
      delta.content = request_.prompts[static_cast<size_t>(c->prompt)].text;
      chunks.push_back(Chunk(*c, &delta, /*final=*/false));
    }
    return chunks;
  }
  for (auto& c : choices_) {
    json chunk = ChunkBase();
    json choice = {{"index", c->index},
                   {"delta", {{"role", "assistant"}, {"content", ""}}},
                   {"logprobs", nullptr},
                   {"finish_reason", nullptr}};
    if (request_.api.return_token_ids) {
      choice["prompt_token_ids"] = request_.prompts[static_cast<size_t>(c->prompt)].ids;
      c->prompt_ids_sent = true;
    }
    chunk["choices"] = json::array({std::move(choice)});
    chunks.push_back(DumpJson(chunk));
  }
  return chunks;
}

std::string ResponseBuilder::Chunk(Choice& c, const text::OutputDelta* delta, bool final) {
  json chunk = ChunkBase();
  json choice = {{"index", c.index}};
  if (chat_) {
    json d = json::object();
    if (delta) {
      if (!delta->reasoning_content.empty()) d["reasoning_content"] = delta->reasoning_content;
      if (!delta->content.empty()) d["content"] = delta->content;
      if (!delta->tool_calls.empty()) d["tool_calls"] = ToolCallsJson(delta->tool_calls);
    }
    choice["delta"] = std::move(d);
  } else {
    choice["text"] = delta ? delta->content + delta->reasoning_content : std::string();
  }
  // Pending logprobs and token ids go with the first chunk after they arrived.
  choice["logprobs"] = nullptr;
  if (request_.api.logprobs) {
    choice["logprobs"] = EntriesJson(c, c.logprobs_sent, c.logprobs.size());
    c.logprobs_sent = c.logprobs.size();
  }
  choice["finish_reason"] =
      final ? json(std::string(text::FinishReasonName(c.output.finish_reason))) : json(nullptr);
  if (request_.api.return_token_ids) {
    if (!c.prompt_ids_sent) {
      choice["prompt_token_ids"] = request_.prompts[static_cast<size_t>(c.prompt)].ids;
      c.prompt_ids_sent = true;
    }
    choice["token_ids"] = std::vector<TokenId>(c.token_ids.begin() + c.token_ids_sent, c.token_ids.end());
    c.token_ids_sent = c.token_ids.size();
  }
  chunk["choices"] = json::array({std::move(choice)});
  return DumpJson(chunk);
}


json ResponseBuilder::EntriesJson(const Choice& c, size_t begin, size_t end) const {
  const text::Tokenizer& tokenizer = *model_.tokenizer;
  auto token_text = [&](TokenId id) { return text::Utf8Lossy(tokenizer.TokenBytes(id)); };
  if (chat_) {
    json content = json::array();
    for (size_t i = begin; i < end; ++i) {
      const Choice::Logprob& lp = c.logprobs[i];
      json top = json::array();
      for (const auto& [id, logprob] : lp.top) {
        top.push_back({{"token", token_text(id)},
                       {"logprob", logprob},
                       {"bytes", TokenBytesJson(tokenizer.TokenBytes(id))}});
      }
      content.push_back({{"token", token_text(lp.id)},
                         {"logprob", lp.logprob},
                         {"bytes", TokenBytesJson(tokenizer.TokenBytes(lp.id))},
                         {"top_logprobs", std::move(top)}});
    }
    return json{{"content", std::move(content)}};
  }
  json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(),
       offsets = json::array();
  for (size_t i = begin; i < end; ++i) {
    const Choice::Logprob& lp = c.logprobs[i];
    tokens.push_back(token_text(lp.id));
    token_logprobs.push_back(lp.logprob);
    offsets.push_back(lp.text_offset);
    if (request_.api.top_logprobs > 0) {
      json top = json::object();
      for (const auto& [id, logprob] : lp.top) top[token_text(id)] = logprob;
      top_logprobs.push_back(std::move(top));
    } else {
      top_logprobs.push_back(nullptr);
    }
  }
  return json{{"tokens", std::move(tokens)},
              {"token_logprobs", std::move(token_logprobs)},
              {"top_logprobs", std::move(top_logprobs)},
              {"text_offset", std::move(offsets)}};
}

ResponseBuilder::EventResult ResponseBuilder::OnEvent(int choice_index,
                                                      const moemesh::v1::SequenceEvent& event) {
  EventResult result;
  if (choice_index < 0 || choice_index >= static_cast<int>(choices_.size())) return result;
  Choice& c = *choices_[choice_index];
  if (c.finished) return result;
  using Event = moemesh::v1::SequenceEvent;
  if (event.finish_reason() == Event::ERROR) {
    result.error = ApiErrorFromHttpStatus(
        static_cast<int>(event.error_code()),
        event.error().empty() ? "the attention node failed the sequence" : event.error());
    return result;
  }
  if (event.finish_reason() == Event::ABORTED) {
    result.error = ApiErrorFromHttpStatus(503, "the attention node aborted the sequence");
    return result;
  }
  std::vector<text::OutputDelta> deltas;
  auto append = [&deltas](std::vector<text::OutputDelta> more) {
    for (auto& d : more) deltas.push_back(std::move(d));
  };
  const size_t max_tokens =
      static_cast<size_t>(request_.prompts[static_cast<size_t>(c.prompt)].max_tokens);
  bool at_limit = false;
  for (const auto& token : event.tokens()) {
    if (c.processor.finished() || c.token_ids.size() >= max_tokens) break;
    const TokenId id = static_cast<TokenId>(token.token_id());
    c.token_ids.push_back(id);
    c.cumulative_logprob += token.logprob();
    if (request_.api.logprobs) {
      Choice::Logprob lp{id, token.logprob(), {}, c.text_offset};
      for (const auto& top : token.top_logprobs()) {
        if (lp.top.size() >= static_cast<size_t>(request_.api.top_logprobs)) break;
        lp.top.emplace_back(static_cast<TokenId>(top.token_id()), top.logprob());
      }
      c.text_offset += static_cast<int64_t>(text::Utf8Lossy(model_.tokenizer->TokenBytes(id)).size());
      c.logprobs.push_back(std::move(lp));
    }
    append(c.processor.Add(id));
  }
  at_limit = !c.processor.finished() && c.token_ids.size() >= max_tokens;
  text::FinishReason reason = text::FinishReason::kNone;
  if (c.processor.finished()) {
    reason = c.processor.finish_reason();
    result.cancel_sequence = event.finish_reason() == Event::NOT_FINISHED;
  } else if (event.finish_reason() == Event::STOP) {
    // EOS or a stop id the node did not send as a token: end the processor the same way.
    if (!request_.output_options.stop_token_ids.empty()) {
      append(c.processor.Add(request_.output_options.stop_token_ids.front()));
    }
    if (c.processor.finished()) {
      reason = c.processor.finish_reason();
    } else {
      append(c.processor.Finish());
      reason = c.processor.finish_reason() == text::FinishReason::kToolCalls
                   ? text::FinishReason::kToolCalls
                   : text::FinishReason::kStop;
    }
  } else if (event.finish_reason() == Event::LENGTH || at_limit) {
    append(c.processor.Finish());
    reason = text::FinishReason::kLength;
    result.cancel_sequence = event.finish_reason() == Event::NOT_FINISHED;
  }
  if (!request_.api.parallel_tool_calls) {
    // parallel_tool_calls false: only the choice's first call is kept.
    for (auto& d : deltas) {
      std::erase_if(d.tool_calls, [](const text::ToolCall& call) { return call.index > 0; });
    }
  }
  for (const auto& d : deltas) {
    c.output.reasoning_content += d.reasoning_content;
    c.output.content += d.content;
    c.output.tool_calls.insert(c.output.tool_calls.end(), d.tool_calls.begin(), d.tool_calls.end());
  }
  if (reason != text::FinishReason::kNone) {
    c.finished = true;
    c.output.finish_reason = reason;
    result.choice_finished = true;
  }
  if (request_.api.stream) {
    for (const auto& d : deltas) {
      if (d.reasoning_content.empty() && d.content.empty() && d.tool_calls.empty()) continue;
      result.chunks.push_back(Chunk(c, &d, /*final=*/false));
    }
    if (c.finished) result.chunks.push_back(Chunk(c, nullptr, /*final=*/true));
  }
  return result;
}

ApiError ResponseBuilder::OnStreamEnd(int choice, const absl::Status& status) {
  if (status.ok()) {
    return ApiErrorFromHttpStatus(502, "the attention node ended the sequence without finishing it");
  }
  ApiError error = ToApiError(status);
  if (error.http_status < 500) error = ApiErrorFromHttpStatus(503, error.message);
  error.message = absl::StrCat("attention node: ", error.message);
  return error;
}

std::vector<std::string> ResponseBuilder::EndChunks() {
  std::vector<std::string> chunks;
  if (!request_.api.include_usage) return chunks;
  json chunk = ChunkBase();
  chunk["choices"] = json::array();
  chunk["usage"] = Usage();
  chunks.push_back(DumpJson(chunk));
  return chunks;
}

std::vector<const ResponseBuilder::Choice*> ResponseBuilder::ReturnedChoices() const {
  std::vector<const Choice*> returned;
  const int per_prompt = request_.sequences_per_prompt();
  const int n = request_.api.n;
  for (size_t first = 0; first < choices_.size(); first += static_cast<size_t>(per_prompt)) {
    std::vector<const Choice*> group;
    for (size_t i = first; i < first + static_cast<size_t>(per_prompt) && i < choices_.size(); ++i) {
      group.push_back(choices_[i].get());
    }
    if (per_prompt > n) {
      // best_of: the n sequences with the highest cumulative logprob (ties: the earlier one).
      std::stable_sort(group.begin(), group.end(), [](const Choice* a, const Choice* b) {
        return a->cumulative_logprob > b->cumulative_logprob;
      });
      group.resize(static_cast<size_t>(n));
    }
    returned.insert(returned.end(), group.begin(), group.end());
  }
  return returned;
}

json ResponseBuilder::Response() const {
  json choices = json::array();
  int64_t completion = 0;
  const std::vector<const Choice*> returned = ReturnedChoices();
  for (size_t index = 0; index < returned.size(); ++index) {
    const Choice* c = returned[index];
    completion += static_cast<int64_t>(c->token_ids.size());
    json choice = {{"index", index}};
    const text::CompletedOutput& out = c->output;
    if (chat_) {
      json message = {{"role", "assistant"}};
      message["content"] = out.content.empty() && !out.tool_calls.empty() ? json(nullptr)
                                                                            : json(out.content);
      if (request_.output_options.parse_reasoning) {
        message["reasoning_content"] =
            out.reasoning_content.empty() ? json(nullptr) : json(out.reasoning_content);
      }
      if (!out.tool_calls.empty()) message["tool_calls"] = ToolCallsJson(out.tool_calls);
      choice["message"] = std::move(message);
    } else {
      choice["text"] = out.content + out.reasoning_content;
    }
    choice["logprobs"] =
        request_.api.logprobs ? EntriesJson(*c, 0, c->logprobs.size()) : json(nullptr);
    choice["finish_reason"] = std::string(text::FinishReasonName(out.finish_reason));
    if (request_.api.return_token_ids) {
      choice["prompt_token_ids"] = request_.prompts[static_cast<size_t>(c->prompt)].ids;
      choice["token_ids"] = c->token_ids;
    }
    choices.push_back(std::move(choice));
  }
  return json{{"id", id_},
              {"object", chat_ ? "chat.completion" : "text_completion"},
              {"created", created_},
              {"model", request_.api.model},
              {"system_fingerprint", model_.system_fingerprint},
              {"choices", std::move(choices)},
              {"usage", {{"prompt_tokens", prompt_tokens()},
                         {"completion_tokens", completion},
                         {"total_tokens", prompt_tokens() + completion}}}};
}

}  // namespace moemesh::router
