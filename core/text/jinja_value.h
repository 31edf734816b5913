// The value type of the Jinja interpreter (core/text/jinja_*): what Python values are to jinja2.
// undefined (jinja2's lenient Undefined), none, bool, int (int64), float, str (UTF-8), list,
// dict (insertion-ordered, string keys), namespace (a mutable dict, jinja2's namespace()), and
// callables (macros, globals, bound methods). Lists, dicts and namespaces are shared by
// reference, as in Python; the sandbox never lets a template mutate a list or a dict.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nlohmann/json.hpp"

namespace moemesh::text::jinja {

// A render or compile failure inside the engine. Never leaves the engine: Template::Parse and
// Template::Render turn it into an absl::Status. `kind` is the Python exception class jinja2 would
// raise (TypeError, UndefinedError, SecurityError, TemplateSyntaxError, TemplateError, ...).
class Error : public std::runtime_error {
 public:
  Error(std::string kind, const std::string& message, int line = 0)
      : std::runtime_error(message), kind_(std::move(kind)), line_(line) {}
  const std::string& kind() const { return kind_; }
  int line() const { return line_; }
  void set_line(int line) { if (line_ == 0) line_ = line; }

 private:
  std::string kind_;
  int line_;
};

class Value;
class Interpreter;
using List = std::vector<Value>;
using Dict = std::vector<std::pair<std::string, Value>>;  // insertion order, unique keys

// Arguments of a call: positional, then keyword (name, value) in the order written.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};
using Function = std::function<Value(Interpreter&, CallArgs&)>;

// Lists and dicts nest at most this deep (deeper input or template values are an error), so
// printing, comparing and freeing them never runs out of stack.
inline constexpr int kMaxValueDepth = 256;

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kNamespace,
                    kCallable };

  Value() = default;  // undefined
  static Value Undefined(std::string name = "") {
    Value v;
    v.string_ = std::move(name);
    return v;
  }
  static Value None() { Value v; v.kind_ = Kind::kNone; return v; }
  Value(bool b) : kind_(Kind::kBool), int_(b) {}  // NOLINT: implicit like Python literals
  Value(int i) : kind_(Kind::kInt), int_(i) {}  // NOLINT
  Value(int64_t i) : kind_(Kind::kInt), int_(i) {}  // NOLINT
  Value(double d) : kind_(Kind::kFloat), float_(d) {}  // NOLINT
  Value(std::string s) : kind_(Kind::kString), string_(std::move(s)) {}  // NOLINT
  Value(const char* s) : kind_(Kind::kString), string_(s) {}  // NOLINT
  // Throw Error (RecursionError) when the result would nest deeper than kMaxValueDepth.
  static Value FromList(List list);
  static Value FromDict(Dict dict);
  static Value NewNamespace(Dict attributes);
  // `name` is for error messages ("macro 'x'", "method 'split' of str").
  static Value FromFunction(std::string name, Function function);
  // A JSON document as Python would load it (objects keep their key order). Throws Error
  // (RecursionError) past kMaxValueDepth.
  static Value FromJson(const nlohmann::ordered_json& json);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_namespace() const { return kind_ == Kind::kNamespace; }
  bool is_callable() const { return kind_ == Kind::kCallable; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }  // bool is not int here (test `integer`)
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat || kind_ == Kind::kBool; }

  bool bool_value() const { return int_ != 0; }
  int64_t int_value() const { return int_; }       // int or bool
  double number() const { return kind_ == Kind::kFloat ? float_ : static_cast<double>(int_); }
  const std::string& str() const { return string_; }  // string; undefined: its name
  const List& list() const { return *list_; }
  const Dict& dict() const { return *dict_; }       // dict or namespace
  Dict& mutable_namespace() const { return *dict_; }  // namespace only
  std::weak_ptr<Dict> weak_dict() const { return dict_; }
  const std::string& function_name() const { return string_; }
  const Function& function() const { return *function_; }
  // How deeply lists and dicts nest inside (0 for scalars; namespaces count as 0).
  int depth() const { return depth_; }

  // Dict / namespace lookup: the value, or nullptr when absent.
  const Value* Find(std::string_view key) const;

  // Python truthiness: undefined, none, False, 0, 0.0, "", [], {} are false.
  bool Truthy() const;
  // Python str(): what {{ value }} prints ("" for undefined, "None", "True", 1.0 -> "1.0",
  // lists and dicts in repr form).
  std::string ToString() const;
  // Python repr() (strings quoted).
  std::string Repr() const;
  // Python's type name for error messages: 'NoneType', 'str', 'list', 'dict', ...
  std::string TypeName() const;
  // Python ==.
  bool Equals(const Value& other) const;

 private:
  Kind kind_ = Kind::kUndefined;
  int depth_ = 0;
  int64_t int_ = 0;
  double float_ = 0;
  std::string string_;
  std::shared_ptr<List> list_;
  std::shared_ptr<Dict> dict_;
  std::shared_ptr<Function> function_;
};

// Options of ToJson: Python json.dumps' arguments as transformers' tojson passes them.
struct JsonOptions {
  int indent = -1;              // < 0: none (one line)
  std::string indent_text;      // used when non-empty (indent given as a string)
  bool indent_given = false;
  std::string item_separator;   // default ", " (or "," when indenting)
  std::string key_separator = ": ";
  bool separators_given = false;
  bool sort_keys = false;
  bool ensure_ascii = false;
};
// json.dumps(value, ensure_ascii=False, ...) as transformers' tojson calls it: non-ASCII kept,
// no HTML escaping, keys in order, Python float repr. Error (TypeError) for values JSON cannot
// hold (undefined, callables, namespaces).
std::string ToJson(const Value& value, const JsonOptions& options);

// Python repr() of a float ("1.0", "0.1", "1e+16", "inf", "nan").
std::string FloatRepr(double value);

// UTF-8 code points of `s` (invalid bytes count as one each), for len() and indexing.
std::vector<std::string_view> CodePoints(std::string_view s);

}  // namespace moemesh::text::jinja
