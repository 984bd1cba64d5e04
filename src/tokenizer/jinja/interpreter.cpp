// The tree-walking renderer (see interpreter.h).
#include "tokenizer/jinja/interpreter.h"

#include <deque>

#include "tokenizer/jinja/access.h"
#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/operators.h"

namespace nanovllm::jinja {
namespace {

// Python's default recursion limit is 1000 frames; a runaway recursive macro stops here.
constexpr int kMaxMacroDepth = 500;

struct Scope {
  Scope* parent = nullptr;
  std::vector<std::pair<std::string, Value>> vars;

  const Value* find(const std::string& name) const {
    for (const Scope* s = this; s; s = s->parent)
      for (const auto& [k, v] : s->vars)
        if (k == name) return &v;
    return nullptr;
  }
  void set(const std::string& name, Value v) {
    for (auto& [k, x] : vars)
      if (k == name) {
        x = std::move(v);
        return;
      }
    vars.emplace_back(name, std::move(v));
  }
};

enum class Flow { normal, break_loop, continue_loop };

class Interpreter {
 public:
  explicit Interpreter(const std::string& name) : name_(name) {}

  std::string run(const Body& body, const Object& variables) {
    static const Object kGlobals = make_globals();
    Scope* globals = new_scope(nullptr);
    globals->vars = kGlobals.items;
    Scope* vars = new_scope(globals);
    vars->vars = variables.items;
    std::string out;
    exec(body, new_scope(vars), out);
    return out;
  }

 private:
  // Every scope lives until the render ends: a macro keeps the scope it was defined in.
  Scope* new_scope(Scope* parent) {
    scopes_.push_back(Scope{parent, {}});
    return &scopes_.back();
  }

  [[noreturn]] void fail(int line, const std::string& message) const { throw TemplateError(name_, line, message); }

  Flow exec(const Body& body, Scope* s, std::string& out) {
    for (const auto& st : body) {
      Flow f = exec_stmt(*st, s, out);
      if (f != Flow::normal) return f;
    }
    return Flow::normal;
  }

  Flow exec_stmt(const Stmt& st, Scope* s, std::string& out) {
    try {
      return exec_stmt_inner(st, s, out);
    } catch (const TemplateError&) {
      throw;
    } catch (const std::exception& e) {
      fail(st.line, e.what());
    }
  }

  Flow exec_stmt_inner(const Stmt& st, Scope* s, std::string& out) {
    switch (st.kind) {
      case Stmt::Kind::text: out += st.text; return Flow::normal;
      case Stmt::Kind::output: out += eval(*st.expr, s).str(); return Flow::normal;
      case Stmt::Kind::if_: return exec(eval(*st.expr, s).truthy() ? st.body : st.else_body, s, out);
      case Stmt::Kind::for_: exec_for(st, s, out); return Flow::normal;
      case Stmt::Kind::set: assign(*st.target, eval(*st.expr, s), s); return Flow::normal;
      case Stmt::Kind::set_block: {
        std::string text;
        exec(st.body, s, text);
        Value v = Value::string(std::move(text));
        if (st.filter) v = apply_filters(*st.filter, std::move(v), s);
        assign(*st.target, std::move(v), s);
        return Flow::normal;
      }
      case Stmt::Kind::macro: s->set(st.text, make_macro(st, s)); return Flow::normal;
      case Stmt::Kind::call_block: out += call_block(st, s).str(); return Flow::normal;
      case Stmt::Kind::filter_block: {
        std::string text;
        exec(st.body, s, text);
        out += apply_filters(*st.filter, Value::string(std::move(text)), s).str();
        return Flow::normal;
      }
      case Stmt::Kind::with: {
        Scope* inner = new_scope(s);
        for (const auto& [target, value] : st.assignments) assign(*target, eval(*value, inner), inner);
        return exec(st.body, inner, out);
      }
      case Stmt::Kind::break_: return Flow::break_loop;
      case Stmt::Kind::continue_: return Flow::continue_loop;
      case Stmt::Kind::block: return exec(st.body, s, out);
    }
    return Flow::normal;
  }

