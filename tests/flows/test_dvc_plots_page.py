"""`dvc plots show` draws the project's Vega plots without a network (stages/plots_page.py), checked in headless
Chromium with every http(s) request blocked, as on a cluster without internet.

The project's own plot definitions (dvc.yaml `plots:`) and committed plot data (metrics/plots/*.json) in a scratch
DVC repository: with the offline template every Vega plot is drawn; with DVC's own page (Vega from a CDN) none is,
which is what a user without internet saw before.
"""
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stages import plots_page
from tests.chromium import Chromium, find_chromium

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="!!! BROWSER TESTS SKIPPED: no chromium on PATH "
                                                         "(apt-get install chromium; .ci/run installs it)")
DRAWN = "document.querySelectorAll('.vega-embed canvas, .vega-embed svg.marks').length"


def dvc(*args: str, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A DVC repository with the project's plot definitions and data; the number of Vega plots it defines."""
    repo = tmp_path_factory.mktemp("plots")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc("init", "-q", cwd=repo)
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    data = {f for definition in plots for spec in definition.values() for f in spec["y"]}
    for f in data:
        if (ROOT / f).exists():  # validation_curves.json is absent when train.validation is off
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / f, repo / f)
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots}, sort_keys=False))
    return repo


def drawn(page: Path, expected: int, wait: float) -> int:
    """How many of the page's Vega plots drew something (a canvas or an SVG of marks), http(s) blocked; polls up
    to `wait` seconds for all `expected`. A screenshot lands beside the page."""
    with Chromium(CHROMIUM, width=1400, height=1600) as browser:
        browser.send("Network.enable")
        browser.send("Network.setBlockedURLs", {"urls": ["http://*", "https://*"]})
        browser.goto(page.as_uri())
        deadline = time.monotonic() + wait
        while (count := browser.evaluate(DRAWN) or 0) < expected and time.monotonic() < deadline:
            time.sleep(0.5)
        browser.screenshot(page.with_suffix(".png"), full_page=True)
        return count


def test_offline_template_draws_every_vega_plot_without_network(repo):
    dvc("plots", "show", "-o", "cdn", cwd=repo)
    cdn_page = repo / "cdn/index.html"
    assert "cdn.jsdelivr.net" in cdn_page.read_text()  # DVC's own page: the libraries from a CDN

    template = plots_page.install(repo)
    assert template == repo / ".dvc/offline-plots.html"
    assert "html_template = offline-plots.html" in (repo / ".dvc/config.local").read_text()
    dvc("plots", "show", "-o", "offline", cwd=repo)
    page = repo / "offline/index.html"
    html = page.read_text()
    assert "<script src=" not in html and "cdn.jsdelivr.net" not in html
    expected = html.count("vegaEmbed(")  # one call per Vega plot DVC put on the page
    assert expected >= 3, html[-3000:]

    assert drawn(page, expected, wait=30) == expected, f"screenshot: {page.with_suffix('.png')}"
    # the same plots on DVC's own page, no network: nothing drawn (what a user without internet saw before)
    assert drawn(cdn_page, expected, wait=5) == 0
