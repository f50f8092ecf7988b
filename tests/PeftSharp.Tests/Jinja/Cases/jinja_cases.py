#!/usr/bin/env python3
"""Golden outputs for PeftSharp's Jinja renderer, computed by Python's jinja2 (3.1) with the environment
transformers uses for chat templates: ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
extensions=[loopcontrols]) and transformers' tojson (json.dumps, ensure_ascii=False).

    python3 jinja_cases.py     # rewrites jinja_cases.json beside this file
"""
import copy, json, os
import jinja2, jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

class AssistantTracker(jinja2.ext.Extension):
    """transformers' {% generation %} tag: the body is a call block (so it renders in a caller macro's scope)."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)

    @jinja2.pass_eval_context
    def _generation_support(self, context, caller):
        return caller()

env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, jinja2.ext.loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception

V = {"msgs": [{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "Hi\nthere"},
              {"role": "assistant", "content": "Hello!", "tool_calls": [{"name": "f", "arguments": {"x": 1, "y": "ü"}}]}],
     "d": {"b": 2, "a": 1, "c": None}, "n": 7, "f": 2.5, "s": "  Hello World  ", "e": "", "l": [3, 1, 2], "t": True, "none": None,
     # chat-shaped data for the multi-line templates below
     "messages": [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": " What's 2+2? "},
                  {"role": "assistant", "content": "4", "tool_calls": [{"type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 2}}},
                                                                         {"name": "echo", "arguments": "{\"s\": \"x\"}"}]},
                  {"role": "user", "content": "Thanks! ünï 😀"}],
     "tools": [{"type": "function", "function": {"name": "add", "description": "Adds.", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}}],
     "add_generation_prompt": True, "bos_token": "<s>", "eos_token": "</s>",
     "mm": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " Describe this. "}]},
            {"role": "assistant", "content": "<think>\nIt is a cat.\n</think>\n\nA cat.", "reasoning_content": None},
            {"role": "tool", "content": "{\"ok\": true}"}, {"role": "user", "content": [{"type": "text", "text": "More?"}]}]}

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
    "{% macro m(a, b=2) %}{{ a }}{{ b }}{{ kwargs }}{% endmacro %}{{ m(1, a=5) }}|{{ m(*[3, 4]) }}|{{ m(**{'a': 7, 'z': 0}) }}|{{ m(1, *[8]) }}",
    "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, 2, z=3) }}",
    "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, a=2) }}",
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

# --- review additions: whitespace control shaped like real chat templates ---
CASES += [
    "  {# c #}\n  x",
    "a\n  {#- c #}\nb",
    "{# multi\nline #}\nrest",
    "{# a +#}\nb",
    "a {#- c -#} b",
    "{% if t %}  \n  yes{% endif %}",
    "{% if t -%}\n\n  x  {%- endif %}\n",
    "{{ n }}\n{% if t %}\n{{ n }}\n{% endif %}\n",
    "\n  {% if t %}\n  a\n  {% endif %}\n",
    "x {% if t %}y{% endif %} z",
    "  {{ n }}  {% if t %}a{% endif %}",
    "{{ n }}\n  {% if t %}a{% endif %}",
    "{{ n -}}\n  {% if t %}a{% endif %}",
    "{% raw %}\n  {{ x }}\n{% endraw %}\nafter",
    "  {% raw %}a{% endraw %}  \n  {%- raw -%}  b  {%- endraw -%}  c",
    "x\n  {% raw %}{% if %}\n  {% endraw %}\ny",
    "{%- if t %}x{% endif %}",
    "\t{% if t %}tab{% endif %}\n",
    "{% set x = 1 %}\n{% set y = 2 %}\n{{ x + y }}\n",
    "{% macro m(x) %}\n  [{{ x }}]\n{% endmacro %}\n{{ m(1) }}{{ m(2) }}",
    "{% for x in l %}\n{{ x }}\n{% endfor %}",
    "{% for x in l -%}\n  {{ x }}\n{%- endfor %}",
    "a\r\n  {% if t %}\r\n b\r\n  {% endif %}\r\n",
    "{{ 'a' }}\n\n{{ 'b' }}\n\n",
    "  {%+ if t +%}\n  x\n  {%- endif +%}\n",
    " \n {{- n -}} \n ",
    "{% generation %}\n  {{ n }}\n{% endgeneration %}\n",
    "{% for i in l %}{% generation %}{% set x = i %}{{ x }}{% endgeneration %}[{{ x }}]{% endfor %}",
    "x{% if t %}\n{% endif %}y",
    "{% for m in messages -%}\n{{ m.role }}: {{ m.content }}{% if not loop.last %}, {% endif %}\n{%- endfor %}",
    "{%- for m in msgs %}\n    {%- if m.role == 'user' %}\n        {{- '<user>' + m.content }}\n    {%- else %}\n        {{- '<' + m.role + '>' + m.content | trim }}\n    {%- endif %}\n{% endfor %}\n",
    # scoping: set in loops, ifs and macros
    "{% for i in l %}{{ x }}{% set x = i %}{{ x }}|{% endfor %}[{{ x }}]",
    "{% set x = 0 %}{% for i in l %}{{ x }}{% set x = i %}{{ x }}|{% endfor %}[{{ x }}]",
    "{% for i in l %}{% if i > 1 %}{% set y = i %}{% endif %}{{ y }},{% endfor %}",
    "{% set x = 1 %}{% macro m() %}{{ x }}{% endmacro %}{% set x = 2 %}{{ m() }}",
    "{% macro m() %}{% set x = 5 %}{{ x }}{% endmacro %}{% set x = 1 %}{{ m() }}{{ x }}",
    "{% set x = 1 %}{% if true %}{% set x = x + 1 %}{% endif %}{% for i in [1] %}{% set x = x + 10 %}{{ x }}{% endfor %}{{ x }}",
    "{% for i in [1, 2] %}{% set outer = loop %}{% for j in [1, 2] %}{{ outer.index }}{{ loop.index }} {% endfor %}{{ loop.index }};{% endfor %}",
    "{% set ns = namespace(items=[]) %}{% for x in l %}{% set ns.items = ns.items + [x * 2] %}{% endfor %}{{ ns.items }} {{ ns }}",
    "{% set ns = namespace() %}{{ ns.missing is defined }}[{{ ns.missing }}]{% set ns2 = namespace(d, z=0) %}{{ ns2.b }}{{ ns2.z }}",
    "{% set a, b = 'xy' %}{{ b }}{{ a }}",
    "{% set x | upper %}abc {{ n }}{% endset %}{{ x }}",
    "{% for x in l %}{% set y = x * 2 %}{{ y }}{% endfor %}[{{ y }}]",
    # undefined and none
    "{{ zz ~ 'a' }}|{{ zz | length }}|{% for x in zz %}x{% endfor %}|{{ 'a' in zz }}|{{ zz == none }}|{{ zz != 1 }}|{{ not zz }}|{{ zz | list }}|{{ zz | join(',') }}|{{ zz | first }}",
    "{{ zz | upper }}|{{ zz | trim }}|{{ zz | lower }}|{{ zz | title }}|{{ zz | capitalize }}|{{ zz | string }}|{{ zz | replace('a', 'b') }}|{{ zz | reverse | list }}|{{ zz | items | list }}",
    "{{ zz < 1 }}",
    "{{ zz | int }}",
    "{{ zz.x is defined }}",
    "{{ d.missing.x }}",
    "{{ zz | tojson }}",
    "{{ zz() }}",
    "{{ -zz }}",
    "{{ d.missing is defined }} {{ d.c is defined }} {{ d.c is none }} [{{ d.c.x }}] [{{ none.attr }}] [{{ none['k'] }}] [{{ none[0] }}]",
    "{{ [zz, none] }} {{ zz is none }} {{ zz is string }} {{ zz is iterable }} {{ zz is mapping }}",
    "{% if zz %}a{% elif zz is undefined %}b{% endif %} {{ zz | d(n) }} {{ none | default('x', true) }} {{ false | default('x') }} {{ 0 | default('x', boolean=true) }} {{ msgs[0].missing | default('') | length }}",
    "{{ 'a' if zz is defined and zz.x else 'b' }} {{ zz is defined and zz.x }}",
    "{{ none ~ 'x' }}|{{ none | string }}|{{ none | upper }}|{{ none | default('d') }}|{{ none | tojson }}|{{ [none] | tojson }}",
    "{{ none | length }}",
    "{{ none + 1 }}",
    "{% for x in none %}{% endfor %}",
    # numbers and operators
    "{{ 1/3 }} {{ 2/3 }} {{ 10/4 }} {{ 1e16 }} {{ 1e15 }} {{ 0.0001 }} {{ 0.00001 }} {{ 123456789.123456789 }} {{ -0.0 }} {{ 3.0 * 2 }} {{ 2 ** 0.5 }} {{ 1_000 }}",
    "{{ 7 % -3 }} {{ -7.5 // 2 }} {{ 7.5 % 2 }} {{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ 10 - 2 - 3 }} {{ 2 * 3 + 4 * 5 }} {{ 2 * 3 ~ 4 }} {{ 'a' ~ 2 * 3 }} {{ true + 1 }}",
    "{{ 3 | round }} {{ 2.5 | round }} {{ 3.14159 | round(2) }} {{ 2.345 | round(1, 'floor') }} {{ 2.301 | round(1, 'ceil') }} {{ -2.5 | round }} {{ 3 | round(1, 'floor') }}",
    "{{ 5 | float }} {{ '3' | int + 1 }} {{ 'abc' | int(5) }} {{ 'abc' | float(1.5) }} {{ true | int }} {{ 3.99 | int }} {{ -3.99 | int }} {{ -n | abs }} {{ 2.5 | abs }}",
    "{{ n is number }} {{ t is number }} {{ t is integer }} {{ f is number }} {{ '1' is number }} {{ 1 is sameas 1 }} {{ none is sameas none }} {{ t is sameas true }}",
    "{{ 10 is divisibleby 5 }} {{ 4.0 is divisibleby 2 }} {{ 3 is odd }} {{ -3 is odd }} {{ 'abc' is lower }} {{ '123' is lower }} {{ 'ABC' is upper }} {{ 'AbC' is upper }}",
    "{{ n is gt(3) }} {{ n is lt 3 }} {{ n is ge 7 }} {{ n is le(7) }} {{ n is ne 7 }} {{ n is eq 7 }} {{ 'a' is in ['a', 'b'] }} {{ 'a' is in 'cat' }} {{ 'k' is in {'k': 1} }}",
    "{{ l is sequence }} {{ d is sequence }} {{ n is sequence }} {{ d.get is callable }} {{ n is callable }} {{ namespace() is mapping }} {{ d is not mapping }}",
    "{{ 'ab' < 'b' }} {{ 'B' < 'a' }} {{ [1, 2] < [1, 3] }} {{ (1, 2) == [1, 2] }} {{ (1, 2) == (1, 2) }} {{ 1 == '1' }} {{ none == false }} {{ 0 == false }} {{ d == {'b': 2, 'a': 1, 'c': none} }}",
    "{{ 1 < 'a' }}",
    "{{ none < 1 }}",
    "{{ 1 < 2 > 1.5 == 1.5 }} {{ 1 == 1 == 1.0 }} {{ 'a' in 'abc' in 'xabcx' }} {{ 1 not in [2] in [[2]] }} {{ 3 > 2 < 1 }}",
    "{{ 'a' in l }} {{ 3 in l }} {{ 3.0 in l }} {{ 'b' in d }} {{ 2 in d }} {{ 'bc' in 'abc' }} {{ '' in 'abc' }} {{ none in [none] }} {{ 'x' not in d }}",
    "{{ 1 in 'abc' }}",
    "{{ 1 + 2 ~ 3 + 4 }}",
    "{{ 'a' in none }}",
    "{{ not t and n }} {{ not (t and n) }} {{ t and not none }} {{ none or e or 'z' }} {{ 0 or [] }} {{ 1 and 0 }} {{ n > 5 and n < 10 }} {{ not n == 7 }} {{ - n + 1 }} {{ n * -1 }}",
    "{{ 'yes' if n > 5 else 'no' if n > 2 else 'tiny' }} {{ l | length > 2 }} {{ l|length * 2 }} {{ 'ab' ~ l | length }} {{ 1, 2 }} {{ [1, 2,] }} {{ {'a': 1,} }} {{ (1,) }} {{ () }}",
    # strings
    "{{ 'don\\'t stop' | title }}|{{ \"don't stop\".title() }}|{{ 'hello-world foo_bar 1st' | title }}|{{ 'hello-world foo_bar 1st'.title() }}|{{ '(hi) [x] <y>' | title }}",
    "{{ 'xxhixx'.strip('x') }}|{{ 'abcHIcba'.strip('abc') }}|{{ '  x  '.rstrip() }}|{{ 'x\\n'.rstrip('\\n') }}|{{ '.,x,.' | trim('.,') }}|{{ ' x '.strip(none) }}",
    "{{ 'a,b,,c'.split(',', 1) }} {{ 'a  b'.split(' ') }} {{ ''.split() }} {{ ''.split(',') }} {{ ' a b '.split(None, 1) }} {{ 'a b c'.rsplit(' ', 1) }} {{ 'a b'.split(maxsplit=0) }}",
    "{{ 'hello world'.capitalize() }} {{ 'HELLO'.capitalize() }} {{ ''.capitalize() }} {{ 'aaa'.replace('a', 'b', 1) }} {{ 'abc'.replace('', '-') }} {{ 'a.b.c'.replace('.', '') }}",
    "{{ 'abc'.startswith(('x', 'a')) }} {{ 'abc'.find('z') }} {{ 'abcabc'.rfind('b') }} {{ 'a-b-c'.partition('-') }} {{ 'a-b-c'.rpartition('-') }} {{ 'ab12'.isalnum() }} {{ 'ab'.islower() }} {{ 'ab'.isupper() }}",
    "{{ 'x'.join(['a', 'b', 'c']) }} {{ ''.join(l | map('string')) }} {{ 'hello'[1:4] }} {{ 'hello'[::-1] }} {{ 'hello'[-3:] }} {{ 'hello'[10:] }} {{ l[5:1:-1] }} {{ l[-1:-4:-1] }} {{ l[::-2] }} {{ l[1:1] }} {{ 'abcdef'[-2:0:-2] }}",
    "{{ 'Line1\\nLine2\\r\\nLine3\\rL4'.splitlines() }} {{ 'a\\n'.splitlines() }} {{ ''.splitlines() }}",
    "{{ '%s-%s' % ('a', 'b') }} {{ '%d%%' % 50 }} {{ '%.2f' % 3.14159 }} {{ '%5s|%-5s|' % ('a', 'b') }} {{ '%s' % [1, 2] }} {{ '%(x)s!' % {'x': 1} }} {{ '%03d' % 7 }} {{ '%x' % 255 }} {{ '%r' % 'a' }} {{ '%s' % none }} {{ '%i' % 3.9 }}",
    "{{ '%s %s' % ('a',) }}",
    "{{ '%5.1f|%-6d|%+d|% d|%e|%.3g|%g|%g|%#x|%o|%c|%05.1f|%.0f|%.0f|%s' % (3.14159, 42, 5, 5, 12345.678, 0.0001234, 1e20, 100000.0, 255, 8, 65, -2.5, 0.5, 1.5, 'é') }}",
    "{{ '%s' % zz }}|{{ '%(a)s-%(b)d' % {'a': 'x', 'b': 2} }}|{{ '%-4s|' % none }}|{{ '%.2s' % 'abc' }}|{{ '%5s' % true }}",
    "{{ '{:>5}|{:<5}|{:^6}|{:05.2f}|{!r}|{:,}|{:x}|{:+d}|{:.1%}|{:*^7}|{:e}|{}|{:>6}'.format('a', 'b', 'c', 3.14159, 'q', 1234567, 255, 3, 0.256, 'mid', 12345.678, 2.50, 1.5) }}",
    "{{ 'ab'.center(7) }}|{{ 'ab'.center(7, '*') }}|{{ 'abc'.center(6) }}|{{ 'x'.ljust(3) }}|{{ 'x'.rjust(3, '0') }}|{{ '-42'.zfill(6) }}|{{ 'ab' | center(6) }}|",
    "{{ 'Hello World'.swapcase() }} {{ 'a,b;c'.split(';') }} {{ ' x y  '.rsplit() }} {{ 'a1b2'.index('b') }} {{ 'abc'.endswith('bc') }} {{ 'www.x.com'.removeprefix('www.') }}",
    "{% set x %}{% set inner = 1 %}{{ inner }}{% endset %}[{{ x }}][{{ inner }}]{% filter upper %}{% set f = 2 %}{{ f }}{% endfilter %}[{{ f }}]",
    "{% set ns = namespace(n=0) %}{% macro bump() %}{% set ns.n = ns.n + 1 %}{% endmacro %}{{ bump() }}{{ bump() }}{{ ns.n }}",
    "{{ n | string | length }} {{ (n ~ '') | int + 1 }} {{ ' 42 ' | int }} {{ '1_000' | int }} {{ '1e3' | int }} {{ ' -2.5 ' | float }} {{ 'inf' | float }} {{ 'nan' | float }} {{ '1.5x' | float }}",
    "{{ 3 | round(-1) }} {{ 25 | round(-1) }} {{ 1.25 | round(1) }} {{ 1234.5678 | round(-2) }} {{ true | round }}",
    "{% for m in messages %}{% if m.tool_calls %}{% for tc in m.tool_calls %}{{ tc.function.name if tc.function is defined else tc.name }}({{ (tc.function or tc).arguments if (tc.function or tc).arguments is string else (tc.function or tc).arguments | tojson }}){% endfor %}{% endif %}{% endfor %}",
    "{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | map('trim') | join(' / ') }} {{ (messages | selectattr('role', 'eq', 'user') | list | last).content }}",
    "{{ messages[0].content if messages[0].role == 'system' else '' }}|{{ messages[1:] | length }}|{{ messages[-1]['content'][-1] }}|{{ messages[2].tool_calls | map(attribute='type') | list }}",
    "{{ tools | map(attribute='function') | map(attribute='name') | list }} {{ tools[0].function.parameters.required | join }} {{ tools[0].function.parameters | tojson(sort_keys=true) }}",
    "{{ tools | tojson(indent=4) }}",
    "{{ 'a\\tb' }} {{ '\\\\' }} {{ '\\101' }} {{ 'a\\\nb' }} {{ 'q\\q' }}",
    "{{ 'é' | length }} {{ '😀x' | length }} {{ '😀x'[0] }} {{ '😀x' | reverse }} {{ 'üé' | upper }} {{ ('a' 'b') ~ 'c' }} {{ 'ab' * 2 ~ 'c' }}",
    "{{ '{0}-{1}-{0}'.format('a', 'b') }} {{ '{x}'.format(x=none) }} {{ 'a%sb'.replace('%s', n | string) }} {{ '%s!' | format(n) }} {{ '%s and %s' | format('a', 'b') }}",
    # dicts and tojson
    "{{ d | tojson(indent=2, sort_keys=true) }}",
    "{{ d | tojson(separators=(',', ':')) }} {{ l | tojson(separators=(';', '=')) }}",
    "{{ {'k': 'ü€😀', 'n': [1.0, 1e20, 0.1, -0.0, 3]} | tojson }} {{ 'ü😀' | tojson(true) }} {{ '\\x00\\x1f\\x7f' | tojson }}",
    "{{ {'a': [], 'b': {}, 'c': [1]} | tojson(indent=2) }}",
    "{{ d | tojson(indent='\\t') }}",
    "{{ (1, 'a') | tojson }} {{ d.items() | list | tojson }} {{ messages[2].tool_calls[0].function.arguments | tojson }}",
    "{{ d | dictsort(reverse=true) }} {{ {'b': 1, 'A': 2, '_c': 3} | dictsort }} {{ {'x': 2, 'y': 1} | dictsort(by='value') }} {{ {'b': 1, 'A': 2} | dictsort(true) }}",
    "{{ dict(a=1, b=2) }} {{ dict(d, z=0) }} {{ {'items': 1}['items'] }} {{ d.get('c', 'x') }} {{ d.get('c') is none }} {% for k, v in d | dictsort %}{{ k }}{% endfor %}",
    # filters
    "{{ ['b', 'B', 'a', 'C'] | sort }} {{ ['b', 'B', 'a', 'C'] | sort(case_sensitive=true) }} {{ ['a', 'A', 'b'] | unique | list }} {{ ['a', 'B', 'c'] | max }} {{ ['a', 'B', 'c'] | min }} {{ ['b', 'A'] | sort(true) }}",
    "{{ msgs | sort(attribute='role') | map(attribute='role') | join(',') }} {{ msgs | selectattr('tool_calls') | map(attribute='tool_calls.0.name') | list }} {{ messages | map(attribute='tool_calls.1.name', default='-') | list }} {{ messages | map(attribute='content.0') | join }}",
    "{{ 'a\\n  b\\n\\nc' | indent }}|{{ 'a\\n b' | indent(first=true) }}|{{ '\\nx' | indent(2, true) }}|{{ 'a\\n\\nb' | indent(2, blank=true) }}|{{ 'a\\n  \\nb' | indent(2) }}|{{ 'x\\ny' | indent('> ', true) }}|{{ 'a\\n' | indent(2) }}",
    "{{ 'one, two-three  four' | wordcount }} {{ l | batch(2, 'x') | list }} {{ [1, 2, 3, 4] | batch(2) | map('sum') | list }} {{ l | sum(start=10) }} {{ msgs | map(attribute='role') | map('length') | sum }} {{ [[1], [2]] | sum(start=[]) }}",
    "{{ l | map('string') | join('-') }} {{ [' a ', 'b '] | map('trim') | list }} {{ ['a-b'] | map('replace', '-', '+') | first }} {{ [1, none, 2] | select('none') | list }} {{ [1, none, 2] | reject('none') | list }} {{ l | select('gt', 1) | list }} {{ l | select('in', [1, 3]) | list }}",
    "{{ msgs | selectattr('role', 'in', ['user', 'system']) | map(attribute='role') | list }} {{ msgs | selectattr('content') | list | length }} {{ messages | selectattr('tool_calls', 'defined') | map(attribute='role') | first }}",
    "{{ 'abc' | first }} {{ 'abc' | last }} {{ d | first }} [{{ [] | first }}] {{ d | list }} {{ d | length }} {{ l | map('abs') | list }}",
    "{% if t %}{{ n | nosuchfilter }}{% endif %}",
    "{% if false %}{{ n | nosuchfilter }}{% elif false and n is nosuchtest %}{% endif %}ok {{ n | nosuch if false else 'x' }}",
    "{% for x in l %}{{ x | nosuch }}{% endfor %}",
    "{% if t %}{% for x in l %}{{ x | nosuch }}{% endfor %}{% endif %}",
    "{{ n is nosuchtest }}",
    "{% filter trim | upper %}  a {{ n }}  {% endfilter %}|{% filter replace('a', 'o') %}banana{% endfilter %}|{% filter indent(2) %}\nx\ny\n{% endfilter %}|",
    "{{ 'the quick brown fox jumps' | truncate(12) }}|{{ 'the quick brown fox jumps' | truncate(12, true) }}|{{ 'the quick brown fox' | truncate(15, end='…') }}|{{ 'short' | truncate(3, leeway=2) }}|{{ 'abcdefgh' | truncate(5, leeway=0) }}",
    # macros
    "{% macro m(a, b=a ~ '!', c=none) %}{{ a }}{{ b }}{{ c }}{% endmacro %}{{ m(1) }}|{{ m(1, c=3) }}|{{ m(b=2, a=1) }}|{{ m() }}",
    "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, 2) }}",
    "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, b=2) }}",
    "{% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, x=3) }}",
    "{% macro m(x) %}{% if x > 0 %}{{ x }}{{ m(x - 1) }}{% endif %}{% endmacro %}{{ m(3) }}",
    "{% macro m() %}{{ caller() }}{% endmacro %}{{ m() }}",
    "{% macro render(msg) -%}\n  <{{ msg.role }}>\n  {{- msg.content | trim -}}\n  </{{ msg.role }}>\n{%- endmacro %}\n{% for m in msgs %}{{ render(m) }}\n{% endfor %}",
    # loops
    "{% for x in l %}{{ loop.previtem }}-{{ x }}-{{ loop.nextitem }};{% endfor %}",
    "{% for x in l %}{{ loop.cycle('odd', 'even') }}{{ loop.revindex0 }}{{ loop.depth }}{{ loop.depth0 }} {% endfor %}",
    "{% for x in [1, 1, 2, 3, 3] %}{% if loop.changed(x) %}{{ x }}{% endif %}{% endfor %}",
    "{% for a, b in [(1, 2), [3, 4]] %}{{ a + b }} {% endfor %}{% for (k, v) in d.items() %}{{ k }}{% endfor %}",
    "{% for x in l if x != 1 %}{{ loop.index }}/{{ loop.length }}{% else %}none{% endfor %} {% for x in l if x > 5 %}{{ x }}{% else %}none{% endfor %}",
    "{% for x in l %}{% if loop.index > 2 %}{% break %}{% endif %}{{ x }}{% else %}E{% endfor %}",
    "{% for i in range(2) %}{% for j in range(3) %}{% if j == 1 %}{% continue %}{% endif %}{{ i }}{{ j }} {% endfor %}{% endfor %}",
    "{% for x in 'ab' %}{% for y in 'cd' %}{{ x }}{{ y }}{{ loop.first }} {% endfor %}{{ loop.last }}|{% endfor %}",
    "{% break %}",
    "{% if false %}{% continue %}{% endif %}x",
    "{% macro m() %}{% break %}{% endmacro %}{% for i in l %}{{ m() }}{% endfor %}",
    "{% for i in l %}{% generation %}{% break %}{% endgeneration %}{% endfor %}",
    "{% for a in l %}{{ a }}{% for b in [] %}{% else %}{% break %}{% endfor %}{% endfor %}|{% for a in l %}{% for b in [] %}{% else %}{% set y = 1 %}{% continue %}{% endfor %}{{ a }}{% endfor %}[{{ y }}]",
    "{% with a = 1, b = 2 %}{{ a + b }}{% set c = 3 %}{% endwith %}[{{ a }}{{ c }}]{% set a = 5 %}{% with a = 1, b = a %}{{ a }}{{ b }}{% endwith %}{% with %}x{% endwith %}",
    "{{ 'a' * true }} {{ [1] * 2 }} {{ 2 * 'ab' }} {{ 'ab' * 0 }} {{ [1, 2] * -1 }}",
    "{{ '\uff01' < '\U0001F600' }} {{ ['b', '\uff01', '\U0001F600', 'a'] | sort }} {{ ['\U0001F600', '\uff01'] | max }}",
    "{% macro m() %}{{ x }}{% endmacro %}{{ m() }}{% set x = 1 %}{{ m() }}|{% for i in l %}[{{ x2 }}]{% endfor %}{% set x2 = 5 %}|{{ n }}{% set n = 1 %}{{ n }}",
    "{% macro m(a) %}{% for i in [1] %}{{ a }}{% set a = 5 %}{{ a }}{% endfor %}{{ a }}{% endmacro %}{{ m(1) }}|{% macro k() %}{{ n }}{% set n = 2 %}{{ n }}{% endmacro %}{{ k() }}",
    "{% set ns = namespace(a=0) %}{% set ns.a %}x{{ n }}{% endset %}{% set ns.b | trim %}  y  {% endset %}{% set ns.c = 1, 2 %}[{{ ns.a }}][{{ ns.b }}]{{ ns.c }}",
    "{{ 0x1F }} {{ 0o17 }} {{ 0b101 }} {{ 0X_ff }} {{ 1_000_000 }} {{ 0 }}",
    "{% set comma = joiner(' | ') %}{% for x in l %}{{ comma() }}{{ x }}{% endfor %}",
    "{{ -9223372036854775807 - 1 }} {{ 9223372036854775807 }} {{ 9.0e18 | int }} {{ '-9223372036854775808' | int }}",
    # Jinja decides at compile time that a name first set unconditionally in a frame belongs to it from the start
    "{% for i in [1] %}[{{ n }}]{% endfor %}{% set n = 1 %}|{% macro m() %}[{{ x }}]{% endmacro %}{{ m() }}{% set x = 1 %}{{ m() }}",
    "{% for j in [1, 2] %}{% for i in [1] %}[{{ n }}]{% endfor %}{% set n = j %}{% endfor %}|{% set b %}{% for i in [1] %}[{{ f }}]{% endfor %}{% set f = 2 %}{% endset %}{{ b }}",
    "{% for i in [1] %}[{{ n }}]{% endfor %}{% if t %}{% set n = 1 %}{% endif %}|{{ l }}{% for i in [1] %}[{{ l }}]{% endfor %}{% set l = 1 %}|{% for i in [1] %}[{{ e }}]{% endfor %}{% set e = e ~ '!' %}",
    # the else of a for runs unless an iteration reached the end of the body
    "{% for i in [1, 2] %}{% if i == 1 %}{% break %}{% endif %}{% else %}E{% endfor %}|{% for i in [1, 2] %}{% continue %}{% else %}E{% endfor %}|{% for i in [1, 2] %}{% if i == 2 %}{% continue %}{% endif %}{% else %}E{% endfor %}",
    # break / continue inside a filter or set block leave the block, writing and assigning nothing
    "{% for i in [1, 2] %}{% filter upper %}a{% if i == 1 %}{% continue %}{% endif %}b{% endfilter %}x{% endfor %}|{% for i in [1, 2] %}{% set blk %}a{% if i == 2 %}{% break %}{% endif %}b{% endset %}<{{ blk }}>{% endfor %}",
    "{{ [1] in d }}",
    "{{ [1, 'a'] | sort(attribute='n') }} {{ msgs | sort(attribute='role,content') | map(attribute='role') | join }} {{ [{'a': 2, 'b': 1}, {'a': 1, 'b': 2}, {'a': 1, 'b': 1}] | sort(attribute='a,b') | map(attribute='b') | list }}",
    "{{ msgs | sort }}",
    "{{ [[1], [1]] | unique | list }}",
    "{{ 'straße ﬁne' | upper }} {{ 'straße ﬁne'.upper() }} {{ 'ßa' | capitalize }} {{ 'ßa ǆx'.title() }} {{ 'ßa' | title }}",
    "{{ '{}-{0}'.format(1, 2) }}",
    "{{ -0.5 | round(0, 'ceil') }} {{ 0.4 | round(0, 'floor') }} {{ -0.4 | round(0, 'ceil') }}",
    "{{ range(3) | list }} {{ range(1, 10, 3) | list }} {{ range(0) | list }} {{ range(5, 0, -2) | list }} {{ range(3) | length }} {{ range(-2) | list }}",
    # multi-line templates shaped like real chat templates
    r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools><|im_end|>\n" }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == "user" or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {%- if tool_call.arguments is string %}
                {{- tool_call.arguments }}
            {%- else %}
                {{- tool_call.arguments | tojson }}
            {%- endif %}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
""",
    r"""{% if messages[0]['role'] == 'system' %}
    {% set loop_messages = messages[1:] %}
    {% set system_message = messages[0]['content'] %}
{% else %}
    {% set loop_messages = messages %}
    {% set system_message = false %}
{% endif %}
{% for message in loop_messages %}
    {% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {% endif %}
    {% if loop.index0 == 0 and system_message != false %}
        {% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}
    {% else %}
        {% set content = message['content'] %}
    {% endif %}
    {% if message['role'] == 'user' %}
        {{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}
    {% elif message['role'] == 'assistant' %}
        {{ ' '  + content.strip() + ' ' + eos_token }}
    {% endif %}
{% endfor %}
""",
    r"""{%- set ns = namespace(last_user=-1) %}
{%- for m in messages %}
    {%- if m.role == 'user' %}{% set ns.last_user = loop.index0 %}{% endif %}
{%- endfor %}
{#- render #}
{%- for m in messages %}
    {#- each message #}
    {%- if m.role == 'assistant' %}
        {%- generation %}
        {{- m.content }}
        {%- endgeneration %}
    {%- else %}
  {{ m.role }}: {{ m.content }}
    {%- endif %}
{% endfor %}
last user: {{ ns.last_user }}
""",
    r"""{{ bos_token }}
{%- for message in messages %}
    {%- if message['role'] == 'assistant' %}
        {%- set role = 'model' %}
    {%- else %}
        {%- set role = message['role'] %}
    {%- endif %}
    {{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}
{%- endfor %}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
""",
    r"""{%- for message in messages %}
{%- if message.role == 'system' -%}
System: {{ message.content }}
{% elif message.role == 'user' -%}
  User: {{ message.content | trim }}
{% else -%}
  Bot: {{ message.content }}{{ eos_token }}
{% endif -%}
{% endfor -%}
{% if add_generation_prompt %}Bot:{% endif %}""",
    r"""{%- for message in messages %}
    {%- if message.role == 'user' and message.content is string %}
        {{- '[INST] ' + message.content + '[/INST]' }}
    {%- elif message.role == 'assistant' %}
        {%- if message.tool_calls is defined and message.tool_calls | length > 0 %}
            {{- '[TOOL_CALLS] [' }}
            {%- for tc in message.tool_calls %}
                {%- set f = tc.function if tc.function is defined else tc %}
                {{- {'name': f.name, 'arguments': f.arguments} | tojson }}
                {%- if not loop.last %}{{- ', ' }}{% endif %}
            {%- endfor %}
            {{- ']' + eos_token }}
        {%- else %}
            {{- ' ' + message.content | trim + eos_token }}
        {%- endif %}
    {%- endif %}
{%- endfor %}""",
]

