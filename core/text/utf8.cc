#include "core/text/utf8.h"

#include <algorithm>
#include <cstdint>

namespace moemesh::text {

size_t Utf8CharacterLength(std::string_view bytes, bool* incomplete) {
  *incomplete = false;
  if (bytes.empty()) return 0;
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(bytes[i]); };
  const uint8_t lead = byte(0);
  if (lead < 0x80) return 1;
  size_t length;
  // Allowed range of the second byte (Unicode table 3-7); later bytes are 0x80..0xBF.
  uint8_t second_low = 0x80, second_high = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) second_low = 0xA0;   // no overlong forms
    if (lead == 0xED) second_high = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) second_low = 0x90;   // no overlong forms
    if (lead == 0xF4) second_high = 0x8F;  // nothing above U+10FFFF
  } else {
    return 0;
  }
  for (size_t i = 1; i < length; ++i) {
    if (i >= bytes.size()) {
      *incomplete = true;
      return 0;
    }
    const uint8_t low = i == 1 ? second_low : 0x80;
    const uint8_t high = i == 1 ? second_high : 0xBF;
    if (byte(i) < low || byte(i) > high) return 0;
  }
  return length;
}

// Length of the maximal invalid subpart at the start of `bytes` (at least 1): the longest prefix
// that is the beginning of some valid character, or just the first byte.
static size_t InvalidSubpartLength(std::string_view bytes) {
  // Try ever shorter prefixes: a prefix of k bytes is a "valid beginning" when decoding it alone
  // reports `incomplete`.
  for (size_t k = std::min<size_t>(bytes.size(), 3); k >= 2; --k) {
    bool incomplete = false;
    if (Utf8CharacterLength(bytes.substr(0, k), &incomplete) == 0 && incomplete) return k;
  }
  return 1;
}

size_t AppendUtf8Lossy(std::string_view bytes, bool hold_incomplete_tail, std::string* out) {
  size_t position = 0;
  while (position < bytes.size()) {
    // Copy runs of ASCII at once.
    size_t run = position;
    while (run < bytes.size() && static_cast<uint8_t>(bytes[run]) < 0x80) ++run;
    if (run > position) {
      out->append(bytes.substr(position, run - position));
      position = run;
      continue;
    }
    bool incomplete = false;
    const std::string_view rest = bytes.substr(position);
    const size_t length = Utf8CharacterLength(rest, &incomplete);
    if (length > 0) {
      out->append(rest.substr(0, length));
      position += length;
    } else if (incomplete) {
      if (hold_incomplete_tail) return rest.size();
      out->append(kReplacementCharacter);
      position = bytes.size();
    } else {
      out->append(kReplacementCharacter);
      position += InvalidSubpartLength(rest);
    }
  }
  return 0;
}

std::string Utf8Lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  AppendUtf8Lossy(bytes, /*hold_incomplete_tail=*/false, &out);
  return out;
}

bool IsValidUtf8(std::string_view text) {
  size_t position = 0;
  while (position < text.size()) {
    bool incomplete = false;
    const size_t length = Utf8CharacterLength(text.substr(position), &incomplete);
    if (length == 0) return false;
    position += length;
  }
  return true;
}

char32_t NextCodePoint(std::string_view text, size_t* position) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[*position + i]); };
  const uint8_t lead = byte(0);
  char32_t code_point;
  size_t length;
  if (lead < 0x80) {
    code_point = lead;
    length = 1;
  } else if (lead < 0xE0) {
    code_point = lead & 0x1F;
    length = 2;
  } else if (lead < 0xF0) {
    code_point = lead & 0x0F;
    length = 3;
  } else {
    code_point = lead & 0x07;
    length = 4;
  }
  for (size_t i = 1; i < length && *position + i < text.size(); ++i) {
    code_point = (code_point << 6) | (byte(i) & 0x3F);
  }
  *position += length;
  return code_point;
}

void AppendCodePoint(char32_t code_point, std::string* out) {
  if (code_point < 0x80) {
    out->push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

}  // namespace moemesh::text
