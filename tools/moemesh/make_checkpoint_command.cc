// `moemesh make-checkpoint --preset NAME --seed S [--shard-bytes N] [--gate-skew G]
//                          [--tokenizer-from DIR] OUT_DIR`
// Writes a random DeepSeek-V3-shaped FP8 checkpoint (see core/checkpoint/synthetic_checkpoint.h).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_join.h"
#include "core/checkpoint/sparse_checkpoint.h"
#include "core/checkpoint/synthetic_checkpoint.h"
#include "tools/moemesh/arguments.h"
#include "tools/moemesh/commands.h"

namespace moemesh::cli {
namespace {

constexpr char kUsage[] =
    "usage: moemesh make-checkpoint --preset NAME [--seed S] [--shard-bytes N]\n"
    "                               [--gate-skew G] [--tokenizer-from DIR] [--sparse] OUT_DIR\n"
    "  --preset          model shape: %s\n"
    "  --seed            random seed (default 0); the same seed writes the same bytes\n"
    "  --shard-bytes     data bytes per shard before a new one starts (default: per preset)\n"
    "  --gate-skew       make some routed experts hot, different ones per layer (default 0 =\n"
    "                    off): adds G / (rank + 1) to the gate bias of the expert at that rank\n"
    "                    of a random order per layer (tiny preset: the hottest expert gets\n"
    "                    ~45%% of rows at 0, ~65%% at 0.6, ~90%% at 1; uniform is 25%%)\n"
    "  --tokenizer-from  copy tokenizer.json and tokenizer_config.json from DIR\n"
    "  --sparse          the full layout (headers, index, real file sizes) with every tensor's\n"
    "                    data a hole reading as zeros: a few MB of disk (deepseek-v3-671b needs it)\n"
    "OUT_DIR must not exist or be empty.\n";

void PrintUsage(FILE* out) {
  std::fprintf(out, kUsage, absl::StrJoin(checkpoint::CheckpointPresetNames(), ", ").c_str());
}

}  // namespace

int RunMakeCheckpoint(const Arguments& arguments) {
  namespace fs = std::filesystem;
  absl::StatusOr<ParsedArguments> parsed = ParseArguments(
      arguments, {{"preset"}, {"seed"}, {"shard-bytes"}, {"gate-skew"}, {"tokenizer-from"},
                  {"sparse", true}, {"help", true}});
  if (!parsed.ok()) {
    std::fprintf(stderr, "make-checkpoint: %s\n", std::string(parsed.status().message()).c_str());
    PrintUsage(stderr);
    return 2;
  }
  if (parsed->Has("help")) {
    PrintUsage(stdout);
    return 0;
  }
  if (!parsed->Has("preset") || parsed->positionals().size() != 1) {
    PrintUsage(stderr);
    return 2;
  }
  absl::StatusOr<checkpoint::CheckpointPreset> preset =
      checkpoint::FindCheckpointPreset(*parsed->Get("preset"));
  absl::StatusOr<int64_t> seed = parsed->GetInt("seed", 0);
  absl::StatusOr<int64_t> shard_bytes =
      preset.ok() ? parsed->GetInt("shard-bytes", static_cast<int64_t>(preset->default_shard_bytes))
                  : absl::StatusOr<int64_t>(0);
  absl::StatusOr<double> gate_skew = parsed->GetDouble("gate-skew", 0.0);
  for (const absl::Status& status :
       {preset.status(), seed.status(), shard_bytes.status(), gate_skew.status()}) {
    if (!status.ok()) {
      std::fprintf(stderr, "make-checkpoint: %s\n", std::string(status.message()).c_str());
      return 2;
    }
  }
  if (*shard_bytes <= 0 || *seed < 0) {
    std::fprintf(stderr, "make-checkpoint: --shard-bytes must be positive, --seed non-negative\n");
    return 2;
  }
  if (!std::isfinite(*gate_skew) || *gate_skew < 0) {
    std::fprintf(stderr, "make-checkpoint: --gate-skew must be a number >= 0\n");
    return 2;
  }
  const bool sparse = parsed->Has("sparse");
  if (preset->sparse_only && !sparse) {
    std::fprintf(stderr, "make-checkpoint: preset '%s' is %llu bytes: write it with --sparse\n",
                 preset->name.c_str(),
                 static_cast<unsigned long long>(checkpoint::CheckpointDataBytes(preset->config)));
    return 2;
  }
  if (sparse && *gate_skew != 0) {
    std::fprintf(stderr, "make-checkpoint: --gate-skew needs values; --sparse writes none\n");
    return 2;
  }
  const std::string out_dir = parsed->positionals()[0];
  const auto start = std::chrono::steady_clock::now();
  const uint64_t data_bytes = checkpoint::CheckpointDataBytes(preset->config);
  const int sparse_shards = static_cast<int>(
      (data_bytes + static_cast<uint64_t>(*shard_bytes) - 1) / static_cast<uint64_t>(*shard_bytes));
  if (absl::Status status =
          sparse ? checkpoint::WriteSparseCheckpoint(preset->config, sparse_shards, out_dir)
                 : checkpoint::WriteRandomCheckpoint(preset->config, static_cast<uint64_t>(*seed),
                                                     static_cast<uint64_t>(*shard_bytes), out_dir,
                                                     *gate_skew);
      !status.ok()) {
    std::fprintf(stderr, "make-checkpoint: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  if (std::optional<std::string> from = parsed->Get("tokenizer-from")) {
    for (const char* file : {"tokenizer.json", "tokenizer_config.json"}) {
      std::error_code error;
      fs::copy_file(fs::path(*from) / file, fs::path(out_dir) / file,
                    fs::copy_options::overwrite_existing, error);
      if (error) {
        std::fprintf(stderr, "make-checkpoint: cannot copy %s from %s: %s\n", file, from->c_str(),
                     error.message().c_str());
        return 1;
      }
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "make-checkpoint: wrote preset '%s' (%llu data bytes%s) to %s in %.1f s\n",
               preset->name.c_str(), static_cast<unsigned long long>(data_bytes),
               sparse ? ", sparse: zeros" : "", out_dir.c_str(), seconds);
  return 0;
}

}  // namespace moemesh::cli
