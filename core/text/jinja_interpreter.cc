#include "core/text/jinja_interpreter.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace moemesh::text::jinja {
namespace {

// Nested expression evaluations, macro calls included: bounds the C++ stack a render uses.
constexpr int kMaxEvalDepth = 2000;

// Attaches the line of the node being evaluated to errors raised without one.
template <typename F>
auto AtLine(int line, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (Error& e) {
    e.set_line(line);
    throw;
  }
}

}  // namespace

void FailUndefined(const Value& value) {
  throw Error("UndefinedError", value.str().empty() ? "value is undefined" : value.str());
}

Interpreter::Interpreter(const RenderOptions& options, std::shared_ptr<Scope> globals)
    : options_(options), globals_(std::move(globals)) {}

Interpreter::~Interpreter() {
  // Oldest first: by the time a namespace is cleared, the ones it could hold are empty, so
  // nothing is freed recursively and cycles through namespaces are broken.
  for (const std::weak_ptr<Dict>& weak : namespaces_) {
    if (std::shared_ptr<Dict> dict = weak.lock()) {
      Dict attributes;
      attributes.swap(*dict);
    }
  }
}

void Interpreter::TrackNamespace(const Value& ns) {
  if (!ns.is_namespace()) return;
  if (namespaces_.size() >= 1'000'000) throw Error("TemplateError", "too many namespaces");
  namespaces_.push_back(ns.weak_dict());
}

void Interpreter::Step() {
  if (++steps_ > options_.limits.max_steps) {
    throw Error("TemplateError", "the template ran past its step budget (" +
                                     std::to_string(options_.limits.max_steps) + " steps)");
  }
}

void Interpreter::CheckSize(size_t size) const {
  if (size > options_.limits.max_output_bytes) {
    throw Error("TemplateError", "the template output passed its limit of " +
                                     std::to_string(options_.limits.max_output_bytes) + " bytes");
  }
}

void Interpreter::Write(std::string_view text) {
  CheckSize(out_->size() + text.size());
  out_->append(text);
}

std::string Interpreter::Render(const Body& body, const std::shared_ptr<Scope>& scope) {
  std::string output;
  std::string* saved = out_;
  out_ = &output;
  try {
    Exec(body, scope);
  } catch (...) {
    out_ = saved;
    throw;
  }
  out_ = saved;
  return output;
}

Interpreter::Flow Interpreter::Exec(const Body& body, const std::shared_ptr<Scope>& scope) {
  for (const StmtPtr& stmt : body) {
    Flow flow = ExecStmt(*stmt, scope);
    if (flow != Flow::kNormal) return flow;
  }
  return Flow::kNormal;
}

