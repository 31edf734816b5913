#include "core/text/jinja_parser.h"

#include <cerrno>
#include <cstdlib>
#include <initializer_list>
#include <string>

namespace moemesh::text::jinja {
namespace {

using Type = Token::Type;

class Parser {
 public:
  explicit Parser(const std::vector<Token>& tokens) : tokens_(tokens) {}

  Body ParseTemplate() {
    std::string end;
    Body body = ParseBody({}, &end);
    if (Peek().type != Type::kEnd) Fail("unexpected tag");
    return body;
  }

 private:
  // -- tokens ----------------------------------------------------------------------------------
  const Token& Peek(size_t ahead = 0) const {
    const size_t i = std::min(pos_ + ahead, tokens_.size() - 1);
    return tokens_[i];
  }
  const Token& Next() {
    const Token& t = Peek();
    if (pos_ < tokens_.size() - 1) ++pos_;
    return t;
  }
  bool IsOp(const char* op, size_t ahead = 0) const {
    return Peek(ahead).type == Type::kOperator && Peek(ahead).value == op;
  }
  bool IsName(const char* name, size_t ahead = 0) const {
    return Peek(ahead).type == Type::kName && Peek(ahead).value == name;
  }
  [[noreturn]] void Fail(const std::string& message) const {
    throw Error("TemplateSyntaxError", message, Peek().line);
  }
  static std::string Describe(const Token& t) {
    switch (t.type) {
      case Type::kEnd: return "end of template";
      case Type::kBlockEnd: return "end of statement block";
      case Type::kVariableEnd: return "end of print statement";
      case Type::kText: return "template data";
      default: return "'" + t.value + "'";
    }
  }
  void ExpectOp(const char* op) {
    if (!IsOp(op)) Fail(std::string("expected '") + op + "', got " + Describe(Peek()));
    Next();
  }
  std::string ExpectName() {
    if (Peek().type != Type::kName) Fail("expected a name, got " + Describe(Peek()));
    return Next().value;
  }
  void ExpectBlockEnd() {
    if (Peek().type != Type::kBlockEnd) Fail("expected end of statement block, got " + Describe(Peek()));
    Next();
  }

  struct DepthGuard {
    explicit DepthGuard(Parser* p) : parser(p) {
      if (++parser->depth_ > kMaxParseDepth) parser->Fail("the template nests too deeply");
    }
    ~DepthGuard() { --parser->depth_; }
    Parser* parser;
  };

  // -- statements ------------------------------------------------------------------------------
  // Parses until a block tag named in `ends` (consumed up to and including its name; the name
  // goes to *end) or the end of the tokens (only allowed when `ends` is empty).
  Body ParseBody(std::initializer_list<const char*> ends, std::string* end) {
    DepthGuard guard(this);
    Body body;
    while (true) {
      const Token& t = Peek();
      if (t.type == Type::kEnd) {
        if (ends.size() != 0) {
          std::string expected;
          for (const char* e : ends) expected += std::string(expected.empty() ? "" : " or ") + "'" + e + "'";
          Fail("unexpected end of template, expected " + expected);
        }
        return body;
      }
      if (t.type == Type::kText) {
        auto stmt = NewStmt(Stmt::Kind::kText, t.line);
        stmt->text = t.value;
        body.push_back(std::move(stmt));
        Next();
      } else if (t.type == Type::kVariableBegin) {
        Next();
        auto stmt = NewStmt(Stmt::Kind::kOutput, t.line);
        stmt->expr = ParseExpression();
        if (Peek().type != Type::kVariableEnd) Fail("expected end of print statement, got " + Describe(Peek()));
        Next();
        body.push_back(std::move(stmt));
      } else if (t.type == Type::kBlockBegin) {
        Next();
        if (Peek().type != Type::kName) Fail("expected a tag name, got " + Describe(Peek()));
        const std::string name = Peek().value;
        for (const char* e : ends) {
          if (name == e) {
            Next();
            *end = name;
            return body;
          }
        }
        body.push_back(ParseStatement());
      } else {
        Fail("unexpected " + Describe(t));
      }
    }
  }

