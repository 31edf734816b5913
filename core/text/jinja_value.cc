#include "core/text/jinja_value.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace moemesh::text::jinja {

namespace {

template <typename Items, typename Get>
int NestedDepth(const Items& items, Get get) {
  int depth = 0;
  for (const auto& item : items) depth = std::max(depth, get(item).depth());
  if (depth + 1 > kMaxValueDepth) {
    throw Error("RecursionError", "values nest deeper than " + std::to_string(kMaxValueDepth));
  }
  return depth + 1;
}

}  // namespace

Value Value::FromList(List list) {
  Value v;
  v.depth_ = NestedDepth(list, [](const Value& x) -> const Value& { return x; });
  v.kind_ = Kind::kList;
  v.list_ = std::make_shared<List>(std::move(list));
  return v;
}

Value Value::FromDict(Dict dict) {
  Value v;
  v.depth_ = NestedDepth(dict, [](const auto& x) -> const Value& { return x.second; });
  v.kind_ = Kind::kDict;
  v.dict_ = std::make_shared<Dict>(std::move(dict));
  return v;
}

Value Value::NewNamespace(Dict attributes) {
  Value v = FromDict(std::move(attributes));
  v.kind_ = Kind::kNamespace;
  v.depth_ = 0;
  return v;
}

Value Value::FromFunction(std::string name, Function function) {
  Value v;
  v.kind_ = Kind::kCallable;
  v.string_ = std::move(name);
  v.function_ = std::make_shared<Function>(std::move(function));
  return v;
}

Value Value::FromJson(const nlohmann::ordered_json& json) {
  switch (json.type()) {
    case nlohmann::ordered_json::value_t::null: return None();
    case nlohmann::ordered_json::value_t::boolean: return Value(json.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value(json.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const uint64_t u = json.get<uint64_t>();
      if (u <= static_cast<uint64_t>(INT64_MAX)) return Value(static_cast<int64_t>(u));
      return Value(static_cast<double>(u));
    }
    case nlohmann::ordered_json::value_t::number_float: return Value(json.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value(json.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List list;
      list.reserve(json.size());
      for (const auto& item : json) list.push_back(FromJson(item));
      return FromList(std::move(list));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict dict;
      dict.reserve(json.size());
      for (const auto& [key, item] : json.items()) dict.emplace_back(key, FromJson(item));
      return FromDict(std::move(dict));
    }
    default: return None();  // binary / discarded: not produced by the JSON parser
  }
}

const Value* Value::Find(std::string_view key) const {
  if (kind_ != Kind::kDict && kind_ != Kind::kNamespace) return nullptr;
  for (const auto& [k, v] : *dict_) {
    if (k == key) return &v;
  }
  return nullptr;
}

bool Value::Truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone: return false;
    case Kind::kBool:
    case Kind::kInt: return int_ != 0;
    case Kind::kFloat: return float_ != 0.0;
    case Kind::kString: return !string_.empty();
    case Kind::kList: return !list_->empty();
    case Kind::kDict: return !dict_->empty();
    case Kind::kNamespace:
    case Kind::kCallable: return true;
  }
  return false;
}

std::string FloatRepr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  // The shortest digits that read back as the same double (Python's repr).
  char digits[40];
  int precision = 1;
  for (; precision <= 17; ++precision) {
    std::snprintf(digits, sizeof(digits), "%.*e", precision - 1, value);
    if (std::strtod(digits, nullptr) == value) break;
  }
  // digits: [-]d.ddde[+-]XX
  std::string text(digits);
  const size_t e = text.find('e');
  const int exponent = std::atoi(text.c_str() + e + 1);
  std::string mantissa = text.substr(0, e);
  const bool negative = mantissa[0] == '-';
  if (negative) mantissa.erase(0, 1);
  mantissa.erase(std::remove(mantissa.begin(), mantissa.end(), '.'), mantissa.end());
  std::string out = negative ? "-" : "";
  if (exponent < -4 || exponent >= 16) {
    out += mantissa.substr(0, 1);
    if (mantissa.size() > 1) out += "." + mantissa.substr(1);
    char exp_text[8];
    std::snprintf(exp_text, sizeof(exp_text), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    return out + exp_text;
  }
  if (exponent < 0) {
    return out + "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + mantissa;
  }
  const size_t int_digits = static_cast<size_t>(exponent) + 1;
  if (mantissa.size() <= int_digits) {
    return out + mantissa + std::string(int_digits - mantissa.size(), '0') + ".0";
  }
  return out + mantissa.substr(0, int_digits) + "." + mantissa.substr(int_digits);
}

