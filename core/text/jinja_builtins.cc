// Python operators, attribute and item access, and jinja2's filters, tests and globals for the
// interpreter (declared in jinja_interpreter.h). Semantics follow CPython 3 and jinja2 3.1 in
// transformers' ImmutableSandboxedEnvironment; messages follow theirs where a template author
// would recognise them.
#include <algorithm>
#include <cmath>
#include <ctime>
#include <utility>

#include "core/text/jinja_interpreter.h"

namespace moemesh::text::jinja {
namespace {

using Kind = Value::Kind;

[[noreturn]] void TypeError(const std::string& message) { throw Error("TypeError", message); }

// The sandboxed range() allows at most this many items (jinja2's MAX_RANGE).
constexpr int64_t kMaxRange = 100000;

// Positional argument `index`, or keyword `name`; nullptr when neither was given.
const Value* Arg(const CallArgs& args, size_t index, const char* name) {
  if (index < args.positional.size()) return &args.positional[index];
  for (const auto& [k, v] : args.keyword) {
    if (k == name) return &v;
  }
  return nullptr;
}

std::string StrArg(const CallArgs& args, size_t index, const char* name, const std::string& fallback,
                   const char* function) {
  const Value* v = Arg(args, index, name);
  if (v == nullptr || v->is_none()) return fallback;
  if (!v->is_string()) TypeError(std::string(function) + "() argument must be str, not " + v->TypeName());
  return v->str();
}

int64_t IntArg(const CallArgs& args, size_t index, const char* name, int64_t fallback,
               const char* function) {
  const Value* v = Arg(args, index, name);
  if (v == nullptr || v->is_none()) return fallback;
  if (v->kind() != Kind::kInt && v->kind() != Kind::kBool) {
    TypeError(std::string(function) + "() argument must be an integer, not " + v->TypeName());
  }
  return v->int_value();
}

bool BoolArg(const CallArgs& args, size_t index, const char* name, bool fallback) {
  const Value* v = Arg(args, index, name);
  return v == nullptr ? fallback : v->Truthy();
}

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string Strip(const std::string& s, const std::string* chars, bool left, bool right) {
  auto strip_char = [&](char c) { return chars ? chars->find(c) != std::string::npos : IsSpace(c); };
  size_t begin = 0, end = s.size();
  if (left) while (begin < end && strip_char(s[begin])) ++begin;
  if (right) while (end > begin && strip_char(s[end - 1])) --end;
  return s.substr(begin, end - begin);
}

std::string Upper(std::string s) {
  for (char& c : s) if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return s;
}
std::string Lower(std::string s) {
  for (char& c : s) if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}
std::string Capitalize(const std::string& s) {
  std::string out = Lower(s);
  if (!out.empty() && out[0] >= 'a' && out[0] <= 'z') out[0] = static_cast<char>(out[0] - 'a' + 'A');
  return out;
}
std::string Title(const std::string& s) {
  std::string out = s;
  bool start = true;
  for (char& c : out) {
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (alpha) {
      c = start ? Upper(std::string(1, c))[0] : Lower(std::string(1, c))[0];
      start = false;
    } else {
      start = !(c >= '0' && c <= '9') && !(static_cast<unsigned char>(c) >= 0x80);
    }
  }
  return out;
}

// Python str.split(sep, maxsplit); sep nullptr splits on whitespace runs.
List Split(const std::string& s, const std::string* sep, int64_t maxsplit) {
  List out;
  if (sep == nullptr) {
    size_t i = 0;
    while (true) {
      while (i < s.size() && IsSpace(s[i])) ++i;
      if (i >= s.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) >= maxsplit) {
        size_t end = s.size();
        while (end > i && IsSpace(s[end - 1])) --end;
        out.emplace_back(s.substr(i, end - i));
        break;
      }
      size_t j = i;
      while (j < s.size() && !IsSpace(s[j])) ++j;
      out.emplace_back(s.substr(i, j - i));
      i = j;
    }
    return out;
  }
  if (sep->empty()) throw Error("ValueError", "empty separator");
  size_t start = 0;
  while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
    const size_t at = s.find(*sep, start);
    if (at == std::string::npos) break;
    out.emplace_back(s.substr(start, at - start));
    start = at + sep->size();
  }
  out.emplace_back(s.substr(start));
  return out;
}