  // Binds `v` to a name, unpacks it into a tuple of names, or sets a namespace attribute.
  void assign(const Expr& target, Value v, Scope* s) {
    if (target.kind == Expr::Kind::name) {
      s->set(target.name, std::move(v));
    } else if (target.kind == Expr::Kind::tuple) {
      std::vector<Value> items = iterate(v);
      if (items.size() != target.items.size()) {
        if (items.size() > target.items.size())
          throw RenderError("too many values to unpack (expected " + std::to_string(target.items.size()) + ")");
        throw RenderError("not enough values to unpack (expected " + std::to_string(target.items.size()) + ", got " +
                          std::to_string(items.size()) + ")");
      }
      for (size_t i = 0; i < items.size(); ++i) s->set(target.items[i]->name, std::move(items[i]));
    } else {  // ns.attr
      const Value* ns = s->find(target.a->name);
      if (!ns || !ns->is_ns()) throw RenderError("cannot assign attribute on non-namespace object");
      ns->ns_object().set(target.name, std::move(v));
    }
  }

  Value loop_object(const std::vector<Value>& items, size_t i) {
    const int64_t n = static_cast<int64_t>(items.size()), k = static_cast<int64_t>(i);
    Object loop;
    loop.items.reserve(12);
    loop.items.emplace_back("index", Value::integer(k + 1));
    loop.items.emplace_back("index0", Value::integer(k));
    loop.items.emplace_back("revindex", Value::integer(n - k));
    loop.items.emplace_back("revindex0", Value::integer(n - k - 1));
    loop.items.emplace_back("first", Value::boolean(k == 0));
    loop.items.emplace_back("last", Value::boolean(k == n - 1));
    loop.items.emplace_back("length", Value::integer(n));
    loop.items.emplace_back("depth", Value::integer(1));
    loop.items.emplace_back("depth0", Value::integer(0));
    loop.items.emplace_back("previtem", k > 0 ? items[i - 1] : Value::undefined("there is no previous item"));
    loop.items.emplace_back("nextitem", k + 1 < n ? items[i + 1] : Value::undefined("there is no next item"));
    loop.items.emplace_back("cycle", Value::function("loop.cycle", [k](Args& a) {
                              if (a.positional.empty()) throw RenderError("no items for cycling given");
                              return a.positional[k % a.positional.size()];
                            }));
    return Value::object(std::move(loop));
  }

