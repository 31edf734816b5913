#include "core/text/jinja_lexer.h"

#include <cctype>
#include <cstdint>

#include "core/text/jinja_value.h"

namespace moemesh::text::jinja {
namespace {

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string RStrip(std::string_view s) {
  size_t end = s.size();
  while (end > 0 && IsSpace(s[end - 1])) --end;
  return std::string(s.substr(0, end));
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    *out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    *out += static_cast<char>(0xc0 | (cp >> 6));
    *out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    *out += static_cast<char>(0xe0 | (cp >> 12));
    *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    *out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    *out += static_cast<char>(0xf0 | (cp >> 18));
    *out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    *out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

class Lexer {
 public:
  explicit Lexer(std::string source) : src_(std::move(source)) {}

  std::vector<Token> Run() {
    bool line_starting = true;
    while (pos_ < src_.size()) {
      const size_t tag = FindTag(pos_);
      std::string text = src_.substr(pos_, tag - pos_);
      if (tag == src_.size()) {
        Emit(Token::Type::kText, std::move(text), LineAt(pos_));
        pos_ = tag;
        break;
      }
      const char kind = src_[tag + 1];  // '{', '%' or '#'
      const char sign = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      if (sign == '-') {
        text = RStrip(text);
      } else if (sign != '+' && kind != '{') {
        // lstrip_blocks: spaces and tabs from the line start to a block or comment tag.
        const size_t line_start = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
        if (line_start > 0 || line_starting) {
          bool blank = line_start < text.size();
          for (size_t i = line_start; i < text.size(); ++i) blank = blank && IsSpace(text[i]);
          if (blank) text.resize(line_start);
        }
      }
      const int text_line = LineAt(pos_);
      Emit(Token::Type::kText, std::move(text), text_line);
      pos_ = tag + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      if (kind == '#') {
        LexComment(tag);
      } else if (kind == '%' && TryRaw(tag)) {
        // handled
      } else {
        LexTag(kind == '%', tag);
      }
      line_starting = pos_ > 0 && src_[pos_ - 1] == '\n';
    }
    tokens_.push_back({Token::Type::kEnd, "", LineAt(src_.size())});
    return std::move(tokens_);
  }

 private:
  int LineAt(size_t position) {
    // Lines are counted incrementally: positions only move forward.
    while (line_pos_ < position && line_pos_ < src_.size()) {
      if (src_[line_pos_] == '\n') ++line_;
      ++line_pos_;
    }
    return line_;
  }

  [[noreturn]] void Fail(const std::string& message, size_t at) {
    throw Error("TemplateSyntaxError", message, LineAt(at));
  }

  size_t FindTag(size_t from) const {
    for (size_t i = from; i + 1 < src_.size(); ++i) {
      if (src_[i] == '{' && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) {
        return i;
      }
    }
    return src_.size();
  }

  void Emit(Token::Type type, std::string value, int line) {
    if (type == Token::Type::kText && value.empty()) return;
    tokens_.push_back({type, std::move(value), line});
  }

  // After a block or comment end: `-` strips all whitespace, otherwise trim_blocks drops one
  // newline (unless the end was `+%}`).
  void AfterEnd(char sign, bool trim) {
    if (sign == '-') {
      while (pos_ < src_.size() && IsSpace(src_[pos_])) ++pos_;
    } else if (trim && sign != '+' && pos_ < src_.size() && src_[pos_] == '\n') {
      ++pos_;
    }
  }

  void LexComment(size_t tag) {
    const size_t end = src_.find("#}", pos_);
    if (end == std::string::npos) Fail("Missing end of comment tag", tag);
    const char sign = end > pos_ && (src_[end - 1] == '-' || src_[end - 1] == '+') ? src_[end - 1] : '\0';
    pos_ = end + 2;
    LineAt(pos_);
    AfterEnd(sign, /*trim=*/true);
  }

  // {% raw %}...{% endraw %}: the text in between, verbatim.
  bool TryRaw(size_t tag) {
    size_t p = pos_;
    while (p < src_.size() && IsSpace(src_[p])) ++p;
    if (src_.compare(p, 3, "raw") != 0) return false;
    p += 3;
    while (p < src_.size() && IsSpace(src_[p])) ++p;
    char sign = '\0';
    if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) sign = src_[p++];
    if (src_.compare(p, 2, "%}") != 0) return false;
    pos_ = p + 2;
    AfterEnd(sign, true);
    // Find {%[-+]? endraw [-+]?%}
    for (size_t i = pos_; i + 1 < src_.size(); ++i) {
      if (src_[i] != '{' || src_[i + 1] != '%') continue;
      size_t q = i + 2;
      const char open_sign = q < src_.size() && (src_[q] == '-' || src_[q] == '+') ? src_[q] : '\0';
      if (open_sign) ++q;
      while (q < src_.size() && IsSpace(src_[q])) ++q;
      if (src_.compare(q, 6, "endraw") != 0) continue;
      q += 6;
      while (q < src_.size() && IsSpace(src_[q])) ++q;
      char close_sign = '\0';
      if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) close_sign = src_[q++];
      if (src_.compare(q, 2, "%}") != 0) continue;
      std::string text = src_.substr(pos_, i - pos_);
      if (open_sign == '-') text = RStrip(text);
      Emit(Token::Type::kText, std::move(text), LineAt(pos_));
      pos_ = q + 2;
      LineAt(pos_);
      AfterEnd(close_sign, true);
      return true;
    }
    Fail("Missing end of raw directive", tag);
  }