List RSplit(const std::string& s, const std::string* sep, int64_t maxsplit) {
  if (sep == nullptr || maxsplit < 0) return Split(s, sep, maxsplit);
  if (sep->empty()) throw Error("ValueError", "empty separator");
  List reversed;
  size_t end = s.size();
  while (static_cast<int64_t>(reversed.size()) < maxsplit) {
    if (end < sep->size()) break;
    const size_t at = s.rfind(*sep, end - sep->size());
    if (at == std::string::npos) break;
    reversed.emplace_back(s.substr(at + sep->size(), end - at - sep->size()));
    end = at;
  }
  reversed.emplace_back(s.substr(0, end));
  std::reverse(reversed.begin(), reversed.end());
  return reversed;
}

std::string Replace(Interpreter& in, const std::string& s, const std::string& from,
                    const std::string& to, int64_t count) {
  std::string out;
  size_t start = 0;
  int64_t done = 0;
  if (from.empty()) {
    // Python inserts `to` between every character (and at both ends).
    const auto points = CodePoints(s);
    for (size_t i = 0; i <= points.size(); ++i) {
      if (count < 0 || done < count) { out += to; ++done; }
      if (i < points.size()) out += points[i];
      in.CheckSize(out.size());
    }
    return out;
  }
  while (count < 0 || done < count) {
    const size_t at = s.find(from, start);
    if (at == std::string::npos) break;
    out.append(s, start, at - start);
    out += to;
    in.CheckSize(out.size());
    start = at + from.size();
    ++done;
  }
  out.append(s, start, std::string::npos);
  return out;
}

bool Less(const Value& a, const Value& b, const char* op) {
  if (a.is_undefined()) FailUndefined(a);
  if (b.is_undefined()) FailUndefined(b);
  if (a.is_number() && b.is_number()) {
    if (a.kind() != Kind::kFloat && b.kind() != Kind::kFloat) return a.int_value() < b.int_value();
    return a.number() < b.number();
  }
  if (a.is_string() && b.is_string()) return a.str() < b.str();
  if (a.is_list() && b.is_list()) {
    const List& x = a.list();
    const List& y = b.list();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (!x[i].Equals(y[i])) return Less(x[i], y[i], op);
    }
    return x.size() < y.size();
  }
  TypeError(std::string("'") + op + "' not supported between instances of '" + a.TypeName() +
            "' and '" + b.TypeName() + "'");
}

bool Contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Kind::kString:
      if (!item.is_string()) {
        TypeError("'in <string>' requires string as left operand, not " + item.TypeName());
      }
      return container.str().find(item.str()) != std::string::npos;
    case Kind::kList:
      for (const Value& v : container.list()) {
        if (v.Equals(item)) return true;
      }
      return false;
    case Kind::kDict:
      return item.is_string() && container.Find(item.str()) != nullptr;
    case Kind::kUndefined: return false;
    default: TypeError("argument of type '" + container.TypeName() + "' is not iterable");
  }
}

