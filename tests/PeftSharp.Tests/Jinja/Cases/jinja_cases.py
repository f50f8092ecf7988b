#!/usr/bin/env python3
"""Golden outputs for PeftSharp's Jinja renderer, computed by Python's jinja2 (3.1) with the environment
transformers uses for chat templates: ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
extensions=[loopcontrols]) and transformers' tojson (json.dumps, ensure_ascii=False).

    python3 jinja_cases.py     # rewrites jinja_cases.json beside this file
"""
import json, os
import jinja2, jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception

V = {"msgs": [{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "Hi\nthere"},
              {"role": "assistant", "content": "Hello!", "tool_calls": [{"name": "f", "arguments": {"x": 1, "y": "ü"}}]}],
     "d": {"b": 2, "a": 1, "c": None}, "n": 7, "f": 2.5, "s": "  Hello World  ", "e": "", "l": [3, 1, 2], "t": True, "none": None}

CASES = [
    # whitespace control, trim_blocks, lstrip_blocks, comments, raw, trailing newline
    "a\n{% if t %}\nyes\n{% endif %}\nb\n",
    "  {% if t %}x{% endif %}  \n  {{ n }}  \n",
    "a  {%- if t -%}  b  {%- endif -%}  c",
    "{{- ' x ' -}}\n  {{ n -}}  \n  end",
    "line\n    {# comment #}\nnext\n  {#- c -#}  after",
    "{% if t +%}\nkept newline{% endif %}",
    "  {%+ if t %}kept spaces{% endif %}",
    "{% raw %}{{ not rendered }}{% endraw %}",
    "x\r\ny\r\n",
    "text {{ n }}\n",
    "a\n\n",
    # loops
    "{% for x in l %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.length }}:{{ x }}{% if not loop.last %},{% endif %}{% endfor %}",
    "{% for x in l %}{{ loop.first }}{{ loop.last }}{{ loop.previtem }}|{% endfor %}",
    "{% for x in [] %}a{% else %}empty{% endfor %}",
    "{% for x in l if x > 1 %}{{ loop.index }}{{ x }} {% endfor %}",
    "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}",
    "{% for k, v in d|items %}{{ k }}={{ v }};{% endfor %}",
    "{% for k in d %}{{ k }}{% endfor %}",
    "{% for x in l %}{% if x == 1 %}{% break %}{% endif %}{{ x }}{% endfor %}",
    "{% for x in l %}{% if x == 1 %}{% continue %}{% endif %}{{ x }}{% endfor %}",
    "{% for c in 'héllo' %}[{{ c }}]{% endfor %}",
    "{% for x in range(3) %}{{ x }}{% endfor %}{% for x in range(5, 1, -2) %}{{ x }}{% endfor %}",
    "{% for m in msgs %}{% for r in m.role %}{% if loop.first %}{{ r|upper }}{% endif %}{% endfor %}{% endfor %}",
    "{% for x in l %}{{ loop.cycle('a', 'b') }}{% endfor %}",
    # scoping and namespaces
    "{% set x = 1 %}{% for i in l %}{% set x = i %}{% endfor %}{{ x }}",
    "{% set ns = namespace(x=1, found=false) %}{% for i in l %}{% set ns.x = ns.x + i %}{% if i == 2 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.x }} {{ ns.found }}",
    "{% set x = 5 %}{% if t %}{% set x = 6 %}{% endif %}{{ x }}",
    "{% set a, b = 1, 2 %}{{ a }}{{ b }}",
    "{% set block %}inner {{ n }}{% endset %}[{{ block }}]",
    "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', '?') }} {{ greet(name='C', punct='.') }}",
    "{% filter upper %}shout {{ n }}{% endfilter %}",
    # expressions and operators
    "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 7.0 // 2 }}",
    "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 'ab' * 3 }} {{ [1] + [2, 3] }} {{ 'a' ~ 1 ~ none ~ true }}",
    "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'a' in 'cat' }} {{ 2 not in l }} {{ 'a' in d }} {{ 1 == 1.0 }} {{ true == 1 }}",
    "{{ 'yes' if t else 'no' }} {{ 'yes' if none else 'no' }} [{{ 'x' if none }}]",
    "{{ t and n }} {{ none or 'fallback' }} {{ e or 'empty' }} {{ not e }}",
    "{{ '<h>' + s | trim + '<e>' }}",
    "{{ -n | abs }} {{ - 3 }}",
    "{{ 'a' 'b' \"c\" }} {{ 'it\\'s' }} {{ \"tab\\there\" }} {{ '\\u00e9\\x41' }}",
    "{{ none }} {{ t }} {{ f }} {{ 1.0 }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1.5e-7 }} {{ 3 / 3 }} {{ l }} {{ d }} {{ ['it\\'s', \"q\\\"\"] }}",
    "{{ d.b }} {{ d['a'] }} [{{ d.missing }}] {{ d.missing is defined }} {{ d.get('a') }} {{ d.get('zz', 'dflt') }} {{ d.get('zz') }}",
    "{{ l[0] }} {{ l[-1] }} {{ l[1:] }} {{ l[:-1] }} {{ l[::-1] }} {{ l[::2] }} {{ s[2:7] }} {{ 'abc'[-1] }} [{{ l[10] }}]",
    "{{ msgs[0]['content'] | trim }}|{{ msgs[1].content.split('\\n') }}|{{ msgs[-1].tool_calls[0].name }}",
    "{{ {'a': 1, 'b': [1, 2]} }} {{ (1, 2) }} {{ [] }} {{ {} }}",
    # tests
    "{{ n is defined }} {{ zz is defined }} {{ zz is undefined }} {{ none is none }} {{ s is string }} {{ n is number }} {{ f is float }} {{ n is integer }}",
    "{{ d is mapping }} {{ l is iterable }} {{ s is iterable }} {{ n is odd }} {{ n is even }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(2) }}",
    "{{ n is not none }} {{ not zz is defined }} {{ t is true }} {{ t is false }} {{ 'x' is equalto 'x' }} {{ n is gt 3 }} {{ 'ab' is lower }}",
    "{{ 'x' in zz }} {{ zz | length }} [{{ zz }}] {{ zz is not defined and n > 1 }}",
    # filters
    "{{ s | trim }}|{{ 'xxhixx' | trim('x') }}|{{ s | length }}|{{ l | count }}|{{ s | upper }}|{{ s | lower }}",
    "{{ 'hello wORLD' | title }}|{{ 'hello wORLD' | capitalize }}|{{ l | join(', ') }}|{{ l | join }}|{{ msgs | join('/', attribute='role') }}",
    "{{ zz | default('dflt') }} {{ e | default('dflt') }} {{ e | default('dflt', true) }} {{ none | d('x') }}",
    "{{ l | first }} {{ l | last }} {{ l | list }} {{ 'ab' | list }} {{ l | reverse | list }} {{ 'abc' | reverse }} {{ l | sort }} {{ l | sort(reverse=true) }}",
    "{{ [1, 2, 1, 3] | unique | list }} {{ l | sum }} {{ l | min }} {{ l | max }} {{ '42' | int }} {{ 'x' | int }} {{ 3.7 | int }} {{ '2.5' | float }} {{ 2.567 | round(2) }} {{ 2.5 | round }}",
    "{{ 'a-b-a' | replace('a', 'x') }} {{ 'aaa' | replace('a', 'b', 2) }} {{ n | string }} {{ l | string }} {{ 'one two  three' | wordcount }}",
    "{{ msgs | selectattr('role', 'equalto', 'user') | list | length }} {{ msgs | rejectattr('role', 'equalto', 'user') | map(attribute='role') | join(',') }}",
    "{{ msgs | selectattr('tool_calls', 'defined') | list | length }} {{ msgs | selectattr('tool_calls', 'undefined') | map(attribute='role') | list }}",
    "{{ ['a', 'code', 'b'] | reject('equalto', 'code') | join(', ') }} {{ l | select('odd') | list }} {{ [0, 1, '', 'x'] | select | list }}",
    "{{ ['a', 'b'] | map('upper') | join }} {{ msgs | map(attribute='missing', default='?') | join }}",
    "{{ msgs[-1].tool_calls | tojson }}",
    "{{ d | tojson }} {{ 'ü\"\\n\\t<>&\\'' | tojson }} {{ [1.5, true, none, 'x'] | tojson }} {{ {} | tojson }} {{ [] | tojson }}",
    "{{ d | tojson(indent=2) }}",
    "{{ {'nested': {'l': [1, {'k': 'v'}]}} | tojson(indent=4) }}",
    "{{ d | dictsort }} {{ '<a href=\"x\">' | e }} {{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}",
    "{{ '%s is %d' % ('x', 3) }} {{ '%s!' | format('hi') }} {{ l | batch(2) | list }}",
    # string and dict methods
    "[{{ s.strip() }}] [{{ s.lstrip() }}] [{{ s.rstrip() }}] [{{ '\\n\\nx\\n'.lstrip('\\n') }}] [{{ 'xyx'.strip('x') }}]",
    "{{ 'a,b,,c'.split(',') }} {{ '  a  b '.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'line1\\nline2\\n'.splitlines() }}",
    "{{ 'hello'.startswith('he') }} {{ 'hello'.endswith(('x', 'lo')) }} {{ 'Hello'.upper() }} {{ 'Hello'.lower() }} {{ 'hello world'.title() }} {{ 'hELLO'.capitalize() }}",
    "{{ 'a-b-a'.replace('a', 'x') }} {{ 'hello'.find('l') }} {{ 'hello'.count('l') }} {{ ', '.join(['a', 'b']) }} {{ '{} and {x}'.format(1, x=2) }}",
    "{{ d.keys() | list }} {{ d.values() | list }} {{ d.items() | list }} {{ l.index(2) }}",
    # errors
    "{{ raise_exception('Nope: ' + n|string) }}",
    "{{ zz.attr }}",
    "{{ 'a' + 1 }}",
    "{% if t %}unclosed",
    "{{ 1 + }}",
    "{{ zz + 1 }}",
    "{{ zz['k'] }}",
    "{% for x in l %}{{ x }}",
    "{{ n | nosuchfilter }}",
]

cases = []
for template in CASES:
    case = {"template": template, "expected": None, "error": None}
    try:
        case["expected"] = env.from_string(template).render(**V)
    except jinja2.exceptions.TemplateSyntaxError as e:
        case["error"] = "syntax"
    except jinja2.exceptions.TemplateError as e:
        case["error"] = "TemplateError: " + str(e) if type(e) is jinja2.exceptions.TemplateError else "runtime"
    except Exception as e:
        case["error"] = "runtime"
    cases.append(case)

out = {"variables": V, "cases": cases}
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "jinja_cases.json"), "w", encoding="utf-8") as f:
    json.dump(out, f, ensure_ascii=False, indent=1)
    f.write("\n")
print(len(cases), "cases,", sum(1 for c in cases if c["error"]), "errors")
