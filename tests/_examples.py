"""How many examples the property tests draw: all of them in ``make test`` (CI), a fifth in
``make test-fast`` (``DAPI_CONFIG_QUICK_PROPERTIES=1``), the inner loop that must stay short.
Read at import: the autouse clean_env fixture hides DAPI_* variables from the tests."""

from __future__ import annotations

import os

QUICK = os.environ.get("DAPI_CONFIG_QUICK_PROPERTIES", "").strip() not in ("", "0")


def examples(count: int) -> int:
    """``count``, or a fifth of it (at least 10) in the quick run."""
    return max(10, count // 5) if QUICK else count
