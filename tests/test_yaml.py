"""The two ways into YAML agree: the C-parser path that loads values (and top-level key
positions) and the round-trip parser that keeps comments give the same values for every file
the product reads, and the same errors."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dapi_config._goyaml import render_go_yaml
from dapi_config._yaml import dump_yaml, load_document, parse_yaml, to_plain
from dapi_config.errors import ConfigError
from tests._examples import examples
from tests.conftest import EXAMPLE_CONFIG
from tests.legacy.test_eras import ERA_2025_01
from tests.legacy.test_later_eras import ERA_2024_URL, ERA_BASE_URL

DATA = Path(__file__).parent / "data"


def round_trip_values(text: str) -> Any:
    tree = parse_yaml(text, "t")
    return None if tree is None else to_plain(tree)


def round_trip_positions(text: str) -> dict[str, tuple[int, int]]:
    tree = parse_yaml(text, "t")
    return {str(k): (tree.lc.key(k)[0], tree.lc.key(k)[1]) for k in tree}


def same(a: Any, b: Any) -> bool:
    # NaN != NaN: compare floats by their representation.
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize(
    "text",
    [
        EXAMPLE_CONFIG,
        ERA_2025_01,
        ERA_2024_URL,
        ERA_BASE_URL,
        (DATA / "legacy_go_writer.yaml").read_text(),
        (DATA / "legacy_hand_edited.yaml").read_text(),
    ],
    ids=["example", "era-2025-01", "era-2024-url", "era-base-url", "go-writer", "hand-edited"],
)
def test_every_file_the_product_reads_loads_the_same_both_ways(text: str) -> None:
    document = load_document(text, "t")
    assert same(document.data, round_trip_values(text))
    assert document.key_positions == round_trip_positions(text)


@pytest.mark.parametrize(
    "text",
    [
        "a: yes\nb: no\nc: on\nd: off\n",  # YAML 1.2: strings
        "a: 0o17\nb: 017\nc: 0x1F\nd: 1_000\ne: +12\nf: -0\n",
        "a: 1:30\nb: 1e3\nc: .inf\nd: -.Inf\ne: .nan\nf: 0.1\n",
        "a: ~\nb: null\nc:\nd: ''\ne: \"\"\n",
        "a: 2001-12-14\nb: 2001-12-14t21:59:43.10-05:00\nc: 2001-12-14 21:59:43.10\n",
        "a: &x {b: 1}\nc: *x\n",
        "base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  y: 3\n",
        "%YAML 1.1\n---\na: yes\nb: 0777\n",  # the directive's semantics: the round-trip path
        "a: !!str 5\nb: !!int '7'\nc: !custom value\n",  # explicit tags: the round-trip path
        "password: abc!def\nurl: http://h/x?a=1#frag\n",
        "a: |\n  line one\n  line two\nb: >-\n  folded\n  text\n",
        "a: \"esc\\u2028aped\\t\"\nb: 'it''s'\n",
        "- 1\n- two\n",
        "just a scalar\n",
        "",
        "# only a comment\n",
        "{a: 1, b: [1, 2]}\n",
    ],
)
def test_the_tricky_corners_load_the_same_both_ways(text: str) -> None:
    assert same(load_document(text, "t").data, round_trip_values(text))


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\na: 2\n",
        "a: [1, 2\n",
        "a: b: c\n",
        "  - x\n y: 1\n",
        "a: 1\n---\nb: 2\n",
        "a: *missing\n",
        "\t- tab\n",
    ],
)
def test_bad_text_is_refused_with_the_round_trip_parsers_words(text: str) -> None:
    with pytest.raises(ConfigError) as fast:
        load_document(text, "file.yaml")
    with pytest.raises(ConfigError) as slow:
        parse_yaml(text, "file.yaml")
    assert fast.value.message == slow.value.message
    assert fast.value.message.startswith("file.yaml: ")


def test_bytes_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_document(b"a: \xff\n", "file.yaml")


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=True),
    st.text(max_size=20),
)
plain = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=4),
    ),
    max_leaves=20,
)


@settings(max_examples=examples(150), deadline=None)
@given(data=st.dictionaries(st.text(min_size=1, max_size=8), plain, max_size=6))
def test_what_the_product_writes_loads_the_same_both_ways(data: dict[str, Any]) -> None:
    """Files written by the product's two writers (ruamel's round-trip emitter, and the
    re-created Go yaml.v3 layout of the predecessor) read back alike on both paths."""
    ours = dump_yaml(data)
    assert same(load_document(ours, "t").data, round_trip_values(ours)), ours
    assert same(load_document(ours, "t").data, to_plain(data)), ours
    # Go's writer prints a float 0 as "0" (read back as an int by any reader): the two paths
    # must still agree with each other.
    go = render_go_yaml(data)
    assert same(load_document(go, "t").data, round_trip_values(go)), go
