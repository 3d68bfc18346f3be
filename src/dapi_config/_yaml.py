"""The one YAML parser (ruamel.yaml, YAML 1.2) for static and legacy files.

YAML 1.2 semantics: ``yes``/``no``/``on``/``off`` stay strings. Duplicate keys are an error
that names the key and line. Round-trip loading keeps comments and key order so a file can be
rewritten without losing an operator's notes.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.representer import RoundTripRepresenter
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


def read_yaml_file(path: str | os.PathLike[str]) -> tuple[Any, bytes]:
    """Parse ``path``; returns (round-trip document or None when empty, raw bytes).

    Raises :class:`ConfigError` naming the file (and line) for a missing, unreadable or
    malformed file, or a duplicate key.
    """
    file = Path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{file}: config file not found (pass --config or set API_CONFIG_PATH)"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{file}: is a directory, expected a YAML config file") from None
    except PermissionError:
        raise ConfigError(f"{file}: permission denied reading the config file") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the config file: {exc.strerror}") from None
    return parse_yaml(raw, str(file)), raw


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
    return str(value)


def dump_yaml(data: Any, *, indent: int = 2) -> str:
    """Emit ``data`` (plain or round-trip) as YAML text."""
    yaml = round_trip_yaml()
    yaml.indent(mapping=indent, sequence=indent + 2, offset=indent)
    buf = io.StringIO()
    yaml.dump(data, buf)
    return buf.getvalue()
