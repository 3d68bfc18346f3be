"""The Go writer's layout: sorted keys, 4-space indent, quoted type-ambiguous strings, Go floats;
whatever it writes reads back as the same values."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dapi_config._goyaml import format_float, format_string, render_go_yaml
from dapi_config._yaml import parse_yaml, to_plain
from tests._examples import examples


def test_layout() -> None:
    text = render_go_yaml(
        {
            "nodes": [{"id": "a", "models": {"m": {"args": ["0.9", "x"]}}, "hardware": []}],
            "api": {"port": 8080, "public_url": ""},
            "current_seed": {"signature": "0011", "seed": -5, "claimed": True},
        }
    )
    assert text == (
        "api:\n"
        "    port: 8080\n"
        '    public_url: ""\n'
        "current_seed:\n"
        "    claimed: true\n"
        "    seed: -5\n"
        '    signature: "0011"\n'
        "nodes:\n"
        "    - hardware: []\n"
        "      id: a\n"
        "      models:\n"
        "          m:\n"
        "              args:\n"
        '                  - "0.9"\n'
        "                  - x\n"
    )


def test_strings_that_need_quotes() -> None:
    for text in ("", "123", "1.5", "1e5", "0x1F", "true", "No", "on", "null", "~", "1:20", "010"):
        assert format_string(text).startswith('"'), text
    for text in ("v0.2.0", "hello", "http://h:1/x", "Qwen/Qwen2.5-7B-Instruct", "0.2.0"):
        assert format_string(text) == text
    assert format_string("=") == '"="'
    assert format_string("a: b") == "'a: b'"
    assert format_string("#x") == "'#x'"
    assert format_string("line\nbreak") == '"line\\nbreak"'


def test_go_float_format() -> None:
    cases = {
        0.5: "0.5",
        1.0: "1",
        1e6: "1e+06",
        123456.0: "123456",
        1234567.0: "1.234567e+06",
        0.0001: "0.0001",
        0.00001: "1e-05",
        -2.5: "-2.5",
        0.0: "0",
        math.inf: ".inf",
        -math.inf: "-.inf",
    }
    for value, expected in cases.items():
        assert format_float(value) == expected
    assert format_float(math.nan) == ".nan"


def test_signed_underscores_are_quoted() -> None:
    # Found by the property test below: plain "+_" crashed the reader, "+_1" read back as 1.
    for text in ("+_", "+_1", "-__", "+0_"):
        assert parse_yaml(render_go_yaml({"a": text}), "x")["a"] == text


def test_empty_document() -> None:
    assert render_go_yaml({}) == "{}\n"


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(min_size=1, max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=examples(300), deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=12), _values, max_size=6))
def test_reads_back_the_same(data: dict[str, Any]) -> None:
    text = render_go_yaml(data)
    loaded = parse_yaml(text, "rendered")
    assert to_plain(loaded if data else {}) == data


_TRICKY = st.text(
    alphabet=st.sampled_from("a1 :#-'\"\n\r\t\x85\u2028\u2029\ufeff\x7f"), max_size=12
)


@settings(max_examples=examples(500), deadline=None)
@given(st.text(max_size=30) | _TRICKY)
def test_any_string_reads_back_with_another_yaml_reader(text: str) -> None:
    """PyYAML (a YAML 1.1 reader, like most tools an operator points at an export) reads every
    string back unchanged. Reproduction: U+2028/U+2029 were written raw and PyYAML, which
    takes them for line breaks, refused the whole file."""
    import yaml

    rendered = render_go_yaml({"value": text, "list": [text]})
    assert yaml.safe_load(rendered) == {"value": text, "list": [text]}
    assert to_plain(parse_yaml(rendered, "rendered")) == {"value": text, "list": [text]}


def test_unicode_line_separators_are_escaped() -> None:
    for ch in ("\u2028", "\u2029", "\x85"):
        rendered = format_string(f"a{ch}b")
        assert ch not in rendered and rendered.startswith('"')


@settings(max_examples=examples(300), deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=30) | _TRICKY, max_size=4))
def test_the_round_trip_writer_is_safe_for_any_reader_too(data: dict[str, str]) -> None:
    """The other writer (ruamel, for a rewritten static config). Reproduction: it wrote
    U+2028 and NEL raw, and PyYAML read "p\\x85q" back as "p q"."""
    import yaml

    from dapi_config._yaml import dump_yaml

    text = dump_yaml(data)
    assert (yaml.safe_load(text) or {}) == data
    loaded = parse_yaml(text, "dumped")
    assert (to_plain(loaded) if loaded is not None else {}) == data
