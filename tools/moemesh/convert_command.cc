// `moemesh convert --to bf16 IN_DIR OUT_DIR`: the BF16 cast of an FP8 checkpoint, as DeepSeek's
// inference/fp8_cast_bf16.py writes it (see core/checkpoint/bf16_cast.h).
#include <cstdio>
#include <string>

#include "core/checkpoint/bf16_cast.h"
#include "tools/moemesh/arguments.h"
#include "tools/moemesh/commands.h"

namespace moemesh::cli {
namespace {

constexpr char kUsage[] =
    "usage: moemesh convert --to bf16 IN_DIR OUT_DIR\n"
    "  Dequantizes every FP8 block weight of IN_DIR and writes it as BF16 to OUT_DIR (which\n"
    "  must not exist or be empty); drops weight_scale_inv and quantization_config.\n";

}  // namespace

int RunConvert(const Arguments& arguments) {
  absl::StatusOr<ParsedArguments> parsed = ParseArguments(arguments, {{"to"}, {"help", true}});
  if (!parsed.ok()) {
    std::fprintf(stderr, "convert: %s\n%s", std::string(parsed.status().message()).c_str(), kUsage);
    return 2;
  }
  if (parsed->Has("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (parsed->Get("to").has_value() && *parsed->Get("to") != "bf16") {
    std::fprintf(stderr, "convert: --to '%s' is not supported (only bf16)\n%s",
                 parsed->Get("to")->c_str(), kUsage);
    return 2;
  }
  if (parsed->positionals().size() != 2 || !parsed->Get("to").has_value()) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  if (absl::Status status =
          checkpoint::ConvertCheckpointToBf16(parsed->positionals()[0], parsed->positionals()[1]);
      !status.ok()) {
    std::fprintf(stderr, "convert: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  std::fprintf(stderr, "convert: wrote the BF16 cast of %s to %s\n",
               parsed->positionals()[0].c_str(), parsed->positionals()[1].c_str());
  return 0;
}

}  // namespace moemesh::cli
