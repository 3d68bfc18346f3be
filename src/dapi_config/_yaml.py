"""The one YAML parser (ruamel.yaml, YAML 1.2) for static and legacy files.

YAML 1.2 semantics: ``yes``/``no``/``on``/``off`` stay strings. Duplicate keys are an error
that names the key and line. Round-trip loading keeps comments and key order so a file can be
rewritten without losing an operator's notes.

Two ways in. :func:`load_document` reads values (and where each top-level key starts) with
ruamel's libyaml-based C parser: a 10,000-node legacy file in about a second, where the
round-trip parser, which gathers every comment, takes tens of seconds. :func:`parse_yaml` gives
the round-trip tree, for the few edits that must keep comments inside what they change. Both
give the same values; a document the C path could read differently (a ``%YAML`` directive, an
explicit tag) or cannot read at all takes the round-trip path, which also words the errors.
"""

from __future__ import annotations

import datetime
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.resolver import VersionedResolver
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    FoldedScalarString,
    LiteralScalarString,
    PlainScalarString,
    SingleQuotedScalarString,
)

from dapi_config._text import YAML_PRINTABLE, needs_type_quotes
from dapi_config.errors import ConfigError


def round_trip_yaml() -> YAML:
    """A round-trip (comment-keeping) YAML 1.2 parser/emitter that rejects duplicate keys."""
    yaml = YAML(typ="rt")  # ruamel.yaml reads YAML 1.2 unless a document says otherwise
    yaml.allow_duplicate_keys = False
    yaml.preserve_quotes = True
    yaml.width = 4096
    for kind in _STRING_KINDS:
        yaml.representer.add_representer(kind, _represent_string)
    return yaml


#: ruamel writes U+2028, U+2029 and NEL raw in plain, quoted and block scalars, where YAML 1.1
#: readers (PyYAML; the predecessor's yaml.v3 for NEL) take them as line breaks: the value read
#: back differs, or the file does not parse. Such strings are written double-quoted, escaped.
_STRING_KINDS: tuple[type[str], ...] = (
    str,
    PlainScalarString,
    SingleQuotedScalarString,
    DoubleQuotedScalarString,
    LiteralScalarString,
    FoldedScalarString,
)


_ORIGINAL = {kind: RoundTripRepresenter.yaml_representers[kind] for kind in _STRING_KINDS}


def _represent_string(representer: Any, data: str) -> Any:
    escapes = not YAML_PRINTABLE.match(data.replace("\n", "").replace("\t", ""))
    # A plain ``no`` or ``1:30`` is a string to ruamel (YAML 1.2) but a bool or a number to
    # YAML 1.1 readers: quoted, it is a string to all of them.
    if escapes or (type(data) in (str, PlainScalarString) and needs_type_quotes(data)):
        return representer.represent_scalar("tag:yaml.org,2002:str", str(data), style='"')
    return _ORIGINAL.get(type(data), _ORIGINAL[str])(representer, data)


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML text: its values and where its top-level keys start."""

    #: The values as plain dicts, lists, str, int, float, bool and None (None: empty text).
    data: Any
    #: Top-level key -> (line, column), 0-based; empty unless the text is a block mapping.
    key_positions: dict[str, tuple[int, int]]
    text: str
    source: str

    def round_trip(self) -> Any:
        """The comment-keeping tree of the same text (parsed now: it is slow on big files)."""
        return parse_yaml(self.text, self.source)


#: Where the C path may read a text differently from the round-trip parser: a %YAML
#: directive (the round-trip parser honours 1.1 there) or an explicit tag (it keeps those as
#: tagged scalars). A tag starts a token; a "!" inside a word (a password) does not count.
_NEEDS_ROUND_TRIP = re.compile(r"^%|(?:^|[\s\[\]{},:-])!", re.MULTILINE)


class _Yaml12Resolver(VersionedResolver):
    """ruamel's YAML 1.2 resolver, told once that the version is 1.2: the texts read with it
    hold no %YAML directive, and working the version out again for every scalar is a third of
    the time a big file takes to load."""

    @property
    def processing_version(self) -> Any:
        return (1, 2)


def _fast_loader() -> YAML:
    yaml = YAML(typ="safe", pure=False)  # the libyaml C parser when ruamel.yaml.clib is there
    yaml.Resolver = _Yaml12Resolver
    yaml.allow_duplicate_keys = False
    return yaml


def load_document(raw: bytes | str, source: str) -> YamlDocument:
    """Parse YAML text into a :class:`YamlDocument`; errors name ``source``.

    Raises :class:`ConfigError` (with the line and column) for malformed text or a duplicate
    key.
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    if not _NEEDS_ROUND_TRIP.search(text):
        document = _fast_document(text, source)
        if document is not None:
            return document
    tree = parse_yaml(text, source)
    return YamlDocument(
        None if tree is None else to_plain(tree), _round_trip_positions(tree), text, source
    )


