#!/usr/bin/env python3
"""Makes the chat-template fixtures with transformers (the reference for chat templates).

Run where transformers is (the GPU machine's host has it), from the repository root:
    python3 tests/reference/make_chat_template_fixtures.py
(models/*-tokenizer/tokenizer_config.json are enough: without tokenizer.json the template is
rendered by transformers' render_jinja_template, which apply_chat_template calls.)
It writes
  tests/fixtures/tokenizer/chat_templates.json: every models/*-tokenizer's chat template rendered by
    transformers' apply_chat_template(messages, tools=..., add_generation_prompt=..., tokenize=False,
    **kwargs) on the conversations below (system prompts, multi-turn, tool definitions, tool calls
    and results, content parts, unicode, empty content), add_generation_prompt on and off,
    enable_thinking unset and false; a conversation the template rejects is kept with transformers'
    error message (tests/test_chat_template.cpp reads it);
  tests/fixtures/jinja/cases.json: small templates, one construct or filter each, and seeded random
    whitespace-control templates, rendered by Jinja2 in transformers' own chat-template environment
    (trim_blocks, lstrip_blocks, loopcontrols, its tojson, raise_exception, strftime_now), or the
    error they raise (tests/test_jinja.cpp reads it).
Without transformers, --jinja-only writes both files with a copy of transformers' environment
built on Jinja2 alone (and says so in each file's "reference").
"""
import glob
import json
import os
import random
import sys
import traceback

import jinja2

try:
    import transformers
    from transformers import AutoTokenizer
    from transformers.utils.chat_template_utils import _compile_jinja_template
except ImportError:
    transformers = None

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Get the weather — in °C",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name, e.g. \"Zürich\""},
            "days": {"type": "integer"}}, "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "search", "description": "Search the web",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}},
]
CALL = {"id": "call_123456789", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}
CALL_S = {"id": "call_987654321", "type": "function",
          "function": {"name": "get_weather", "arguments": "{\"city\": \"Zürich\"}"}}

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}],
    [{"role": "user", "content": "  spaced  \n"}, {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nok"},
     {"role": "user", "content": "你好 🙂 é"}],
    [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}, {"role": "user", "content": "again"}],
    [{"role": "system", "content": "sys"}, {"role": "user", "content": "weather?"},
     {"role": "assistant", "content": "", "tool_calls": [CALL]},
     {"role": "tool", "content": "sunny", "tool_call_id": "call_123456789"},
     {"role": "assistant", "content": "It is sunny."}],
    [{"role": "user", "content": "w?"}, {"role": "assistant", "content": "", "tool_calls": [CALL_S, CALL]},
     {"role": "tool", "content": "1", "tool_call_id": "call_987654321"},
     {"role": "tool", "content": "2", "tool_call_id": "call_123456789"}],
    [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "r"},
     {"role": "user", "content": "q2"}],
    [{"role": "user", "content": [{"type": "text", "text": "part one "}, {"type": "text", "text": "two"}]}],
    [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
    [{"role": "assistant", "content": "starts with assistant"}, {"role": "user", "content": "x"}],
    [{"role": "system", "content": "s1"}, {"role": "system", "content": "s2"}, {"role": "user", "content": "u"}],
    [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "<think>\nt1\n</think>\n\nA1"},
     {"role": "user", "content": "<tool_response>\nx\n</tool_response>"},
     {"role": "assistant", "content": "\n\n<think>t2</think>A2"}],
]


def special_tokens_map(tok_dir):
    """transformers' special_tokens_map, from tokenizer_config.json (for --jinja-only)."""
    cfg = json.load(open(os.path.join(tok_dir, "tokenizer_config.json"), encoding="utf-8"))
    out = {}
    for key in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
        v = cfg.get(key)
        v = v.get("content") if isinstance(v, dict) else v
        if v:
            out[key] = v
    extra = [t.get("content") if isinstance(t, dict) else t for t in cfg.get("additional_special_tokens") or []]
    if extra:
        out["additional_special_tokens"] = extra
    return out


