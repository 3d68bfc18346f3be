"""The predecessor's YAML layout: what Go's ``yaml.v3`` wrote for a koanf map.

The old writer marshalled the whole config through a ``map[string]interface{}``, so every
mapping comes out with sorted keys, nested four spaces deep (sequences too: ``- `` sits under
its key, indented), strings that would read back as another type in double quotes, floats in
Go's shortest ``%g`` form (``1e+06``). :func:`render_go_yaml` reproduces that for plain data
(dict, list, str, int, float, bool, None), so the old binary reads the values it wrote.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from dapi_config._text import YAML_PRINTABLE, needs_type_quotes

INDENT = 4

# Characters that cannot start a plain scalar, and sequences that cannot appear in one.
_BAD_FIRST = set("-?:,[]{}#&*!|>'\"%@`")
_PRINTABLE = YAML_PRINTABLE
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _double_quoted(text: str) -> str:
    """YAML double-quoted style; anything not printable is escaped (\\x, \\u, \\U)."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif _PRINTABLE.match(ch):
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def _plain_ok(text: str) -> bool:
    if text != text.strip() or text[0] in _BAD_FIRST:
        return False
    if ": " in text or " #" in text or text.endswith(":") or "\t" in text:
        return False
    return bool(_PRINTABLE.match(text))


def format_string(text: str) -> str:
    """A string scalar the way yaml.v3 writes it: plain when safe, else quoted."""
    if needs_type_quotes(text):
        return _double_quoted(text)
    if _plain_ok(text):
        return text
    if _PRINTABLE.match(text) and "\n" not in text:
        return "'" + text.replace("'", "''") + "'"
    return _double_quoted(text)


def format_float(value: float) -> str:
    """Go's ``strconv.FormatFloat(v, 'g', -1, 64)`` with yaml.v3's names for inf and NaN."""
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)
    raw = "".join(str(d) for d in digits)
    ds = raw.rstrip("0")
    # Go's decimal point position: how many of the digits stand before the point.
    point = len(raw) + exponent
    neg = "-" if sign else ""
    exp = point - 1
    # Shortest %g switches to %e when the exponent is < -4 or >= 6 (Go: "if shortest
    # { eprec = 6 }"); the exponent has at least two digits.
    if exp < -4 or exp >= 6:
        mantissa = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{neg}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{neg}0.{'0' * -point}{ds}"
    if point >= len(ds):
        return f"{neg}{ds}{'0' * (point - len(ds))}"
    return f"{neg}{ds[:point]}.{ds[point:]}"


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, str):
        return format_string(value)
    raise TypeError(f"cannot write {type(value).__name__} in the legacy layout")


@functools.lru_cache(maxsize=4096)
def _key_text(key: str) -> str:
    # Keys repeat in every node of a registry: format each once.
    return format_string(key)


def _key(key: Any) -> str:
    if isinstance(key, int):  # bool included
        return _scalar(key)
    return _key_text(str(key))


# Plain data only (dict, list/tuple, scalars): concrete type checks keep rendering a
# 10,000-node registry fast (ABC isinstance checks cost several times more).
_MAPS = (dict,)
_SEQS = (list, tuple)


def _emit(value: Any, indent: int, out: list[str]) -> None:
    """Append the block lines of a non-empty mapping or sequence at ``indent``."""
    pad = " " * indent
    if isinstance(value, _MAPS):
        for key in sorted(value, key=str):
            item = value[key]
            head = f"{pad}{_key(key)}:"
            if isinstance(item, _MAPS + _SEQS) and item:
                out.append(head)
                _emit(item, indent + INDENT, out)
            else:
                out.append(f"{head} {_inline(item)}")
        return
    for item in value:
        if isinstance(item, _MAPS + _SEQS) and item:
            # "- key: v" then the other keys aligned under the first one.
            sub: list[str] = []
            _emit(item, indent + 2, sub)
            out.append(f"{pad}- {sub[0][indent + 2 :]}")
            out.extend(sub[1:])
        else:
            out.append(f"{pad}- {_inline(item)}")


def _inline(value: Any) -> str:
    if isinstance(value, _MAPS):
        return "{}"
    if isinstance(value, _SEQS):
        return "[]"
    return _scalar(value)


def _as_plain(value: Any) -> Any:
    """Other mappings and sequences as dicts and lists, recursively (cheap for plain data)."""
    if isinstance(value, _MAPS):
        return {k: _as_plain(v) for k, v in value.items()}
    if isinstance(value, _SEQS):
        return [_as_plain(v) for v in value]
    if isinstance(value, (str, int, float)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {k: _as_plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, bytes):
        return [_as_plain(v) for v in value]
    return value


def render_go_yaml(data: Mapping[str, Any]) -> str:
    """``data`` as the predecessor's Go writer laid it out (sorted keys, 4-space indent)."""
    out: list[str] = []
    if data:
        _emit(_as_plain(data), 0, out)
    else:
        out.append("{}")
    return "\n".join(out) + "\n"
