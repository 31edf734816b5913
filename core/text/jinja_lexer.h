// The Jinja lexer: template source -> tokens, with jinja2's whitespace rules as transformers
// configures them (trim_blocks and lstrip_blocks on, `-` / `+` tag modifiers, keep_trailing_newline
// off, "\r\n" and "\r" read as "\n"). Text between tags comes out as kText with the whitespace
// those rules drop already removed; {% raw %} blocks come out as kText.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace moemesh::text::jinja {

struct Token {
  enum class Type { kText, kVariableBegin, kVariableEnd, kBlockBegin, kBlockEnd, kName, kString,
                    kInteger, kFloat, kOperator, kEnd };
  Type type;
  std::string value;  // text, name, decoded string literal, number text, operator
  int line;           // 1-based line in the template source
};

// Throws jinja::Error (TemplateSyntaxError, naming the line) on an unterminated tag, string or
// comment, or an unknown character inside a tag.
std::vector<Token> Tokenize(std::string_view source);

}  // namespace moemesh::text::jinja