Value Arithmetic(const std::string& op, const Value& a, const Value& b) {
  const bool ints = a.kind() != Kind::kFloat && b.kind() != Kind::kFloat;
  const int64_t x = a.int_value(), y = b.int_value();
  const double p = a.number(), q = b.number();
  int64_t r = 0;
  if (op == "+") {
    if (ints && !__builtin_add_overflow(x, y, &r)) return Value(r);
    return Value(p + q);
  }
  if (op == "-") {
    if (ints && !__builtin_sub_overflow(x, y, &r)) return Value(r);
    return Value(p - q);
  }
  if (op == "*") {
    if (ints && !__builtin_mul_overflow(x, y, &r)) return Value(r);
    return Value(p * q);
  }
  if (op == "/") {
    if (q == 0) throw Error("ZeroDivisionError", "division by zero");
    return Value(p / q);
  }
  if (op == "//" || op == "%") {
    if (q == 0) throw Error("ZeroDivisionError", "integer division or modulo by zero");
    if (ints) {
      if (x == INT64_MIN && y == -1) return op == "//" ? Value(-static_cast<double>(x)) : Value(0);
      int64_t quotient = x / y, remainder = x % y;
      if (remainder != 0 && ((remainder < 0) != (y < 0))) {
        --quotient;
        remainder += y;
      }
      return op == "//" ? Value(quotient) : Value(remainder);
    }
    if (op == "//") return Value(std::floor(p / q));
    double m = std::fmod(p, q);
    if (m != 0 && ((m < 0) != (q < 0))) m += q;
    return Value(m);
  }
  // **
  if (ints && y >= 0) {
    int64_t result = 1, base = x, e = y;
    bool overflow = false;
    while (e > 0 && !overflow) {
      if (e & 1) overflow = __builtin_mul_overflow(result, base, &result);
      e >>= 1;
      if (e > 0 && !overflow) overflow = __builtin_mul_overflow(base, base, &base);
    }
    if (!overflow) return Value(result);
  }
  if (p == 0 && q < 0) throw Error("ZeroDivisionError", "0.0 cannot be raised to a negative power");
  return Value(std::pow(p, q));
}

// "%s" % value (Python printf-style formatting: %s %r %d %i %f %%).
Value Format(Interpreter& in, const std::string& format, const Value& arguments) {
  List values = arguments.is_list() ? arguments.list() : List{arguments};
  size_t next = 0;
  std::string out;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') { out += format[i]; continue; }
    if (i + 1 >= format.size()) throw Error("ValueError", "incomplete format");
    const char spec = format[++i];
    if (spec == '%') { out += '%'; continue; }
    if (next >= values.size()) TypeError("not enough arguments for format string");
    const Value& v = values[next++];
    switch (spec) {
      case 's': out += v.ToString(); break;
      case 'r': out += v.Repr(); break;
      case 'd': case 'i':
        if (!v.is_number()) TypeError("%d format: a real number is required, not " + v.TypeName());
        out += std::to_string(v.kind() == Kind::kFloat ? static_cast<int64_t>(v.number()) : v.int_value());
        break;
      case 'f': {
        if (!v.is_number()) TypeError("must be real number, not " + v.TypeName());
        char buffer[64];
        std::snprintf(buffer, sizeof(buffer), "%f", v.number());
        out += buffer;
        break;
      }
      default: throw Error("ValueError", std::string("unsupported format character '") + spec + "'");
    }
    in.CheckSize(out.size());
  }
  if (next < values.size()) TypeError("not all arguments converted during string formatting");
  return Value(std::move(out));
}

// Bytes a list holds directly: its strings' sizes (a list of long strings must not be copied
// past the output limit either), 64 per other item.
size_t ShallowBytes(const List& list) {
  size_t bytes = 0;
  for (const Value& item : list) bytes += item.is_string() ? item.str().size() + 1 : 64;
  return bytes;
}

Value Repeat(Interpreter& in, const Value& sequence, int64_t times) {
  if (times <= 0) return sequence.is_string() ? Value(std::string()) : Value::FromList({});
  const size_t unit = sequence.is_string() ? sequence.str().size() : ShallowBytes(sequence.list());
  if (unit > 0 && static_cast<uint64_t>(times) > in.options().limits.max_output_bytes / unit) {
    in.CheckSize(in.options().limits.max_output_bytes + 1);
  }
  if (sequence.is_string()) {
    std::string out;
    out.reserve(unit * static_cast<size_t>(times));
    for (int64_t i = 0; i < times; ++i) out += sequence.str();
    return Value(std::move(out));
  }
  List out;
  for (int64_t i = 0; i < times; ++i) out.insert(out.end(), sequence.list().begin(), sequence.list().end());
  return Value::FromList(std::move(out));
}