  void exec_for(const Stmt& st, Scope* s, std::string& out) {
    std::vector<Value> items = iterate(eval(*st.expr, s));
    if (st.filter) {  // {% for x in xs if cond %}: loop.* counts the items kept
      std::vector<Value> kept;
      for (Value& item : items) {
        Scope* probe = new_scope(s);
        assign(*st.target, item, probe);
        if (eval(*st.filter, probe).truthy()) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    for (size_t i = 0; i < items.size(); ++i) {
      Scope* iteration = new_scope(s);
      iteration->set("loop", loop_object(items, i));
      assign(*st.target, items[i], iteration);
      if (exec(st.body, iteration, out) == Flow::break_loop) break;
    }
    if (items.empty()) exec(st.else_body, new_scope(s), out);
  }

  Value make_macro(const Stmt& m, Scope* defined_in) {
    return Value::function("macro '" + m.text + "'", [this, &m, defined_in](Args& a) { return call_macro(m, defined_in, a); });
  }

  Value call_macro(const Stmt& m, Scope* defined_in, Args& a) {
    if (depth_ >= kMaxMacroDepth) throw RenderError("maximum recursion depth exceeded in macro '" + m.text + "'");
    const std::string what = m.kind == Stmt::Kind::macro ? "macro '" + m.text + "'" : "the call block's caller";
    Scope* s = new_scope(defined_in);
    std::vector<bool> given(m.params.size(), false);
    std::vector<Value> varargs;
    for (size_t i = 0; i < a.positional.size(); ++i) {
      if (i < m.params.size()) {
        s->set(m.params[i].name, a.positional[i]);
        given[i] = true;
      } else if (m.uses_varargs) {
        varargs.push_back(a.positional[i]);
      } else {
        throw RenderError(what + " takes not more than " + std::to_string(m.params.size()) + " argument(s)");
      }
    }
    Object kwargs;
    bool caller_given = false;
    for (auto& [key, value] : a.keyword) {
      size_t i = 0;
      while (i < m.params.size() && m.params[i].name != key) ++i;
      if (i < m.params.size()) {
        if (given[i]) throw RenderError(what + " got multiple values for argument '" + key + "'");
        s->set(key, value);
        given[i] = true;
      } else if (key == "caller" && m.uses_caller) {
        s->set("caller", value);
        caller_given = true;
      } else if (m.uses_kwargs) {
        kwargs.set(key, value);
      } else {
        throw RenderError(what + " takes no keyword argument '" + key + "'");
      }
    }
    for (size_t i = 0; i < m.params.size(); ++i) {
      if (given[i]) continue;
      const Param& p = m.params[i];
      s->set(p.name, p.default_value ? eval(*p.default_value, s)
                                     : Value::undefined("parameter '" + p.name + "' was not provided"));
    }
    if (m.uses_varargs) s->set("varargs", Value::array(std::move(varargs), true));
    if (m.uses_kwargs) s->set("kwargs", Value::object(std::move(kwargs)));
    if (m.uses_caller && !caller_given) s->set("caller", Value::undefined("No caller defined"));
    std::string out;
    ++depth_;
    try {
      exec(m.body, s, out);
    } catch (...) {
      --depth_;
      throw;
    }
    --depth_;
    return Value::string(std::move(out));
  }

  // {% call(params) f(args) %}body{% endcall %}: f(args, caller=<the body as a macro>).
  Value call_block(const Stmt& st, Scope* s) {
    const Expr& call = *st.expr;
    Value callee = eval(*call.a, s);
    Args args = eval_args(call, s);
    args.keyword.emplace_back("caller", Value::function("caller", [this, &st, s](Args& a) { return call_macro(st, s, a); }));
    return call_function(callee, args);
  }

  Value call_function(const Value& callee, Args& args) {
    if (callee.is_undefined()) callee.fail_undefined();
    if (!callee.is_function()) throw RenderError(std::string("'") + callee.type_name() + "' object is not callable");
    return callee.as_function().call(args);
  }

  Args eval_args(const Expr& e, Scope* s) {
    Args args;
    for (const auto& x : e.items) args.positional.push_back(eval(*x, s));
    if (e.star)
      for (Value& v : iterate(eval(*e.star, s))) args.positional.push_back(std::move(v));
    for (const auto& [k, x] : e.kwargs) args.keyword.emplace_back(k, eval(*x, s));
    if (e.star_star) {
      Value m = eval(*e.star_star, s);
      if (!m.is_object()) throw RenderError(std::string("argument after ** must be a mapping, not ") + m.type_name());
      for (const auto& kv : m.as_object().items) args.keyword.push_back(kv);
    }
    return args;
  }

  // A filter chain whose innermost operand is missing ({% filter %}, {% set x | f %}) applied to v.
  Value apply_filters(const Expr& f, Value v, Scope* s) {
    if (f.a) v = apply_filters(*f.a, std::move(v), s);
    Args args = eval_args(f, s);
    return find_filter(f.name)(v, args);
  }

  Value eval(const Expr& e, Scope* s) {
    try {
      return eval_inner(e, s);
    } catch (const TemplateError&) {
      throw;
    } catch (const std::exception& err) {
      fail(e.line, err.what());
    }
  }

  Value eval_inner(const Expr& e, Scope* s) {
    switch (e.kind) {
      case Expr::Kind::literal: return e.value;
      case Expr::Kind::name:
        if (const Value* v = s->find(e.name)) return *v;
        return Value::undefined("'" + e.name + "' is undefined");
      case Expr::Kind::list: case Expr::Kind::tuple: {
        std::vector<Value> items;
        for (const auto& x : e.items) items.push_back(eval(*x, s));
        return Value::array(std::move(items), e.kind == Expr::Kind::tuple);
      }
      case Expr::Kind::dict: {
        Object o;
        for (size_t i = 0; i + 1 < e.items.size(); i += 2) {
          Value k = eval(*e.items[i], s);
          if (!k.is_string()) throw RenderError(std::string("dict keys must be strings here, not ") + k.type_name());
          o.set(k.as_string(), eval(*e.items[i + 1], s));
        }
        return Value::object(std::move(o));
      }
      case Expr::Kind::getattr: return get_attr(eval(*e.a, s), e.name);
      case Expr::Kind::getitem: {
        Value obj = eval(*e.a, s);
        return get_item(obj, eval(*e.b, s));
      }
      case Expr::Kind::slice: {
        Value obj = eval(*e.a, s);
        Value bounds[3];
        for (size_t i = 0; i < 3; ++i)
          if (e.items[i]) bounds[i] = eval(*e.items[i], s);
        return get_slice(obj, e.items[0] ? &bounds[0] : nullptr, e.items[1] ? &bounds[1] : nullptr,
                         e.items[2] ? &bounds[2] : nullptr);
      }
      case Expr::Kind::call: {
        Value callee = eval(*e.a, s);
        if (callee.is_undefined()) callee.fail_undefined();
        Args args = eval_args(e, s);
        return call_function(callee, args);
      }
      case Expr::Kind::filter: {
        Value v = eval(*e.a, s);
        Args args = eval_args(e, s);
        return find_filter(e.name)(v, args);
      }
      case Expr::Kind::test: {
        Value v = eval(*e.a, s);
        Args args = eval_args(e, s);
        return Value::boolean(find_test(e.name)(v, args));
      }
      case Expr::Kind::unary: {
        Value v = eval(*e.a, s);
        if (e.name == "not") return Value::boolean(!v.truthy());
        return unary_op(e.name[0], v);
      }
      case Expr::Kind::binary: {
        Value a = eval(*e.a, s);
        return binary_op(e.name, a, eval(*e.b, s));
      }
      case Expr::Kind::compare: {
        Value left = eval(*e.items[0], s);
        for (size_t i = 0; i < e.ops.size(); ++i) {
          Value right = eval(*e.items[i + 1], s);
          const std::string& op = e.ops[i];
          bool ok = op == "in" ? contains(right, left) : op == "not in" ? !contains(right, left) : compare(op, left, right);
          if (!ok) return Value::boolean(false);
          left = std::move(right);
        }
        return Value::boolean(true);
      }
      case Expr::Kind::and_: {
        Value a = eval(*e.a, s);
        return a.truthy() ? eval(*e.b, s) : a;
      }
      case Expr::Kind::or_: {
        Value a = eval(*e.a, s);
        return a.truthy() ? a : eval(*e.b, s);
      }
      case Expr::Kind::cond:
        if (eval(*e.b, s).truthy()) return eval(*e.a, s);
        if (e.c) return eval(*e.c, s);
        return Value::undefined("the inline if-expression on line " + std::to_string(e.line) +
                                " evaluated to false and no else section was defined.");
    }
    return Value();
  }

  const std::string& name_;
  std::deque<Scope> scopes_;
  int depth_ = 0;
};

}  // namespace

std::string render(const Body& body, const Object& variables, const std::string& name) {
  return Interpreter(name).run(body, variables);
}

}  // namespace nanovllm::jinja
