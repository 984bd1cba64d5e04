// The Jinja engine (src/tokenizer/jinja/) against Jinja2 in transformers' chat-template
// environment: tests/fixtures/jinja/cases.json holds one template per construct, filter, test and
// method chat templates use, plus 300 seeded random whitespace-control templates, each with
// what Jinja2 rendered or the error (message and line) it raised; made by
// tests/reference/make_chat_template_fixtures.py. The tests below it spell out the behaviours
// callers rely on: errors naming the template and line, undefined values, key order, threads.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "tokenizer/jinja/json.h"
#include "tokenizer/jinja/template.h"

namespace nanovllm::jinja {
namespace {

nlohmann::ordered_json load_cases() {
  std::ifstream f(std::string(NANOVLLM_SOURCE_DIR) + "/tests/fixtures/jinja/cases.json");
  return nlohmann::ordered_json::parse(f);
}

std::string render(std::string_view source, const nlohmann::ordered_json& vars = nlohmann::ordered_json::object()) {
  return Template(source, "t.jinja").render(from_json(vars).as_object());
}

// The error render() throws, or "" when it renders.
TemplateError error_of(std::string_view source, const nlohmann::ordered_json& vars = nlohmann::ordered_json::object()) {
  try {
    render(source, vars);
  } catch (const TemplateError& e) {
    return e;
  }
  ADD_FAILURE() << "no error for " << source;
  return TemplateError("", 0, "");
}

TEST(Jinja, MatchesJinja2OnEveryFixtureCase) {
  const auto fixture = load_cases();
  const auto& cases = fixture["cases"];
  ASSERT_GE(cases.size(), 350u);
  for (const auto& c : cases) {
    const std::string src = c["template"];
    SCOPED_TRACE("template: " + nlohmann::json(src).dump() + " variables: " + c["variables"].dump());
    if (c.contains("rendered")) {
      try {
        EXPECT_EQ(render(src, c["variables"]), c["rendered"].get<std::string>());
      } catch (const TemplateError& e) {
        ADD_FAILURE() << "unexpected error: " << e.what();
      }
      continue;
    }
    try {
      std::string out = render(src, c["variables"]);
      ADD_FAILURE() << "rendered " << nlohmann::json(out).dump() << ", Jinja2 raised " << c["error"];
    } catch (const TemplateError& e) {
      EXPECT_EQ(e.line(), c["line"].get<int>()) << e.what();
      // Render errors read as Jinja2's (they are Python's); syntax errors are worded our way.
      if (c["kind"] == "render") EXPECT_EQ(e.message(), c["error"].get<std::string>());
    }
  }
}

TEST(Jinja, ErrorsNameTheTemplateAndLine) {
  TemplateError e = error_of("first\n{% if true %}\n  {{ raise_exception('roles must alternate') }}\n{% endif %}");
  EXPECT_STREQ(e.what(), "t.jinja, line 3: roles must alternate");
  EXPECT_EQ(e.name(), "t.jinja");
  // A block never closed is reported where it opens.
  e = error_of("a\n\n{% for m in messages %}\n{{ m }}\n");
  EXPECT_EQ(e.line(), 3);
  EXPECT_NE(e.message().find("'for' block is never closed"), std::string::npos) << e.what();
  // Syntax errors are found when the template is read, not when it is rendered.
  EXPECT_THROW(Template("ok\n{{ 1 + }}", "t.jinja"), TemplateError);
  // An error inside a macro names the macro body's line.
  e = error_of("{% macro f(x) %}\n{{ x.missing.deeper }}\n{% endmacro %}\n\n{{ f({}) }}");
  EXPECT_EQ(e.line(), 2);
  EXPECT_EQ(e.message(), "'dict object' has no attribute 'missing'");
}

TEST(Jinja, UndefinedIsEmptyFalsyAndIterableButNotUsable) {
  EXPECT_EQ(render("[{{ nothing }}]{% if nothing %}yes{% else %}no{% endif %}{% for x in nothing %}x{% endfor %}"),
            "[]no");
  EXPECT_EQ(render("{{ nothing is defined }}{{ nothing is undefined }}{{ nothing|default('d') }}"), "FalseTrued");
  EXPECT_EQ(render("{{ m.missing is defined }}", {{"m", nlohmann::ordered_json::object()}}), "False");
  EXPECT_EQ(error_of("{{ nothing.attr }}").message(), "'nothing' is undefined");
  EXPECT_EQ(error_of("{{ nothing + 1 }}").message(), "'nothing' is undefined");
  EXPECT_EQ(error_of("{{ nothing | tojson }}").message(), "Object of type Undefined is not JSON serializable");
}

TEST(Jinja, JsonKeepsKeyOrderAndTypes) {
  auto vars = nlohmann::ordered_json::parse(R"({"v": {"z": 1, "a": [1.0, 2, null, true, "é"]}})");
  EXPECT_EQ(render("{{ v|tojson }}|{{ v }}|{{ v.a[0] is float }}", vars),
            R"({"z": 1, "a": [1.0, 2, null, true, "é"]}|{'z': 1, 'a': [1.0, 2, None, True, 'é']}|True)");
}

TEST(Jinja, NamespaceIsSharedAcrossLoopScopes) {
  EXPECT_EQ(render("{% set ns = namespace(last=-1) %}{% set plain = -1 %}"
                   "{% for m in ['a', 'b', 'a'] %}{% if m == 'a' %}{% set ns.last = loop.index0 %}"
                   "{% set plain = loop.index0 %}{% endif %}{% endfor %}{{ ns.last }} {{ plain }}"),
               "2 -1");
}

TEST(Jinja, RunawayRecursionIsAnError) {
  TemplateError e = error_of("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  EXPECT_NE(e.message().find("recursion"), std::string::npos) << e.what();
}

TEST(Jinja, OneTemplateRendersFromManyThreads) {
  Template t("{% for i in range(n) %}{{ i }},{% endfor %}", "t.jinja");
  std::vector<std::thread> threads;
  std::vector<std::string> out(8);
  for (int k = 0; k < 8; ++k)
    threads.emplace_back([&, k] {
      for (int rep = 0; rep < 50; ++rep) out[k] = t.render(from_json(nlohmann::ordered_json{{"n", k}}).as_object());
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(out[0], "");
  EXPECT_EQ(out[3], "0,1,2,");
  EXPECT_EQ(out[7], "0,1,2,3,4,5,6,");
}

}  // namespace
}  // namespace nanovllm::jinja