int64_t Length(const Value& value) {
  switch (value.kind()) {
    case Kind::kString: return static_cast<int64_t>(CodePoints(value.str()).size());
    case Kind::kList: return static_cast<int64_t>(value.list().size());
    case Kind::kDict: return static_cast<int64_t>(value.dict().size());
    case Kind::kUndefined: return 0;
    default: TypeError("object of type '" + value.TypeName() + "' has no len()");
  }
}

// Normalises a Python index into [0, size); -1 when outside.
int64_t Index(int64_t index, int64_t size) {
  if (index < 0) index += size;
  return index < 0 || index >= size ? -1 : index;
}

// A bound method that the sandbox refuses.
Value Unsafe(const std::string& type, const std::string& name) {
  return Value::FromFunction(type + "." + name, [type, name](Interpreter&, CallArgs&) -> Value {
    throw Error("SecurityError",
                "access to attribute '" + name + "' of '" + type + "' object is unsafe.");
  });
}

Value StringMethod(const Value& object, const std::string& name) {
  const std::string s = object.str();
  auto method = [&](auto body) {
    return Value::FromFunction("method '" + name + "' of str", body);
  };
  if (name == "split" || name == "rsplit") {
    const bool right = name == "rsplit";
    return method([s, right](Interpreter&, CallArgs& args) {
      const Value* sep = Arg(args, 0, "sep");
      const int64_t maxsplit = IntArg(args, 1, "maxsplit", -1, "split");
      if (sep != nullptr && !sep->is_none() && !sep->is_string()) {
        TypeError("must be str or None, not " + sep->TypeName());
      }
      const std::string* separator = sep != nullptr && sep->is_string() ? &sep->str() : nullptr;
      return Value::FromList(right ? RSplit(s, separator, maxsplit) : Split(s, separator, maxsplit));
    });
  }
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    const bool left = name != "rstrip", right = name != "lstrip";
    return method([s, left, right](Interpreter&, CallArgs& args) {
      const Value* chars = Arg(args, 0, "chars");
      const std::string* set = chars != nullptr && chars->is_string() ? &chars->str() : nullptr;
      return Value(Strip(s, set, left, right));
    });
  }
  if (name == "startswith" || name == "endswith") {
    const bool start = name == "startswith";
    return method([s, start, name](Interpreter&, CallArgs& args) {
      const Value* prefix = Arg(args, 0, "prefix");
      if (prefix == nullptr) TypeError(name + "() takes at least 1 argument (0 given)");
      List options = prefix->is_list() ? prefix->list() : List{*prefix};
      for (const Value& p : options) {
        if (!p.is_string()) TypeError(name + " first arg must be str or a tuple of str, not " + p.TypeName());
        const std::string& t = p.str();
        if (t.size() <= s.size() &&
            (start ? s.compare(0, t.size(), t) == 0 : s.compare(s.size() - t.size(), t.size(), t) == 0)) {
          return Value(true);
        }
      }
      return Value(false);
    });
  }
  if (name == "upper") return method([s](Interpreter&, CallArgs&) { return Value(Upper(s)); });
  if (name == "lower") return method([s](Interpreter&, CallArgs&) { return Value(Lower(s)); });
  if (name == "title") return method([s](Interpreter&, CallArgs&) { return Value(Title(s)); });
  if (name == "capitalize") return method([s](Interpreter&, CallArgs&) { return Value(Capitalize(s)); });
  if (name == "replace") {
    return method([s](Interpreter& in, CallArgs& args) {
      return Value(Replace(in, s, StrArg(args, 0, "old", "", "replace"),
                           StrArg(args, 1, "new", "", "replace"), IntArg(args, 2, "count", -1, "replace")));
    });
  }
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex" || name == "count") {
    return method([s, name](Interpreter&, CallArgs& args) {
      const std::string sub = StrArg(args, 0, "sub", "", name.c_str());
      if (name == "count") {
        if (sub.empty()) return Value(static_cast<int64_t>(CodePoints(s).size()) + 1);
        int64_t n = 0;
        for (size_t at = s.find(sub); at != std::string::npos; at = s.find(sub, at + sub.size())) ++n;
        return Value(n);
      }
      const size_t at = name[0] == 'r' ? s.rfind(sub) : s.find(sub);
      if (at == std::string::npos) {
        if (name.find("index") != std::string::npos) throw Error("ValueError", "substring not found");
        return Value(-1);
      }
      return Value(static_cast<int64_t>(CodePoints(std::string_view(s).substr(0, at)).size()));
    });
  }
  if (name == "join") {
    return method([s](Interpreter& in, CallArgs& args) {
      const Value* items = Arg(args, 0, "iterable");
      if (items == nullptr) TypeError("join() takes exactly one argument (0 given)");
      std::string out;
      bool first = true;
      for (const Value& item : Iterate(*items)) {
        if (!item.is_string()) TypeError("sequence item: expected str instance, " + item.TypeName() + " found");
        if (!first) out += s;
        first = false;
        out += item.str();
        in.CheckSize(out.size());
      }
      return Value(std::move(out));
    });
  }
  if (name == "splitlines") {
    return method([s](Interpreter&, CallArgs&) {
      List out;
      size_t start = 0;
      for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\n' || s[i] == '\r') {
          out.emplace_back(s.substr(start, i - start));
          if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
          start = i + 1;
        }
      }
      if (start < s.size()) out.emplace_back(s.substr(start));
      return Value::FromList(std::move(out));
    });
  }
  if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace" ||
      name == "isupper" || name == "islower") {
    return method([s, name](Interpreter&, CallArgs&) {
      if (s.empty()) return Value(false);
      bool cased = false;
      for (char c : s) {
        const bool digit = c >= '0' && c <= '9';
        const bool upper = c >= 'A' && c <= 'Z', lower = c >= 'a' && c <= 'z';
        cased = cased || upper || lower;
        if (name == "isdigit" && !digit) return Value(false);
        if (name == "isalpha" && !(upper || lower)) return Value(false);
        if (name == "isalnum" && !(upper || lower || digit)) return Value(false);
        if (name == "isspace" && !IsSpace(c)) return Value(false);
        if (name == "isupper" && lower) return Value(false);
        if (name == "islower" && upper) return Value(false);
      }
      return Value(name == "isupper" || name == "islower" ? cased : true);
    });
  }
  return Value::Undefined("'str object' has no attribute '" + name + "'");
}