  StmtPtr NewStmt(Stmt::Kind kind, int line) {
    auto stmt = std::make_unique<Stmt>();
    stmt->kind = kind;
    stmt->line = line;
    return stmt;
  }

  StmtPtr ParseStatement() {
    const Token& t = Next();
    const std::string& name = t.value;
    const int line = t.line;
    if (name == "if") return ParseIf(line);
    if (name == "for") return ParseFor(line);
    if (name == "set") return ParseSet(line);
    if (name == "macro") return ParseMacro(line);
    if (name == "call") return ParseCallBlock(line);
    if (name == "filter") return ParseFilterBlock(line);
    if (name == "with") return ParseWith(line);
    if (name == "break" || name == "continue") {
      ExpectBlockEnd();
      if (loop_depth_ == 0) {
        throw Error("TemplateSyntaxError", "'" + name + "' outside of a loop", line);
      }
      return NewStmt(name == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue, line);
    }
    if (name == "generation") {  // transformers' assistant-mask extension: renders its body
      ExpectBlockEnd();
      auto stmt = NewStmt(Stmt::Kind::kBlock, line);
      std::string end;
      stmt->body = ParseBody({"endgeneration"}, &end);
      ExpectBlockEnd();
      return stmt;
    }
    throw Error("TemplateSyntaxError", "Encountered unknown tag '" + name + "'", line);
  }

  StmtPtr ParseIf(int line) {
    auto stmt = NewStmt(Stmt::Kind::kIf, line);
    ExprPtr condition = ParseExpression();
    ExpectBlockEnd();
    while (true) {
      std::string end;
      Body body = ParseBody({"elif", "else", "endif"}, &end);
      stmt->branches.emplace_back(std::move(condition), std::move(body));
      if (end == "elif") {
        condition = ParseExpression();
        ExpectBlockEnd();
        continue;
      }
      ExpectBlockEnd();
      if (end == "else") {
        stmt->else_body = ParseBody({"endif"}, &end);
        ExpectBlockEnd();
      }
      return stmt;
    }
  }

  std::vector<std::string> ParseTargets() {
    std::vector<std::string> targets;
    const bool paren = IsOp("(");
    if (paren) Next();
    targets.push_back(ExpectName());
    while (IsOp(",")) {
      Next();
      if (paren && IsOp(")")) break;
      targets.push_back(ExpectName());
    }
    if (paren) ExpectOp(")");
    return targets;
  }

  StmtPtr ParseFor(int line) {
    auto stmt = NewStmt(Stmt::Kind::kFor, line);
    stmt->targets = ParseTargets();
    if (!IsName("in")) Fail("expected 'in', got " + Describe(Peek()));
    Next();
    stmt->expr = ParseTuple(/*no_condition=*/true);
    if (IsName("if")) {
      Next();
      stmt->filter = ParseExpression();
    }
    if (IsName("recursive")) Fail("recursive loops are not supported");
    ExpectBlockEnd();
    ++loop_depth_;
    std::string end;
    stmt->body = ParseBody({"else", "endfor"}, &end);
    --loop_depth_;
    ExpectBlockEnd();
    if (end == "else") {
      stmt->else_body = ParseBody({"endfor"}, &end);
      ExpectBlockEnd();
    }
    return stmt;
  }

