"""Hostile chat templates end in one FormatError naming the template, quickly and without
a large allocation; ordinary templates render exactly as Jinja's own sandbox renders them."""

from __future__ import annotations

import json
import resource
import sys
from typing import Any

import jinja2.ext
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from loaders.chat import encode_chat, render_chat
from loaders.chat_sandbox import RenderLimits, text_size
from loaders.tokenizer import Tokenizer
from pullweights.errors import ComputeError, FormatError
from tests.loaders.vocabularies import bpe_metadata

MESSAGES = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
NAME = "chat template (tokenizer.chat_template of 'evil')"

HOSTILE = {
    # The cases.
    "repeat 10 G": ("{{ 'x' * 10000000000 }}", "'*' would make a value of 10000000000"),
    "repeat 100 M": ("{{ 'x' * 100000000 }}", "'*' would make a value"),
    "nested ranges": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "steps|took longer",
    ),
    "division by zero": ("{{ 1 / 0 }}", "ZeroDivisionError"),
    "float overflow": ("{{ 10.0 ** 400 }}", "OverflowError"),
    "range too long": ("{{ range(1000000) | list | length }}", r"range\(\) of 1000000 items"),
    "recursion": ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "deeper than 64"),
    "nested parentheses": ("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", "does not compile"),
    "nested blocks": ("{% if 1 %}" * 200 + "x" + "{% endif %}" * 200, "does not compile"),
    # Growth by other routes.
    "integer power": ("{{ 2 ** 100000000 }}", "'\\*\\*' makes an integer"),
    "doubling with ~": (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
        "namespace attribute 's'",
    ),
    "doubling with +": (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}"
        "{% set ns.s = ns.s + ns.s %}{% endfor %}",
        "namespace attribute 's'",
    ),
    "doubling by recursion": (
        "{% macro f(s, n) %}{{ f(s ~ s, n - 1) if n else s | length }}{% endmacro %}"
        "{{ f('x', 60) }}",
        "'~' would make",
    ),
    "center width": ("{{ 'x' | center(10000000000) }}", "filter 'center'"),
    "ljust width": ("{{ 'x'.ljust(10000000000) }}", r"ljust\(\) argument"),
    "format width": ("{{ '{:>10000000000}'.format('x') }}", r"str.format\(\) width"),
    "percent width": ("{{ '%10000000000s' % 'x' }}", "'%' formatting width"),
    "percent star": ("{{ '%*s' % (10000000000, 'x') }}", "'\\*' widths"),
    "format filter": ("{{ '%10000000000s' | format('x') }}", "filter 'format'"),
    "join product": ("{% set s = 'x' * 1000000 %}{{ s.join(s) | length }}", r"str.join\(\)"),
    "join filter": (
        "{% set s = 'x' * 1000000 %}{{ ('x' * 1000) | list | join(s) | length }}",
        "filter 'join'",
    ),
    "replace product": (
        "{% set s = 'x' * 1000000 %}{{ s.replace('', s) | length }}",
        r"str.replace\(\)",
    ),
    "shared references": ("{% set s = 'x' * 1000000 %}{{ [[s] * 1000] * 1000 }}", "'\\*'"),
    "tojson of shared references": (
        "{% set a = ['x' * 1000] * 4000 %}{{ [a, a] | tojson }}",
        "tojson makes more than",
    ),
    "quadratic sum": ("{{ ([[1]] * 100000) | sum(start=[]) | length }}", "took longer|steps"),
    "literal output in a macro": (
        "{% macro m() %}{% for i in range(100000) %}"
        + "y" * 100000
        + "{% endfor %}{% endmacro %}{{ m() | length }}",
        "emitted more than",
    ),
    "literal output": (
        "{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxxxxxxxxxxxxxx"
        "{% endfor %}{% endfor %}",
        "emitted more than|steps|took longer",
    ),
    "indent product": (
        "{% set s = '\\n' * 1000000 %}{{ s | indent(1000000) | length }}",
        "filter 'indent'",
    ),
    "expandtabs product": (
        "{% set s = '\\t' * 1000000 %}{{ s.expandtabs(1000000) | length }}",
        r"str.expandtabs\(\)",
    ),
    "format repeats a field": (
        "{% set s = 'x' * 1000000 %}{{ ('{0}' * 100000).format(s) | length }}",
        r"str.format\(\) would make",
    ),
    "percent repeats a key": (
        "{% set s = 'x' * 1000000 %}{{ ('%(a)s' * 100000) % {'a': s} }}",
        "'%' formatting would make",
    ),
    "slow filter input": ("{{ ('<a>' * 1300000) | striptags | length }}", "filter 'striptags'"),
    "lipsum is gone": ("{{ lipsum(1000000000) }}", "is larger than the limit|undefined"),
    "template raises": ("{{ raise_exception('no') }}", "refused the conversation: no"),
    "syntax error": ("{% for %}", "does not parse"),
    "type error": ("{{ messages + 1 }}", "TypeError"),
    "sandbox escape": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "failed while rendering"),
    "int of many digits": ("{{ ('9' * 5000) | int }}", "0"),  # do_int: ValueError -> 0
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_template_ends_in_one_format_error(case: str) -> None:
    template, expected = HOSTILE[case]
    # A render never needs much memory: cap the address space at 2 GiB above what the
    # process uses, so an unbounded allocation fails the test with a MemoryError (not the
    # message expected) instead of exhausting the machine.
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_address_space() + (2 << 30), hard))
    try:
        if case == "int of many digits":  # not hostile: Jinja's int filter returns 0
            assert render_chat(template, MESSAGES, name=NAME) == "0"
            return
        with pytest.raises(FormatError, match=expected) as info:
            render_chat(template, MESSAGES, name=NAME)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert str(info.value).startswith(NAME), info.value