Value DictMethod(const Value& object, const std::string& name) {
  auto method = [&](auto body) { return Value::FromFunction("method '" + name + "' of dict", body); };
  if (name == "get") {
    return method([object](Interpreter&, CallArgs& args) {
      const Value* key = Arg(args, 0, "key");
      if (key == nullptr) TypeError("get expected at least 1 argument, got 0");
      const Value* found = key->is_string() ? object.Find(key->str()) : nullptr;
      if (found != nullptr) return *found;
      const Value* fallback = Arg(args, 1, "default");
      return fallback != nullptr ? *fallback : Value::None();
    });
  }
  if (name == "items" || name == "keys" || name == "values") {
    return method([object, name](Interpreter&, CallArgs&) {
      List out;
      for (const auto& [k, v] : object.dict()) {
        if (name == "items") out.push_back(Value::FromList({Value(k), v}));
        else if (name == "keys") out.emplace_back(k);
        else out.push_back(v);
      }
      return Value::FromList(std::move(out));
    });
  }
  if (name == "copy") {
    return method([object](Interpreter&, CallArgs&) { return Value::FromDict(object.dict()); });
  }
  if (name == "pop" || name == "popitem" || name == "update" || name == "setdefault" ||
      name == "clear") {
    return Unsafe("dict", name);
  }
  return Value();  // not a method
}