  StmtPtr ParseSet(int line) {
    std::vector<std::string> targets;
    std::string attr;
    targets.push_back(ExpectName());
    if (IsOp(".")) {
      Next();
      attr = ExpectName();
    } else {
      while (IsOp(",")) {
        Next();
        targets.push_back(ExpectName());
      }
    }
    if (IsOp("=")) {
      Next();
      auto stmt = NewStmt(Stmt::Kind::kSet, line);
      stmt->targets = std::move(targets);
      stmt->text = attr;
      stmt->expr = ParseTuple(/*no_condition=*/false);
      ExpectBlockEnd();
      return stmt;
    }
    if (!attr.empty() || targets.size() != 1) Fail("expected '='");
    auto stmt = NewStmt(Stmt::Kind::kSetBlock, line);
    stmt->targets = std::move(targets);
    if (IsOp("|")) stmt->expr = ParseFilterChain(nullptr);
    ExpectBlockEnd();
    std::string end;
    stmt->body = ParseBody({"endset"}, &end);
    ExpectBlockEnd();
    return stmt;
  }

  void ParseParams(std::vector<std::pair<std::string, ExprPtr>>* params) {
    ExpectOp("(");
    while (!IsOp(")")) {
      if (!params->empty()) ExpectOp(",");
      if (IsOp(")")) break;
      std::string name = ExpectName();
      ExprPtr default_value;
      if (IsOp("=")) {
        Next();
        default_value = ParseExpression();
      }
      params->emplace_back(std::move(name), std::move(default_value));
    }
    Next();
  }

  StmtPtr ParseMacro(int line) {
    auto stmt = NewStmt(Stmt::Kind::kMacro, line);
    stmt->targets.push_back(ExpectName());
    ParseParams(&stmt->params);
    ExpectBlockEnd();
    const int saved_loops = loop_depth_;
    loop_depth_ = 0;
    std::string end;
    stmt->body = ParseBody({"endmacro"}, &end);
    loop_depth_ = saved_loops;
    if (Peek().type == Type::kName) Next();  // {% endmacro name %}
    ExpectBlockEnd();
    return stmt;
  }

  StmtPtr ParseCallBlock(int line) {
    auto stmt = NewStmt(Stmt::Kind::kCallBlock, line);
    if (IsOp("(")) ParseParams(&stmt->params);
    stmt->expr = ParseExpression();
    if (stmt->expr->kind != Expr::Kind::kCall) Fail("expected a call");
    ExpectBlockEnd();
    std::string end;
    stmt->body = ParseBody({"endcall"}, &end);
    ExpectBlockEnd();
    return stmt;
  }

  StmtPtr ParseFilterBlock(int line) {
    auto stmt = NewStmt(Stmt::Kind::kFilterBlock, line);
    // `{% filter upper | trim %}`: a filter chain over the body.
    stmt->expr = ParseFilterChain(nullptr, /*first_bar=*/false);
    ExpectBlockEnd();
    std::string end;
    stmt->body = ParseBody({"endfilter"}, &end);
    ExpectBlockEnd();
    return stmt;
  }

  StmtPtr ParseWith(int line) {
    auto stmt = NewStmt(Stmt::Kind::kWith, line);
    while (Peek().type != Type::kBlockEnd) {
      if (!stmt->params.empty()) ExpectOp(",");
      std::string name = ExpectName();
      ExpectOp("=");
      stmt->params.emplace_back(std::move(name), ParseExpression());
    }
    ExpectBlockEnd();
    std::string end;
    stmt->body = ParseBody({"endwith"}, &end);
    ExpectBlockEnd();
    return stmt;
  }

