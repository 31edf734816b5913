// The Jinja engine against what Python jinja2 3.1 renders with transformers' settings
// (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loop controls): whitespace
// control, Python semantics, jinja2's undefined and errors, and the limits that stop hostile
// templates.
#include "core/text/jinja_template.h"

#include <string>

#include "gtest/gtest.h"

namespace moemesh::text::jinja {
namespace {

using Json = nlohmann::ordered_json;

absl::StatusOr<std::string> RenderWith(const std::string& source, const Json& variables,
                                       const RenderOptions& options = {}) {
  absl::StatusOr<std::shared_ptr<const Template>> compiled = Template::Parse(source);
  if (!compiled.ok()) return compiled.status();
  return (*compiled)->Render(variables, options);
}

std::string Render(const std::string& source, const Json& variables = Json::object()) {
  absl::StatusOr<std::string> out = RenderWith(source, variables);
  EXPECT_TRUE(out.ok()) << source << ": " << out.status();
  return out.ok() ? *out : "<error>";
}

// The error text of a render that must fail ("" when it did not fail).
std::string Failure(const std::string& source, const Json& variables = Json::object(),
                    const RenderOptions& options = {}) {
  absl::StatusOr<std::string> out = RenderWith(source, variables, options);
  EXPECT_FALSE(out.ok()) << source << " rendered " << (out.ok() ? *out : "");
  return out.ok() ? "" : std::string(out.status().message());
}

TEST(JinjaTest, WhitespaceControlMatchesTransformersSettings) {
  EXPECT_EQ(Render("{% if true %}\nA\n{% endif %}B"), "A\nB");           // trim_blocks
  EXPECT_EQ(Render("  {% if true %}X{% endif %}"), "X");                 // lstrip_blocks
  EXPECT_EQ(Render("  {{ 'a' }}"), "  a");                               // not before {{
  EXPECT_EQ(Render("a  {%- if true -%}  b {%- endif %}"), "ab");
  EXPECT_EQ(Render("  {%+ if true %}x{% endif %}"), "  x");
  EXPECT_EQ(Render("x\n  {# c #}\ny"), "x\ny");
  EXPECT_EQ(Render("a {#- c -#}   b"), "ab");
  EXPECT_EQ(Render("a\n"), "a");                                         // one trailing \n dropped
  EXPECT_EQ(Render("a\n\n"), "a\n");
  EXPECT_EQ(Render("a\r\nb"), "a\nb");
  EXPECT_EQ(Render("{{- ' x ' -}}\n"), " x ");
  EXPECT_EQ(Render("{% raw %}{{ x }}{% endraw %}"), "{{ x }}");
}

TEST(JinjaTest, PythonTruthinessAndPrinting) {
  EXPECT_EQ(Render("{{ 'y' if [] else 'n' }}{{ 'y' if {} else 'n' }}{{ 'y' if 0 else 'n' }}"
                   "{{ 'y' if 'a' else 'n' }}{{ 'y' if none else 'n' }}"),
            "nnnyn");
  EXPECT_EQ(Render("{{ none }}{{ true }}{{ 1.0 }}{{ 10 / 4 }}{{ 7 // 2 }}{{ -7 % 3 }}"),
            "NoneTrue1.02.532");
  EXPECT_EQ(Render("{{ [1, 'a', none] }}{{ {'k': \"it's\"} }}"), "[1, 'a', None]{'k': \"it's\"}");
  EXPECT_EQ(Render("{{ x }}", {{"x", 0.1}}), "0.1");
  EXPECT_EQ(Render("{{ x }}", {{"x", 1e20}}), "1e+20");
  EXPECT_EQ(Render("{{ 'a' and 'b' }}|{{ '' or 'c' }}|{{ 0 and 1 }}"), "b|c|0");
}

TEST(JinjaTest, UndefinedIsLenientUntilUsed) {
  EXPECT_EQ(Render("{{ x }}|{{ x is defined }}|{% for i in x %}{{ i }}{% endfor %}|"
                   "{{ 'y' if x else 'n' }}|{{ x is not defined }}"),
            "|False||n|True");
  EXPECT_EQ(Render("{{ m['tool_calls'] is defined }}{{ m.role }}", {{"m", {{"role", "user"}}}}),
            "Falseuser");
  EXPECT_NE(Failure("{{ x.y }}").find("UndefinedError"), std::string::npos);
  EXPECT_NE(Failure("{{ x + 'a' }}").find("UndefinedError"), std::string::npos);
  EXPECT_NE(Failure("{{ m['a']['b'] }}", {{"m", Json::object()}}).find("UndefinedError"),
            std::string::npos);
}

TEST(JinjaTest, ErrorsJinja2Raises) {
  EXPECT_NE(Failure("{{ 'a' + none }}").find("TypeError"), std::string::npos);
  EXPECT_NE(Failure("{{ 'a' + [1] }}").find("TypeError"), std::string::npos);
  EXPECT_NE(Failure("{% for x in none %}{% endfor %}").find("TypeError"), std::string::npos);
  EXPECT_NE(Failure("{{ 'a' in none }}").find("TypeError"), std::string::npos);
  EXPECT_NE(Failure("{% set l = [] %}{{ l.append(1) }}").find("SecurityError"), std::string::npos);
  EXPECT_NE(Failure("{% set d = {} %}{{ d.update({'a': 1}) }}").find("SecurityError"),
            std::string::npos);
  EXPECT_NE(Failure("{% set x = 1 %}{% set x.a = 2 %}").find("namespace"), std::string::npos);
  EXPECT_NE(Failure("{{ 1 / 0 }}").find("ZeroDivisionError"), std::string::npos);
  EXPECT_NE(Failure("{{ x | nosuchfilter }}").find("nosuchfilter"), std::string::npos);
}

TEST(JinjaTest, ErrorsNameTheLine) {
  EXPECT_NE(Failure("a\n\n{% if %}").find("line 3"), std::string::npos);
  EXPECT_NE(Failure("a\nb\n\n{{ 'x' + none }}").find("line 4"), std::string::npos);
  EXPECT_NE(Failure("{% for x in y %}").find("endfor"), std::string::npos);
  EXPECT_NE(Failure("{{ raise_exception('bad roles') }}").find("TemplateError: bad roles"),
            std::string::npos);
  EXPECT_NE(Failure("{% break %}").find("outside of a loop"), std::string::npos);
}

TEST(JinjaTest, NamespacesLoopsAndScoping) {
  EXPECT_EQ(Render("{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}"
                   "{% endfor %}{{ ns.n }}"),
            "3");
  EXPECT_EQ(Render("{% set x = 1 %}{% for i in range(2) %}{% set x = 5 %}{% endfor %}{{ x }}"), "1");
  EXPECT_EQ(Render("{% if true %}{% set x = 2 %}{% endif %}{{ x }}"), "2");
  EXPECT_EQ(Render("{% for x in 'abc' %}{{ loop.index0 }}{{ x }}{% if loop.first %}F{% endif %}"
                   "{% if loop.last %}L{% endif %}{% endfor %}"),
            "0aF1b2cL");
  EXPECT_EQ(Render("{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}"
                   "{% if i == 4 %}{% break %}{% endif %}{{ i }}{% endfor %}"),
            "013");
  EXPECT_EQ(Render("{% for i in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(Render("{% for i in range(6) if i is even %}{{ i }}{{ loop.length }}{% endfor %}"),
            "032343");
  EXPECT_EQ(Render("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}"),
            "a=1;b=2;");
  EXPECT_EQ(Render("{% for m in ms %}{{ loop.revindex }}{% endfor %}", {{"ms", {1, 2, 3}}}), "321");
}

TEST(JinjaTest, MacrosSeeAndChangeOuterNamespaces) {
  EXPECT_EQ(Render("{% set ns = namespace(s='') %}{% macro add(t) %}{% set ns.s = ns.s + t %}"
                   "{% endmacro %}{{ add('a') }}{{ add('b') }}{{ ns.s }}"),
            "ab");
  EXPECT_EQ(Render("{% macro f(a, b='x') %}[{{ a }}{{ b }}]{% endmacro %}{{ f(1) }}{{ f(2, b='y') }}"),
            "[1x][2y]");
  EXPECT_EQ(Render("{% macro render(v) %}{% if v is mapping %}{% for k in v %}{{ k }}:"
                   "{{ render(v[k]) }};{% endfor %}{% else %}{{ v }}{% endif %}{% endmacro %}"
                   "{{ render(d) }}",
                   {{"d", {{"a", {{"b", 1}}}}}}),
            "a:b:1;;");
  EXPECT_EQ(Render("{% macro w() %}<{{ caller() }}>{% endmacro %}{% call w() %}in{% endcall %}"), "<in>");
}

TEST(JinjaTest, StringsListsAndDicts) {
  EXPECT_EQ(Render("{{ 'a</think>b</think>c'.split('</think>')[-1] }}|{{ 'a,b,c'.split(',', 1)[1] }}"),
            "c|b,c");
  EXPECT_EQ(Render("{{ ' a  b '.split() }}{{ ' x '.strip() }}{{ 'ab'.startswith('a') }}"),
            "['a', 'b']xTrue");
  EXPECT_EQ(Render("{% set d = {'a': 1} %}{{ d.get('a') }}{{ d.get('b', 2) }}{{ d.get('c') }}"),
            "12None");
  EXPECT_EQ(Render("{{ 'b' in 'abc' }}{{ 2 in [1, 2] }}{{ 'k' in {'k': 1} }}{{ 3 not in [1] }}"),
            "TrueTrueTrueTrue");
  EXPECT_EQ(Render("{{ [1, 2, 3, 4][1:] }}{{ 'hello'[::-1] }}{{ [1, 2, 3][:-1] }}"),
            "[2, 3, 4]olleh[1, 2]");
  EXPECT_EQ(Render("{{ '日本語'[1] }}{{ '日本語' | length }}"), "本3");
  EXPECT_EQ(Render("{{ 'a' 'b'\n 'c' }}"), "abc");
  EXPECT_EQ(Render("{{ 'a\\n\\'\\\\' }}"), "a\n'\\");
  EXPECT_EQ(Render("{{ [1] + [2] }}{{ 'ab' * 2 }}{{ 1 ~ 'x' ~ none }}"), "[1, 2]abab1xNone");
}

TEST(JinjaTest, PrecedenceOfFiltersTestsAndNot) {
  EXPECT_EQ(Render("{{ 'a' + 'b' | upper + 'c' }}"), "aBc");
  EXPECT_EQ(Render("{{ not none is none }}|{{ not x is defined }}"), "False|True");
  EXPECT_EQ(Render("{{ 1 + 2 * 3 }}{{ (1 + 2) * 3 }}{{ 2 ** 3 }}{{ -2 ** 2 }}"), "7984");  // jinja2: (-2) ** 2
  EXPECT_EQ(Render("{{ 'x' if false }}|{{ 1 if true else 2 }}"), "|1");
}

TEST(JinjaTest, TransformersTojson) {
  Json value = Json::parse(R"({"b": 1, "a": [1.5, "é\"<&'\n"], "c": null, "d": true})");
  EXPECT_EQ(Render("{{ v | tojson }}", {{"v", value}}),
            R"({"b": 1, "a": [1.5, "é\"<&'\n"], "c": null, "d": true})");
  EXPECT_EQ(Render("{{ {'a': [1, 2], 'e': []} | tojson(indent=2) }}"),
            "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"e\": []\n}");
  EXPECT_EQ(Render("{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}"), R"({"a": 2, "b": 1})");
  EXPECT_EQ(Render("{{ 'é' | tojson(ensure_ascii=true) }}"), R"("\u00e9")");
  EXPECT_EQ(Render("{{ s | tojson }}", {{"s", "{\"city\": \"Paris\"}"}}),
            R"("{\"city\": \"Paris\"}")");
  EXPECT_NE(Failure("{{ x | tojson }}").find("JSON serializable"), std::string::npos);
}

