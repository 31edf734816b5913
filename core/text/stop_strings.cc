#include "core/text/stop_strings.h"

#include <algorithm>

namespace moemesh::text {

size_t PartialMarkerLength(std::string_view text, const std::vector<std::string>& markers) {
  size_t longest = 0;
  for (const std::string& marker : markers) {
    const size_t most = std::min(text.size(), marker.size() - (marker.empty() ? 0 : 1));
    for (size_t length = most; length > longest; --length) {
      if (text.substr(text.size() - length) == std::string_view(marker).substr(0, length)) {
        longest = length;
        break;
      }
    }
  }
  return longest;
}

std::optional<StopMatch> FindStopString(std::string_view text,
                                        const std::vector<std::string>& stop_strings) {
  std::optional<StopMatch> first;
  for (const std::string& stop : stop_strings) {
    if (stop.empty()) continue;
    const size_t position = text.find(stop);
    if (position == std::string_view::npos) continue;
    const size_t end = position + stop.size();
    if (!first || end < first->position + first->length ||
        (end == first->position + first->length && position < first->position)) {
      first = StopMatch{position, stop.size()};
    }
  }
  return first;
}

StopStringMatcher::StopStringMatcher(std::vector<std::string> stop_strings) {
  for (std::string& stop : stop_strings) {
    if (!stop.empty()) stop_strings_.push_back(std::move(stop));
  }
}

std::string StopStringMatcher::Add(std::string_view text) {
  if (stopped_) return {};
  held_ += text;
  // No stop string ended before this chunk, so the first to end in held_ is the first overall.
  if (std::optional<StopMatch> match = FindStopString(held_, stop_strings_)) {
    stopped_ = true;
    std::string released = held_.substr(0, match->position);
    held_.clear();
    return released;
  }
  const size_t keep = PartialMarkerLength(held_, stop_strings_);
  std::string released = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return released;
}

std::string StopStringMatcher::Finish() {
  std::string released = std::move(held_);
  held_.clear();
  return stopped_ ? std::string() : released;
}

}  // namespace moemesh::text
