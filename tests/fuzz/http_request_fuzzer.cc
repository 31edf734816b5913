// libFuzzer target: the router's request path without networking, as a body arrives:
// body -> ParseRequest (limits, JSON, validation) -> PrepareRequest (chat template rendering,
// tokenization, context checks). The first byte picks the endpoint. Beyond "no crash": a
// refusal is a 4xx with an error body, and a prepared request holds one sequence per choice
// whose ids are the prompt's.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "router/openai_api.h"

namespace {

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "fuzz check failed: %s\n", what);
    std::abort();
  }
}

const moemesh::router::ModelInfo& Model() {
  static const moemesh::router::LoadedModel* model = [] {
    auto loaded = moemesh::router::LoadModel(MOEMESH_FUZZ_MODEL_DIR, "tiny-r1", 4096);
    Check(loaded.ok(), "the fuzz model loads");
    return loaded->release();
  }();
  return model->info;
}

}  // namespace

// The model (tokenizer, chat template) loads once, before the per-input timeout starts.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  Model();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moemesh::router;
  if (size == 0) return 0;
  const Endpoint endpoint = data[0] % 2 == 0 ? Endpoint::kChatCompletions : Endpoint::kCompletions;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  const ModelInfo& model = Model();
  absl::StatusOr<ApiRequest> parsed = ParseRequest(endpoint, body, model);
  if (!parsed.ok()) {
    ApiError error = ToApiError(parsed.status());
    Check(error.http_status >= 400 && error.http_status < 500, "a bad body is a 4xx");
    Check(!ErrorBody(error).empty(), "an error has a body");
    return 0;
  }
  absl::StatusOr<PreparedRequest> prepared = PrepareRequest(*std::move(parsed), model, "fuzz-0");
  if (!prepared.ok()) {
    const int status = ToApiError(prepared.status()).http_status;
    Check(status >= 400 && status < 500, "a request that cannot be prepared is a 4xx");
    return 0;
  }
  const size_t per_prompt = static_cast<size_t>(prepared->sequences_per_prompt());
  Check(prepared->sequences.size() == prepared->prompts.size() * per_prompt,
        "best_of sequences per prompt");
  for (size_t s = 0; s < prepared->sequences.size(); ++s) {
    const PreparedPrompt& prompt = prepared->prompts[s / per_prompt];
    Check(prepared->sequences[s].prompt_token_ids_size() == static_cast<int>(prompt.ids.size()),
          "every sequence carries its prompt");
  }
  for (const PreparedPrompt& prompt : prepared->prompts) {
    Check(static_cast<int64_t>(prompt.ids.size()) + prompt.max_tokens <= model.max_model_len,
          "prompt + max_tokens fit the context");
  }
  return 0;
}
