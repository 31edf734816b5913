// A compiled Jinja template: the engine's public face (lexer, parser and interpreter are in
// core/text/jinja_*). It renders what Python jinja2 renders in Hugging Face transformers'
// apply_chat_template: ImmutableSandboxedEnvironment, trim_blocks and lstrip_blocks, the
// loop-controls extension, raise_exception / strftime_now globals and transformers' tojson.
// Errors come back as absl::Status: InvalidArgument with "line N: <Python exception class>:
// <message>", as jinja2 would raise it (TemplateSyntaxError when compiling; TypeError,
// UndefinedError, SecurityError, TemplateError from raise_exception, ... when rendering; a
// render past RenderLimits is a TemplateError or RecursionError). ResourceExhausted only when
// memory runs out.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "core/text/jinja_ast.h"
#include "core/text/jinja_interpreter.h"
#include "nlohmann/json.hpp"

namespace moemesh::text::jinja {

class Template {
 public:
  // Compiles `source`. InvalidArgument naming the line on a syntax error.
  static absl::StatusOr<std::shared_ptr<const Template>> Parse(std::string_view source);

  // Renders with `variables` (a JSON object: each key a variable, values as Python would load
  // the JSON). Thread-safe: a render shares nothing with another.
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& variables,
                                     const RenderOptions& options = {}) const;

 private:
  Body body_;
};

}  // namespace moemesh::text::jinja
