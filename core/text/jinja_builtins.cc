// Python operators, attribute and item access, and the methods of str, list and dict for the
// interpreter (declared in jinja_interpreter.h). Semantics follow CPython 3 and jinja2 3.1 in
// transformers' ImmutableSandboxedEnvironment; messages follow theirs where a template author
// would recognise them. Filters, tests and globals are in jinja_filters.cc.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <utility>

#include "core/text/jinja_builtins_internal.h"

namespace moemesh::text::jinja {
namespace internal {

[[noreturn]] void TypeError(const std::string& message) { throw Error("TypeError", message); }

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


}  // namespace internal

namespace {

using namespace internal;  // NOLINT: the helpers above

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


}  // namespace

using namespace internal;  // NOLINT

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


}  // namespace moemesh::text::jinja
