// The Jinja parser: tokens -> statement tree, with jinja2's operator precedence (a filter binds
// tighter than `+`, `not` looser than `is`, `a if c else b` loosest). Throws jinja::Error
// (TemplateSyntaxError with the line) on bad syntax, unknown tags and nesting deeper than
// kMaxParseDepth.
#pragma once

#include <vector>

#include "core/text/jinja_ast.h"
#include "core/text/jinja_lexer.h"

namespace moemesh::text::jinja {

inline constexpr int kMaxParseDepth = 200;

Body Parse(const std::vector<Token>& tokens);

}  // namespace moemesh::text::jinja