Interpreter::Flow Interpreter::ExecStmt(const Stmt& stmt, const std::shared_ptr<Scope>& scope) {
  Step();
  try {
    switch (stmt.kind) {
      case Stmt::Kind::kText: Write(stmt.text); return Flow::kNormal;
      case Stmt::Kind::kOutput: {
        const Value value = Eval(*stmt.expr, scope);
        Write(value.ToString());
        return Flow::kNormal;
      }
      case Stmt::Kind::kIf:
        for (const auto& [condition, body] : stmt.branches) {
          if (Eval(*condition, scope).Truthy()) return Exec(body, scope);
        }
        return Exec(stmt.else_body, scope);
      case Stmt::Kind::kFor: ExecFor(stmt, scope); return Flow::kNormal;
      case Stmt::Kind::kSet: ExecSet(stmt, scope, Eval(*stmt.expr, scope)); return Flow::kNormal;
      case Stmt::Kind::kSetBlock: {
        auto inner = std::make_shared<Scope>();
        inner->parent = scope;
        Value text(Render(stmt.body, inner));
        if (stmt.expr) {
          // The filter chain's innermost operand is the block's text.
          const Expr* innermost = stmt.expr.get();
          std::vector<const Expr*> chain;
          while (innermost != nullptr && innermost->kind == Expr::Kind::kFilter) {
            chain.push_back(innermost);
            innermost = innermost->children[0].get();
          }
          for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
            CallArgs args;
            EvalArgs(**it, 1, scope, &args);
            text = ApplyFilter(*this, (*it)->name, text, args);
          }
        }
        scope->vars[stmt.targets[0]] = std::move(text);
        return Flow::kNormal;
      }
      case Stmt::Kind::kMacro: scope->vars[stmt.targets[0]] = MakeMacro(stmt, scope); return Flow::kNormal;
      case Stmt::Kind::kCallBlock: {
        // caller() renders the block body; it goes to the macro as the `caller` keyword.
        const Stmt* block = &stmt;
        std::weak_ptr<Scope> weak_scope = scope;
        Value caller = Value::FromFunction("macro 'caller'", [block, weak_scope](Interpreter& in, CallArgs& args) {
          std::shared_ptr<Scope> defined_in = weak_scope.lock();
          if (defined_in == nullptr) throw Error("TemplateError", "caller() outlived its call block");
          auto inner = std::make_shared<Scope>();
          inner->parent = defined_in;
          for (size_t i = 0; i < block->params.size(); ++i) {
            const auto& [name, default_value] = block->params[i];
            inner->vars[name] = i < args.positional.size() ? args.positional[i]
                                : default_value ? in.Eval(*default_value, defined_in)
                                                : Value::Undefined("'" + name + "' is undefined");
          }
          return Value(in.Render(block->body, inner));
        });
        const Expr& call = *stmt.expr;
        const Value callee = Eval(*call.children[0], scope);
        CallArgs args;
        EvalArgs(call, 1, scope, &args);
        args.keyword.emplace_back("caller", std::move(caller));
        Write(Call(callee, args, stmt.line).ToString());
        return Flow::kNormal;
      }
      case Stmt::Kind::kFilterBlock: {
        auto inner = std::make_shared<Scope>();
        inner->parent = scope;
        Value text(Render(stmt.body, inner));
        std::vector<const Expr*> chain;
        for (const Expr* e = stmt.expr.get(); e != nullptr && e->kind == Expr::Kind::kFilter;
             e = e->children[0].get()) {
          chain.push_back(e);
        }
        for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
          CallArgs args;
          EvalArgs(**it, 1, scope, &args);
          text = ApplyFilter(*this, (*it)->name, text, args);
        }
        Write(text.ToString());
        return Flow::kNormal;
      }
      case Stmt::Kind::kWith: {
        auto inner = std::make_shared<Scope>();
        inner->parent = scope;
        for (const auto& [name, value] : stmt.params) inner->vars[name] = Eval(*value, scope);
        return Exec(stmt.body, inner);
      }
      case Stmt::Kind::kBreak: return Flow::kBreak;
      case Stmt::Kind::kContinue: return Flow::kContinue;
      case Stmt::Kind::kBlock: return Exec(stmt.body, scope);
    }
  } catch (Error& e) {
    e.set_line(stmt.line);
    throw;
  }
  return Flow::kNormal;
}