Value ListMethod(const Value& object, const std::string& name) {
  auto method = [&](auto body) { return Value::FromFunction("method '" + name + "' of list", body); };
  if (name == "index" || name == "count") {
    return method([object, name](Interpreter&, CallArgs& args) {
      const Value* item = Arg(args, 0, "value");
      if (item == nullptr) TypeError(name + "() takes exactly one argument (0 given)");
      int64_t n = 0;
      for (size_t i = 0; i < object.list().size(); ++i) {
        if (!object.list()[i].Equals(*item)) continue;
        if (name == "index") return Value(static_cast<int64_t>(i));
        ++n;
      }
      if (name == "index") throw Error("ValueError", item->Repr() + " is not in list");
      return Value(n);
    });
  }
  if (name == "copy") {
    return method([object](Interpreter&, CallArgs&) { return Value::FromList(object.list()); });
  }
  if (name == "append" || name == "extend" || name == "insert" || name == "pop" ||
      name == "remove" || name == "reverse" || name == "sort" || name == "clear") {
    return Unsafe("list", name);
  }
  return Value::Undefined("'list object' has no attribute '" + name + "'");
}

// environment.getattr for filters' `attribute=` arguments: "a.b.0" walks item by item.
Value AttributePath(const Value& object, const std::string& path) {
  Value current = object;
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    current = numeric ? GetItem(current, Value(static_cast<int64_t>(std::stoll(part.size() > 18 ? "0" : part))))
                      : GetItem(current, Value(part));
    if (dot == std::string::npos) return current;
    start = dot + 1;
  }
}

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

List Iterate(const Value& value) {
  switch (value.kind()) {
    case Kind::kList: return value.list();
    case Kind::kDict: {
      List keys;
      for (const auto& [k, v] : value.dict()) keys.emplace_back(k);
      return keys;
    }
    case Kind::kString: {
      List chars;
      for (std::string_view c : CodePoints(value.str())) chars.emplace_back(std::string(c));
      return chars;
    }
    case Kind::kUndefined: return {};
    default: TypeError("'" + value.TypeName() + "' object is not iterable");
  }
}

Value BinaryOp(Interpreter& in, const std::string& op, const Value& a, const Value& b) {
  if (op == "==") return Value(a.Equals(b));
  if (op == "!=") return Value(!a.Equals(b));
  if (op == "in") return Value(Contains(b, a));
  if (op == "notin") return Value(!Contains(b, a));
  if (op == "~") {
    std::string out = a.ToString() + b.ToString();
    in.CheckSize(out.size());
    return Value(std::move(out));
  }
  if (op == "<") return Value(Less(a, b, "<"));
  if (op == ">") return Value(Less(b, a, ">"));
  if (op == "<=") return Value(!Less(b, a, "<="));
  if (op == ">=") return Value(!Less(a, b, ">="));
  if (a.is_undefined()) FailUndefined(a);
  if (b.is_undefined()) FailUndefined(b);
  if (a.is_number() && b.is_number()) return Arithmetic(op, a, b);
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      in.CheckSize(a.str().size() + b.str().size());
      return Value(a.str() + b.str());
    }
    if (a.is_list() && b.is_list()) {
      in.CheckSize(ShallowBytes(a.list()) + ShallowBytes(b.list()));
      List out = a.list();
      out.insert(out.end(), b.list().begin(), b.list().end());
      return Value::FromList(std::move(out));
    }
    if (a.is_string() || a.is_list()) {
      TypeError("can only concatenate " + a.TypeName() + " (not \"" + b.TypeName() + "\") to " +
                a.TypeName());
    }
  }
  if (op == "*") {
    if ((a.is_string() || a.is_list()) && (b.kind() == Kind::kInt || b.is_bool())) return Repeat(in, a, b.int_value());
    if ((b.is_string() || b.is_list()) && (a.kind() == Kind::kInt || a.is_bool())) return Repeat(in, b, a.int_value());
  }
  if (op == "%" && a.is_string()) return Format(in, a.str(), b);
  TypeError("unsupported operand type(s) for " + op + ": '" + a.TypeName() + "' and '" +
            b.TypeName() + "'");
}

