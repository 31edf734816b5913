#include "core/checkpoint/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/checkpoint/checkpoint.h"
#include "nlohmann/json.hpp"

namespace moemesh::checkpoint {

int64_t TensorInfo::NumElements() const {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return count;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  struct stat file_stat {};
  if (::fstat(fd, &file_stat) != 0) {
    ::close(fd);
    return absl::InternalError(absl::StrCat(path, ": cannot stat: ", std::strerror(errno)));
  }
  const uint64_t file_size = static_cast<uint64_t>(file_stat.st_size);
  if (file_size < 8) {
    ::close(fd);
    return absl::DataLossError(absl::StrCat(path, ": truncated: ", file_size,
                                            " bytes is shorter than the 8-byte header length"));
  }
  void* mapping = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (mapping == MAP_FAILED) {
    return absl::InternalError(absl::StrCat(path, ": mmap failed: ", std::strerror(errno)));
  }
  // Tensors are read on demand; do not let the kernel read ahead into tensors nobody asked for.
  ::madvise(mapping, file_size, MADV_RANDOM);

  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->file_size_ = file_size;
  file->base_ = static_cast<const uint8_t*>(mapping);

  uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | file->base_[i];
  if (header_length > file_size - 8) {
    return absl::DataLossError(absl::StrCat(path, ": header length ", header_length,
                                            " runs past the end of the file (", file_size,
                                            " bytes); the file is truncated or not safetensors"));
  }
  const uint64_t data_start = 8 + header_length;
  const uint64_t data_size = file_size - data_start;
  nlohmann::json header = nlohmann::json::parse(
      reinterpret_cast<const char*>(file->base_ + 8),
      reinterpret_cast<const char*>(file->base_ + data_start), nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return absl::DataLossError(absl::StrCat(path, ": header is not a JSON object"));
  }

  // First every entry on its own (dtype, shape, offsets well formed and consistent), then the
  // ranges in data order, so that a truncated file names the first tensor it cuts short.
  for (auto& item : header.items()) {
    // Not a structured binding: clang 14 (the fuzz build) cannot capture one in the lambda.
    const std::string& name = item.key();
    auto& entry = item.value();
    if (name == "__metadata__") continue;
    auto fail = [&](absl::string_view what) {
      return absl::DataLossError(absl::StrCat(path, ": tensor '", name, "': ", what));
    };
    if (!entry.is_object()) return fail("header entry is not an object");
    auto dtype_it = entry.find("dtype");
    auto shape_it = entry.find("shape");
    auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end() || !dtype_it->is_string()) return fail("missing dtype");
    if (shape_it == entry.end() || !shape_it->is_array()) return fail("missing shape");
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
        !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
      return fail("data_offsets must be two non-negative integers");
    }
    absl::StatusOr<DType> dtype = ParseDType(dtype_it->get<std::string>());
    if (!dtype.ok()) return fail(dtype.status().message());
    TensorInfo info;
    info.name = name;
    info.dtype = *dtype;
    // No real tensor has 2^62 elements; rejecting that bound keeps the byte count from wrapping.
    uint64_t elements = 1;
    constexpr uint64_t kLimit = uint64_t{1} << 62;
    for (const auto& dim : *shape_it) {
      if (!dim.is_number_unsigned()) return fail("shape entries must be non-negative integers");
      const uint64_t size = dim.get<uint64_t>();
      if (size != 0 && elements > kLimit / size) return fail("shape is impossibly large");
      elements *= size;
      info.shape.push_back(static_cast<int64_t>(size));
    }
    const uint64_t begin = (*offsets_it)[0].get<uint64_t>();
    const uint64_t end = (*offsets_it)[1].get<uint64_t>();
    if (begin > end) {
      return fail(absl::StrCat("data_offsets [", begin, ", ", end, ") are reversed"));
    }
    const uint64_t expected_bytes = elements * static_cast<uint64_t>(DTypeSize(info.dtype));
    if (end - begin != expected_bytes) {
      return fail(absl::StrCat("shape ", ShapeToString(info.shape), " of ", DTypeName(info.dtype),
                               " needs ", expected_bytes, " bytes but data_offsets span ",
                               end - begin));
    }
    // Relative offsets for now; made absolute once every range is checked.
    info.data_begin = begin;
    info.data_end = end;
    file->tensors_.emplace(name, std::move(info));
  }

  std::vector<TensorInfo*> by_offset;
  for (auto& [name, info] : file->tensors_) by_offset.push_back(&info);
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->data_begin != b->data_begin ? a->data_begin < b->data_begin
                                          : a->data_end < b->data_end;
  });
  for (size_t i = 0; i < by_offset.size(); ++i) {
    const TensorInfo& info = *by_offset[i];
    if (info.data_end > data_size) {
      return absl::DataLossError(absl::StrCat(
          path, ": tensor '", info.name, "': data_offsets [", info.data_begin, ", ",
          info.data_end, ") run past the end of the data section (", data_size,
          " bytes): the file is truncated or the header is corrupt"));
    }
    if (i > 0 && info.data_begin < by_offset[i - 1]->data_end) {
      return absl::DataLossError(absl::StrCat(
          path, ": tensor '", info.name, "' (data_offsets [", info.data_begin, ", ",
          info.data_end, ")) overlaps tensor '", by_offset[i - 1]->name, "' (data_offsets [",
          by_offset[i - 1]->data_begin, ", ", by_offset[i - 1]->data_end, "))"));
    }
  }
  for (TensorInfo* info : by_offset) {
    info->data_begin += data_start;
    info->data_end += data_start;
  }
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (base_ != nullptr) ::munmap(const_cast<uint8_t*>(base_), file_size_);
}

const TensorInfo* SafetensorsFile::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

}  // namespace moemesh::checkpoint
