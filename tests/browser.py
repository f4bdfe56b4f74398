"""A real headless Chromium for the web page tests: the `browser` fixture (a pytest plugin of
tests/conftest.py), used by tests/test_webpage.py and tests/test_heads.py.

Needs Debian's `chromium` and `chromium-driver` and the Python package `selenium`; a missing
one fails the test with the command that installs it (the page is a feature, not an extra).
"""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT = 60  # seconds for anything the page does (a translation takes well under a second)

# Every drawn heatmap cell: [row, col, source piece, target piece, weight, marked, colour].
CELLS_SCRIPT = """
return Array.from(document.querySelectorAll('#heatmap .cell')).map(cell => [
  Number(cell.dataset.row), Number(cell.dataset.col), cell.dataset.source,
  cell.dataset.target, Number(cell.dataset.weight), cell.classList.contains('marked'),
  getComputedStyle(cell).backgroundColor]);
"""


def require_browser() -> None:
    """Fail (not skip): the page is a feature, and these tests are how it is checked."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(f"the web page tests need Chromium and its driver; missing {missing}. "
                    "Install them with `apt-get install chromium chromium-driver`.")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail('the web page tests need selenium: pip install -e ".[test]"')


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for argument in ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", f"--user-data-dir={profile}", "--window-size=1280,1000",
                     "--lang=en-US"]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()
