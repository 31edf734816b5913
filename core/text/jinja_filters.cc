// jinja2's filters (and transformers' tojson), tests and the globals transformers' chat
// templates see (range, namespace, dict, raise_exception, strftime_now).
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <ctime>
#include <utility>

#include "core/text/jinja_builtins_internal.h"

namespace moemesh::text::jinja {
namespace {

using namespace internal;  // NOLINT: the shared helpers

std::string HtmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// Sort key comparison for sort / dictsort / min / max: strings compare case-insensitively
// unless case_sensitive.
bool SortLess(const Value& a, const Value& b, bool case_sensitive) {
  if (!case_sensitive && a.is_string() && b.is_string()) return Lower(a.str()) < Lower(b.str());
  return Less(a, b, "<");
}

// select / reject / selectattr / rejectattr.
Value SelectFilter(Interpreter& in, const Value& operand, CallArgs& args, bool attribute, bool keep) {
  List out;
  size_t next = 0;
  std::string attr;
  if (attribute) {
    const Value* a = Arg(args, next++, "attribute");
    if (a == nullptr || !a->is_string()) TypeError("selectattr/rejectattr need an attribute name");
    attr = a->str();
  }
  const Value* test = next < args.positional.size() ? &args.positional[next] : nullptr;
  CallArgs test_args;
  for (size_t i = next + 1; i < args.positional.size(); ++i) test_args.positional.push_back(args.positional[i]);
  for (const Value& item : Iterate(operand)) {
    in.Step();
    const Value subject = attribute ? AttributePath(item, attr) : item;
    bool result;
    if (test == nullptr) {
      result = subject.Truthy();
    } else {
      if (!test->is_string()) TypeError("the test name must be a string");
      CallArgs copy = test_args;
      result = ApplyTest(in, test->str(), subject, copy);
    }
    if (result == keep) out.push_back(item);
  }
  return Value::FromList(std::move(out));
}

}  // namespace

using namespace internal;  // NOLINT

Value ApplyFilter(Interpreter& in, const std::string& name, const Value& v, CallArgs& args) {
  in.Step();
  if (name == "tojson") {
    // transformers: tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
    JsonOptions options;
    options.ensure_ascii = BoolArg(args, 0, "ensure_ascii", false);
    const Value* indent = Arg(args, 1, "indent");
    if (indent != nullptr && !indent->is_none()) {
      options.indent_given = true;
      if (indent->is_string()) options.indent_text = indent->str();
      else if (indent->kind() == Kind::kInt) options.indent = static_cast<int>(std::clamp<int64_t>(indent->int_value(), 0, 64));
      else TypeError("tojson indent must be an integer or a string");
    }
    const Value* separators = Arg(args, 2, "separators");
    if (separators != nullptr && !separators->is_none()) {
      if (!separators->is_list() || separators->list().size() != 2 ||
          !separators->list()[0].is_string() || !separators->list()[1].is_string()) {
        TypeError("tojson separators must be a pair of strings");
      }
      options.separators_given = true;
      options.item_separator = separators->list()[0].str();
      options.key_separator = separators->list()[1].str();
    }
    options.sort_keys = BoolArg(args, 3, "sort_keys", false);
    std::string out = ToJson(v, options);
    in.CheckSize(out.size());
    return Value(std::move(out));
  }
  if (name == "string") return Value(v.ToString());
  if (name == "safe") return v;
  if (name == "e" || name == "escape" || name == "forceescape") return Value(HtmlEscape(v.ToString()));
  if (name == "length" || name == "count") return Value(Length(v));
  if (name == "default" || name == "d") {
    const Value* fallback = Arg(args, 0, "default_value");
    const bool boolean = BoolArg(args, 1, "boolean", false);
    if (v.is_undefined() || (boolean && !v.Truthy())) return fallback ? *fallback : Value(std::string());
    return v;
  }
  if (v.is_undefined() && name != "list" && name != "join" && name != "items" && name != "first" &&
      name != "last" && name != "map" && name != "select" && name != "reject" &&
      name != "selectattr" && name != "rejectattr" && name != "unique" && name != "sort" &&
      name != "dictsort" && name != "sum") {
    FailUndefined(v);
  }
  if (name == "trim") {
    const Value* chars = Arg(args, 0, "chars");
    return Value(Strip(v.ToString(), chars && chars->is_string() ? &chars->str() : nullptr, true, true));
  }
  if (name == "upper") return Value(Upper(v.ToString()));
  if (name == "lower") return Value(Lower(v.ToString()));
  if (name == "capitalize") return Value(Capitalize(v.ToString()));
  if (name == "title") return Value(Title(v.ToString()));
  if (name == "replace") {
    const Value* count = Arg(args, 2, "count");
    return Value(Replace(in, v.ToString(), StrArg(args, 0, "old", "", "replace"),
                         StrArg(args, 1, "new", "", "replace"),
                         count && count->kind() == Kind::kInt ? count->int_value() : -1));
  }
  if (name == "list") return Value::FromList(Iterate(v));
  if (name == "first" || name == "last") {
    const List items = Iterate(v);
    if (items.empty()) return Value::Undefined("No " + name + " item, sequence was empty.");
    return name == "first" ? items.front() : items.back();
  }
  if (name == "join") {
    const std::string sep = StrArg(args, 0, "d", "", "join");
    const Value* attribute = Arg(args, 1, "attribute");
    std::string out;
    bool first = true;
    for (const Value& item : Iterate(v)) {
      if (!first) out += sep;
      first = false;
      out += (attribute && attribute->is_string() ? AttributePath(item, attribute->str()) : item).ToString();
      in.CheckSize(out.size());
    }
    return Value(std::move(out));
  }
  if (name == "items") {
    if (v.is_undefined()) return Value::FromList({});
    if (!v.is_dict()) TypeError("items filter needs a mapping, got " + v.TypeName());
    List out;
    for (const auto& [k, item] : v.dict()) out.push_back(Value::FromList({Value(k), item}));
    return Value::FromList(std::move(out));
  }
  if (name == "dictsort") {
    if (v.is_undefined()) return Value::FromList({});
    if (!v.is_dict()) TypeError("dictsort needs a mapping, got " + v.TypeName());
    const bool case_sensitive = BoolArg(args, 0, "case_sensitive", false);
    const std::string by = StrArg(args, 1, "by", "key", "dictsort");
    const bool reverse = BoolArg(args, 2, "reverse", false);
    List out;
    for (const auto& [k, item] : v.dict()) out.push_back(Value::FromList({Value(k), item}));
    const size_t index = by == "value" ? 1 : 0;
    std::stable_sort(out.begin(), out.end(), [&](const Value& a, const Value& b) {
      return reverse ? SortLess(b.list()[index], a.list()[index], case_sensitive)
                     : SortLess(a.list()[index], b.list()[index], case_sensitive);
    });
    return Value::FromList(std::move(out));
  }
  if (name == "map") {
    List out;
    const Value* attribute = Arg(args, 1000, "attribute");
    if (attribute != nullptr) {
      const Value* fallback = Arg(args, 1000, "default");
      for (const Value& item : Iterate(v)) {
        in.Step();
        Value mapped = AttributePath(item, attribute->ToString());
        if (mapped.is_undefined() && fallback != nullptr) mapped = *fallback;
        out.push_back(std::move(mapped));
      }
      return Value::FromList(std::move(out));
    }
    if (args.positional.empty() || !args.positional[0].is_string()) {
      TypeError("map needs a filter name or attribute=");
    }
    const std::string filter = args.positional[0].str();
    CallArgs rest;
    rest.positional.assign(args.positional.begin() + 1, args.positional.end());
    rest.keyword = args.keyword;
    for (const Value& item : Iterate(v)) {
      CallArgs copy = rest;
      out.push_back(ApplyFilter(in, filter, item, copy));
    }
    return Value::FromList(std::move(out));
  }
  if (name == "select") return SelectFilter(in, v, args, false, true);
  if (name == "reject") return SelectFilter(in, v, args, false, false);
  if (name == "selectattr") return SelectFilter(in, v, args, true, true);
  if (name == "rejectattr") return SelectFilter(in, v, args, true, false);
  if (name == "unique") {
    List out;
    for (const Value& item : Iterate(v)) {
      in.Step();
      bool seen = false;
      for (const Value& o : out) seen = seen || o.Equals(item);
      if (!seen) out.push_back(item);
    }
    return Value::FromList(std::move(out));
  }
  if (name == "sort") {
    const bool reverse = BoolArg(args, 0, "reverse", false);
    const bool case_sensitive = BoolArg(args, 1, "case_sensitive", false);
    const Value* attribute = Arg(args, 2, "attribute");
    List items = Iterate(v);
    auto key = [&](const Value& x) {
      return attribute && attribute->is_string() ? AttributePath(x, attribute->str()) : x;
    };
    std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) {
      return reverse ? SortLess(key(b), key(a), case_sensitive) : SortLess(key(a), key(b), case_sensitive);
    });
    return Value::FromList(std::move(items));
  }
  if (name == "reverse") {
    if (v.is_string()) {
      auto points = CodePoints(v.str());
      std::string out;
      for (auto it = points.rbegin(); it != points.rend(); ++it) out += *it;
      return Value(std::move(out));
    }
    List items = Iterate(v);
    std::reverse(items.begin(), items.end());
    return Value::FromList(std::move(items));
  }
  if (name == "min" || name == "max") {
    const List items = Iterate(v);
    if (items.empty()) return Value::Undefined("No aggregated item, sequence was empty.");
    const bool case_sensitive = BoolArg(args, 0, "case_sensitive", false);
    const Value* attribute = Arg(args, 1, "attribute");
    auto key = [&](const Value& x) {
      return attribute && attribute->is_string() ? AttributePath(x, attribute->str()) : x;
    };
    const Value* best = &items[0];
    for (const Value& item : items) {
      if (name == "min" ? SortLess(key(item), key(*best), case_sensitive)
                        : SortLess(key(*best), key(item), case_sensitive)) {
        best = &item;
      }
    }
    return *best;
  }
  if (name == "sum") {
    const Value* attribute = Arg(args, 0, "attribute");
    const Value* start = Arg(args, 1, "start");
    Value total = start ? *start : Value(0);
    for (const Value& item : Iterate(v)) {
      total = BinaryOp(in, "+", total,
                       attribute && attribute->is_string() ? AttributePath(item, attribute->str()) : item);
    }
    return total;
  }
  if (name == "int") {
    const int64_t fallback = IntArg(args, 0, "default", 0, "int");
    if (v.kind() == Kind::kInt || v.is_bool()) return Value(v.int_value());
    if (v.kind() == Kind::kFloat) {
      return std::isfinite(v.number()) && std::fabs(v.number()) < 9.2e18 ? Value(static_cast<int64_t>(v.number())) : Value(fallback);
    }
    if (v.is_string()) {
      const std::string s = Strip(v.str(), nullptr, true, true);
      char* end = nullptr;
      errno = 0;
      const long long parsed = std::strtoll(s.c_str(), &end, 10);
      if (!s.empty() && end == s.c_str() + s.size() && errno == 0) return Value(static_cast<int64_t>(parsed));
      const double d = std::strtod(s.c_str(), &end);
      if (!s.empty() && end == s.c_str() + s.size() && std::isfinite(d) && std::fabs(d) < 9.2e18) return Value(static_cast<int64_t>(d));
    }
    return Value(fallback);
  }
  if (name == "float") {
    const Value* fallback = Arg(args, 0, "default");
    if (v.is_number()) return Value(v.number());
    if (v.is_string()) {
      const std::string s = Strip(v.str(), nullptr, true, true);
      char* end = nullptr;
      const double d = std::strtod(s.c_str(), &end);
      if (!s.empty() && end == s.c_str() + s.size()) return Value(d);
    }
    return fallback ? Value(fallback->number()) : Value(0.0);
  }
  if (name == "abs") {
    if (v.kind() == Kind::kFloat) return Value(std::fabs(v.number()));
    if (v.kind() == Kind::kInt || v.is_bool()) {
      return v.int_value() == INT64_MIN ? Value(-static_cast<double>(v.int_value())) : Value(static_cast<int64_t>(std::llabs(v.int_value())));
    }
    TypeError("bad operand type for abs(): '" + v.TypeName() + "'");
  }
  if (name == "round") {
    if (!v.is_number()) TypeError("round needs a number, got " + v.TypeName());
    const int64_t precision = std::clamp<int64_t>(IntArg(args, 0, "precision", 0, "round"), -300, 300);
    const std::string method = StrArg(args, 1, "method", "common", "round");
    const double scale = std::pow(10.0, static_cast<double>(precision));
    double x = v.number() * scale;
    x = method == "ceil" ? std::ceil(x) : method == "floor" ? std::floor(x) : std::round(x);
    return Value(x / scale);
  }
  if (name == "indent") {
    const Value* width = Arg(args, 0, "width");
    std::string pad = width && width->is_string() ? width->str()
                      : std::string(static_cast<size_t>(std::clamp<int64_t>(width && width->kind() == Kind::kInt ? width->int_value() : 4, 0, 1024)), ' ');
    const bool first = BoolArg(args, 1, "first", false);
    const bool blank = BoolArg(args, 2, "blank", false);
    const std::string s = v.ToString();
    std::string out;
    size_t start = 0;
    bool first_line = true;
    while (start <= s.size()) {
      const size_t nl = s.find('\n', start);
      const std::string line = s.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
      if ((first_line ? first : true) && (blank || !line.empty())) out += pad;
      out += line;
      in.CheckSize(out.size());
      if (nl == std::string::npos) break;
      out += '\n';
      start = nl + 1;
      first_line = false;
    }
    return Value(std::move(out));
  }
  if (name == "wordcount") return Value(static_cast<int64_t>(Split(v.ToString(), nullptr, -1).size()));
  if (name == "attr") {
    return GetAttr(v, StrArg(args, 0, "name", "", "attr"));
  }
  if (name == "format") {
    List values = args.positional;
    return Format(in, v.ToString(), Value::FromList(std::move(values)));
  }
  throw Error("TemplateAssertionError", "No filter named '" + name + "'.");
}

