"""Console fixtures: a real headless browser (Playwright driving Debian's chromium, never a
browser Playwright downloads) and where the tests' screenshots go."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..conftest import ROOT, require

# `make screenshots` sets it to docs/console: the README shows the pages the tests took.
SCREENSHOTS_ENV = "SCORING_SCREENSHOTS"
BROWSER_ENV = "SCORING_BROWSER"


def chromium_path() -> str | None:
    """The browser binary: $SCORING_BROWSER, else chromium on PATH (Debian's package)."""
    configured = os.environ.get(BROWSER_ENV)
    if configured:
        return configured if Path(configured).exists() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless chromium under Playwright, for one test module: Playwright's sync API runs an
    event loop in this thread while it is open (asyncio.run elsewhere would fail), and its
    driver and the browser are child processes; both end with the module."""
    binary = chromium_path()
    require(binary is not None, "no chromium (make browser installs Debian's package)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "playwright is not installed (make install)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=binary, headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $SCORING_SCREENSHOTS (relative to the repo), else a temp dir."""
    configured = os.environ.get(SCREENSHOTS_ENV)
    folder = (ROOT / configured) if configured else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