  void LexTag(bool block, size_t tag) {
    Emit(block ? Token::Type::kBlockBegin : Token::Type::kVariableBegin, "", LineAt(tag));
    std::vector<char> brackets;
    while (true) {
      while (pos_ < src_.size() && IsSpace(src_[pos_])) ++pos_;
      if (pos_ >= src_.size()) Fail(block ? "unexpected end of template, expected '%}'"
                                          : "unexpected end of template, expected '}}'", tag);
      const int line = LineAt(pos_);
      const char c = src_[pos_];
      const std::string_view rest(src_.data() + pos_, src_.size() - pos_);
      if (brackets.empty()) {
        const std::string_view close = block ? "%}" : "}}";
        char sign = '\0';
        size_t length = 0;
        if (rest.substr(0, 2) == close) {
          length = 2;
        } else if ((c == '-' || (c == '+' && block)) && rest.substr(1, 2) == close) {
          sign = c;
          length = 3;
        }
        if (length > 0) {
          pos_ += length;
          Emit(block ? Token::Type::kBlockEnd : Token::Type::kVariableEnd, "", line);
          if (block) {
            AfterEnd(sign, true);
          } else if (sign == '-') {
            AfterEnd(sign, false);
          }
          return;
        }
      }
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t end = pos_;
        while (end < src_.size() &&
               (std::isalnum(static_cast<unsigned char>(src_[end])) || src_[end] == '_')) {
          ++end;
        }
        Emit(Token::Type::kName, src_.substr(pos_, end - pos_), line);
        pos_ = end;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        LexNumber(line);
      } else if (c == '\'' || c == '"') {
        LexString(line);
      } else {
        static const char* const kOperators[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-",
                                                 "*",  "/",  "%",  "~",  "<",  ">",  "=", "(",
                                                 ")",  "[",  "]",  "{",  "}",  ",",  ".", ":",
                                                 "|",  ";"};
        std::string op;
        for (const char* candidate : kOperators) {
          if (rest.substr(0, std::char_traits<char>::length(candidate)) == candidate) {
            op = candidate;
            break;
          }
        }
        if (op.empty()) Fail(std::string("unexpected char '") + c + "'", pos_);
        if (op == "(" || op == "[" || op == "{") brackets.push_back(op[0]);
        if (op == ")" || op == "]" || op == "}") {
          const char open = op == ")" ? '(' : op == "]" ? '[' : '{';
          if (brackets.empty() || brackets.back() != open) Fail("unexpected '" + op + "'", pos_);
          brackets.pop_back();
        }
        Emit(Token::Type::kOperator, op, line);
        pos_ += op.size();
      }
    }
  }

  void LexNumber(int line) {
    size_t end = pos_;
    auto digits = [&] {
      while (end < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[end])) || src_[end] == '_')) ++end;
    };
    digits();
    bool is_float = false;
    if (end + 1 < src_.size() && src_[end] == '.' && std::isdigit(static_cast<unsigned char>(src_[end + 1]))) {
      is_float = true;
      ++end;
      digits();
    }
    if (end < src_.size() && (src_[end] == 'e' || src_[end] == 'E')) {
      size_t e = end + 1;
      if (e < src_.size() && (src_[e] == '+' || src_[e] == '-')) ++e;
      if (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) {
        is_float = true;
        end = e;
        digits();
      }
    }
    std::string text;
    for (size_t i = pos_; i < end; ++i) {
      if (src_[i] != '_') text += src_[i];
    }
    Emit(is_float ? Token::Type::kFloat : Token::Type::kInteger, std::move(text), line);
    pos_ = end;
  }

  void LexString(int line) {
    const char quote = src_[pos_];
    const size_t start = pos_;
    ++pos_;
    std::string value;
    while (true) {
      if (pos_ >= src_.size()) Fail("unexpected end of string", start);
      const char c = src_[pos_];
      if (c == quote) { ++pos_; break; }
      if (c != '\\') { value += c; ++pos_; continue; }
      if (pos_ + 1 >= src_.size()) Fail("unexpected end of string", start);
      const char e = src_[pos_ + 1];
      pos_ += 2;
      switch (e) {
        case 'n': value += '\n'; break;
        case 't': value += '\t'; break;
        case 'r': value += '\r'; break;
        case 'b': value += '\b'; break;
        case 'f': value += '\f'; break;
        case 'v': value += '\v'; break;
        case 'a': value += '\a'; break;
        case '0': value += '\0'; break;
        case '\\': value += '\\'; break;
        case '\'': value += '\''; break;
        case '"': value += '"'; break;
        case '\n': break;  // a backslash-newline continues the line
        case 'x': case 'u': case 'U': {
          const size_t width = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (pos_ + width > src_.size()) Fail("truncated \\" + std::string(1, e) + " escape", start);
          uint32_t cp = 0;
          for (size_t k = 0; k < width; ++k) {
            const char h = src_[pos_ + k];
            if (!std::isxdigit(static_cast<unsigned char>(h))) {
              Fail("truncated \\" + std::string(1, e) + " escape", start);
            }
            cp = cp * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
          }
          if (cp > 0x10ffff) Fail("illegal Unicode character", start);
          pos_ += width;
          AppendUtf8(cp, &value);
          break;
        }
        default:  // Python keeps unknown escapes as written
          value += '\\';
          value += e;
      }
    }
    // Adjacent literals ('a' 'b') are joined by the parser.
    Emit(Token::Type::kString, std::move(value), line);
  }

  std::string src_;
  size_t pos_ = 0;
  size_t line_pos_ = 0;
  int line_ = 1;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> Tokenize(std::string_view source) {
  std::string normalized;
  normalized.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      normalized += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      normalized += source[i];
    }
  }
  if (!normalized.empty() && normalized.back() == '\n') normalized.pop_back();
  return Lexer(std::move(normalized)).Run();
}

}  // namespace moemesh::text::jinja
