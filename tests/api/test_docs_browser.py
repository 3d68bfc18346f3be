"""/docs and /redoc rendered in a real headless Chromium that cannot reach the internet:
the pages list every operation of the API (seen on main: empty pages on an air-gapped node,
since their scripts and fonts came from a CDN)."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import RunningServer


def _assert_offline(opened: Any) -> None:
    """Nothing left the machine, nothing of the server failed, no script broke, and the
    pages' policy stopped nothing (seen on main: ReDoc's menu asked for Redocly's logo from a
    CDN, an error in the browser's console)."""
    assert opened.foreign_requests == []
    assert opened.failed_requests == []
    assert opened.script_errors == []


def _operations(spec: dict[str, Any]) -> list[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "patch"}
    return sorted(
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in methods
    )


def test_swagger_ui_lists_every_operation_offline(
    running_server: RunningServer, browser_page: Any
) -> None:
    expected = _operations(running_server.client.get("/openapi.json").json())
    opened = browser_page(running_server.url)
    page = opened.page
    page.goto(f"{running_server.url}/docs")
    page.wait_for_selector(".opblock", state="attached")
    shown = sorted(
        (
            block.locator(".opblock-summary-method").inner_text().strip().upper(),
            block.locator(".opblock-summary-path").get_attribute("data-path") or "",
        )
        for block in page.locator(".opblock").all()
    )
    assert shown == expected
    assert page.title()
    _assert_offline(opened)


def test_redoc_lists_every_operation_offline(
    running_server: RunningServer, browser_page: Any
) -> None:
    spec = running_server.client.get("/openapi.json").json()
    expected = _operations(spec)
    opened = browser_page(running_server.url)
    page = opened.page
    page.goto(f"{running_server.url}/redoc")
    # ReDoc renders one section per operation, with its method and path in the right panel.
    page.wait_for_selector("[data-section-id^='operation/']", state="attached")
    sections = page.locator("[data-section-id^='operation/']").count()
    assert sections == len(expected)
    text = page.locator("body").inner_text()
    for method, path in expected:
        assert path in text, (method, path)
    assert spec["info"]["title"] in text
    _assert_offline(opened)
