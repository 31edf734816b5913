#include "core/text/jinja_template.h"

#include "absl/strings/str_cat.h"
#include "core/text/jinja_lexer.h"
#include "core/text/jinja_parser.h"

namespace moemesh::text::jinja {
namespace {

absl::Status ToStatus(const Error& error) {
  const std::string where = error.line() > 0 ? absl::StrCat("line ", error.line(), ": ") : "";
  return absl::InvalidArgumentError(absl::StrCat(where, error.kind(), ": ", error.what()));
}

// jinja2 rejects unknown filters and tests when compiling, even in branches never taken.
void CheckNames(const Expr* expr) {
  if (expr == nullptr) return;
  if (expr->kind == Expr::Kind::kFilter && !IsFilter(expr->name)) {
    throw Error("TemplateAssertionError", "No filter named '" + expr->name + "'.", expr->line);
  }
  if (expr->kind == Expr::Kind::kTest && !IsTest(expr->name)) {
    throw Error("TemplateAssertionError", "No test named '" + expr->name + "'.", expr->line);
  }
  for (const ExprPtr& child : expr->children) CheckNames(child.get());
  for (const auto& [name, value] : expr->keyword) CheckNames(value.get());
}

void CheckNames(const Body& body) {
  for (const StmtPtr& stmt : body) {
    CheckNames(stmt->expr.get());
    CheckNames(stmt->filter.get());
    for (const auto& [condition, branch] : stmt->branches) {
      CheckNames(condition.get());
      CheckNames(branch);
    }
    for (const auto& [name, value] : stmt->params) CheckNames(value.get());
    CheckNames(stmt->body);
    CheckNames(stmt->else_body);
  }
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Template>> Template::Parse(std::string_view source) {
  try {
    auto compiled = std::shared_ptr<Template>(new Template());
    compiled->body_ = jinja::Parse(Tokenize(source));
    CheckNames(compiled->body_);
    return std::shared_ptr<const Template>(std::move(compiled));
  } catch (const Error& error) {
    return ToStatus(error);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("out of memory compiling the template");
  }
}

absl::StatusOr<std::string> Template::Render(const nlohmann::ordered_json& variables,
                                             const RenderOptions& options) const {
  if (!variables.is_object()) return absl::InvalidArgumentError("template variables must be an object");
  try {
    auto globals = std::make_shared<Scope>();
    AddGlobals(globals.get());
    auto scope = std::make_shared<Scope>();
    for (const auto& [name, value] : variables.items()) scope->vars[name] = Value::FromJson(value);
    Interpreter interpreter(options, globals);
    return interpreter.Render(body_, scope);
  } catch (const Error& error) {
    return ToStatus(error);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("out of memory rendering the template");
  }
}

}  // namespace moemesh::text::jinja
