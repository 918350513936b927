"""The HTML report in a real browser: headless Chromium loads ``report.html`` and dumps the DOM
after load — what a reader's browser actually builds, scripts run and all.

This catches what a parser-level test cannot: a ``<script>`` the browser would run (the injected
one sets ``document.title``), an element smuggled in by model text (``</details><img onerror>``),
an image that is not an embedded plot. Skipped only when Chromium is not installed
(``apt-get install -y chromium``; CI installs it).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.unit.report.test_report import BREAKOUT, PLOTS, SCRIPT, TITLE_SCRIPT, Page, make_inputs

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="/usr/bin/chromium is not installed (apt-get install -y chromium)")
pytestmark = [pytestmark, pytest.mark.slow]  # starts Chromium


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium offline: no sandbox (containers), no GPU, no background traffic."""
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--no-first-run", "--disable-extensions",
               f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    from collapselab.report.write import write_report

    return write_report(make_inputs(), tmp_path_factory.mktemp("report"))["report.html"]


@pytest.fixture(scope="module")
def dom(report_html, tmp_path_factory) -> str:
    result = _chromium(tmp_path_factory.mktemp("chromium-profile"), "--dump-dom", report_html.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    assert "</html>" in result.stdout, result.stderr[-2000:]
    return result.stdout


def test_no_injected_script_ran(dom):
    # the injected script would have renamed the page
    title = re.search(r"<title>(.*?)</title>", dom, flags=re.S).group(1)
    assert title == "collapse-demo — collapselab report"
    assert "PWNED" not in title
    page = Page(dom)
    assert page.count("script") == 0  # no script element at all in the live DOM


def test_only_the_plots_are_images(dom):
    page = Page(dom)
    images = [a for t, a in page.tags if t == "img"]
    assert len(images) == PLOTS
    assert all(a.get("src", "").startswith("data:image/png;base64,") for a in images)
    assert not any("onerror" in a for _, a in page.tags)
    # the </details> in a response did not close its block: every block still holds its examples
    assert page.count("details") == dom.count("</details>")


def test_tables_and_sections_are_in_the_dom(dom):
    page = Page(dom)
    assert page.count("table") >= 12
    ids = {a.get("id") for _, a in page.tags}
    assert {"summary", "plots", "tests", "concordance", "sources", "training", "examples", "config"} <= ids


def test_hostile_text_is_shown_as_text(dom):
    text = Page(dom).all_text
    for hostile in (SCRIPT, TITLE_SCRIPT, BREAKOUT):
        assert hostile in text, hostile
    # serialised back by the browser as escaped text, not as markup
    assert "&lt;script&gt;document.title='PWNED'&lt;/script&gt;" in dom


def test_screenshot_renders(report_html, tmp_path):
    """The page lays out and paints (a failed render leaves no PNG)."""
    shot = tmp_path / "shot.png"
    result = _chromium(tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2000",
                       "--hide-scrollbars", report_html.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
