"""A real browser for the tests: Debian's ``chromium`` driven by Playwright for Python.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium`` (or the one
``DAPI_CONFIG_TEST_CHROMIUM`` names), headless, with the flags that keep it off the network.
Every request a page makes to anything but the server under test is refused and recorded, so a
page that needs the internet fails its test the way it would fail on an air-gapped node.

Where Chromium or Playwright is missing the tests that need them skip with the reason; with
``DAPI_CONFIG_REQUIRE_BROWSER=1`` (set by ``.ci/run``) they fail instead."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Request, Route

# Read at import: the autouse clean_env fixture strips DAPI_* from each test's environment.
CHROMIUM = Path(os.environ.get("DAPI_CONFIG_TEST_CHROMIUM", "").strip() or "/usr/bin/chromium")
REQUIRED = os.environ.get("DAPI_CONFIG_REQUIRE_BROWSER", "").strip() not in ("", "0")

#: No sandbox: CI runs as root, where Chromium's sandbox refuses to start. The rest keep a
#: headless browser from calling home (updates, safe browsing, first-run pages) on a machine
#: with no network: without them it stalls on refused connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-gpu",
]


def unavailable(reason: str) -> None:
    """Skip (or, when a browser is required, fail) with ``reason``."""
    if REQUIRED:
        pytest.fail(f"a browser is required (DAPI_CONFIG_REQUIRE_BROWSER=1) but {reason}")
    pytest.skip(f"no browser: {reason}")


@dataclass
class BrowserPage:
    """A fresh page that may reach only ``allowed_origin``; what else it asked for is kept."""

    page: Page
    allowed_origin: str
    #: URLs the page tried to load from anywhere else (refused).
    foreign_requests: list[str] = field(default_factory=list)
    #: Requests to the server that failed at the network level (not HTTP errors).
    failed_requests: list[str] = field(default_factory=list)
    #: Errors the page's scripts threw or logged.
    script_errors: list[str] = field(default_factory=list)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    """One headless Chromium for the session (each test gets its own context)."""
    if importlib.util.find_spec("playwright") is None:
        unavailable("Playwright for Python is not installed (pip install '.[dev]')")
    if not CHROMIUM.is_file():
        unavailable(f"{CHROMIUM} is missing (Debian: apt-get install chromium)")
    from playwright.sync_api import Error, sync_playwright

    with tempfile.TemporaryDirectory(prefix="dapi-browser-") as home:
        # Chromium writes its crash and config folders under HOME; keep them out of the user's.
        env = {**os.environ, "HOME": home}
        with sync_playwright() as playwright:
            try:
                browser = playwright.chromium.launch(
                    executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, env=env
                )
            except Error as exc:
                unavailable(f"{CHROMIUM} did not start: {exc.message.splitlines()[0]}")
            try:
                yield browser
            finally:
                browser.close()


@pytest.fixture
def browser_page(chromium: Browser) -> Iterator[Any]:
    """``browser_page(base_url)`` → a :class:`BrowserPage` confined to ``base_url``'s origin."""
    contexts = []

    def open_page(base_url: str) -> BrowserPage:
        context = chromium.new_context(service_workers="block")
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        opened = BrowserPage(page=page, allowed_origin=_origin(base_url))

        def gate(route: Route, request: Request) -> None:
            if _origin(request.url) == opened.allowed_origin or request.url.startswith(
                ("data:", "blob:", "about:")
            ):
                route.continue_()
            else:
                opened.foreign_requests.append(request.url)
                route.abort("blockedbyclient")

        def failed(request: Request) -> None:
            if _origin(request.url) == opened.allowed_origin:
                opened.failed_requests.append(f"{request.url}: {request.failure}")

        page.route("**/*", gate)
        page.on("requestfailed", failed)
        page.on("pageerror", lambda exc: opened.script_errors.append(str(exc)))
        page.on(
            "console",
            lambda message: (
                opened.script_errors.append(message.text) if message.type == "error" else None
            ),
        )
        return opened

    yield open_page
    for context in contexts:
        context.close()
