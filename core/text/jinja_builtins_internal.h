// Helpers shared by the Jinja builtins (jinja_builtins.cc: operators, attribute and item
// access, methods; jinja_filters.cc: filters, tests, globals). Python semantics as in CPython 3.
#pragma once

#include <cstdint>
#include <string>

#include "core/text/jinja_interpreter.h"

namespace moemesh::text::jinja::internal {

using Kind = Value::Kind;

// The sandboxed range() allows at most this many items (jinja2's MAX_RANGE).
inline constexpr int64_t kMaxRange = 100000;

[[noreturn]] void TypeError(const std::string& message);
// Positional argument `index`, or keyword `name`; nullptr when neither was given.
const Value* Arg(const CallArgs& args, size_t index, const char* name);
// Typed arguments with a fallback when absent or none (TypeError on a wrong type).
std::string StrArg(const CallArgs& args, size_t index, const char* name, const std::string& fallback,
                   const char* function);
int64_t IntArg(const CallArgs& args, size_t index, const char* name, int64_t fallback,
               const char* function);
bool BoolArg(const CallArgs& args, size_t index, const char* name, bool fallback);
bool IsSpace(char c);
// str.strip / lstrip / rstrip (chars nullptr: whitespace).
std::string Strip(const std::string& s, const std::string* chars, bool left, bool right);
std::string Upper(std::string s);  // ASCII letters only
std::string Lower(std::string s);
std::string Capitalize(const std::string& s);
std::string Title(const std::string& s);
// str.split(sep, maxsplit); sep nullptr splits on whitespace runs.
List Split(const std::string& s, const std::string* sep, int64_t maxsplit);
// str.replace(old, new, count); count < 0: all.
std::string Replace(Interpreter& in, const std::string& s, const std::string& from,
                    const std::string& to, int64_t count);
// a < b as Python orders numbers, strings and lists; TypeError otherwise.
bool Less(const Value& a, const Value& b, const char* op);
// "%s" % value.
Value Format(Interpreter& in, const std::string& format, const Value& arguments);
// len(); undefined is 0.
int64_t Length(const Value& value);
// environment.getattr for filters' `attribute=` arguments: "a.b.0" walks item by item.
Value AttributePath(const Value& object, const std::string& path);

}  // namespace moemesh::text::jinja::internal