void Interpreter::ExecFor(const Stmt& stmt, const std::shared_ptr<Scope>& scope) {
  const Value iterable = Eval(*stmt.expr, scope);
  List items = AtLine(stmt.line, [&] { return Iterate(iterable); });
  auto bind = [&](Scope& inner, const Value& item) {
    if (stmt.targets.size() == 1) {
      inner.vars[stmt.targets[0]] = item;
      return;
    }
    const List parts = Iterate(item);
    if (parts.size() != stmt.targets.size()) {
      throw Error("ValueError", "cannot unpack " + std::to_string(parts.size()) + " values into " +
                                    std::to_string(stmt.targets.size()) + " loop variables");
    }
    for (size_t i = 0; i < parts.size(); ++i) inner.vars[stmt.targets[i]] = parts[i];
  };
  if (stmt.filter) {
    // `for x in xs if cond`: the condition sees the loop variables, and filtered items do
    // not count in loop.index / loop.length.
    List kept;
    for (const Value& item : items) {
      Step();
      auto inner = std::make_shared<Scope>();
      inner->parent = scope;
      bind(*inner, item);
      if (Eval(*stmt.filter, inner).Truthy()) kept.push_back(item);
    }
    items = std::move(kept);
  }
  if (items.empty()) {
    Exec(stmt.else_body, scope);
    return;
  }
  const int64_t length = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < length; ++i) {
    Step();
    auto inner = std::make_shared<Scope>();
    inner->parent = scope;
    bind(*inner, items[static_cast<size_t>(i)]);
    Dict loop;
    loop.emplace_back("index", Value(i + 1));
    loop.emplace_back("index0", Value(i));
    loop.emplace_back("revindex", Value(length - i));
    loop.emplace_back("revindex0", Value(length - i - 1));
    loop.emplace_back("first", Value(i == 0));
    loop.emplace_back("last", Value(i == length - 1));
    loop.emplace_back("length", Value(length));
    loop.emplace_back("depth", Value(1));
    loop.emplace_back("depth0", Value(0));
    loop.emplace_back("previtem", i > 0 ? items[static_cast<size_t>(i - 1)]
                                        : Value::Undefined("there is no previous item"));
    loop.emplace_back("nextitem", i + 1 < length ? items[static_cast<size_t>(i + 1)]
                                                 : Value::Undefined("there is no next item"));
    loop.emplace_back("cycle", Value::FromFunction("loop.cycle", [i](Interpreter&, CallArgs& args) {
      if (args.positional.empty()) throw Error("TypeError", "no items for cycling given");
      return args.positional[static_cast<size_t>(i) % args.positional.size()];
    }));
    inner->vars["loop"] = Value::FromDict(std::move(loop));
    if (Exec(stmt.body, inner) == Flow::kBreak) break;
  }
}

void Interpreter::ExecSet(const Stmt& stmt, const std::shared_ptr<Scope>& scope, Value value) {
  if (!stmt.text.empty()) {
    // {% set ns.attr = value %}: only on a namespace.
    const Value target = Lookup(stmt.targets[0], scope);
    if (!target.is_namespace()) {
      throw Error("TemplateRuntimeError", "cannot assign attribute on non-namespace object");
    }
    Dict& attributes = target.mutable_namespace();
    for (auto& [k, v] : attributes) {
      if (k == stmt.text) {
        v = std::move(value);
        return;
      }
    }
    attributes.emplace_back(stmt.text, std::move(value));
    return;
  }
  if (stmt.targets.size() == 1) {
    scope->vars[stmt.targets[0]] = std::move(value);
    return;
  }
  const List parts = Iterate(value);
  if (parts.size() != stmt.targets.size()) {
    throw Error("ValueError", "cannot unpack " + std::to_string(parts.size()) + " values into " +
                                  std::to_string(stmt.targets.size()) + " names");
  }
  for (size_t i = 0; i < parts.size(); ++i) scope->vars[stmt.targets[i]] = parts[i];
}

Value Interpreter::MakeMacro(const Stmt& stmt, const std::shared_ptr<Scope>& scope) {
  const Stmt* macro = &stmt;
  // The macro lives in `scope`; a weak reference keeps the two from holding each other.
  std::weak_ptr<Scope> weak_scope = scope;
  return Value::FromFunction("macro '" + stmt.targets[0] + "'",
                             [macro, weak_scope](Interpreter& in, CallArgs& args) {
                               std::shared_ptr<Scope> defined_in = weak_scope.lock();
                               if (defined_in == nullptr) {
                                 throw Error("TemplateError", "macro '" + macro->targets[0] +
                                                                  "' called after its scope ended");
                               }
                               return in.CallMacro(*macro, defined_in, args);
                             });
}

