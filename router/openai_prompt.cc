// PrepareRequest: a validated request -> prompt text and ids (through the chat template for
// chat), context-length checks, output options and the sequences to run.
#include <utility>

#include "absl/strings/str_cat.h"
#include "router/openai_internal.h"

namespace moemesh::router {
namespace {

using internal::BadParam;
using text::TokenId;

// The chat prompt: the template rendered over the messages (as the client sent them, see
// ApiRequest::messages), the tools and the request's chat_template_kwargs.
absl::StatusOr<std::string> RenderChatPrompt(const ApiRequest& request, const ModelInfo& model) {
  text::ChatInput input;
  input.messages = request.messages;
  input.tools = request.tools;
  input.add_generation_prompt = request.add_generation_prompt;
  input.kwargs = request.chat_template_kwargs;
  absl::StatusOr<std::string> rendered = text::RenderChat(model.chat_template, input);
  if (!rendered.ok()) return BadParam("messages", std::string(rendered.status().message()));
  return rendered;
}

// Checks the prompt against the vocabulary and the context; resolves max_tokens.
absl::Status FinishPrompt(const ApiRequest& request, const ModelInfo& model, const char* param,
                          PreparedPrompt* prompt) {
  if (prompt->ids.empty()) return BadParam(param, "the prompt is empty");
  for (TokenId id : prompt->ids) {
    if (id < 0 || id >= model.vocab_size) {
      return BadParam(param, absl::StrCat("prompt token id ", id, " is outside the vocabulary [0, ",
                                          model.vocab_size, ")"));
    }
  }
  const int64_t prompt_len = static_cast<int64_t>(prompt->ids.size());
  if (request.max_tokens) {
    if (prompt_len + *request.max_tokens > model.max_model_len) {
      // The prompt alone leaving no room is the prompt's fault, not max_tokens'.
      return BadParam(prompt_len >= model.max_model_len ? param : "max_tokens",
                      absl::StrCat("This model's maximum context length is ", model.max_model_len,
                                   " tokens. However, you requested ", prompt_len + *request.max_tokens,
                                   " tokens (", prompt_len, " in the prompt, ", *request.max_tokens,
                                   " in the completion). Please reduce the prompt or max_tokens."));
    }
    prompt->max_tokens = *request.max_tokens;
  } else {
    if (prompt_len >= model.max_model_len) {
      return BadParam(param, absl::StrCat("This model's maximum context length is ",
                                          model.max_model_len, " tokens. However, the prompt has ",
                                          prompt_len, " tokens, leaving no room for the completion."));
    }
    prompt->max_tokens = model.max_model_len - prompt_len;
  }
  if (request.min_tokens > prompt->max_tokens) {
    return BadParam("min_tokens", absl::StrCat("'min_tokens' (", request.min_tokens,
                                               ") is more than the completion can hold (",
                                               prompt->max_tokens, " tokens)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PreparedRequest> PrepareRequest(ApiRequest request, const ModelInfo& model,
                                               std::string_view request_id) {
  PreparedRequest prepared;
  const bool chat = request.endpoint == Endpoint::kChatCompletions;
  if (chat) {
    PreparedPrompt prompt;
    absl::StatusOr<std::string> rendered = RenderChatPrompt(request, model);
    if (!rendered.ok()) return rendered.status();
    prompt.text = *std::move(rendered);
    prompt.ids = model.tokenizer->Encode(prompt.text);
    if (auto status = FinishPrompt(request, model, "messages", &prompt); !status.ok()) return status;
    prepared.prompts.push_back(std::move(prompt));
  } else {
    for (size_t i = 0; i < request.prompts.size(); ++i) {
      const CompletionPrompt& given = request.prompts[i];
      PreparedPrompt prompt;
      if (given.text) {
        prompt.text = *given.text;
        if (model.bos_token_id) prompt.ids.push_back(*model.bos_token_id);
        std::vector<TokenId> ids = model.tokenizer->Encode(prompt.text);
        prompt.ids.insert(prompt.ids.end(), ids.begin(), ids.end());
      } else {
        prompt.ids = given.ids;
        prompt.text = model.tokenizer->Decode(prompt.ids, /*skip_special_tokens=*/false);
      }
      const std::string param = request.prompts.size() == 1 ? "prompt" : absl::StrCat("prompt[", i, "]");
      if (auto status = FinishPrompt(request, model, param.c_str(), &prompt); !status.ok()) {
        return status;
      }
      prepared.prompts.push_back(std::move(prompt));
    }
  }

  text::OutputOptions& options = prepared.output_options;
  options.parse_reasoning = chat && model.parse_reasoning;
  options.starts_in_reasoning =
      options.parse_reasoning && text::PromptEndsInReasoning(prepared.prompts[0].text);
  options.parse_tool_calls = chat && request.tools_offered;
  options.stop_strings = request.stop;
  options.stop_token_ids.clear();
  if (!request.ignore_eos) options.stop_token_ids = model.eos_token_ids;
  options.stop_token_ids.insert(options.stop_token_ids.end(), request.stop_token_ids.begin(),
                                request.stop_token_ids.end());
  const std::string id(request_id);
  options.tool_call_id_prefix = absl::StrCat("call_", id.substr(id.find('-') + 1), "_");

  int index = 0;
  for (const PreparedPrompt& prompt : prepared.prompts) {
    for (int i = 0; i < request.best_of; ++i, ++index) {
      moemesh::v1::AddSequenceRequest sequence;
      sequence.set_sequence_id(absl::StrCat(id, "-", index));
      sequence.mutable_prompt_token_ids()->Assign(prompt.ids.begin(), prompt.ids.end());
      sequence.set_max_new_tokens(static_cast<uint32_t>(prompt.max_tokens));
      auto* sampling = sequence.mutable_sampling();
      sampling->set_temperature(request.temperature);
      sampling->set_top_p(request.top_p);
      sampling->set_top_k(request.top_k);
      if (request.seed) {
        sampling->set_has_seed(true);
        sampling->set_seed(*request.seed + static_cast<uint64_t>(i));
      }
      for (const auto& [token, bias] : request.logit_bias) {
        auto* entry = sampling->add_logit_bias();
        entry->set_token_id(static_cast<uint32_t>(token));
        entry->set_bias(bias);
      }
      sampling->set_min_tokens(static_cast<uint32_t>(request.min_tokens));
      for (TokenId stop : request.stop_token_ids) sequence.add_stop_token_ids(static_cast<uint32_t>(stop));
      sequence.set_ignore_eos(request.ignore_eos);
      // best_of ranks sequences by their cumulative logprob, so the node must report it.
      sequence.set_logprobs(request.logprobs || request.best_of > request.n);
      sequence.set_top_logprobs(static_cast<uint32_t>(request.top_logprobs));
      prepared.sequences.push_back(std::move(sequence));
    }
  }
  prepared.api = std::move(request);
  return prepared;
}

}  // namespace moemesh::router