def transformers_environment_copy():
    """transformers' _compile_jinja_template, built on Jinja2 alone."""
    from datetime import datetime
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class AssistantTracker(Extension):  # renders {% generation %} bodies as they are
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[AssistantTracker, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string


def model_renderer(tok_dir):
    """apply_chat_template of the directory's tokenizer; with only tokenizer_config.json there,
    transformers' render_jinja_template (what apply_chat_template calls) with the config's template
    and special_tokens_map."""
    if transformers is None:  # --jinja-only: transformers' render() call, on the copy of its environment
        template = json.load(open(os.path.join(tok_dir, "tokenizer_config.json"), encoding="utf-8")).get("chat_template")
        if not template:
            return None
        compiled, special = transformers_environment_copy()(template), special_tokens_map(tok_dir)
        return lambda messages, tools, agp, kwargs: compiled.render(
            messages=messages, tools=tools, documents=None, add_generation_prompt=agp, **{**special, **kwargs})
    if os.path.isfile(os.path.join(tok_dir, "tokenizer.json")):
        tok = AutoTokenizer.from_pretrained(tok_dir)
        if not tok.chat_template:
            return None
        return lambda messages, tools, agp, kwargs: tok.apply_chat_template(
            messages, tools=tools, add_generation_prompt=agp, tokenize=False, **kwargs)
    from transformers.utils.chat_template_utils import render_jinja_template
    template = json.load(open(os.path.join(tok_dir, "tokenizer_config.json"), encoding="utf-8")).get("chat_template")
    if not template:
        return None
    special = special_tokens_map(tok_dir)
    return lambda messages, tools, agp, kwargs: render_jinja_template(
        conversations=[messages], tools=tools, chat_template=template, add_generation_prompt=agp,
        **{**special, **kwargs})[0][0]


def model_cases():
    cases = []
    for tok_dir in sorted(glob.glob("models/*-tokenizer")):
        render = model_renderer(tok_dir)
        if render is None:
            continue
        for messages in CONVERSATIONS:
            for tools in (None, TOOLS):
                for agp in (True, False):
                    for kwargs in ({}, {"enable_thinking": False}):
                        case = {"model": os.path.basename(tok_dir), "messages": messages, "tools": tools,
                                "add_generation_prompt": agp, "kwargs": kwargs}
                        try:
                            case["rendered"] = render(messages, tools, agp, kwargs)
                        except Exception as e:  # the template rejects the conversation
                            case["error"] = str(e)
                        cases.append(case)
    return cases


def construct_templates():
    """(template, variables): one construct each, then random whitespace-control templates."""
    d = {"a": 1, "b": [1, 2], "items": "i"}
    t = [
        ("{{ x }}|{{ x is defined }}|{{ x|default('d') }}|{{ x|length }}|{{ x|list }}|{{ x|upper }}", {}),
        ("{{ d.a }}|{{ d['b'] }}|{{ d.missing }}|{{ d.items is callable }}|{{ d['items'] }}|{{ d.get('zz', 3) }}",
         {"d": d}),
        ("{{ x.y }}", {}), ("{{ d.a.b.c }}", {"d": {}}), ("{{ l[5].a }}", {"l": []}),
        ("{{ true }}{{ none }}{{ [1,'a',none,true] }}{{ {'a':1} }}{{ (1,) }}{{ 1.0 }}{{ 1e20 }}{{ 0.1+0.2 }}", {}),
        ("{{ 'a' + 1 }}", {}), ("{{ 'a' ~ 1 ~ none ~ true ~ x }}", {}), ("{{ 1 + 2 ~ 3 }}", {}),
        ("{{ -1|abs }}{{ - 2 ** 2 }}{{ 2 ** 3 ** 2 }}{{ 7 // 2 }}{{ -7 // 2 }}{{ -7 % 3 }}{{ 7 / 2 }}{{ 4 / 2 }}", {}),
        ("{{ 'abc'[::-1] }}{{ [1,2,3][1:] }}{{ 'héllo'[1] }}{{ 'héllo'[-2:] }}{{ [1,2,3][::-2] }}{{ 'ab'[5] }}", {}),
        ("{{ 1 < 2 < 3 }}{{ 3 > 2 > 2 }}{{ 1 == 1.0 }}{{ true == 1 }}{{ [1] == (1,) }}{{ {'a':1} == {'a':1} }}", {}),
        ("{{ 1 in [1,2] }}{{ 'a' in 'abc' }}{{ 'a' in {'a':1} }}{{ 1 in x }}{{ 1 not in [2] }}", {}),
        ("{{ true and 'x' }}|{{ 0 or '' }}|{{ [] or 'e' }}|{{ not x }}|{{ 1 if false }}|{{ 'a' if true else 'b' }}", {}),
        ("{{ {'a':'é\\n\"', 'b':[1,2.5,none,true]} | tojson }}", {}),
        ("{{ v | tojson(indent=2) }}|{{ v | tojson(sort_keys=true) }}|{{ v | tojson(separators=(',', ':')) }}",
         {"v": {"z": [1, {}], "a": [], "é": "ü\u2028\x7f\x1f"}}),
        ("{{ 'é'|tojson(ensure_ascii=true) }}{{ '🙂'|tojson(ensure_ascii=true) }}", {}), ("{{ x|tojson }}", {}),
        ("{{ 'Hello World-foo bar'|title }}|{{ 'hELLO wORLD'|capitalize }}|{{ 'hello world'.title() }}|"
         "{{ 'ab'|upper }}{{ 'AB'|lower }}", {}),
        ("{{ '  x  '|trim }}|{{ 'xxaxx'|trim('x') }}|{{ 'a\\nb\\n\\nc'|indent(2) }}|{{ 'a\\nb'|indent(2, true) }}|"
         "{{ 'a\\nb'|indent('> ', first=true, blank=true) }}", {}),
        ("{{ 'aXbX'|replace('X','y') }}|{{ 'aXbX'|replace('X','y', 1) }}|{{ 'hello'|center(9) }}|"
         "{{ 'abc'|reverse }}|{{ [1,2]|reverse|list }}", {}),
        ("{{ [3,1,2]|sort }}|{{ ['b','A','a']|sort }}|{{ ['b','A','a']|sort(case_sensitive=true) }}|"
         "{{ [3,1,2]|sort(reverse=true) }}|{{ [{'a':2},{'a':1}]|sort(attribute='a')|map(attribute='a')|join(',') }}",
         {}),
        ("{{ [1,'a']|sort }}", {}),
        ("{{ {'b':1,'A':2}|dictsort }}|{{ [1,2,1]|unique|list }}|{{ ['A','a','b']|unique|list }}|"
         "{{ [1,2,3]|sum }}|{{ [1,3,2]|max }}|{{ ['b','A']|min }}|{{ []|max }}", {}),
        ("{{ []|first }}|{{ [1,2]|last }}|{{ 'abc'|first }}|{{ 'abc'|list }}|{{ 'héllo'|length }}|{{ d|length }}|"
         "{{ d|count }}|{{ d|list }}|{{ d|items|list }}", {"d": d}),
        ("{{ 'abc'|int }}|{{ '12'|int }}|{{ '42.7'|int }}|{{ '1.5'|float }}|{{ 2.5|round }}|{{ 3.5|round }}|"
         "{{ 2.567|round(2) }}|{{ 2.5|int }}|{{ '0x1A'|int(0, 16) }}|{{ ' 3 '|int }}|{{ 7|round }}|"
         "{{ 2.1|round(0, 'ceil') }}|{{ 'x'|float(1.5) }}", {}),
        ("{{ none|default('d') }}|{{ none|default('d', true) }}|{{ ''|default('d') }}|{{ ''|d('e', true) }}", {}),
        ("{{ [1,2]|string }}|{{ none|string }}|{{ x|string }}|{{ [\"a'b\", 'a\"b', 'a\\'\"b', 'é\\n\\x01\\u200b'] }}", {}),
        ("{{ ms|selectattr('a')|list }}|{{ ms|selectattr('a', 'defined')|list }}|{{ ms|rejectattr('a')|list }}|"
         "{{ ms|selectattr('a', 'equalto', 2)|list }}|{{ ms|map(attribute='a')|list }}|"
         "{{ ms|map(attribute='a', default=0)|list }}|{{ [1,2,3,4]|select('odd')|list }}|"
         "{{ [1,2,3,4]|reject('even')|list }}|{{ ['a','B']|map('upper')|list }}",
         {"ms": [{"a": 1}, {"b": 2}, {"a": 2}]}),
        ("{{ [1,2,3]|join(', ') }}|{{ [{'a':'x'},{'a':'y'}]|join('-', attribute='a') }}|{{ [1,none,true]|join }}", {}),
        ("{{ '%s-%d'|format('a', 3) }}|{{ '%s' % 'x' }}|{{ '%s %s' % ('a', 1) }}|{{ '%05.2f|%x|%r|%-4s|' % "
         "(3.14159, 255, 'a', 'b') }}|{{ '{} {}'.format('a', 1) }}|{{ '{0}{name}'.format('a', name='b') }}", {}),
        ("{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a,b,c'.split(',', 1) }}|{{ 'a,b,c'.rsplit(',', 1) }}|"
         "{{ 'abc'.startswith(('x','a')) }}|{{ 'abc'.endswith('bc') }}|{{ 'abcb'.find('b') }}|{{ 'abcb'.rfind('b') }}|"
         "{{ 'abcb'.count('b') }}|{{ 'a\\nb\\r\\nc'.splitlines() }}", {}),
        ("{{ 'x'.strip('xy') }}|{{ '\\n\\nabc\\n'.strip('\\n') }}|{{ '  a '.lstrip() }}|{{ '  a '.rstrip() }}|"
         "{{ 'Hello'.upper() }}{{ 'Hello'.lower() }}|{{ '-'.join(['a','b']) }}|{{ 'ab'.replace('a', 'x') }}|"
         "{{ 'abc'.isalpha() }}{{ '12'.isdigit() }}{{ ' '.isspace() }}{{ 'ab'.islower() }}|"
         "{{ 'prefix_x'.removeprefix('prefix_') }}|{{ 'a=b=c'.partition('=') }}", {}),
        ("{{ [1,2,1].count(1) }}|{{ [1,2].index(2) }}|{{ {'a':1}.keys()|list }}|{{ {'a':1}.values()|list }}|"
         "{{ [1,2].append }}", {}), ("{{ [1,2].append(3) }}", {}),
        ("{% for i in range(3) %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}"
         "{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.previtem }}{{ loop.nextitem }}"
         "{{ loop.cycle('a','b') }},{% endfor %}", {}),
        ("{% for k, v in {'a':1,'b':2}.items() %}{{k}}={{v}};{% endfor %}|{% for k in {'a':1,'b':2} %}{{k}}"
         "{% endfor %}|{% for c in 'ab' %}{{c}}{% endfor %}|{% for x in [] %}a{% else %}empty{% endfor %}", {}),
        ("{% for i in range(6) if i is odd %}{{ i }}{{ loop.index }}{{ loop.length }}{% endfor %}|"
         "{% for i in range(5) %}{% if i == 3 %}{% break %}{% endif %}{% if i == 1 %}{% continue %}{% endif %}"
         "{{ i }}{% endfor %}", {}),
        ("{% for i in [1,2] %}{% if i == 2 %}[{{ x }}]{% endif %}{% set x = i %}{% endfor %}[{{ x }}]", {}),
        ("{% set ns = namespace(n=0, l=[]) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}"
         "{% set ns.l = ns.l + [i] %}{% endfor %}{{ ns.n }}{{ ns.l }}{{ ns.missing }}|{{ ns }}", {}),
        ("{% macro m(a, b='x') %}[{{ a }}{{ b }}{{ varargs }}{{ kwargs }}]{% endmacro %}{{ m(1) }}{{ m(1, 2) }}"
         "{{ m(1, b=3) }}{{ m(1, 2, 3, k=4) }}", {}),
        ("{% macro m(a) %}[{{ a }}]{% endmacro %}{{ m() }}", {}), ("{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", {}),
        ("{% macro m(a) %}<{{ caller() }}{{ a }}>{% endmacro %}{% call m(1) %}body{% endcall %}|"
         "{% macro n() %}{{ caller(5) }}{% endmacro %}{% call(x) n() %}x={{ x }}{% endcall %}", {}),
        ("{% set x %}a{{ 1 }}b{% endset %}{{ x }}|{% set a, b = 1, 2 %}{{ a }}{{ b }}|{% set y | upper %}up"
         "{% endset %}{{ y }}|{% filter upper %}abc{% endfilter %}|{% with z = 2 %}{{ z }}{% endwith %}{{ z }}", {}),
        ("{{ range(3)|list }}|{{ range(1, 7, 2)|list }}|{{ range(3, 0, -1)|list }}|{{ dict(a=1) }}|"
         "{{ namespace(a=1).a }}|{{ [1,2,3][-1] }}", {}),
        ("{{ 10 / 4 }}|{{ 2 ** -1 }}|{{ 1.5 * 2 }}|{{ 'ab' * 2 }}|{{ 1e3 }}|{{ 1_000 }}|{{ 1/3 }}|{{ 1e-5 }}|"
         "{{ 123456789012345678.0 }}|{{ 0.1 }}|{{ 1e16 }}|{{ 1e15 }}|{{ 0.0001 }}|{{ -0.0 }}|{{ 0x1f }}", {}),
        ("{{ x is iterable }}{{ x is sequence }}{{ true is number }}{{ true is integer }}{{ 1.0 is float }}"
         "{{ {} is mapping }}{{ 'a' is string }}{{ none is none }}{{ 5 is divisibleby 5 }}{{ 'a' is in 'abc' }}"
         "{{ 3 is gt 2 }}{{ x is sameas none }}{{ 'ab' is lower }}{{ 3 is odd }}{{ false is false }}"
         "{{ 1 is true }}{{ 'upper' is filter }}{{ 'odd' is test }}", {}),
        ("{{ raise_exception('boom: ' ~ 1) }}", {}),
        ("line 1\n{% if true %}\n  {{ x.y }}\n{% endif %}", {}),
        ("a\n{{ 1 + }}", {}), ("{% if %}", {}), ("{% if 1 %}x", {}), ("{% endif %}", {}), ("{{ 'abc }}", {}),
        ("{{ x | nosuchfilter }}", {}), ("{{ x is nosuchtest }}", {}), ("{% nosuchtag %}", {}),
        ("{% for x in none %}{% endfor %}", {}), ("{% set ns = 1 %}{% set ns.a = 1 %}", {}),
        ("{{ 'a' < 1 }}", {}), ("{{ 1 / 0 }}", {}), ("{{ x() }}", {}),
        ("{{ messages[0]['role'] }}", {"messages": []}),
        ("{% raw %}{{ not rendered }}{% endraw %}|{{ 'ok' }}", {}),
        ("{% generation %}gen {{ 1 }}{% endgeneration %}", {}),
        ("{# a comment #}x{#- stripped -#}  y", {}),
        ("a\n  {% if true %}\n  b\n  {% endif %}\nc\n", {}),
        ("a\n  {{ 'x' }}\n  {# c #}\nd", {}), ("a  {%+ if true %}\nb{% endif +%}\nc", {}),
        ("  {%- if true -%}  \n x \n  {%- endif -%}  \ny", {}), ("a\r\nb\r{{ 'c' }}\n\n", {}),
        ("{{ \"tab\\there\" }}|{{ 'uni\\u00e9\\x41' }}|{{ 'a' 'b' }}|{{ 'line\\\ncontinued' }}", {}),
        ("{{ {'a': {'b': 1}} }}", {}), ("{{ strftime_now('') }}", {}),
        ("{% set today = strftime_now('%Y') %}{{ today|length }}", {}),
    ]
    # Whitespace control: random nestings of text, tags with -/+ markers, comments and raw blocks.
    rng = random.Random(7)
    texts = ["", " ", "  ", "\n", "\n\n", " \n ", "a", "a\n", "\n  ", "\t", "x y", " \t\n", "\u00a0", "\u3000\n"]

    def tag(body, kind="%"):
        o, c = {"%": ("{%", "%}"), "{": ("{{", "}}"), "#": ("{#", "#}")}[kind]
        s1, s2 = rng.choice(["", "", "-", "+"]), rng.choice(["", "", "-", "+"])
        if kind == "{" and s2 == "+":
            s2 = ""
        if kind == "#" and s1 == "+":
            s1 = ""
        return o + s1 + body + s2 + c

    def block(depth):
        out = []
        for _ in range(rng.randint(1, 4)):
            r = rng.random()
            out.append(rng.choice(texts))
            if r < 0.25:
                out.append(tag(" x ", "{"))
            elif r < 0.35:
                out.append(tag(" comment ", "#"))
            elif r < 0.55 and depth < 3:
                out += [tag(" if c "), block(depth + 1)]
                if rng.random() < 0.4:
                    out += [rng.choice(texts), tag(" else "), block(depth + 1)]
                out += [rng.choice(texts), tag(" endif ")]
            elif r < 0.75 and depth < 3:
                out += [tag(" for i in items "), block(depth + 1), rng.choice(texts), tag(" endfor ")]
            elif r < 0.85:
                out.append(tag(" set y = 1 "))
            elif r < 0.9:
                out.append("{% raw %}" + rng.choice(texts) + "{{ q }}" + rng.choice(texts) + "{% endraw %}")
            else:
                out.append(rng.choice(texts))
        return "".join(out)

    for _ in range(150):
        src = block(0) + rng.choice(texts)
        for c in (True, False):
            t.append((src, {"c": c, "x": "X", "items": [1, 2]}))
    return t


def jinja_cases(compile_template):
    cases = []
    for src, variables in construct_templates():
        case = {"template": src, "variables": variables}
        try:
            case["rendered"] = compile_template(src).render(**variables)
        except jinja2.TemplateSyntaxError as e:
            case["error"], case["kind"], case["line"] = e.message, "syntax", e.lineno
        except Exception as e:
            case["error"], case["kind"] = str(e), "render"
            # Jinja2 rewrites tracebacks so that a template frame shows the template's line.
            lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == "<template>"]
            if lines:
                case["line"] = lines[-1]
        cases.append(case)
    return cases


