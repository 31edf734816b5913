// Helpers shared by the checkpoint tests: temporary directories, whole-file I/O, raw header
// parsing independent of the library, and a small model shape that writes in milliseconds.
#pragma once

#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/checkpoint/model_config.h"
#include "core/checkpoint/synthetic_checkpoint.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace moemesh::checkpoint::testing {

inline const std::string kFixtureDir = std::string(MOEMESH_SHARED_DIR) + "/fixtures/tiny-r1";

// A fresh directory under $TMPDIR (or /tmp), removed with the object.
class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TMPDIR");
    std::string pattern = std::string(base ? base : "/tmp") + "/moemesh_checkpoint_test.XXXXXX";
    std::vector<char> buffer(pattern.begin(), pattern.end());
    buffer.push_back('\0');
    path_ = mkdtemp(buffer.data());
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

inline void WriteFile(const std::string& path, const std::string& bytes) {
  std::filesystem::remove(path);  // copies of read-only fixture files
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A safetensors file's header, parsed without the library: (JSON header, data section start).
inline std::pair<nlohmann::json, uint64_t> RawHeader(const std::string& bytes) {
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = (length << 8) | static_cast<unsigned char>(bytes[i]);
  return {nlohmann::json::parse(bytes.substr(8, length)), 8 + length};
}

// The tiny preset with a 512-token vocabulary and 2 layers (1 dense, 1 MoE) plus MTP: every
// kind of tensor, ~1.5 MB.
inline ModelConfig MicroConfig() {
  ModelConfig config = FindCheckpointPreset("tiny")->config;
  config.vocab_size = 512;
  config.num_hidden_layers = 2;
  return config;
}

}  // namespace moemesh::checkpoint::testing
