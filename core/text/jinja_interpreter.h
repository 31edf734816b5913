// The Jinja interpreter: walks a parsed template (jinja_ast.h) over a set of variables and
// writes the output, with the semantics of Python jinja2 in transformers' sandbox: Python
// truthiness and operators, lenient undefined, namespace(), macros, loop controls, and the
// immutable sandbox (no method that mutates a list or dict). Limits keep a hostile template from
// crashing or hanging the process: output size, call depth and a step budget.
// Everything here throws jinja::Error; Template (jinja_template.h) is the Status boundary.
#pragma once

#include <cstdint>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "core/text/jinja_ast.h"
#include "core/text/jinja_value.h"

namespace moemesh::text::jinja {

// Bounds of one render. The defaults fit chat prompts of any context length.
struct RenderLimits {
  size_t max_output_bytes = 32u << 20;  // also the largest string or list a template may build
  int max_call_depth = 256;             // nested macro / filter-callback calls
  int64_t max_steps = 20'000'000;       // statements, loop iterations and calls, in all
};

struct RenderOptions {
  RenderLimits limits;
  // The moment strftime_now() formats (UTC); nullopt: the current time.
  std::optional<std::time_t> now;
};

// Variables visible to statements: a chain of scopes (loop bodies and macros open one).
struct Scope {
  absl::flat_hash_map<std::string, Value> vars;
  std::shared_ptr<Scope> parent;
};

class Interpreter {
 public:
  Interpreter(const RenderOptions& options, std::shared_ptr<Scope> globals);
  // Clears the namespaces the render created (they may refer to each other in cycles).
  ~Interpreter();
  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;

  // Renders `body` in `scope` and returns the text.
  std::string Render(const Body& body, const std::shared_ptr<Scope>& scope);

  // Evaluates one expression in `scope`.
  Value Eval(const Expr& expr, const std::shared_ptr<Scope>& scope);
  // A namespace() made during this render, to be cleared when the render ends.
  void TrackNamespace(const Value& ns);

  // Calls a callable value (macro, global, bound method); TypeError for others.
  Value Call(const Value& callee, CallArgs& args, int line);

  // Counts one step against the budget (throws when spent).
  void Step();
  // Throws when a string or list of `size` bytes/items would pass the output limit.
  void CheckSize(size_t size) const;
  const RenderOptions& options() const { return options_; }

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  Flow Exec(const Body& body, const std::shared_ptr<Scope>& scope);
  Flow ExecStmt(const Stmt& stmt, const std::shared_ptr<Scope>& scope);
  void ExecFor(const Stmt& stmt, const std::shared_ptr<Scope>& scope);
  void ExecSet(const Stmt& stmt, const std::shared_ptr<Scope>& scope, Value value);
  Value MakeMacro(const Stmt& stmt, const std::shared_ptr<Scope>& scope);
  Value CallMacro(const Stmt& stmt, const std::shared_ptr<Scope>& defined_in, CallArgs& args);

  Value EvalInner(const Expr& expr, const std::shared_ptr<Scope>& scope);
  Value EvalCall(const Expr& expr, const std::shared_ptr<Scope>& scope);
  void EvalArgs(const Expr& expr, size_t first, const std::shared_ptr<Scope>& scope, CallArgs* args);
  Value Lookup(const std::string& name, const std::shared_ptr<Scope>& scope) const;
  void Write(std::string_view text);

  const RenderOptions& options_;
  std::shared_ptr<Scope> globals_;
  std::string* out_ = nullptr;
  int depth_ = 0;       // macro / callable calls in progress
  int eval_depth_ = 0;  // nested expression evaluations (across calls)
  int64_t steps_ = 0;
  std::vector<std::weak_ptr<Dict>> namespaces_;
};

// Python operators over values (TypeError / UndefinedError as Python and jinja2 raise them).
Value BinaryOp(Interpreter& interpreter, const std::string& op, const Value& left,
               const Value& right);
// Iterates as a for loop does: list items, dict keys, string code points; undefined is empty;
// TypeError for none and other non-iterables.
List Iterate(const Value& value);
// x.name: a dict key, a namespace attribute or a bound method; undefined when missing.
// UndefinedError on undefined.
Value GetAttr(const Value& object, const std::string& name);
// x[key]: list / string index (negative from the end), dict key; undefined when missing.
Value GetItem(const Value& object, const Value& key);
// x[start:stop:step] on lists and strings.
Value Slice(const Value& object, const Value& start, const Value& stop, const Value& step);
// The filters and tests of jinja2 (and transformers' tojson).
Value ApplyFilter(Interpreter& interpreter, const std::string& name, const Value& operand,
                  CallArgs& args);
bool ApplyTest(Interpreter& interpreter, const std::string& name, const Value& operand,
               CallArgs& args);
// Whether ApplyFilter / ApplyTest know `name` (checked when compiling, as jinja2 does).
bool IsFilter(const std::string& name);
bool IsTest(const std::string& name);
// range, namespace, dict, raise_exception, strftime_now.
void AddGlobals(Scope* globals);
// UndefinedError for an undefined value (message from how it became undefined).
[[noreturn]] void FailUndefined(const Value& value);

}  // namespace moemesh::text::jinja