namespace {

std::string StringRepr(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (unsigned char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == static_cast<unsigned char>(quote)) out += std::string("\\") + quote;
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) {
      char buffer[8];
      std::snprintf(buffer, sizeof(buffer), "\\x%02x", c);
      out += buffer;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += quote;
  return out;
}

}  // namespace

std::string Value::Repr() const {
  switch (kind_) {
    case Kind::kString: return StringRepr(string_);
    case Kind::kList: {
      std::string out = "[";
      for (size_t i = 0; i < list_->size(); ++i) {
        if (i > 0) out += ", ";
        out += (*list_)[i].Repr();
      }
      return out + "]";
    }
    case Kind::kDict: {
      std::string out = "{";
      bool first = true;
      for (const auto& [k, v] : *dict_) {
        if (!first) out += ", ";
        first = false;
        out += StringRepr(k) + ": " + v.Repr();
      }
      return out + "}";
    }
    default: return ToString();
  }
}

std::string Value::ToString() const {
  switch (kind_) {
    case Kind::kUndefined: return "";
    case Kind::kNone: return "None";
    case Kind::kBool: return int_ ? "True" : "False";
    case Kind::kInt: return std::to_string(int_);
    case Kind::kFloat: return FloatRepr(float_);
    case Kind::kString: return string_;
    case Kind::kList:
    case Kind::kDict: return Repr();
    case Kind::kNamespace: return "<Namespace>";  // never its attributes: they may hold itself
    case Kind::kCallable: return "<" + string_ + ">";
  }
  return "";
}

std::string Value::TypeName() const {
  switch (kind_) {
    case Kind::kUndefined: return "Undefined";
    case Kind::kNone: return "NoneType";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kList: return "list";
    case Kind::kDict: return "dict";
    case Kind::kNamespace: return "Namespace";
    case Kind::kCallable: return "function";
  }
  return "object";
}

bool Value::Equals(const Value& other) const {
  if (is_number() && other.is_number()) {
    if (kind_ != Kind::kFloat && other.kind_ != Kind::kFloat) return int_ == other.int_;
    return number() == other.number();
  }
  if (kind_ != other.kind_) return false;
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone: return true;
    case Kind::kString: return string_ == other.string_;
    case Kind::kList:
      if (list_->size() != other.list_->size()) return false;
      for (size_t i = 0; i < list_->size(); ++i) {
        if (!(*list_)[i].Equals((*other.list_)[i])) return false;
      }
      return true;
    case Kind::kDict: {
      if (dict_->size() != other.dict_->size()) return false;
      for (const auto& [k, v] : *dict_) {
        const Value* o = other.Find(k);
        if (o == nullptr || !v.Equals(*o)) return false;
      }
      return true;
    }
    case Kind::kNamespace: return dict_ == other.dict_;
    case Kind::kCallable: return function_ == other.function_;
    default: return false;
  }
}

