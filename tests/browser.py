"""Open an HTML report in headless Debian Chromium (driven by Playwright) and say what it drew."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

CHROMIUM = "/usr/bin/chromium"
_FLAGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass(frozen=True)
class Rendered:
    """What the page showed: console errors, points drawn per plot, figures declared, seconds to draw."""

    errors: list[str]
    points: dict[str, int]
    declared: list[str]
    seconds: float


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's chromium, headless (``apt-get install chromium``, in .ci/install.sh)."""
    if shutil.which(CHROMIUM) is None:
        raise AssertionError(f"{CHROMIUM} not found: install Debian's chromium package (bash .ci/install.sh)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=_FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def render(browser: Browser, page_file: Path, screenshot: Path | None = None) -> Rendered:
    """Load ``page_file``, wait until every plot is drawn (60 s at most), optionally screenshot it."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    started = time.monotonic()
    page.goto(page_file.resolve().as_uri())
    page.wait_for_function("document.body.dataset.rendered !== undefined || false", timeout=60_000)
    seconds = time.monotonic() - started
    points = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('.aif-plot')]"
        ".map(d => [d.id, d.querySelector('.main-svg') ? Number(d.dataset.points || 0) : 0]))"
    )
    declared = page.evaluate("JSON.parse(document.getElementById('aif-figures').textContent).map(f => f.id)")
    if screenshot is not None:  # the top of the page: findings and the first plots
        page.set_viewport_size({"width": 1280, "height": 1800})
        page.screenshot(path=str(screenshot))
    page.close()
    return Rendered(errors, points, declared, seconds)
