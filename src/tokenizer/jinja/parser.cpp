// The recursive-descent parser, after Jinja2's (jinja2/parser.py): the same grammar, precedence
// and assignment targets, and the statements chat templates use (see parser.h).
#include "tokenizer/jinja/parser.h"

#include <cstdlib>

#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/error.h"

namespace nanovllm::jinja {
namespace {

using Names = std::initializer_list<const char*>;

bool in(const std::string& s, Names names) {
  for (const char* n : names)
    if (s == n) return true;
  return false;
}

// Whether any name expression or statement in the tree is `name`: macros take varargs and
// kwargs (and know of caller) only when their body mentions them, as in Jinja2.
bool mentions(const Expr* e, const std::string& name);
bool mentions(const Body& body, const std::string& name);
bool mentions(const Expr* e, const std::string& name) {
  if (!e) return false;
  if (e->kind == Expr::Kind::name && e->name == name) return true;
  if (mentions(e->a.get(), name) || mentions(e->b.get(), name) || mentions(e->c.get(), name) ||
      mentions(e->star.get(), name) || mentions(e->star_star.get(), name))
    return true;
  for (const auto& x : e->items)
    if (mentions(x.get(), name)) return true;
  for (const auto& kv : e->kwargs)
    if (mentions(kv.second.get(), name)) return true;
  return false;
}
bool mentions(const Body& body, const std::string& name) {
  for (const auto& s : body) {
    if (mentions(s->expr.get(), name) || mentions(s->target.get(), name) || mentions(s->filter.get(), name) ||
        mentions(s->body, name) || mentions(s->else_body, name))
      return true;
    for (const auto& p : s->params)
      if (mentions(p.default_value.get(), name)) return true;
    for (const auto& [t, v] : s->assignments)
      if (mentions(v.get(), name)) return true;
  }
  return false;
}

class Parser {
 public:
  Parser(const std::vector<Token>& tokens, const std::string& name) : t_(tokens), name_(name) {}

  Body run() { return subparse({}, nullptr, 0); }

 private:
  const Token& cur() const { return t_[i_]; }
  const Token& peek() const { return t_[i_ + 1 < t_.size() ? i_ + 1 : i_]; }
  void next() {
    if (i_ + 1 < t_.size()) ++i_;
  }
  bool is_op(const char* op) const { return cur().type == Tok::op && cur().value == op; }
  bool is_name(const char* n) const { return cur().type == Tok::name && cur().value == n; }

  [[noreturn]] void fail(const std::string& message, int line = -1) const {
    throw TemplateError(name_, line < 0 ? cur().line : line, message);
  }

  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tok::eof: return "end of template";
      case Tok::block_end: return "end of statement block";
      case Tok::var_end: return "end of print statement";
      case Tok::block_begin: return "begin of statement block";
      case Tok::var_begin: return "begin of print statement";
      case Tok::text: return "template data";
      case Tok::string: return "string";
      case Tok::integer: case Tok::floating: return "number " + t.value;
      default: return "'" + t.value + "'";
    }
  }

  void expect_op(const char* op) {
    if (!is_op(op)) fail(std::string("expected '") + op + "', got " + describe(cur()));
    next();
  }
  void expect_block_end() {
    if (cur().type != Tok::block_end) fail("expected end of statement block ('%}'), got " + describe(cur()));
    next();
  }
  std::string expect_name() {
    if (cur().type != Tok::name) fail("expected a name, got " + describe(cur()));
    std::string n = cur().value;
    next();
    return n;
  }
  ExprPtr node(Expr::Kind k, int line) { return std::make_unique<Expr>(k, line); }

