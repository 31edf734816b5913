// Stop strings (OpenAI `stop`) over streamed text that may split them across tokens.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moemesh::text {

// Length of the longest suffix of `text` that is a proper prefix of one of `markers`: the text
// that must be held back because the next chunk could complete a marker.
size_t PartialMarkerLength(std::string_view text, const std::vector<std::string>& markers);

// Where a stop string cuts `text`: among all occurrences of the stop strings, the one that ends
// first (ties: the one that starts first) — the first a streaming reader can see complete.
struct StopMatch {
  size_t position;  // byte offset of the stop string in the text
  size_t length;    // its length in bytes
};
std::optional<StopMatch> FindStopString(std::string_view text,
                                        const std::vector<std::string>& stop_strings);

// Streaming form of FindStopString for one sequence's answer text. Text that could be the start
// of a stop string is held back until it is known not to be one; once a stop string completes,
// the text before it is released, the stop string and everything after it are dropped, and
// stopped() becomes true. Empty stop strings are ignored.
class StopStringMatcher {
 public:
  explicit StopStringMatcher(std::vector<std::string> stop_strings);

  // Appends `text`; returns the text now safe to emit.
  std::string Add(std::string_view text);
  // End of the sequence: releases held-back text (nothing once stopped).
  std::string Finish();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stop_strings_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace moemesh::text
