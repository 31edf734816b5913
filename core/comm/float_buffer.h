// float32 activations held as their wire bytes (float32 little-endian, the encoding of the
// `bytes` fields of moemesh.v1.DispatchRequest / DispatchReply), so that a dispatch's hidden rows
// and expert outputs move between the step's buffers and the gRPC messages without being copied
// into and out of std::vector<float>: the attention node gathers rows straight into the bytes it
// sends, the expert node writes its outputs straight into the bytes it answers, and each side
// reads the other's message in place. The storage is a std::string so that it can be moved into
// and out of a protobuf message (set_hidden(std::string&&), *mutable_hidden()).
#pragma once

#include <bit>
#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace moemesh::comm {

static_assert(std::endian::native == std::endian::little,
              "the float32 wire format is little-endian; add byte swapping for this host");

class FloatBuffer {
 public:
  FloatBuffer() = default;
  // `count` zeros.
  explicit FloatBuffer(size_t count) : bytes_(count * sizeof(float), '\0') {}
  // A copy of `values`.
  explicit FloatBuffer(std::span<const float> values)
      : bytes_(reinterpret_cast<const char*>(values.data()), values.size_bytes()) {}
  // Takes the bytes of a message field. Errors: InvalidArgument if the size is not a multiple
  // of 4.
  static absl::StatusOr<FloatBuffer> FromBytes(std::string bytes) {
    if (bytes.size() % sizeof(float) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("float32 payload of ", bytes.size(), " bytes is not a multiple of 4"));
    }
    FloatBuffer buffer;
    buffer.bytes_ = std::move(bytes);
    return buffer;
  }

  size_t size() const { return bytes_.size() / sizeof(float); }
  bool empty() const { return bytes_.empty(); }
  // The values. The string's storage comes from operator new (aligned for float, and where
  // objects begin their lifetime implicitly), or is its in-object buffer for tiny sizes, which
  // is aligned for float too.
  float* data() { return reinterpret_cast<float*>(bytes_.data()); }
  const float* data() const { return reinterpret_cast<const float*>(bytes_.data()); }
  const float* begin() const { return data(); }
  const float* end() const { return data() + size(); }
  std::vector<float> ToVector() const { return std::vector<float>(begin(), end()); }

  // The wire bytes; leaves the buffer empty.
  std::string TakeBytes() { return std::exchange(bytes_, std::string()); }

  // Bitwise equality (the tests compare cluster and single-process outputs bit for bit).
  friend bool operator==(const FloatBuffer& a, const FloatBuffer& b) { return a.bytes_ == b.bytes_; }

 private:
  std::string bytes_;
};

}  // namespace moemesh::comm