Value GetAttr(const Value& object, const std::string& name) {
  switch (object.kind()) {
    case Kind::kUndefined: FailUndefined(object);
    case Kind::kDict: {
      Value method = DictMethod(object, name);
      if (method.is_callable()) return method;
      const Value* found = object.Find(name);
      if (found != nullptr) return *found;
      return Value::Undefined("'dict object' has no attribute '" + name + "'");
    }
    case Kind::kNamespace: {
      const Value* found = object.Find(name);
      if (found != nullptr) return *found;
      return Value::Undefined("'Namespace object' has no attribute '" + name + "'");
    }
    case Kind::kString: return StringMethod(object, name);
    case Kind::kList: return ListMethod(object, name);
    default:
      return Value::Undefined("'" + object.TypeName() + " object' has no attribute '" + name + "'");
  }
}

Value GetItem(const Value& object, const Value& key) {
  switch (object.kind()) {
    case Kind::kUndefined: FailUndefined(object);
    case Kind::kDict:
    case Kind::kNamespace:
      if (key.is_string()) {
        const Value* found = object.Find(key.str());
        if (found != nullptr) return *found;
        if (object.is_dict()) {
          Value method = DictMethod(object, key.str());
          if (method.is_callable()) return method;
        }
        return Value::Undefined("'dict object' has no attribute '" + key.str() + "'");
      }
      return Value::Undefined("'dict object' has no item " + key.Repr());
    case Kind::kList:
      if (key.kind() == Kind::kInt || key.is_bool()) {
        const int64_t i = Index(key.int_value(), static_cast<int64_t>(object.list().size()));
        if (i < 0) return Value::Undefined("list index out of range");
        return object.list()[static_cast<size_t>(i)];
      }
      if (key.is_string()) return ListMethod(object, key.str());
      return Value::Undefined("list indices must be integers");
    case Kind::kString:
      if (key.kind() == Kind::kInt || key.is_bool()) {
        const auto points = CodePoints(object.str());
        const int64_t i = Index(key.int_value(), static_cast<int64_t>(points.size()));
        if (i < 0) return Value::Undefined("string index out of range");
        return Value(std::string(points[static_cast<size_t>(i)]));
      }
      if (key.is_string()) return StringMethod(object, key.str());
      return Value::Undefined("string indices must be integers");
    default:
      return Value::Undefined("'" + object.TypeName() + "' object is not subscriptable");
  }
}

Value Slice(const Value& object, const Value& start, const Value& stop, const Value& step) {
  if (object.is_undefined()) FailUndefined(object);
  if (!object.is_list() && !object.is_string()) {
    return Value::Undefined("'" + object.TypeName() + "' object is not subscriptable");
  }
  auto as_int = [](const Value& v, const char* what) -> std::optional<int64_t> {
    if (v.is_none() || v.is_undefined()) return std::nullopt;
    if (v.kind() != Kind::kInt && !v.is_bool()) {
      TypeError(std::string("slice ") + what + " must be an integer or None");
    }
    return v.int_value();
  };
  std::vector<std::string_view> points;
  if (object.is_string()) points = CodePoints(object.str());
  const int64_t size = object.is_string() ? static_cast<int64_t>(points.size())
                                          : static_cast<int64_t>(object.list().size());
  const int64_t k = as_int(step, "step").value_or(1);
  if (k == 0) throw Error("ValueError", "slice step cannot be zero");
  auto clamp = [&](std::optional<int64_t> v, int64_t fallback) {
    if (!v) return fallback;
    int64_t i = *v < 0 ? *v + size : *v;
    if (k > 0) return std::clamp<int64_t>(i, 0, size);
    return std::clamp<int64_t>(i, -1, size - 1);
  };
  const int64_t begin = clamp(as_int(start, "start"), k > 0 ? 0 : size - 1);
  const int64_t end = clamp(as_int(stop, "stop"), k > 0 ? size : -1);
  std::string text;
  List items;
  for (int64_t i = begin; k > 0 ? i < end : i > end; i += k) {
    if (object.is_string()) text += points[static_cast<size_t>(i)];
    else items.push_back(object.list()[static_cast<size_t>(i)]);
  }
  return object.is_string() ? Value(std::move(text)) : Value::FromList(std::move(items));
}

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