  // Statements up to a block tag named in `ends` (the cursor is left on that name), or the end
  // of the template when `ends` is empty.
  Body subparse(Names ends, const char* block, int open_line) {
    Body body;
    while (true) {
      const Token& tok = cur();
      if (tok.type == Tok::text) {
        auto s = std::make_unique<Stmt>(Stmt::Kind::text, tok.line);
        s->text = tok.value;
        body.push_back(std::move(s));
        next();
      } else if (tok.type == Tok::var_begin) {
        auto s = std::make_unique<Stmt>(Stmt::Kind::output, tok.line);
        next();
        s->expr = parse_tuple(false, true, {}, false);
        if (cur().type != Tok::var_end) fail("expected end of print statement ('}}'), got " + describe(cur()));
        next();
        body.push_back(std::move(s));
      } else if (tok.type == Tok::block_begin) {
        next();
        if (cur().type == Tok::name && in(cur().value, ends)) return body;
        body.push_back(parse_statement());
      } else if (tok.type == Tok::eof) {
        if (!block) return body;
        std::string expected;
        for (const char* e : ends) expected += std::string(expected.empty() ? "" : " or ") + "'" + e + "'";
        fail(std::string("the '") + block + "' block is never closed: expected " + expected +
                 " before the end of the template",
             open_line);
      } else {
        fail("unexpected " + describe(tok));
      }
    }
  }

  // Closes a block: the cursor is on its end tag's name.
  void end_tag() {
    next();
    expect_block_end();
  }

  StmtPtr parse_statement() {
    if (cur().type != Tok::name) fail("expected a tag name, got " + describe(cur()));
    const std::string tag = cur().value;
    const int line = cur().line;
    if (tag == "if") return parse_if(line);
    if (tag == "for") return parse_for(line);
    if (tag == "set") return parse_set(line);
    if (tag == "macro") return parse_macro(line);
    if (tag == "call") return parse_call_block(line);
    if (tag == "filter") return parse_filter_block(line);
    if (tag == "with") return parse_with(line);
    if (tag == "generation") {  // transformers' AssistantTracker tag: renders its body as is
      auto s = std::make_unique<Stmt>(Stmt::Kind::block, line);
      next();
      expect_block_end();
      s->body = subparse({"endgeneration"}, "generation", line);
      end_tag();
      return s;
    }
    if (tag == "break" || tag == "continue") {
      if (loop_depth_ == 0) fail("'" + tag + "' outside of a for loop");
      next();
      expect_block_end();
      return std::make_unique<Stmt>(tag == "break" ? Stmt::Kind::break_ : Stmt::Kind::continue_, line);
    }
    fail("Encountered unknown tag '" + tag + "'.");
  }

  StmtPtr parse_if(int line) {
    auto s = std::make_unique<Stmt>(Stmt::Kind::if_, line);
    next();
    s->expr = parse_tuple(false, false, {}, false);
    expect_block_end();
    s->body = subparse({"elif", "else", "endif"}, "if", line);
    if (is_name("elif")) {
      s->else_body.push_back(parse_if(cur().line));  // the elif shares this if's endif
      return s;
    }
    if (is_name("else")) {
      next();
      expect_block_end();
      s->else_body = subparse({"endif"}, "if", line);
    }
    end_tag();
    return s;
  }

  StmtPtr parse_for(int line) {
    auto s = std::make_unique<Stmt>(Stmt::Kind::for_, line);
    next();
    s->target = parse_assign_target(true, {"in"}, false);
    if (!is_name("in")) fail("expected 'in', got " + describe(cur()));
    next();
    s->expr = parse_tuple(false, false, {"recursive"}, false);
    if (is_name("if")) {
      next();
      s->filter = parse_expression(true);
    }
    if (is_name("recursive")) fail("recursive for loops are not supported");
    expect_block_end();
    ++loop_depth_;
    s->body = subparse({"endfor", "else"}, "for", line);
    --loop_depth_;
    if (is_name("else")) {
      next();
      expect_block_end();
      s->else_body = subparse({"endfor"}, "for", line);
    }
    end_tag();
    return s;
  }