  // -- expressions -----------------------------------------------------------------------------
  ExprPtr NewExpr(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  // `a, b` (a tuple) or one expression; used where jinja2 allows bare tuples.
  ExprPtr ParseTuple(bool no_condition) {
    const int line = Peek().line;
    ExprPtr first = no_condition ? ParseOr() : ParseExpression();
    if (!IsOp(",")) return first;
    auto tuple = NewExpr(Expr::Kind::kTuple, line);
    tuple->children.push_back(std::move(first));
    while (IsOp(",")) {
      Next();
      if (Peek().type == Type::kBlockEnd || Peek().type == Type::kVariableEnd) break;
      tuple->children.push_back(no_condition ? ParseOr() : ParseExpression());
    }
    return tuple;
  }

  ExprPtr ParseExpression() {
    DepthGuard guard(this);
    ExprPtr value = ParseOr();
    while (IsName("if")) {
      const int line = Next().line;
      auto condition = NewExpr(Expr::Kind::kCondition, line);
      condition->children.push_back(ParseOr());
      condition->children.push_back(std::move(value));
      if (IsName("else")) {
        Next();
        condition->children.push_back(ParseExpression());
      } else {
        condition->children.push_back(nullptr);
      }
      value = std::move(condition);
    }
    return value;
  }

  ExprPtr ParseOr() {
    ExprPtr left = ParseAnd();
    while (IsName("or")) {
      auto node = NewExpr(Expr::Kind::kOr, Next().line);
      node->children.push_back(std::move(left));
      node->children.push_back(ParseAnd());
      left = std::move(node);
    }
    return left;
  }

  ExprPtr ParseAnd() {
    ExprPtr left = ParseNot();
    while (IsName("and")) {
      auto node = NewExpr(Expr::Kind::kAnd, Next().line);
      node->children.push_back(std::move(left));
      node->children.push_back(ParseNot());
      left = std::move(node);
    }
    return left;
  }

  ExprPtr ParseNot() {
    if (IsName("not")) {
      DepthGuard guard(this);
      auto node = NewExpr(Expr::Kind::kNot, Next().line);
      node->children.push_back(ParseNot());
      return node;
    }
    return ParseCompare();
  }

  ExprPtr ParseCompare() {
    ExprPtr left = ParseMath1();
    while (true) {
      std::string op;
      const int line = Peek().line;
      if (Peek().type == Type::kOperator &&
          (Peek().value == "==" || Peek().value == "!=" || Peek().value == "<" ||
           Peek().value == ">" || Peek().value == "<=" || Peek().value == ">=")) {
        op = Next().value;
      } else if (IsName("in")) {
        Next();
        op = "in";
      } else if (IsName("not") && IsName("in", 1)) {
        Next();
        Next();
        op = "notin";
      } else {
        return left;
      }
      left = Binary(op, std::move(left), ParseMath1(), line);
    }
  }

  ExprPtr Binary(const std::string& op, ExprPtr left, ExprPtr right, int line) {
    auto node = NewExpr(Expr::Kind::kBinary, line);
    node->name = op;
    node->children.push_back(std::move(left));
    node->children.push_back(std::move(right));
    return node;
  }

  ExprPtr ParseMath1() {
    ExprPtr left = ParseConcat();
    while (IsOp("+") || IsOp("-")) {
      const Token& t = Next();
      left = Binary(t.value, std::move(left), ParseConcat(), t.line);
    }
    return left;
  }

  ExprPtr ParseConcat() {
    ExprPtr left = ParseMath2();
    while (IsOp("~")) {
      const Token& t = Next();
      left = Binary("~", std::move(left), ParseMath2(), t.line);
    }
    return left;
  }

  ExprPtr ParseMath2() {
    ExprPtr left = ParsePow();
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const Token& t = Next();
      left = Binary(t.value, std::move(left), ParsePow(), t.line);
    }
    return left;
  }

  ExprPtr ParsePow() {
    ExprPtr left = ParseUnary(true);
    while (IsOp("**")) {
      const Token& t = Next();
      left = Binary("**", std::move(left), ParseUnary(true), t.line);
    }
    return left;
  }

  ExprPtr ParseUnary(bool with_filter) {
    DepthGuard guard(this);
    ExprPtr node;
    if (IsOp("-") || IsOp("+")) {
      const Token& t = Next();
      node = NewExpr(t.value == "-" ? Expr::Kind::kNeg : Expr::Kind::kPos, t.line);
      node->children.push_back(ParseUnary(false));
    } else {
      node = ParsePostfix(ParsePrimary());
    }
    if (with_filter) node = ParseFilterExpr(std::move(node));
    return node;
  }

