"""``docs/http-api.md`` and ``docs/cli.md`` are what ``scripts/reference_docs.py`` writes from
the code: a route or a command added, renamed or given another role shows here first."""

from __future__ import annotations

import subprocess
import sys

from tests.test_readme_tour import ROOT


def test_the_reference_tables_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "reference_docs.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_tables_hold_every_route_and_command() -> None:
    api = (ROOT / "docs" / "http-api.md").read_text()
    assert "| PUT | `/admin/v1/state/height` | write | Set height |" in api
    assert "| POST | `/admin/v1/tokens` | admin |" in api
    assert "| GET | `/readyz` | - | Readiness |" in api
    cli = (ROOT / "docs" / "cli.md").read_text()
    assert "| `dapi-config state schedule add` |" in cli
    assert "| `dapi-config tokens create` |" in cli
