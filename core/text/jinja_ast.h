// The Jinja syntax tree: expressions and statements as the parser builds them and the
// interpreter walks them. Every node carries the template line it came from (for errors).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/text/jinja_value.h"

namespace moemesh::text::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,   // literal
    kName,      // name
    kAttr,      // children[0].name
    kItem,      // children[0][children[1]]
    kSlice,     // children[0][children[1]:children[2]:children[3]] (null = omitted)
    kCall,      // children[0](children[1..], keyword)
    kFilter,    // children[0] | name(children[1..], keyword)
    kTest,      // children[0] is [not] name(children[1..])
    kNeg,       // -children[0]
    kPos,       // +children[0]
    kNot,       // not children[0]
    kBinary,    // children[0] name children[1]: + - * / // % ** ~ == != < > <= >= in notin
    kAnd,
    kOr,
    kCondition, // children[1] if children[0] else children[2] (null = undefined)
    kList,
    kTuple,
    kDict,      // keyword: (key expression is children[2i], value children[2i+1])
  };
  Kind kind;
  int line = 0;
  Value literal;
  std::string name;
  bool negated = false;  // kTest: `is not`
  std::vector<ExprPtr> children;
  std::vector<std::pair<std::string, ExprPtr>> keyword;
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Stmt {
  enum class Kind {
    kText,      // text
    kOutput,    // {{ expr }}
    kIf,        // branches (condition, body)...; else_body
    kFor,       // for targets in expr [if filter] body [else else_body]
    kSet,       // set targets (or target.attr) = expr
    kSetBlock,  // set target %}body{% endset
    kMacro,     // macro name(params) body
    kCallBlock, // call(params) expr %}body{% endcall
    kFilterBlock,  // filter expr(body) — expr is a kFilter whose operand is null
    kWith,      // with assignments body
    kBreak,
    kContinue,
    kBlock,     // a plain body (generation blocks, ...)
  };
  Kind kind;
  int line = 0;
  std::string text;                        // kText; kSet attr target (ns.attr): the attribute
  ExprPtr expr;                            // output / set value / for iterable / call / filter
  ExprPtr filter;                          // for ... if filter
  std::vector<std::string> targets;        // for / set / macro name (targets[0])
  std::vector<std::pair<ExprPtr, Body>> branches;  // if / elif
  Body body;
  Body else_body;
  std::vector<std::pair<std::string, ExprPtr>> params;  // macro / call params (default or null); with
};

}  // namespace moemesh::text::jinja
