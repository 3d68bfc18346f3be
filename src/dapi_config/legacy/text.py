"""Pure text surgery on a legacy config: drop the dynamic keys, keep every comment, the key
order and the formatting of the rest (no I/O)."""

from __future__ import annotations

import logging
import re
from typing import Any

from dapi_config._yaml import YamlDocument, dump_yaml, load_document, parse_yaml, to_plain
from dapi_config.legacy.parse import dynamic_keys_in

log = logging.getLogger("dapi_config.legacy")


# --- rewriting the config file to its static part --------------------------------------------

_LINE = re.compile(r"[^\n]*\n|[^\n]+\Z")


def strip_keys_text(
    text: str, key_positions: dict[str, tuple[int, int]], remove: set[str]
) -> str | None:
    """``text`` without the top-level entries ``remove``, every other byte kept.

    Works on lines: an entry runs from its key's line to its last content line; comment and
    blank lines after that (they usually introduce the next key) stay. The operator's comments
    inside a removed entry stay too, as comment lines at column 0 saying which key they were
    about (``# nodes.owner: the comment``). ``key_positions``: where each top-level key
    starts (:attr:`YamlDocument.key_positions`). Returns None when the document is not a plain
    block mapping at column 0 (then the caller falls back to a ruamel dump).
    """
    lines = _LINE.findall(text)
    if not key_positions:
        return None
    positions = sorted((line, col, key) for key, (line, col) in key_positions.items())
    if any(col != 0 for _, col, _ in positions) or len({ln for ln, _, _ in positions}) != len(
        positions
    ):
        return None
    replace: dict[int, str] = {}
    for i, (line, _col, key) in enumerate(positions):
        if key not in remove:
            continue
        end = positions[i + 1][0] if i + 1 < len(positions) else len(lines)
        last = line
        for j in range(line, end):
            stripped = lines[j].strip()
            if stripped and not stripped.startswith("#") and stripped not in ("...", "---"):
                last = j
        for j in range(line, last + 1):
            replace[j] = _comment_only(lines[j], str(key))
    return "".join(replace.get(i, line) for i, line in enumerate(lines))


def _comment_only(line: str, entry: str) -> str:
    """What stays of a line of the removed entry ``entry``: its comment, if any, as a comment
    line naming the key it was about; else nothing."""
    if "#" not in line:
        return ""  # most lines of a big registry: no need to scan them for quotes
    stripped = line.strip()
    if stripped.startswith("#"):
        comment: str | None = stripped
        key = ""
    else:
        comment = _trailing_comment(line)
        key = stripped.lstrip("- ").split(":", 1)[0].strip() if ":" in stripped else ""
    if comment is None:
        return ""
    where = entry if key in ("", entry) else f"{entry}.{key}"
    ending = "\r\n" if line.endswith("\r\n") else "\n"
    return f"# {where}: {comment.lstrip('#').strip()}{ending}"


def _trailing_comment(line: str) -> str | None:
    """The ``# ...`` at the end of a YAML line, outside quotes (None when there is none)."""
    quote: str | None = None
    i = 0
    while i < len(line):
        ch = line[i]
        if quote == "'":
            if ch == "'" and line[i + 1 : i + 2] == "'":
                i += 1
            elif ch == "'":
                quote = None
        elif quote == '"':
            if ch == "\\":
                i += 1
            elif ch == '"':
                quote = None
        elif ch in "'\"" and (i == 0 or line[i - 1] in " \t[{,:-"):
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[i:].rstrip("\r\n")
        i += 1
    return None


def static_text(document: YamlDocument, remove: set[str] | None = None) -> str:
    """The text of ``document`` (a mapping) without its dynamic keys, verified to parse to
    exactly the rest."""
    data = document.data
    remove = set(dynamic_keys_in(data)) if remove is None else remove
    expected = {k: v for k, v in data.items() if k not in remove}
    spliced = strip_keys_text(document.text, document.key_positions, remove)
    if spliced is not None:
        again = load_document(spliced, document.source).data
        if (again if again is not None else {}) == expected:
            return spliced
    source = document.source
    log.warning(
        "%s: the file's layout could not be kept line for line; writing it re-formatted "
        "(comments attached to the moved keys may be lost; the backup has them)",
        source,
    )
    doc = document.round_trip()
    for key in remove:
        del doc[key]
    return dump_yaml(doc) if len(doc) else ""


# --- blanking secrets inside sections ---------------------------------------------------------


def edit_nested_scalars(text: str, doc: Any, edits: dict[tuple[str, str], str | None]) -> str:
    """``text`` with ``section.key`` scalars replaced (``edits`` value: the new plain-YAML text
    of the value, e.g. ``'""'``) or their lines removed (None); every other byte kept.

    Only one-line entries are edited (a key whose value continues on following lines is
    refused). Raises ``ValueError`` when an entry cannot be edited in place or the result does
    not parse to exactly the intended data; the caller changes nothing then.
    """
    lines = _LINE.findall(text)
    expected = to_plain(doc)
    drop: set[int] = set()
    for (section, key), new in edits.items():
        mapping = doc.get(section)
        try:
            line, col = mapping.lc.key(key)
        except (AttributeError, KeyError, TypeError):
            raise ValueError(f"{section}.{key}: not a plain block entry") from None
        following = lines[line + 1] if line + 1 < len(lines) else ""
        if following.strip() and len(following) - len(following.lstrip(" ")) > col:
            raise ValueError(f"{section}.{key}: its value spans several lines")
        ending = "\n" if lines[line].endswith("\n") else ""
        if new is None:
            drop.add(line)
            del expected[section][key]
        else:
            lines[line] = f"{' ' * col}{key}: {new}{ending}"
            expected[section][key] = to_plain(parse_yaml(new, "value"))
    result = "".join(line for i, line in enumerate(lines) if i not in drop)
    again = parse_yaml(result, "edited")
    if (to_plain(again) if again is not None else {}) != expected:
        raise ValueError("the edited file would not read back as intended")
    return result