Value Interpreter::CallMacro(const Stmt& stmt, const std::shared_ptr<Scope>& defined_in,
                             CallArgs& args) {
  auto inner = std::make_shared<Scope>();
  inner->parent = defined_in;
  const auto& params = stmt.params;
  List varargs;
  for (size_t i = 0; i < args.positional.size(); ++i) {
    if (i < params.size()) {
      inner->vars[params[i].first] = args.positional[i];
    } else {
      varargs.push_back(args.positional[i]);
    }
  }
  Dict kwargs;
  for (auto& [name, value] : args.keyword) {
    bool is_param = false;
    for (const auto& param : params) is_param = is_param || param.first == name;
    if (is_param) {
      inner->vars[name] = value;
    } else if (name == "caller") {
      inner->vars["caller"] = value;
    } else {
      kwargs.emplace_back(name, value);
    }
  }
  for (const auto& [name, default_value] : params) {
    if (inner->vars.contains(name)) continue;
    inner->vars[name] = default_value ? Eval(*default_value, inner)
                                      : Value::Undefined("'" + name + "' is undefined");
  }
  inner->vars["varargs"] = Value::FromList(std::move(varargs));
  inner->vars["kwargs"] = Value::FromDict(std::move(kwargs));
  return Value(Render(stmt.body, inner));
}

Value Interpreter::Call(const Value& callee, CallArgs& args, int line) {
  if (callee.is_undefined()) FailUndefined(callee);
  if (!callee.is_callable()) {
    throw Error("TypeError", "'" + callee.TypeName() + "' object is not callable", line);
  }
  Step();
  if (++depth_ > options_.limits.max_call_depth) {
    --depth_;
    throw Error("RecursionError", "maximum call depth (" +
                                      std::to_string(options_.limits.max_call_depth) +
                                      ") exceeded", line);
  }
  try {
    Value result = callee.function()(*this, args);
    --depth_;
    return result;
  } catch (...) {
    --depth_;
    throw;
  }
}

Value Interpreter::Lookup(const std::string& name, const std::shared_ptr<Scope>& scope) const {
  for (const Scope* s = scope.get(); s != nullptr; s = s->parent.get()) {
    auto it = s->vars.find(name);
    if (it != s->vars.end()) return it->second;
  }
  if (globals_ != nullptr) {
    auto it = globals_->vars.find(name);
    if (it != globals_->vars.end()) return it->second;
  }
  return Value::Undefined("'" + name + "' is undefined");
}

void Interpreter::EvalArgs(const Expr& expr, size_t first, const std::shared_ptr<Scope>& scope,
                           CallArgs* args) {
  for (size_t i = first; i < expr.children.size(); ++i) {
    args->positional.push_back(Eval(*expr.children[i], scope));
  }
  for (const auto& [name, value] : expr.keyword) {
    args->keyword.emplace_back(name, Eval(*value, scope));
  }
}

Value Interpreter::EvalCall(const Expr& expr, const std::shared_ptr<Scope>& scope) {
  const Value callee = Eval(*expr.children[0], scope);
  CallArgs args;
  EvalArgs(expr, 1, scope, &args);
  return Call(callee, args, expr.line);
}

Value Interpreter::Eval(const Expr& expr, const std::shared_ptr<Scope>& scope) {
  if (++eval_depth_ > kMaxEvalDepth) {
    --eval_depth_;
    throw Error("RecursionError", "expressions nest too deeply", expr.line);
  }
  try {
    Value result = EvalInner(expr, scope);
    --eval_depth_;
    return result;
  } catch (...) {
    --eval_depth_;
    throw;
  }
}