namespace {

void AppendJsonString(const std::string& s, bool ensure_ascii, std::string* out) {
  *out += '"';
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"': *out += "\\\""; continue;
      case '\\': *out += "\\\\"; continue;
      case '\n': *out += "\\n"; continue;
      case '\r': *out += "\\r"; continue;
      case '\t': *out += "\\t"; continue;
      case '\b': *out += "\\b"; continue;
      case '\f': *out += "\\f"; continue;
      default: break;
    }
    char buffer[16];
    if (c < 0x20) {
      std::snprintf(buffer, sizeof(buffer), "\\u%04x", c);
      *out += buffer;
    } else if (c < 0x80 || !ensure_ascii) {
      *out += static_cast<char>(c);
    } else {
      // Decode one UTF-8 sequence; \uXXXX (a surrogate pair above the BMP).
      uint32_t cp = 0;
      const int extra = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : 0;
      cp = c & (0x3f >> extra);
      if (extra == 0 || i + static_cast<size_t>(extra) >= s.size()) {
        std::snprintf(buffer, sizeof(buffer), "\\u%04x", 0xfffd);
        *out += buffer;
        continue;
      }
      for (int k = 1; k <= extra; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3f);
      i += static_cast<size_t>(extra);
      if (cp >= 0x10000) {
        cp -= 0x10000;
        std::snprintf(buffer, sizeof(buffer), "\\u%04x\\u%04x", 0xd800 + (cp >> 10),
                      0xdc00 + (cp & 0x3ff));
      } else {
        std::snprintf(buffer, sizeof(buffer), "\\u%04x", cp);
      }
      *out += buffer;
    }
  }
  *out += '"';
}

void AppendJson(const Value& value, const JsonOptions& options, int depth, std::string* out) {
  if (depth > 512) throw Error("RecursionError", "maximum recursion depth exceeded in tojson");
  const bool indenting = options.indent_given;
  const std::string item_sep =
      options.separators_given ? options.item_separator : (indenting ? "," : ", ");
  auto newline = [&](int level) {
    *out += '\n';
    for (int i = 0; i < level; ++i) {
      if (!options.indent_text.empty()) *out += options.indent_text;
      else *out += std::string(static_cast<size_t>(std::max(options.indent, 0)), ' ');
    }
  };
  switch (value.kind()) {
    case Value::Kind::kNone: *out += "null"; return;
    case Value::Kind::kBool: *out += value.bool_value() ? "true" : "false"; return;
    case Value::Kind::kInt: *out += std::to_string(value.int_value()); return;
    case Value::Kind::kFloat: {
      const double d = value.number();
      if (std::isnan(d)) *out += "NaN";
      else if (std::isinf(d)) *out += d > 0 ? "Infinity" : "-Infinity";
      else *out += FloatRepr(d);
      return;
    }
    case Value::Kind::kString: AppendJsonString(value.str(), options.ensure_ascii, out); return;
    case Value::Kind::kList: {
      if (value.list().empty()) { *out += "[]"; return; }
      *out += '[';
      bool first = true;
      for (const Value& item : value.list()) {
        if (!first) *out += item_sep;
        first = false;
        if (indenting) newline(depth + 1);
        AppendJson(item, options, depth + 1, out);
      }
      if (indenting) newline(depth);
      *out += ']';
      return;
    }
    case Value::Kind::kDict: {
      if (value.dict().empty()) { *out += "{}"; return; }
      std::vector<const std::pair<std::string, Value>*> entries;
      for (const auto& entry : value.dict()) entries.push_back(&entry);
      if (options.sort_keys) {
        std::stable_sort(entries.begin(), entries.end(),
                         [](const auto* a, const auto* b) { return a->first < b->first; });
      }
      *out += '{';
      bool first = true;
      for (const auto* entry : entries) {
        if (!first) *out += item_sep;
        first = false;
        if (indenting) newline(depth + 1);
        AppendJsonString(entry->first, options.ensure_ascii, out);
        *out += options.key_separator;
        AppendJson(entry->second, options, depth + 1, out);
      }
      if (indenting) newline(depth);
      *out += '}';
      return;
    }
    default:
      throw Error("TypeError", "Object of type " + value.TypeName() + " is not JSON serializable");
  }
}

}  // namespace

std::string ToJson(const Value& value, const JsonOptions& options) {
  std::string out;
  AppendJson(value, options, 0, &out);
  return out;
}

std::vector<std::string_view> CodePoints(std::string_view s) {
  std::vector<std::string_view> out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t length = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
    if (i + length > s.size()) length = 1;
    for (size_t k = 1; k < length; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) { length = 1; break; }
    }
    out.push_back(s.substr(i, length));
    i += length;
  }
  return out;
}

}  // namespace moemesh::text::jinja
