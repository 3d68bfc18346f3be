"""What text any YAML reader takes as it is, shared by both YAML writers: which characters
need an escape, and which words would read back as something other than a string."""

from __future__ import annotations

import re

#: Characters every YAML 1.1 and 1.2 reader (PyYAML, ruamel, Go's yaml.v3) reads back as
#: themselves outside an escape: printable, and none of the line breaks NEL (U+0085), LS
#: (U+2028), PS (U+2029), nor the BOM (U+FEFF), a surrogate, U+FFFE or U+FFFF. Anything else
#: is written as an escape in a double-quoted scalar.
YAML_PRINTABLE = re.compile(
    r"^[\x20-\x7e\u00a0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]*$"
)

# Words Go's yaml.v3 resolves to null/bool, plus the YAML 1.1 booleans it quotes on output.
_RESERVED = {
    "",
    "~",
    "null",
    "Null",
    "NULL",
    "true",
    "True",
    "TRUE",
    "false",
    "False",
    "FALSE",
    ".inf",
    ".Inf",
    ".INF",
    "+.inf",
    "+.Inf",
    "+.INF",
    "-.inf",
    "-.Inf",
    "-.INF",
    ".nan",
    ".NaN",
    ".NAN",
    "y",
    "Y",
    "yes",
    "Yes",
    "YES",
    "n",
    "N",
    "no",
    "No",
    "NO",
    "on",
    "On",
    "ON",
    "off",
    "Off",
    "OFF",
    "<<",
    "=",
}
_NUMBER_LIKE = re.compile(
    r"""^[-+]?(
        [0-9][0-9_]*(\.[0-9_]*)?([eE][-+]?[0-9]+)?   # 12, 1_000, 1.5, 1e5, 010
      | \.[0-9_]+([eE][-+]?[0-9]+)?                   # .5
      | 0[xX][0-9a-fA-F_]+ | 0[oO][0-7_]+ | 0[bB][01_]+
      | [0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?       # base 60 (YAML 1.1)
    )$""",
    re.VERBOSE,
)
# YAML 1.2 int as ruamel resolves it: a sign then digits/underscores only ("+_1" is 1, and "+_"
# even crashes its int constructor), so such strings need quotes too.
_SIGNED_UNDERSCORES = re.compile(r"^[-+][0-9_]+$")


def needs_type_quotes(text: str) -> bool:
    """True when ``text`` written plain would read back as null, a bool or a number."""
    return (
        text in _RESERVED or bool(_NUMBER_LIKE.match(text)) or bool(_SIGNED_UNDERSCORES.match(text))
    )