  StmtPtr parse_set(int line) {
    next();
    ExprPtr target = parse_assign_target(true, {}, true);
    if (is_op("=")) {
      auto s = std::make_unique<Stmt>(Stmt::Kind::set, line);
      next();
      s->target = std::move(target);
      s->expr = parse_tuple(false, true, {}, false);
      expect_block_end();
      return s;
    }
    auto s = std::make_unique<Stmt>(Stmt::Kind::set_block, line);
    s->target = std::move(target);
    if (is_op("|")) s->filter = parse_filter(nullptr, false);
    expect_block_end();
    s->body = subparse({"endset"}, "set", line);
    end_tag();
    return s;
  }

  std::vector<Param> parse_signature() {
    std::vector<Param> params;
    expect_op("(");
    while (!is_op(")")) {
      if (!params.empty()) expect_op(",");
      if (is_op(")")) break;
      Param p;
      p.name = expect_name();
      if (is_op("=")) {
        next();
        p.default_value = parse_expression(true);
      } else if (!params.empty() && params.back().default_value) {
        fail("non-default argument follows default argument");
      }
      params.push_back(std::move(p));
    }
    next();
    return params;
  }

  void note_special_names(Stmt& s) {
    s.uses_varargs = mentions(s.body, "varargs");
    s.uses_kwargs = mentions(s.body, "kwargs");
    s.uses_caller = mentions(s.body, "caller");
  }

  StmtPtr parse_macro(int line) {
    auto s = std::make_unique<Stmt>(Stmt::Kind::macro, line);
    next();
    s->text = expect_name();
    s->params = parse_signature();
    expect_block_end();
    const int depth = loop_depth_;
    loop_depth_ = 0;  // a loop around the macro's definition is not around its body
    s->body = subparse({"endmacro"}, "macro", line);
    loop_depth_ = depth;
    end_tag();
    note_special_names(*s);
    return s;
  }

  StmtPtr parse_call_block(int line) {
    auto s = std::make_unique<Stmt>(Stmt::Kind::call_block, line);
    next();
    if (is_op("(")) s->params = parse_signature();
    s->expr = parse_expression(true);
    if (s->expr->kind != Expr::Kind::call) fail("expected a call after 'call'", line);
    expect_block_end();
    s->body = subparse({"endcall"}, "call", line);
    end_tag();
    note_special_names(*s);
    return s;
  }

  StmtPtr parse_filter_block(int line) {
    auto s = std::make_unique<Stmt>(Stmt::Kind::filter_block, line);
    next();
    s->filter = parse_filter(nullptr, true);
    expect_block_end();
    s->body = subparse({"endfilter"}, "filter", line);
    end_tag();
    return s;
  }

  StmtPtr parse_with(int line) {
    auto s = std::make_unique<Stmt>(Stmt::Kind::with, line);
    next();
    while (cur().type != Tok::block_end) {
      if (!s->assignments.empty()) expect_op(",");
      ExprPtr target = parse_assign_target(true, {}, false);
      expect_op("=");
      s->assignments.emplace_back(std::move(target), parse_expression(true));
    }
    next();
    s->body = subparse({"endwith"}, "with", line);
    end_tag();
    return s;
  }

  // A name, a tuple of names (`k, v`), or with_namespace a namespace attribute (`ns.x`).
  ExprPtr parse_assign_target(bool with_tuple, Names extra_end, bool with_namespace) {
    const int line = cur().line;
    if (with_namespace && cur().type == Tok::name && peek().type == Tok::op && peek().value == ".") {
      auto ns = node(Expr::Kind::name, line);
      ns->name = expect_name();
      next();
      auto e = node(Expr::Kind::getattr, line);
      e->a = std::move(ns);
      e->name = expect_name();
      return e;
    }
    ExprPtr target = with_tuple ? parse_tuple(true, true, extra_end, false) : parse_primary();
    auto assignable = [](const Expr& e) { return e.kind == Expr::Kind::name; };
    bool ok = assignable(*target);
    if (target->kind == Expr::Kind::tuple) {
      ok = true;
      for (const auto& x : target->items) ok = ok && assignable(*x);
    }
    if (!ok) fail("can't assign to this expression", line);
    return target;
  }