  ExprPtr ParsePrimary() {
    DepthGuard guard(this);
    const Token& t = Peek();
    if (t.type == Type::kName) {
      Next();
      auto literal = [&](Value v) {
        auto e = NewExpr(Expr::Kind::kLiteral, t.line);
        e->literal = std::move(v);
        return e;
      };
      if (t.value == "true" || t.value == "True") return literal(Value(true));
      if (t.value == "false" || t.value == "False") return literal(Value(false));
      if (t.value == "none" || t.value == "None") return literal(Value::None());
      auto e = NewExpr(Expr::Kind::kName, t.line);
      e->name = t.value;
      return e;
    }
    if (t.type == Type::kString) {
      auto e = NewExpr(Expr::Kind::kLiteral, t.line);
      std::string text;
      while (Peek().type == Type::kString) text += Next().value;
      e->literal = Value(std::move(text));
      return e;
    }
    if (t.type == Type::kInteger) {
      Next();
      auto e = NewExpr(Expr::Kind::kLiteral, t.line);
      errno = 0;
      const long long v = std::strtoll(t.value.c_str(), nullptr, 10);
      if (errno == ERANGE) {
        e->literal = Value(std::strtod(t.value.c_str(), nullptr));
      } else {
        e->literal = Value(static_cast<int64_t>(v));
      }
      return e;
    }
    if (t.type == Type::kFloat) {
      Next();
      auto e = NewExpr(Expr::Kind::kLiteral, t.line);
      e->literal = Value(std::strtod(t.value.c_str(), nullptr));
      return e;
    }
    if (IsOp("(")) {
      Next();
      if (IsOp(")")) {
        Next();
        return NewExpr(Expr::Kind::kTuple, t.line);
      }
      ExprPtr inner = ParseExpression();
      if (IsOp(",")) {
        auto tuple = NewExpr(Expr::Kind::kTuple, t.line);
        tuple->children.push_back(std::move(inner));
        while (IsOp(",")) {
          Next();
          if (IsOp(")")) break;
          tuple->children.push_back(ParseExpression());
        }
        inner = std::move(tuple);
      }
      ExpectOp(")");
      return inner;
    }
    if (IsOp("[")) {
      Next();
      auto list = NewExpr(Expr::Kind::kList, t.line);
      while (!IsOp("]")) {
        if (!list->children.empty()) ExpectOp(",");
        if (IsOp("]")) break;
        list->children.push_back(ParseExpression());
      }
      Next();
      return list;
    }
    if (IsOp("{")) {
      Next();
      auto dict = NewExpr(Expr::Kind::kDict, t.line);
      while (!IsOp("}")) {
        if (!dict->children.empty()) ExpectOp(",");
        if (IsOp("}")) break;
        dict->children.push_back(ParseExpression());
        ExpectOp(":");
        dict->children.push_back(ParseExpression());
      }
      Next();
      return dict;
    }
    Fail("unexpected " + Describe(t));
  }

