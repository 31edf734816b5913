// libFuzzer target: a hostile checkpoint. The first byte picks the parser: config.json
// (ParseModelConfig) or a safetensors file (SafetensorsFile::Open on an in-memory file). Either
// gives an error or a value whose invariants hold; never a crash, never a read outside the file.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/checkpoint/model_config.h"
#include "core/checkpoint/safetensors.h"

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
  if (data[0] % 2 == 0) {
    absl::StatusOr<ModelConfig> config = ParseModelConfig(bytes, "fuzz/config.json");
    if (config.ok()) {
      Check(config->num_hidden_layers >= 0 && config->hidden_size >= 0, "sizes are not negative");
    }
    return 0;
  }
  static const int fd = memfd_create("moemesh-fuzz-safetensors", 0);
  Check(fd >= 0, "memfd_create");
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