def _address_space() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmSize in /proc/self/status")


def test_trace_function_is_restored() -> None:
    def tracer(*args: object) -> None:
        return None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        with pytest.raises(FormatError):
            render_chat("{% for i in range(100000) %}{% endfor %}" * 100, MESSAGES)
        assert sys.gettrace() is tracer
        assert render_chat("{{ 1 + 1 }}", MESSAGES) == "2"
        assert sys.gettrace() is tracer
    finally:
        sys.settrace(previous)


def test_limits_are_configurable() -> None:
    small = RenderLimits(max_steps=2000)
    loop = "{% for i in range(10000) %}{{ i }}{% endfor %}"
    with pytest.raises(FormatError, match="more than 2000 steps"):
        render_chat(loop, MESSAGES, limits=small)
    assert len(render_chat(loop, MESSAGES)) == sum(len(str(i)) for i in range(10000))
    with pytest.raises(FormatError, match="emitted more than 100 characters"):
        render_chat(loop, MESSAGES, limits=RenderLimits(max_output_chars=100))
    with pytest.raises(FormatError, match="has 30 characters"):
        render_chat("{{ 'x' }}" + "x" * 21, MESSAGES, limits=RenderLimits(max_template_chars=29))


def test_large_inputs_raise_the_size_limits() -> None:
    # The caller's own messages are not the template's fault: the size limits grow with them.
    big = [{"role": "user", "content": "word " * 2_000_000}]
    text = render_chat("{% for m in messages %}{{ m.content | trim }}!{% endfor %}", big)
    assert len(text) == 10_000_000


