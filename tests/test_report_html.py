"""index.html rendered by headless Chromium: the comparison table and every plot survive a real browser.

The page is loaded from a probe copy with one script appended, which records on load how many <img>
elements actually decoded (a broken data URI still leaves an <img> in the DOM, so counting tags is not enough).
"""

from __future__ import annotations

import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from sumrl import stages
from sumrl.report import run as report_run
from test_report import make_workspace, report_params

CHROMIUM = Path("/usr/bin/chromium")
PROBE = ('<script>window.addEventListener("load", () => { document.body.dataset.imagesDecoded = '
         '[...document.images].filter(i => i.complete && i.naturalWidth > 0).length; });</script></body>')

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install -y chromium)")


def chromium(*args: str, profile: Path) -> str:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--no-first-run", f"--user-data-dir={profile}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


class DomSummary(HTMLParser):
    """The parts of the rendered DOM the test checks: body attributes, images, and table rows by class."""

    def __init__(self):
        super().__init__()
        self.body: dict = {}
        self.images: list[dict] = []
        self.tables: list[dict] = []  # {"class": ..., "rows": [[cell text, ...], ...]}
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        elif tag == "img":
            self.images.append(attrs)
        elif tag == "table":
            self.tables.append({"class": attrs.get("class", ""), "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["rows"][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.mark.slow
def test_index_html_renders_table_and_every_plot(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    params = report_params()
    make_workspace(params)
    report_run(params)
    page = Path("reports/index.html")
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE))

    dom = DomSummary()
    dom.feed(chromium("--virtual-time-budget=5000", "--dump-dom", probe.resolve().as_uri(),
                      profile=tmp_path / "profile"))

    plots = sorted(p.name for p in Path("reports/plots").glob("*.png"))
    assert len(dom.images) == len(plots) == 5
    assert all(img["src"].startswith("data:image/png;base64,") for img in dom.images)
    assert dom.body.get("data-images-decoded") == str(len(plots)), "some embedded PNG did not decode"
    comparison = dom.tables[0]
    assert comparison["rows"][0][:4] == ["Policy", "ROUGE-1", "ROUGE-2", "ROUGE-L"]
    assert [row[0] for row in comparison["rows"][1:]] == stages.policies(params)
    samples = [t for t in dom.tables if t["class"] == "samples"]
    assert len(samples) == params["report"]["samples"]
    assert [row[0] for row in samples[0]["rows"][1:]] == ["reference", *stages.policies(params)]

    shot = tmp_path / "page.png"
    chromium("--window-size=1280,2000", f"--screenshot={shot}", page.resolve().as_uri(), profile=tmp_path / "profile")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