# --- constructs from real chat templates (Qwen3, Gemma 3, Mistral, Llama 3.1, gpt-oss style) ---
CASES += [
    r"""{%- for message in mm %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = message.content | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') %}
    {%- endif %}
    {%- if message.role == 'assistant' %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- elif '</think>' in content %}
            {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
            {%- set content = content.split('</think>')[-1].lstrip('\n') %}
        {%- endif %}
        {{- '<|im_start|>assistant\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') + '<|im_end|>\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or (mm[loop.index0 - 1].role != 'tool') %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' + content + '\n</tool_response>' }}
        {%- if loop.last or (mm[loop.index0 + 1].role != 'tool') %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- endif %}
{%- endfor %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=mm|length - 1) %}
{%- for message in mm[::-1] %}
    {%- set index = (mm|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{{- ns.last_query_index }}""",
    r"""{{ bos_token }}
{%- if mm[0]['content'] is string -%}
    {%- set first_user_prefix = mm[0]['content'] + '\n\n' -%}
{%- else -%}
    {%- set first_user_prefix = mm[0]['content'][-1]['text'] + '\n\n' -%}
{%- endif -%}
{%- for message in mm[:2] + mm[3:] -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {{ '<start_of_turn>' + message['role'] + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}""",
    r"""{{- "[AVAILABLE_TOOLS] [" }}
{%- for tool in tools %}
    {%- set tool = tool.function %}
    {{- '{"type": "function", "function": {' }}
    {%- for key, val in tool.items() if key != "return" %}
        {%- if val is string %}
            {{- '"' + key + '": "' + val + '"' }}
        {%- else %}
            {{- '"' + key + '": ' + val|tojson }}
        {%- endif %}
        {%- if not loop.last %}
            {{- ", " }}
        {%- endif %}
    {%- endfor %}
    {{- "}}" }}
    {%- if not loop.last %}
        {{- ", " }}
    {%- else %}
        {{- "]" }}
    {%- endif %}
{%- endfor %}
{{- "[/AVAILABLE_TOOLS]" }}
{%- for tool_call in messages[2].tool_calls %}
    {%- if tool_call.id is not defined or tool_call.id|length != 9 %}
        {{- "[" + (tool_call.function or tool_call).name + ":no id]" }}
    {%- endif %}
{%- endfor %}""",
    r"""{%- set date_string = "26 Jul 2024" %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- for t in tools %}
    {{- t | tojson(indent=4) }}
    {{- "\n\n" }}
{%- endfor %}
{%- for tool_call in messages[2].tool_calls if tool_call.function is defined %}
    {%- set tool_call = tool_call.function %}
    {{- '<|python_tag|>' + tool_call.name + '.call(' }}
    {%- for arg_name, arg_val in tool_call.arguments | items %}
        {{- arg_name + '="' + arg_val | string + '"' }}
        {%- if not loop.last %}
            {{- ", " }}
        {%- endif %}
    {%- endfor %}
    {{- ")" }}
{%- endfor %}""",
    r"""{%- macro render_type(spec, indent_level=0) -%}
    {%- if spec.type == "array" -%}
        {%- if spec['items'] -%}{{- render_type(spec['items'], indent_level + 1) + "[]" -}}{%- else -%}{{- "any[]" -}}{%- endif -%}
    {%- elif spec.type == "object" -%}
        {{- "{\n" -}}
        {%- for name, sub in spec.properties.items() -%}
            {{- "    " * (indent_level + 1) + name + ("?" if name not in spec.get('required', []) else "") + ": " + render_type(sub, indent_level + 1) -}}
            {%- if not loop.last %}{{- ",\n" -}}{% endif -%}
        {%- endfor -%}
        {{- "\n" + "    " * indent_level + "}" -}}
    {%- elif spec.enum -%}
        {{- spec.enum | map('tojson') | join(' | ') -}}
    {%- elif spec.type == "integer" -%}number
    {%- else -%}{{- spec.type or "any" -}}
    {%- endif -%}
{%- endmacro -%}
type f = (_: {{ render_type({'type': 'object', 'required': ['a'], 'properties': {'a': {'type': 'integer'}, 'b': {'type': 'array', 'items': {'type': 'string', 'enum': ['x', 'y']}}, 'c': {'type': 'object', 'properties': {'d': {'type': 'boolean'}}}}}) }}) => any;""",
]

cases = []
for template in CASES:
    case = {"template": template, "expected": None, "error": None}
    try:
        compiled = env.from_string(template)
    except Exception:  # a syntax error, or one found when compiling (unknown filter, break outside a loop)
        case["error"] = "syntax"
        cases.append(case)
        continue
    try:
        case["expected"] = compiled.render(**copy.deepcopy(V))  # a copy: jinja's indent filter extends a list it is given
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