  bool is_tuple_end(Names extra_end) const {
    const Token& t = cur();
    if (t.type == Tok::var_end || t.type == Tok::block_end || t.type == Tok::eof) return true;
    if (t.type == Tok::op && t.value == ")") return true;
    return t.type == Tok::name && in(t.value, extra_end);
  }

  // Comma-separated expressions: one is itself, several (or one with a trailing comma) a tuple.
  ExprPtr parse_tuple(bool simplified, bool with_condexpr, Names extra_end, bool explicit_parentheses) {
    const int line = cur().line;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (is_tuple_end(extra_end)) break;
      items.push_back(simplified ? parse_primary() : parse_expression(with_condexpr));
      if (is_op(",")) is_tuple = true;
      else break;
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parentheses) fail("expected an expression, got " + describe(cur()));
    }
    auto e = node(Expr::Kind::tuple, line);
    e->items = std::move(items);
    return e;
  }

  ExprPtr parse_expression(bool with_condexpr) { return with_condexpr ? parse_condexpr() : parse_or(); }

  ExprPtr parse_condexpr() {
    ExprPtr a = parse_or();
    while (is_name("if")) {
      auto e = node(Expr::Kind::cond, cur().line);
      next();
      e->a = std::move(a);
      e->b = parse_or();
      if (is_name("else")) {
        next();
        e->c = parse_condexpr();
      }
      a = std::move(e);
    }
    return a;
  }

  ExprPtr binary(Expr::Kind k, std::string op, ExprPtr a, ExprPtr b, int line) {
    auto e = node(k, line);
    e->name = std::move(op);
    e->a = std::move(a);
    e->b = std::move(b);
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr a = parse_and();
    while (is_name("or")) {
      int line = cur().line;
      next();
      a = binary(Expr::Kind::or_, "or", std::move(a), parse_and(), line);
    }
    return a;
  }

  ExprPtr parse_and() {
    ExprPtr a = parse_not();
    while (is_name("and")) {
      int line = cur().line;
      next();
      a = binary(Expr::Kind::and_, "and", std::move(a), parse_not(), line);
    }
    return a;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      auto e = node(Expr::Kind::unary, cur().line);
      next();
      e->name = "not";
      e->a = parse_not();
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const int line = cur().line;
    ExprPtr first = parse_math1();
    auto e = node(Expr::Kind::compare, line);
    while (true) {
      std::string op;
      if (cur().type == Tok::op && in(cur().value, {"==", "!=", ">", ">=", "<", "<="})) {
        op = cur().value;
        next();
      } else if (is_name("in")) {
        op = "in";
        next();
      } else if (is_name("not") && peek().type == Tok::name && peek().value == "in") {
        op = "not in";
        next();
        next();
      } else {
        break;
      }
      e->ops.push_back(op);
      e->items.push_back(parse_math1());
    }
    if (e->ops.empty()) return first;
    e->items.insert(e->items.begin(), std::move(first));
    return e;
  }

  ExprPtr parse_math1() {
    ExprPtr a = parse_concat();
    while (is_op("+") || is_op("-")) {
      std::string op = cur().value;
      int line = cur().line;
      next();
      a = binary(Expr::Kind::binary, op, std::move(a), parse_concat(), line);
    }
    return a;
  }

  ExprPtr parse_concat() {
    ExprPtr a = parse_math2();
    while (is_op("~")) {
      int line = cur().line;
      next();
      a = binary(Expr::Kind::binary, "~", std::move(a), parse_math2(), line);
    }
    return a;
  }

  ExprPtr parse_math2() {
    ExprPtr a = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      std::string op = cur().value;
      int line = cur().line;
      next();
      a = binary(Expr::Kind::binary, op, std::move(a), parse_pow(), line);
    }
    return a;
  }

  ExprPtr parse_pow() {
    ExprPtr a = parse_unary(true);
    while (is_op("**")) {
      int line = cur().line;
      next();
      a = binary(Expr::Kind::binary, "**", std::move(a), parse_unary(true), line);
    }
    return a;
  }

  ExprPtr parse_unary(bool with_filter) {
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      e = node(Expr::Kind::unary, cur().line);
      e->name = cur().value;
      next();
      e->a = parse_unary(false);
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter) e = parse_filter_expr(std::move(e));
    return e;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    const int line = t.line;
    if (t.type == Tok::name) {
      auto e = node(Expr::Kind::literal, line);
      if (t.value == "true" || t.value == "True") e->value = Value::boolean(true);
      else if (t.value == "false" || t.value == "False") e->value = Value::boolean(false);
      else if (t.value == "none" || t.value == "None") e->value = Value::none();
      else e->kind = Expr::Kind::name, e->name = t.value;
      next();
      return e;
    }
    if (t.type == Tok::string) {
      std::string s;
      while (cur().type == Tok::string) {
        s += cur().value;
        next();
      }
      auto e = node(Expr::Kind::literal, line);
      e->value = Value::string(std::move(s));
      return e;
    }
    if (t.type == Tok::integer || t.type == Tok::floating) {
      auto e = node(Expr::Kind::literal, line);
      errno = 0;
      if (t.type == Tok::integer) e->value = Value::integer(std::strtoll(t.value.c_str(), nullptr, 10));
      else e->value = Value::floating(std::strtod(t.value.c_str(), nullptr));
      if (errno == ERANGE && t.type == Tok::integer) fail("integer literal " + t.value + " is out of range");
      next();
      return e;
    }
    if (is_op("(")) {
      next();
      ExprPtr e = parse_tuple(false, true, {}, true);
      expect_op(")");
      return e;
    }
    if (is_op("[") || is_op("{")) {
      const bool dict = is_op("{");
      const char* close = dict ? "}" : "]";
      auto e = node(dict ? Expr::Kind::dict : Expr::Kind::list, line);
      next();
      while (!is_op(close)) {
        if (!e->items.empty()) expect_op(",");
        if (is_op(close)) break;
        e->items.push_back(parse_expression(true));
        if (dict) {
          expect_op(":");
          e->items.push_back(parse_expression(true));
        }
      }
      next();
      return e;
    }
    fail("unexpected " + describe(t));
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      if (is_op(".") || is_op("[")) e = parse_subscript(std::move(e));
      else if (is_op("(")) e = parse_call(std::move(e));
      else return e;
    }
  }

  ExprPtr parse_filter_expr(ExprPtr e) {
    while (true) {
      if (is_op("|")) e = parse_filter(std::move(e), false);
      else if (is_name("is")) e = parse_test(std::move(e));
      else if (is_op("(")) e = parse_call(std::move(e));
      else return e;
    }
  }

  ExprPtr parse_subscript(ExprPtr obj) {
    const int line = cur().line;
    if (is_op(".")) {
      next();
      if (cur().type == Tok::name) {
        auto e = node(Expr::Kind::getattr, line);
        e->a = std::move(obj);
        e->name = expect_name();
        return e;
      }
      if (cur().type != Tok::integer) fail("expected a name or number after '.', got " + describe(cur()));
      auto e = node(Expr::Kind::getitem, line);  // messages.0 is messages[0]
      e->a = std::move(obj);
      e->b = parse_primary();
      return e;
    }
    next();
    std::vector<ExprPtr> args;
    while (!is_op("]")) {
      if (!args.empty()) expect_op(",");
      if (is_op("]")) break;
      args.push_back(parse_subscribed());
    }
    expect_op("]");
    if (args.empty()) fail("expected a subscript", line);
    ExprPtr index;
    if (args.size() == 1) {
      index = std::move(args[0]);
    } else {
      index = node(Expr::Kind::tuple, line);
      index->items = std::move(args);
    }
    if (index->kind == Expr::Kind::slice && !index->a) {
      index->a = std::move(obj);
      return index;
    }
    auto e = node(Expr::Kind::getitem, line);
    e->a = std::move(obj);
    e->b = std::move(index);
    return e;
  }

  // One subscript: an expression, or a slice start:stop:step (returned with no object yet).
  ExprPtr parse_subscribed() {
    const int line = cur().line;
    auto s = node(Expr::Kind::slice, line);
    if (is_op(":")) {
      next();
      s->items.push_back(nullptr);
    } else {
      ExprPtr e = parse_expression(true);
      if (!is_op(":")) return e;
      next();
      s->items.push_back(std::move(e));
    }
    auto optional_expr = [&]() -> ExprPtr { return is_op("]") || is_op(",") || is_op(":") ? nullptr : parse_expression(true); };
    s->items.push_back(optional_expr());
    if (is_op(":")) {
      next();
      s->items.push_back(optional_expr());
    } else {
      s->items.push_back(nullptr);
    }
    return s;
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto e = node(Expr::Kind::call, cur().line);
    e->a = std::move(callee);
    parse_call_args(*e);
    return e;
  }

  void parse_call_args(Expr& e) {
    expect_op("(");
    bool first = true;
    while (!is_op(")")) {
      if (!first) {
        expect_op(",");
        if (is_op(")")) break;
      }
      first = false;
      if (is_op("*") || is_op("**")) {
        const bool two = is_op("**");
        next();
        (two ? e.star_star : e.star) = parse_expression(true);
      } else if (cur().type == Tok::name && peek().type == Tok::op && peek().value == "=") {
        std::string key = expect_name();
        next();
        if (e.star_star) fail("invalid syntax for function call expression");
        e.kwargs.emplace_back(std::move(key), parse_expression(true));
      } else {
        if (!e.kwargs.empty() || e.star || e.star_star) fail("positional argument follows keyword argument");
        e.items.push_back(parse_expression(true));
      }
    }
    next();
  }

  std::string dotted_name() {
    std::string n = expect_name();
    while (is_op(".")) {
      next();
      n += '.';
      n += expect_name();
    }
    return n;
  }

  // `| name(args)` repeated; start_inline: the first filter has no pipe ({% filter name %}).
  ExprPtr parse_filter(ExprPtr operand, bool start_inline) {
    while (is_op("|") || start_inline) {
      if (!start_inline) next();
      start_inline = false;
      const int line = cur().line;
      auto e = node(Expr::Kind::filter, line);
      e->name = dotted_name();
      if (!find_filter(e->name)) fail("No filter named '" + e->name + "'.", line);
      e->a = std::move(operand);
      if (is_op("(")) parse_call_args(*e);
      operand = std::move(e);
    }
    return operand;
  }

  ExprPtr parse_test(ExprPtr operand) {
    const int line = cur().line;
    next();
    bool negated = false;
    if (is_name("not")) {
      negated = true;
      next();
    }
    auto e = node(Expr::Kind::test, line);
    e->name = dotted_name();
    if (!find_test(e->name)) fail("No test named '" + e->name + "'.", line);
    e->a = std::move(operand);
    const Token& t = cur();
    if (is_op("(")) {
      parse_call_args(*e);
    } else if ((t.type == Tok::name || t.type == Tok::string || t.type == Tok::integer || t.type == Tok::floating ||
                is_op("[") || is_op("{")) &&
               !(t.type == Tok::name && in(t.value, {"else", "or", "and"}))) {
      if (is_name("is")) fail("You cannot chain multiple tests with is");
      e->items.push_back(parse_postfix(parse_primary()));
    }
    if (!negated) return e;
    auto n = node(Expr::Kind::unary, line);
    n->name = "not";
    n->a = std::move(e);
    return n;
  }

  const std::vector<Token>& t_;
  const std::string& name_;
  size_t i_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

Body parse(const std::vector<Token>& tokens, const std::string& name) { return Parser(tokens, name).run(); }

}  // namespace nanovllm::jinja
