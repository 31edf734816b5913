// Read-only, memory-mapped access to one safetensors file.
// Format: 8-byte little-endian header length N, N bytes of JSON header
// {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then the data
// section; offsets are relative to the start of the data section.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/checkpoint/dtype.h"

namespace moemesh::checkpoint {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t data_begin = 0;  // absolute byte offset in the file
  uint64_t data_end = 0;    // absolute, exclusive
  int64_t NumElements() const;
};

class SafetensorsFile {
 public:
  // Maps `path` and validates its header: length inside the file, JSON well formed, every dtype
  // known, every shape matching its byte count, every data range inside the data section and
  // no two ranges overlapping. Errors name the file and, where one is at fault, the tensor.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t file_size() const { return file_size_; }
  // nullptr when the file has no tensor of that name.
  const TensorInfo* Find(const std::string& name) const;
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  // The tensor's bytes inside the mapping. Touching them pages in only that range.
  const uint8_t* Data(const TensorInfo& info) const { return base_ + info.data_begin; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  uint64_t file_size_ = 0;
  const uint8_t* base_ = nullptr;
  std::map<std::string, TensorInfo> tensors_;
};

}  // namespace moemesh::checkpoint