def _fast_document(text: str, source: str) -> YamlDocument | None:
    """The document read with the C parser, or None when it cannot read it (the round-trip
    parser then decides, and words the error)."""
    try:
        loader = _fast_loader()
        node = loader.compose(text)
        positions: dict[str, tuple[int, int]] = {}
        if isinstance(node, MappingNode):
            # Before construction, which folds merge keys (<<) into the mapping.
            for key, _value in node.value:
                positions[str(key.value)] = (key.start_mark.line, key.start_mark.column)
        data = None if node is None else to_plain(loader.constructor.construct_document(node))
    except Exception:
        return None
    return YamlDocument(data, positions, text, source)


def _round_trip_positions(tree: Any) -> dict[str, tuple[int, int]]:
    try:
        return {str(k): (tree.lc.key(k)[0], tree.lc.key(k)[1]) for k in tree}
    except (AttributeError, KeyError, TypeError):
        return {}


@dataclass(frozen=True)
class YamlFile:
    """A YAML file as read once: its bytes and their parsed document (handed on, never read
    or parsed again by whoever needs it next)."""

    path: Path
    raw: bytes
    document: YamlDocument


def read_yaml_document(path: str | os.PathLike[str]) -> tuple[YamlDocument, bytes]:
    """Parse ``path``; returns (its :class:`YamlDocument`, raw bytes).

    Raises :class:`ConfigError` naming the file (and line) for a missing, unreadable or
    malformed file, or a duplicate key.
    """
    file = Path(path)
    raw = _read_file(file)
    return load_document(raw, str(file)), raw


def _read_file(file: Path) -> bytes:
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{file}: config file not found (pass --config or set API_CONFIG_PATH; "
            "`dapi-config init` writes a new one)"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{file}: is a directory, expected a YAML config file") from None
    except PermissionError:
        raise ConfigError(f"{file}: permission denied reading the config file") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the config file: {exc.strerror}") from None
    return raw


def parse_yaml(raw: bytes | str, source: str) -> Any:
    """Parse YAML text; errors name ``source``."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    try:
        return round_trip_yaml().load(text)
    except DuplicateKeyError as exc:
        raise ConfigError(f"{source}: {_marked(exc, 'duplicate key')}") from None
    except MarkedYAMLError as exc:
        raise ConfigError(
            f"{source}: not valid YAML: {_marked(exc, exc.problem or 'error')}"
        ) from None
    except YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    except (IndexError, ValueError, TypeError, RecursionError) as exc:
        # ruamel's constructors can fail on odd scalars (a plain "+_" is an IndexError in its
        # int constructor) or deep nesting: still a bad file, never a traceback.
        raise ConfigError(f"{source}: not valid YAML: {type(exc).__name__}: {exc}") from None


def _marked(exc: MarkedYAMLError, default: str) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    problem = exc.problem or default
    if isinstance(exc, DuplicateKeyError):
        key = re.search(r'duplicate key "(.*?)"', problem)
        name = f' "{key.group(1)}"' if key else ""
        return f"duplicate key{name}{where}: each key may appear only once in a mapping"
    return f"{problem}{where}"


def to_plain(value: Any) -> Any:
    """Convert a round-trip document into plain dicts, lists, str, int, float, bool, None."""
    if isinstance(value, dict):
        return {
            str(k) if not isinstance(k, (int, float, bool)) else k: to_plain(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, datetime.datetime):
        # The round-trip parser's timestamps and the C path's datetimes print alike this way.
        return value.isoformat()
    return str(value)


def dump_yaml(data: Any, *, indent: int = 2) -> str:
    """Emit ``data`` (plain or round-trip) as YAML text."""
    yaml = round_trip_yaml()
    yaml.indent(mapping=indent, sequence=indent + 2, offset=indent)
    buf = io.StringIO()
    yaml.dump(data, buf)
    return buf.getvalue()