TEST(JinjaTest, FiltersAndTests) {
  EXPECT_EQ(Render("{{ l | map(attribute='n') | join(',') }}",
                   {{"l", Json::parse(R"([{"n": "a"}, {"n": "b"}])")}}),
            "a,b");
  EXPECT_EQ(Render("{{ 1 | string + 'x' }}{{ [3, 1, 2] | sort }}{{ [1, 2] | first }}{{ [1, 2] | last }}"),
            "1x[1, 2, 3]12");
  EXPECT_EQ(Render("{{ l | selectattr('r', 'equalto', 'u') | list | length }}",
                   {{"l", Json::parse(R"([{"r": "u"}, {"r": "a"}, {"r": "u"}])")}}),
            "2");
  EXPECT_EQ(Render("{{ x | default('d') }}{{ '' | default('e', true) }}{{ ' t ' | trim }}"), "det");
  EXPECT_EQ(Render("{{ 'a' is string }}{{ 1 is number }}{{ {} is mapping }}{{ 3 is odd }}"
                   "{{ none is not none }}{{ 4 is divisibleby 2 }}"),
            "TrueTrueTrueTrueFalseTrue");
  EXPECT_EQ(Render("{{ 'x\ny' | indent(2) }}"), "x\n  y");
  EXPECT_EQ(Render("{% set x %}hi {{ 1 }}{% endset %}{{ x | upper }}"), "HI 1");
  EXPECT_EQ(Render("{% filter upper %}ab{% endfilter %}"), "AB");
}