ORDINARY = [
    "{% set ns = namespace(n=0, s='') %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
    "{% set ns.s = ns.s ~ m.role[0] %}{% endfor %}{{ ns.n }} {{ ns.s }}",
    "{% macro turn(m) %}<{{ m.role }}>{{ caller() if caller else '' }}{% endmacro %}"
    "{% for m in messages %}{% call turn(m) %}{{ m.content | upper }}{% endcall %}{% endfor %}",
    "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}"
    "{% if i > 6 %}{% break %}{% endif %}{{ loop.index }}:{{ i }},{% endfor %}",
    "{{ messages | tojson }}|{{ messages | tojson(indent=2) }}|{{ {'b': 1, 'a': [1, 2.5, none]} "
    "| tojson(sort_keys=true) }}",
    "{{ '{}-{:>5}-{name}'.format('a', 'b', name='c') }} {{ '%s=%05d' % ('x', 42) }} "
    "{{ '%s, %s' | format('a', 'b') }} {{ '{a}'.format_map({'a': 1}) }}",
    "{{ messages | map(attribute='role') | join(', ') }} {{ ', '.join(['a', 'b']) }} "
    "{{ 'a-b-c'.replace('-', '+', 1) }} {{ 'ab' * 3 }} {{ [1, 2] * 2 }} {{ 2 ** 10 }}",
    "{{ [1, 2, 3] | sum }} {{ [[1], [2]] | sum(start=[]) }} {{ messages | length }} "
    "{{ 7 // 2 }} {{ 7 / 2 }} {{ 7 % 3 }} {{ -3 - 4 }} {{ 'x' ~ 1 ~ none }}",
    "{% set block %}{% for m in messages %}[{{ m.role }}]{% endfor %}{% endset %}"
    "{{ block | length }}{% filter upper %}{{ block }}{% endfilter %}",
    "{% for m in messages | selectattr('role', 'equalto', 'user') %}{{ m.content | "
    "center(9) }}|{{ m.content | indent(2, true) }}|{{ 'a\\tb'.expandtabs(4) }}{% endfor %}",
    "{%- set tree = [{'n': 'a', 'c': [{'n': 'b', 'c': []}]}] -%}{% for t in tree recursive %}"
    "{{ t.n }}({{ loop(t.c) }}){% endfor %}",
    "{{ dict(a=1, b=[1, 2]) | dictsort }} {{ messages[0].items() | list }} "
    "{{ 'Hello World' | wordwrap(5) }} {{ '<b>x</b>' | striptags }} {{ 3.14159 | round(2) }}",
]


def _plain(template: str, **variables: Any) -> str:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = lambda v, ensure_ascii=False, indent=None, sort_keys=False: json.dumps(
        v, ensure_ascii=ensure_ascii, indent=indent, sort_keys=sort_keys
    )
    return env.from_string(template).render(**variables)


@pytest.mark.parametrize("template", ORDINARY)
def test_ordinary_templates_render_as_jinja_renders_them(template: str) -> None:
    variables = {"messages": MESSAGES, "add_generation_prompt": True}
    expected = _plain(template, bos_token="", eos_token="", **variables)
    assert render_chat(template, MESSAGES) == expected


def test_text_size_is_an_upper_bound_of_str() -> None:
    s = "ab c"  # nothing a repr would escape
    values: list[object] = [
        s,
        [s, 1, 2.5, None, True],
        {"k": [s] * 3, 2: (1, 2)},
        {"a": 1}.items(),
        2**200,
        [[s] * 3] * 3,
    ]
    for value in values:
        assert text_size(value, 1 << 20) >= len(str(value)), value
    assert text_size([["x" * 1000] * 1000] * 1000, 5000) > 5000  # stops early


def test_rendered_prompt_is_bounded_before_tokenizing() -> None:
    tokenizer = Tokenizer.from_gguf_metadata(bpe_metadata())
    template = "{{ 'x' * 3000 }}"
    with pytest.raises(ComputeError, match="3000 characters, more than the 1000 accepted"):
        encode_chat(tokenizer, MESSAGES, template=template, max_chars=1000)
    assert len(encode_chat(tokenizer, MESSAGES, template=template)) > 0
    with pytest.raises(ComputeError, match="more than the"):
        tokenizer.encode("x" * 101, max_chars=100)
