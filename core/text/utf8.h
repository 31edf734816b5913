// UTF-8 helpers shared by the tokenizer and the streaming text path.
//
// Invalid input is replaced the way Rust's `String::from_utf8_lossy` (and so the Hugging Face
// tokenizers' decoder) does it: each maximal invalid subpart becomes one U+FFFD (Unicode 15,
// section 3.9, "U+FFFD Substitution of Maximal Subparts").
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace moemesh::text {

inline constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";  // U+FFFD

// Length in bytes of the valid UTF-8 character at the start of `bytes`, or 0 when the bytes there
// are not a whole valid character. `*incomplete` is set when the bytes are a valid beginning of a
// character that is cut off by the end of `bytes` (more bytes could still complete it).
size_t Utf8CharacterLength(std::string_view bytes, bool* incomplete);

// Appends `bytes` to `out` with every maximal invalid subpart replaced by U+FFFD. When
// `hold_incomplete_tail` is set, a valid but unfinished character at the very end is not
// converted: the number of bytes held back is returned (0 otherwise).
size_t AppendUtf8Lossy(std::string_view bytes, bool hold_incomplete_tail, std::string* out);

// `bytes` with invalid sequences replaced by U+FFFD (a whole, finished string).
std::string Utf8Lossy(std::string_view bytes);

// True when `text` is entirely valid UTF-8.
bool IsValidUtf8(std::string_view text);

// Decodes the code point starting at `text[*position]` (which must be valid UTF-8) and advances
// `*position` past it.
char32_t NextCodePoint(std::string_view text, size_t* position);

// Appends the UTF-8 encoding of `code_point` (a Unicode scalar value) to `out`.
void AppendCodePoint(char32_t code_point, std::string* out);

}  // namespace moemesh::text
