"""The report in a real headless Chromium: it loads without console errors, every image
renders, and a screenshot is written (Debian's chromium driven by
Playwright from PyPI, no browser download)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed with apt-get when missing (root only); else a clear skip."""
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env, timeout=900,
                           capture_output=True)
        except (subprocess.SubprocessError, OSError) as exc:
            pytest.skip(f"apt-get install chromium failed: {exc}")
        path = shutil.which("chromium") or "/usr/bin/chromium"
        if not Path(path).exists():
            pytest.skip("apt-get ran but no chromium binary appeared")
    return path


def test_report_renders_in_headless_chromium(analyzed_store, chromium, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the PyPI package; "
                                                                  "no `playwright install` needed)")
    _store, out = analyzed_store
    page_path = out / "report" / "index.html"
    errors: list[str] = []
    shot = tmp_path / "report.png"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            images = page.evaluate("[...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
            tables = page.evaluate("document.querySelectorAll('table').length")
            # Every run's table, opened: its last columns (headline, W&B) must be on screen at 1400 px.
            page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
            edges = page.evaluate("""[...document.querySelectorAll('.runs table')].map(t => {
                const heads = [...t.querySelectorAll('th')].map(h => h.textContent);
                const cells = [...t.querySelectorAll('th, td')].map(c => c.getBoundingClientRect().right);
                return [heads, Math.max(...cells)]; })""")
            page_width = page.evaluate("document.documentElement.scrollWidth")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert len(images) == 5 and all(complete and width > 0 for _src, complete, width in images), images
    assert tables >= 5  # run counts, three tables (saliency has two parts), claims, runs
    assert shot.stat().st_size > 10_000
    assert edges and page_width <= 1400, (page_width, edges)
    for heads, right in edges:
        assert heads[-2:] == ["test headline", "W&B"] and right <= 1400, (heads, right)
