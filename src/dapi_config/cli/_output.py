"""Where the CLI writes: stdout for results, stderr for everything said along the way, each a
rich ``Console`` made on first use."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from rich.console import Console


class _LazyConsole:
    """A rich ``Console`` made on first use: ``serve`` never prints through one, and rich costs
    it ~1.2 MiB resident."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def console(self) -> Console:
        """The rich ``Console`` itself (made now if need be)."""
        if self._console is None:
            from rich.console import Console  # noqa: PLC0415

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console(), name)


def rich_console(console: Console) -> Console:
    """The object behind :data:`stdout` or :data:`stderr`, for rich APIs that use it as a
    context manager or otherwise need the console itself (``Progress(console=...)``)."""
    lazy: Any = console
    return lazy.console() if isinstance(lazy, _LazyConsole) else console


#: Piped or redirected, tables take the width they need (a terminal's width otherwise), so a
#: script or a file never gets a cut path or model name.
stdout = cast(
    "Console", _LazyConsole(soft_wrap=True, width=None if sys.stdout.isatty() else 10_000)
)
stderr = cast("Console", _LazyConsole(stderr=True, soft_wrap=True))

#: Above this many rows a table is printed as plain aligned text: rich measures and wraps every
#: cell (20,000 nodes took half a minute), plain text is written at once.
RICH_TABLE_ROWS = 500


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """``rows`` under ``columns`` on stdout: a rich table (cells folded, never cut) for a
    screenful, plain columns two spaces apart for more."""
    if len(rows) <= RICH_TABLE_ROWS:
        from rich.table import Table  # noqa: PLC0415 - rich on first use

        table = Table(title=title)
        for column in columns:
            # fold, never "…": a table must not hide what an operator needs to copy
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*row)
        stdout.print(table)
        return
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = [title, "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.extend(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
    sys.stdout.write("\n".join(lines) + "\n")