bool ApplyTest(Interpreter& in, const std::string& name, const Value& v, CallArgs& args) {
  in.Step();
  const Value* other = Arg(args, 0, "other");
  auto need_other = [&]() -> const Value& {
    if (other == nullptr) TypeError("test '" + name + "' needs an argument");
    return *other;
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.kind() == Kind::kInt;
  if (name == "float") return v.kind() == Kind::kFloat;
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.bool_value();
  if (name == "false") return v.is_bool() && !v.bool_value();
  if (name == "mapping") return v.is_dict();
  if (name == "iterable") return v.is_list() || v.is_dict() || v.is_string() || v.is_undefined();
  if (name == "sequence") return v.is_list() || v.is_dict() || v.is_string() || v.is_undefined();
  if (name == "callable") return v.is_callable();
  if (name == "lower") return v.is_string() && Lower(v.str()) == v.str();
  if (name == "upper") return v.is_string() && Upper(v.str()) == v.str();
  if (name == "odd" || name == "even") {
    if (v.kind() != Kind::kInt && !v.is_bool()) TypeError("test '" + name + "' needs an integer");
    return (v.int_value() % 2 != 0) == (name == "odd");
  }
  if (name == "divisibleby") {
    const Value& d = need_other();
    if (d.number() == 0) throw Error("ZeroDivisionError", "integer division or modulo by zero");
    return BinaryOp(in, "%", v, d).number() == 0;
  }
  if (name == "eq" || name == "equalto" || name == "==") return v.Equals(need_other());
  if (name == "ne" || name == "!=") return !v.Equals(need_other());
  if (name == "lt" || name == "lessthan" || name == "<") return BinaryOp(in, "<", v, need_other()).Truthy();
  if (name == "le" || name == "<=") return BinaryOp(in, "<=", v, need_other()).Truthy();
  if (name == "gt" || name == "greaterthan" || name == ">") return BinaryOp(in, ">", v, need_other()).Truthy();
  if (name == "ge" || name == ">=") return BinaryOp(in, ">=", v, need_other()).Truthy();
  if (name == "in") return BinaryOp(in, "in", v, need_other()).Truthy();
  if (name == "sameas") {
    const Value& o = need_other();
    if (v.kind() != o.kind()) return false;
    if (v.is_none() || v.is_undefined()) return true;
    if (v.is_bool() || v.kind() == Kind::kInt) return v.int_value() == o.int_value();
    if (v.is_list() || v.is_dict() || v.is_namespace() || v.is_callable()) return v.Equals(o) && (v.is_namespace() || v.is_callable());
    return false;
  }
  if (name == "escaped") return false;
  throw Error("TemplateAssertionError", "No test named '" + name + "'.");
}

bool IsFilter(const std::string& name) {
  static const char* const kFilters[] = {
      "tojson", "string", "safe", "e", "escape", "forceescape", "length", "count", "default", "d",
      "trim", "upper", "lower", "capitalize", "title", "replace", "list", "first", "last", "join",
      "items", "dictsort", "map", "select", "reject", "selectattr", "rejectattr", "unique", "sort",
      "reverse", "min", "max", "sum", "int", "float", "abs", "round", "indent", "wordcount", "attr",
      "format"};
  for (const char* filter : kFilters) {
    if (name == filter) return true;
  }
  return false;
}

bool IsTest(const std::string& name) {
  static const char* const kTests[] = {
      "defined", "undefined", "none", "string", "number", "integer", "float", "boolean", "true",
      "false", "mapping", "iterable", "sequence", "callable", "lower", "upper", "odd", "even",
      "divisibleby", "eq", "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt",
      "greaterthan", ">", "ge", ">=", "in", "sameas", "escaped"};
  for (const char* test : kTests) {
    if (name == test) return true;
  }
  return false;
}

void AddGlobals(Scope* globals) {
  globals->vars["range"] = Value::FromFunction("range", [](Interpreter& in, CallArgs& args) {
    if (args.positional.empty() || args.positional.size() > 3) {
      TypeError("range expected 1 to 3 arguments, got " + std::to_string(args.positional.size()));
    }
    for (const Value& a : args.positional) {
      if (a.kind() != Kind::kInt && !a.is_bool()) {
        TypeError("'" + a.TypeName() + "' object cannot be interpreted as an integer");
      }
    }
    int64_t start = 0, stop, step = 1;
    if (args.positional.size() == 1) {
      stop = args.positional[0].int_value();
    } else {
      start = args.positional[0].int_value();
      stop = args.positional[1].int_value();
      if (args.positional.size() == 3) step = args.positional[2].int_value();
    }
    if (step == 0) throw Error("ValueError", "range() arg 3 must not be zero");
    const double count = std::max(0.0, std::ceil((static_cast<double>(stop) - static_cast<double>(start)) / static_cast<double>(step)));
    if (count > static_cast<double>(kMaxRange)) {
      throw Error("OverflowError", "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
    }
    List out;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      out.emplace_back(i);
      in.Step();
    }
    return Value::FromList(std::move(out));
  });
  globals->vars["namespace"] = Value::FromFunction("namespace", [](Interpreter& in, CallArgs& args) {
    Dict attributes;
    for (const Value& a : args.positional) {
      if (!a.is_dict()) TypeError("namespace() takes a mapping or keyword arguments");
      attributes = a.dict();
    }
    for (auto& [k, value] : args.keyword) {
      bool replaced = false;
      for (auto& [ek, ev] : attributes) {
        if (ek == k) { ev = value; replaced = true; }
      }
      if (!replaced) attributes.emplace_back(k, value);
    }
    Value ns = Value::NewNamespace(std::move(attributes));
    in.TrackNamespace(ns);
    return ns;
  });
  globals->vars["dict"] = Value::FromFunction("dict", [](Interpreter&, CallArgs& args) {
    Dict out;
    if (!args.positional.empty()) {
      if (!args.positional[0].is_dict()) TypeError("dict() takes a mapping or keyword arguments");
      out = args.positional[0].dict();
    }
    for (auto& [k, value] : args.keyword) out.emplace_back(k, value);
    return Value::FromDict(std::move(out));
  });
  globals->vars["raise_exception"] = Value::FromFunction("raise_exception", [](Interpreter&, CallArgs& args) -> Value {
    throw Error("TemplateError", args.positional.empty() ? "raise_exception() called" : args.positional[0].ToString());
  });
  globals->vars["strftime_now"] = Value::FromFunction("strftime_now", [](Interpreter& in, CallArgs& args) {
    const std::string format = StrArg(args, 0, "format", "", "strftime_now");
    const std::time_t now = in.options().now ? *in.options().now : std::time(nullptr);
    std::tm parts{};
    if (in.options().now) gmtime_r(&now, &parts);
    else localtime_r(&now, &parts);
    char buffer[512];
    const size_t n = format.size() < 200 ? std::strftime(buffer, sizeof(buffer), format.c_str(), &parts) : 0;
    return Value(std::string(buffer, n));
  });
}

}  // namespace moemesh::text::jinja