Value Interpreter::EvalInner(const Expr& expr, const std::shared_ptr<Scope>& scope) {
  try {
    switch (expr.kind) {
      case Expr::Kind::kLiteral: return expr.literal;
      case Expr::Kind::kName: return Lookup(expr.name, scope);
      case Expr::Kind::kAttr: return GetAttr(Eval(*expr.children[0], scope), expr.name);
      case Expr::Kind::kItem: {
        const Value object = Eval(*expr.children[0], scope);
        return GetItem(object, Eval(*expr.children[1], scope));
      }
      case Expr::Kind::kSlice: {
        const Value object = Eval(*expr.children[0], scope);
        auto part = [&](size_t i) {
          return expr.children[i] ? Eval(*expr.children[i], scope) : Value::None();
        };
        return Slice(object, part(1), part(2), part(3));
      }
      case Expr::Kind::kCall: return EvalCall(expr, scope);
      case Expr::Kind::kFilter: {
        const Value operand = expr.children[0] ? Eval(*expr.children[0], scope) : Value();
        CallArgs args;
        EvalArgs(expr, 1, scope, &args);
        return ApplyFilter(*this, expr.name, operand, args);
      }
      case Expr::Kind::kTest: {
        const Value operand = Eval(*expr.children[0], scope);
        CallArgs args;
        EvalArgs(expr, 1, scope, &args);
        return Value(ApplyTest(*this, expr.name, operand, args) != expr.negated);
      }
      case Expr::Kind::kNeg:
      case Expr::Kind::kPos: {
        const Value v = Eval(*expr.children[0], scope);
        if (v.is_undefined()) FailUndefined(v);
        if (!v.is_number()) {
          throw Error("TypeError", std::string("bad operand type for unary ") +
                                       (expr.kind == Expr::Kind::kNeg ? "-" : "+") + ": '" +
                                       v.TypeName() + "'");
        }
        if (expr.kind == Expr::Kind::kPos) return v.is_bool() ? Value(v.int_value()) : v;
        if (v.kind() == Value::Kind::kFloat) return Value(-v.number());
        if (v.int_value() == INT64_MIN) return Value(-static_cast<double>(v.int_value()));
        return Value(-v.int_value());
      }
      case Expr::Kind::kNot: return Value(!Eval(*expr.children[0], scope).Truthy());
      case Expr::Kind::kAnd: {
        Value left = Eval(*expr.children[0], scope);
        return left.Truthy() ? Eval(*expr.children[1], scope) : left;
      }
      case Expr::Kind::kOr: {
        Value left = Eval(*expr.children[0], scope);
        return left.Truthy() ? left : Eval(*expr.children[1], scope);
      }
      case Expr::Kind::kBinary: {
        const Value left = Eval(*expr.children[0], scope);
        const Value right = Eval(*expr.children[1], scope);
        return BinaryOp(*this, expr.name, left, right);
      }
      case Expr::Kind::kCondition:
        if (Eval(*expr.children[0], scope).Truthy()) return Eval(*expr.children[1], scope);
        if (expr.children[2]) return Eval(*expr.children[2], scope);
        return Value::Undefined("the inline if expression evaluated to false and no else "
                                "section was defined");
      case Expr::Kind::kList:
      case Expr::Kind::kTuple: {
        List items;
        for (const ExprPtr& child : expr.children) items.push_back(Eval(*child, scope));
        return Value::FromList(std::move(items));
      }
      case Expr::Kind::kDict: {
        Dict dict;
        for (size_t i = 0; i + 1 < expr.children.size(); i += 2) {
          const Value key = Eval(*expr.children[i], scope);
          if (!key.is_string()) {
            throw Error("TypeError", "dict keys must be strings here, not " + key.TypeName());
          }
          Value value = Eval(*expr.children[i + 1], scope);
          bool replaced = false;
          for (auto& [k, v] : dict) {
            if (k == key.str()) {
              v = value;
              replaced = true;
            }
          }
          if (!replaced) dict.emplace_back(key.str(), std::move(value));
        }
        return Value::FromDict(std::move(dict));
      }
    }
  } catch (Error& e) {
    e.set_line(expr.line);
    throw;
  }
  return Value();
}

}  // namespace moemesh::text::jinja
