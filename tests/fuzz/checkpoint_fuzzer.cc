// libFuzzer target: a hostile checkpoint. The first byte picks the parser (its value mod 4):
// config.json (ParseModelConfig; 0 and 2), a safetensors file (SafetensorsFile::Open on an
// in-memory file; 1), or the tokenizer files (3: the bytes as tokenizer.json, Tokenizer::FromJson,
// and as tokenizer_config.json, LoadChatTemplate). Each gives an error or a value whose
// invariants hold; never a crash or an exception, never a read outside the file.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/checkpoint/model_config.h"
#include "core/checkpoint/safetensors.h"
#include "core/text/chat_template.h"
#include "core/text/tokenizer.h"

namespace {

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "fuzz check failed: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moemesh::checkpoint;
  if (size == 0) return 0;
  const std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  // The file lives in memory; parsers that take a path read it through /proc/self/fd.
  static const int fd = memfd_create("moemesh-fuzz-checkpoint", 0);
  Check(fd >= 0, "memfd_create");
  if (data[0] % 4 == 3) {
    absl::StatusOr<std::unique_ptr<moemesh::text::Tokenizer>> tokenizer =
        moemesh::text::Tokenizer::FromJson(bytes);
    if (tokenizer.ok()) {  // a tokenizer that loads can encode and decode
      (void)(*tokenizer)->Decode((*tokenizer)->Encode("fuzz <think> text \xff"));
    }
    Check(ftruncate(fd, 0) == 0, "ftruncate");
    Check(pwrite(fd, bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size()), "pwrite");
    (void)moemesh::text::LoadChatTemplate("/proc/self/fd/" + std::to_string(fd));
    return 0;
  }
  if (data[0] % 2 == 0) {
    absl::StatusOr<ModelConfig> config = ParseModelConfig(bytes, "fuzz/config.json");
    if (config.ok()) {
      Check(config->num_hidden_layers >= 0 && config->hidden_size >= 0, "sizes are not negative");
    }
    return 0;
  }
  Check(ftruncate(fd, 0) == 0, "ftruncate");
  Check(pwrite(fd, bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size()), "pwrite");
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open("/proc/self/fd/" + std::to_string(fd));
  if (!file.ok()) return 0;
  for (const auto& [name, info] : (*file)->tensors()) {
    Check(info.data_begin <= info.data_end && info.data_end <= (*file)->file_size(),
          "a tensor lies inside the file");
    // Touch the first and last byte: inside the mapping by the check above.
    if (info.data_end > info.data_begin) {
      volatile uint8_t first = (*file)->Data(info)[0];
      volatile uint8_t last = (*file)->Data(info)[info.data_end - info.data_begin - 1];
      (void)first;
      (void)last;
    }
  }
  return 0;
}
