"""The HTML reports open on a machine without internet: Data Docs and the DVC plots page.

The browser cannot resolve any host but 127.0.0.1 (see conftest), so a page that still pulls
its JavaScript from a CDN renders empty here, as it would offline.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from emergent.data.quality import Check, run_checks
from tests.browser.conftest import wait_for
from tests.conftest import ROOT
from tests.helpers import require

ASSETS = ROOT / "vendor"
TEMPLATE = ASSETS / "files" / "dvc_plots.html"


@pytest.fixture
def assets() -> Path:
    """The fetched offline assets (`make setup` fetches them; a skip, or under CI a failure,
    where they are missing)."""
    require(
        None
        if TEMPLATE.is_file()
        else "offline report assets not fetched (run `make assets`; needs npm)"
    )
    return ASSETS


# Resources the page loaded from anywhere but disk (there must be none).
REMOTE = (
    "performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('file:'))"
)
TABLE_ROWS = "document.querySelectorAll('table[data-toggle=table] tbody tr').length"


def data_docs(docs: Path, assets: Path | None) -> Path:
    """Data Docs for one tiny check (a passing and a failing expectation)."""
    import great_expectations.expectations as gxe

    frame = pd.DataFrame({"text": ["a", "b", None]})
    check = Check(
        "demo",
        "demo_train",
        frame,
        [
            gxe.ExpectColumnToExist(column="text"),
            gxe.ExpectColumnValuesToNotBeNull(column="text"),
        ],
    )
    run_checks([check], docs, assets)
    return docs / "index.html"


def test_data_docs_index_lists_the_validation_results_offline(
    browser, assets: Path, tmp_path: Path
) -> None:
    index = data_docs(tmp_path / "docs", assets)
    assert "cdn.jsdelivr.net" not in index.read_text(encoding="utf-8")
    browser.get(index.as_uri())
    assert wait_for(browser, f"{TABLE_ROWS} > 0")
    text = browser.execute_script("return document.body.innerText")
    assert "demo_train" in text and "Failed" in text  # the validation result and its status
    assert browser.execute_script(f"return {REMOTE}") == []
    browser.save_screenshot(str(tmp_path / "data_docs.png"))


def test_data_docs_with_cdn_links_are_empty_offline(browser, tmp_path: Path) -> None:
    """The control: GX's own links leave the index table empty without a network."""
    index = data_docs(tmp_path / "docs", None)
    browser.get(index.as_uri())
    browser.execute_script("return document.readyState")
    assert browser.execute_script(f"return {TABLE_ROWS}") == 0


def test_dvc_plots_page_draws_offline(browser, assets: Path, tmp_path: Path) -> None:
    out = tmp_path / "plots"
    dvc = Path(sys.executable).with_name("dvc")
    shown = subprocess.run(
        [str(dvc), "plots", "show", "--html-template", str(TEMPLATE), "-o", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "cdn.jsdelivr.net" not in html
    browser.get((out / "index.html").as_uri())
    # vega-embed draws each plot into a canvas; count canvases with non-blank pixels.
    drawn = wait_for(
        browser,
        """Array.from(document.querySelectorAll('canvas')).filter(c => {
             if (!c.width || !c.height) return false;
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
             for (let i = 0; i < d.length; i += 4) {
               if (d[i + 3] > 0 && (d[i] < 200 || d[i + 1] < 200 || d[i + 2] < 200)) return true;
             }
             return false;
           }).length""",
    )
    assert drawn >= 1
    assert browser.execute_script(f"return {REMOTE}") == []
    browser.save_screenshot(str(tmp_path / "dvc_plots.png"))