def write(path, reference, cases):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"reference": %s,\n"cases": [\n' % json.dumps(reference))
        f.write(",\n".join(json.dumps(c, ensure_ascii=False) for c in cases))
        f.write("\n]}\n")
    print(path, len(cases), "cases")


def main():
    jinja_only = "--jinja-only" in sys.argv
    if transformers is None and not jinja_only:
        sys.exit("transformers is not installed (or pass --jinja-only)")
    if transformers is not None:
        ref = "Jinja2 %s in transformers %s's chat-template environment" % (jinja2.__version__, transformers.__version__)
        write("tests/fixtures/jinja/cases.json", ref, jinja_cases(_compile_jinja_template))
    else:
        ref = "Jinja2 %s in a copy of transformers' chat-template environment" % jinja2.__version__
        write("tests/fixtures/jinja/cases.json", ref, jinja_cases(transformers_environment_copy()))
    if transformers is None:
        ref = "Jinja2 %s in a copy of transformers' chat-template environment, called as apply_chat_template calls it"
        write("tests/fixtures/tokenizer/chat_templates.json", ref % jinja2.__version__, model_cases())
    else:
        how = ("apply_chat_template" if os.path.isfile("models/qwen3-tokenizer/tokenizer.json") else
               "render_jinja_template (apply_chat_template's renderer) with tokenizer_config.json's special tokens")
        write("tests/fixtures/tokenizer/chat_templates.json", "transformers %s %s" % (transformers.__version__, how),
              model_cases())


if __name__ == "__main__":
    main()