TEST(JinjaTest, Globals) {
  RenderOptions options;
  options.now = 1796083200;  // 2026-12-01 00:00 UTC
  EXPECT_EQ(*RenderWith("{{ strftime_now('%d %B %Y') }}", Json::object(), options), "01 December 2026");
  EXPECT_EQ(Render("{{ range(3) | list }}{{ range(1, 7, 2) | list }}"), "[0, 1, 2][1, 3, 5]");
  EXPECT_EQ(Render("{{ dict(a=1).a }}"), "1");
}

TEST(JinjaTest, LimitsStopHostileTemplates) {
  RenderOptions small;
  small.limits.max_steps = 100000;
  small.limits.max_output_bytes = 1 << 20;
  EXPECT_NE(Failure("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                    Json::object(), small).find("step budget"),
            std::string::npos);
  EXPECT_NE(Failure("{{ 'a' * 100000000 }}", Json::object(), small).find("limit"), std::string::npos);
  EXPECT_NE(Failure("{% set ns = namespace(s='x') %}{% for i in range(60) %}"
                    "{% set ns.s = ns.s + ns.s %}{% endfor %}", Json::object(), small).find("limit"),
            std::string::npos);
  EXPECT_NE(Failure("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}").find("Recursion"),
            std::string::npos);
  EXPECT_NE(Failure("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}")
                .find("nests too deeply"),
            std::string::npos);
  EXPECT_NE(Failure("{{ range(1000000) }}").find("MAX_RANGE"), std::string::npos);
  // Lists of long strings count their bytes: no quadratic copies of a big string.
  EXPECT_NE(Failure("{% set s = 'a' * 500000 %}{{ ([s] * 1000) | length }}", Json::object(), small)
                .find("limit"),
            std::string::npos);
  EXPECT_NE(Failure("{% set s = 'a' * 500000 %}{% set ns = namespace(l=[]) %}{% for i in range(100) %}"
                    "{% set ns.l = ns.l + [s] %}{% endfor %}", Json::object(), small).find("limit"),
            std::string::npos);
  EXPECT_NE(Failure("{% set ns = namespace(x=[]) %}{% for i in range(1000) %}{% set ns.x = [ns.x] %}"
                    "{% endfor %}").find("nest"),
            std::string::npos);
  // A namespace that holds itself is freed when the render ends (no leak, no crash).
  EXPECT_EQ(Render("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns.me.me is defined }}"), "True");
}

}  // namespace
}  // namespace moemesh::text::jinja
