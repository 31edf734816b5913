// `moemesh generate`: the single-process engine on token ids, printing JSON.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "core/checkpoint/checkpoint.h"
#include "core/kernels/cpu/threading.h"
#include "core/model/deepseek_model.h"
#include "core/model/expert_shard.h"
#include "core/model/generator.h"
#include "nlohmann/json.hpp"
#include "tools/moemesh/arguments.h"
#include "tools/moemesh/commands.h"

namespace moemesh::cli {
namespace {

constexpr char kUsage[] =
    "usage: moemesh generate --model DIR --prompt-ids ID,ID,... [--prompt-ids ...]\n"
    "                        [--max-new-tokens N] [--temperature T] [--top-p P] [--top-k K]\n"
    "                        [--seed S] [--ignore-eos] [--threads N] --json\n"
    "Runs the model in this process. Several --prompt-ids run together as one batch and print\n"
    "a JSON array; one prints a single object:\n"
    "  {\"prompt_ids\":[...], \"generated_ids\":[...], \"prefill_top\":[[id, logit], ...20]}\n";

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text) {
  std::vector<int32_t> ids;
  for (absl::string_view piece : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t id;
    if (!absl::SimpleAtoi(piece, &id)) {
      return absl::InvalidArgumentError("--prompt-ids: '" + std::string(piece) +
                                        "' is not a token id");
    }
    ids.push_back(id);
  }
  if (ids.empty()) return absl::InvalidArgumentError("--prompt-ids: no token ids given");
  return ids;
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "moemesh generate: %s\n", std::string(status.message()).c_str());
  return 1;
}

}  // namespace

int RunGenerate(const Arguments& arguments) {
  auto parsed = ParseArguments(arguments, {{"model"},
                                           {"prompt-ids"},
                                           {"max-new-tokens"},
                                           {"temperature"},
                                           {"top-p"},
                                           {"top-k"},
                                           {"seed"},
                                           {"ignore-eos", true},
                                           {"threads"},
                                           {"json", true},
                                           {"help", true}});
  if (!parsed.ok()) {
    std::fprintf(stderr, "moemesh generate: %s\n%s", std::string(parsed.status().message()).c_str(),
                 kUsage);
    return 2;
  }
  if (parsed->Has("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const std::optional<std::string> model_dir = parsed->Get("model");
  if (!model_dir || parsed->GetAll("prompt-ids").empty()) {
    std::fprintf(stderr, "moemesh generate: --model and --prompt-ids are required\n%s", kUsage);
    return 2;
  }
  auto max_new_tokens = parsed->GetInt("max-new-tokens", 16);
  auto temperature = parsed->GetDouble("temperature", 0.0);
  auto top_p = parsed->GetDouble("top-p", 1.0);
  auto top_k = parsed->GetInt("top-k", 0);
  auto seed = parsed->GetInt("seed", -1);
  auto threads = parsed->GetInt("threads", 0);
  for (const absl::Status& status : {max_new_tokens.status(), temperature.status(),
                                     top_p.status(), top_k.status(), seed.status(),
                                     threads.status()}) {
    if (!status.ok()) {
      std::fprintf(stderr, "moemesh generate: %s\n", std::string(status.message()).c_str());
      return 2;
    }
  }
  if (*max_new_tokens < 0) {
    std::fprintf(stderr, "moemesh generate: --max-new-tokens must be >= 0\n");
    return 2;
  }

  std::vector<model::GenerationRequest> requests;
  for (const std::string& text : parsed->GetAll("prompt-ids")) {
    auto ids = ParseIds(text);
    if (!ids.ok()) {
      std::fprintf(stderr, "moemesh generate: %s\n", std::string(ids.status().message()).c_str());
      return 2;
    }
    model::GenerationRequest request;
    request.prompt = *std::move(ids);
    request.max_new_tokens = static_cast<int>(*max_new_tokens);
    request.sampling.temperature = *temperature;
    request.sampling.top_p = *top_p;
    request.sampling.top_k = static_cast<int>(*top_k);
    if (*seed >= 0) request.sampling.seed = static_cast<uint64_t>(*seed) + requests.size();
    request.stop_at_eos = !parsed->Has("ignore-eos");
    requests.push_back(std::move(request));
  }

  // 0 keeps the libraries' default (a thread per core).
  kernels::SetComputeThreads(static_cast<int>(*threads));
  auto checkpoint = checkpoint::Checkpoint::Open(*model_dir);
  if (!checkpoint.ok()) return Fail(checkpoint.status());
  auto model = model::DeepseekModel::Load(**checkpoint);
  if (!model.ok()) return Fail(model.status());
  auto experts = model::ExpertShard::LoadAll(**checkpoint);
  if (!experts.ok()) return Fail(experts.status());
  auto results = model::Generate(**model, **experts, requests);
  if (!results.ok()) return Fail(results.status());

  nlohmann::json output = nlohmann::json::array();
  for (size_t i = 0; i < requests.size(); ++i) {
    nlohmann::json top = nlohmann::json::array();
    for (const auto& [id, logit] : (*results)[i].prefill_top) top.push_back({id, logit});
    output.push_back({{"prompt_ids", requests[i].prompt},
                      {"generated_ids", (*results)[i].generated},
                      {"prefill_top", top}});
  }
  std::cout << (requests.size() == 1 ? output[0] : output).dump() << "\n";
  return 0;
}

}  // namespace moemesh::cli