  ExprPtr ParsePostfix(ExprPtr node) {
    while (true) {
      DepthGuard guard(this);
      if (IsOp(".")) {
        const int line = Next().line;
        auto attr = NewExpr(Expr::Kind::kAttr, line);
        if (Peek().type == Type::kName) {
          attr->name = Next().value;
        } else if (Peek().type == Type::kInteger) {
          // x.0 is x[0]
          auto item = NewExpr(Expr::Kind::kItem, line);
          auto index = NewExpr(Expr::Kind::kLiteral, line);
          index->literal = Value(static_cast<int64_t>(std::strtoll(Next().value.c_str(), nullptr, 10)));
          item->children.push_back(std::move(node));
          item->children.push_back(std::move(index));
          node = std::move(item);
          continue;
        } else {
          Fail("expected an attribute name, got " + Describe(Peek()));
        }
        attr->children.push_back(std::move(node));
        node = std::move(attr);
      } else if (IsOp("[")) {
        node = ParseSubscript(std::move(node));
      } else if (IsOp("(")) {
        node = ParseCall(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr ParseSubscript(ExprPtr node) {
    const int line = Next().line;  // [
    ExprPtr parts[3];
    int colons = 0;
    if (!IsOp(":")) parts[0] = ParseExpression();
    while (IsOp(":") && colons < 2) {
      Next();
      ++colons;
      if (!IsOp(":") && !IsOp("]")) parts[colons] = ParseExpression();
    }
    ExpectOp("]");
    if (colons == 0) {
      auto item = NewExpr(Expr::Kind::kItem, line);
      item->children.push_back(std::move(node));
      item->children.push_back(std::move(parts[0]));
      return item;
    }
    auto slice = NewExpr(Expr::Kind::kSlice, line);
    slice->children.push_back(std::move(node));
    for (auto& part : parts) slice->children.push_back(std::move(part));
    return slice;
  }

  void ParseArguments(Expr* call) {
    ExpectOp("(");
    bool first = true;
    while (!IsOp(")")) {
      if (!first) ExpectOp(",");
      first = false;
      if (IsOp(")")) break;
      if (Peek().type == Type::kName && IsOp("=", 1)) {
        std::string name = Next().value;
        Next();
        call->keyword.emplace_back(std::move(name), ParseExpression());
      } else {
        if (!call->keyword.empty()) Fail("positional argument after a keyword argument");
        call->children.push_back(ParseExpression());
      }
    }
    Next();
  }

  ExprPtr ParseCall(ExprPtr node) {
    auto call = NewExpr(Expr::Kind::kCall, Peek().line);
    call->children.push_back(std::move(node));
    ParseArguments(call.get());
    return call;
  }

  // `| name(args)` repeated; `operand` may be null (filter blocks, set blocks).
  ExprPtr ParseFilterChain(ExprPtr operand, bool first_bar = true) {
    bool need_bar = first_bar;
    while (!need_bar || IsOp("|")) {
      if (need_bar) Next();
      need_bar = true;
      auto filter = NewExpr(Expr::Kind::kFilter, Peek().line);
      filter->name = ExpectName();
      while (IsOp(".")) {  // dotted filter names
        Next();
        filter->name += "." + ExpectName();
      }
      filter->children.push_back(std::move(operand));
      if (IsOp("(")) ParseArguments(filter.get());
      operand = std::move(filter);
    }
    return operand;
  }

  ExprPtr ParseFilterExpr(ExprPtr node) {
    while (true) {
      DepthGuard guard(this);
      if (IsOp("|")) {
        node = ParseFilterChain(std::move(node));
      } else if (IsName("is")) {
        const int line = Next().line;
        auto test = NewExpr(Expr::Kind::kTest, line);
        if (IsName("not")) {
          Next();
          test->negated = true;
        }
        test->name = ExpectName();
        while (IsOp(".")) {
          Next();
          test->name += "." + ExpectName();
        }
        test->children.push_back(std::move(node));
        if (IsOp("(")) {
          ParseArguments(test.get());
        } else {
          const Token& t = Peek();
          const bool starts_value =
              t.type == Type::kName || t.type == Type::kString || t.type == Type::kInteger ||
              t.type == Type::kFloat || IsOp("[") || IsOp("{");
          if (starts_value && !IsName("else") && !IsName("or") && !IsName("and") &&
              !IsName("if") && !IsName("not") && !IsName("in") && !IsName("is")) {
            test->children.push_back(ParsePostfix(ParsePrimary()));
          }
        }
        node = std::move(test);
      } else if (IsOp("(")) {
        node = ParseCall(std::move(node));
      } else {
        return node;
      }
    }
  }

  const std::vector<Token>& tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

Body Parse(const std::vector<Token>& tokens) { return Parser(tokens).ParseTemplate(); }

}  // namespace moemesh::text::jinja
