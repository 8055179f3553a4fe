"""`tagger report`: a static site built from a small tagged workspace (12 toy scenes, two runs with
per-label thresholds, an error row), opened from disk in headless Chromium (Debian's chromium and
chromium-driver, through selenium): the overview, a label page and the diff page load without console
errors, their thumbnails render, their counts equal the SQL counts, the search box finds labels and
file names, and accept / reject clicks in the review queue download a file `tagger review import` takes."""
from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tagger.catalog import Catalog
from tagger.catalog.diff import run_diff
from tagger.cli import app
from tagger.toyworld.export import export_scenes
from tagger.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
MAX_IMAGES = 8
RUNS = (["circle", "square", "star", "heart"], ["circle", "square", "star", "triangle"])


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def make_workspace(base: Path, n: int = 12) -> tuple[Path, list[int]]:
    """Two loaded runs (the second current) over ``n`` toy scenes, scores higher where the scene shows
    the label, every label's threshold at 0; one image that could not be read."""
    truth = export_scenes(base / "images", n)
    uris = sorted(truth)
    rng = np.random.default_rng(0)
    runs = []
    with Catalog.open(Workspace.at(base / "ws").catalog) as cat:
        ids = [int(i) for i in cat.register_images([*uris, str(base / "images" / "broken.jpg")])]
        cat.mark_errors([ids[-1]], "cannot identify image file")
        for k, labels in enumerate(RUNS):
            cat.add_labels(labels)
            run = cat.start_run("tag", model_id="toy-rn", labels=labels, config={"tag": {"decision": "mixture"}})
            s = rng.normal(size=(n, len(labels))) + 1.5 * np.array([[lab in truth[u] for lab in labels] for u in uris])
            pq.write_table(pa.table({
                "image_id": np.repeat(ids[:n], len(labels)), "label": pa.array(labels * n),
                "score": s.ravel().astype(np.float32), "confidence": (1 / (1 + np.exp(-2 * s.ravel()))).astype(np.float32),
                "positive": s.ravel() >= 0}), base / f"run{k}.parquet")
            cat.save_run_thresholds(run, [{"label": lab, "threshold": 0.0, "present": True, "source": "fit", "mu0": 0.0,
                                           "sd0": 1.0, "mu1": 1.5, "sd1": 1.0, "prior": 0.3} for lab in labels])
            cat.load_tags(run, base / f"run{k}.parquet")
            cat.finish_run(run)
            cat.set_current(run)
            runs.append(run)
    return base / "ws", runs


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, Path, list[int]]:
    base = tmp_path_factory.mktemp("report")
    ws, runs = make_workspace(base)
    out = invoke("report", "-w", str(ws), "--against", str(runs[0]), "--max-images", str(MAX_IMAGES),
                 "--out", str(base / "site"), "--json")
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout.splitlines()[-1])
    assert summary["pages"] == 2 + len(RUNS[1]) + 1 and summary["no_preview"] == 0
    return ws, base / "site", runs


def sql(ws: Path, query: str, params=None) -> list[tuple]:
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        return cat.query(query, params)


def test_site_is_bounded_and_thumbnails_are_cached(report, tmp_path):
    ws, site, runs = report
    for page in site.glob("*.html"):
        assert page.read_text().count("<img ") <= MAX_IMAGES, page.name
    assert all(p.suffix == ".jpg" for p in (site / "thumbs").iterdir())
    again = invoke("report", "-w", str(ws), "--out", str(site), "--max-images", "2", "--json")
    summary = json.loads(again.stdout.splitlines()[-1])
    assert summary["thumbnails_made"] == 0 and summary["thumbnails"] <= 2 * (len(RUNS[1]) + 1)
    assert not (site / "diff.html").exists()  # the folder was replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    out = invoke("report", "-w", str(ws), "--out", str(tmp_path / "mine"))
    assert out.exit_code == 2 and "not a tagger report" in out.stderr
    out = invoke("report", "-w", str(ws), "--run", "99", "--out", str(tmp_path / "new"))
    assert out.exit_code == 2 and "unknown run 99" in out.stderr
    # a person's own files put into an earlier report are never deleted by the next one
    (site / "my notes.txt").write_text("keep")
    (site / "thumbs" / "mine").mkdir()
    (site / "thumbs" / "mine" / "photo.jpg").write_bytes(b"mine")
    out = invoke("report", "-w", str(ws), "--out", str(site))
    assert out.exit_code == 2 and "holding files it did not write (my notes.txt, thumbs/mine/photo.jpg)" in out.stderr
    assert (site / "my notes.txt").read_text() == "keep" and (site / "thumbs" / "mine" / "photo.jpg").exists()
    (site / "my notes.txt").unlink()
    shutil.rmtree(site / "thumbs" / "mine")
    invoke("report", "-w", str(ws), "--against", str(runs[0]), "--max-images", str(MAX_IMAGES), "--out", str(site))


# -- in the browser -------------------------------------------------------------------------------
def _screenshots_module():
    spec = importlib.util.spec_from_file_location("report_screenshots", ROOT / "scripts" / "report_screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    pytest.importorskip("selenium")
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("chromium and chromedriver (Debian: chromium, chromium-driver) are not installed")
    downloads = tmp_path_factory.mktemp("downloads")
    driver = _screenshots_module().chromium_driver(downloads)
    driver.downloads = downloads
    yield driver
    driver.quit()


def open_page(driver, site: Path, page: str) -> None:
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get((site / page).as_uri())
    assert driver.execute_script("return document.readyState") == "complete"
    problems = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert problems == [], problems


def thumbnails_render(driver) -> int:
    sizes = driver.execute_script("return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
    assert sizes and all(w > 0 for w in sizes), sizes
    return len(sizes)


def counts(driver, scope: str = "") -> dict[str, int]:
    els = driver.find_elements("css selector", f"{scope} [data-count]".strip())
    return {e.get_attribute("data-count"): int(e.text.strip().lstrip("+-")) for e in els}


def test_overview_counts_equal_sql(report, browser):
    ws, site, runs = report
    open_page(browser, site, "index.html")
    shown = counts(browser, ".facts")
    n_tags, n_pos, n_images = sql(ws, "SELECT count(*), count(*) FILTER (WHERE positive), count(DISTINCT image_id) "
                                      "FROM current_tags")[0]
    n_errors = sql(ws, "SELECT count(*) FROM images WHERE status = 'error'")[0][0]
    assert shown == {"labels": len(RUNS[1]), "images": n_images, "tags": n_tags, "positives": n_pos,
                     "reviewed": 0, "errors": n_errors}
    per_label = {r.get_attribute("data-label"): int(r.find_element("css selector", "[data-count]").text)
                 for r in browser.find_elements("css selector", "tr[data-label]")}
    assert per_label == dict(sql(ws, "SELECT label, n_pos FROM current_label_counts"))
    assert len(browser.find_elements("css selector", "svg.chart")) == 2


def test_label_page_thumbnails_threshold_and_counts(report, browser):
    ws, site, runs = report
    open_page(browser, site, "label-002-star.html")
    assert browser.find_element("tag name", "h1").text == "Label star"
    assert thumbnails_render(browser) <= MAX_IMAGES
    n_pos, n = sql(ws, "SELECT count(*) FILTER (WHERE positive), count(*) FROM current_tags WHERE label = 'star'")[0]
    assert counts(browser, ".facts") == {"positives": n_pos, "tags": n, "reviewed": 0}
    assert browser.find_elements("css selector", "svg line.threshold")
    above, below = (browser.find_elements("css selector", f".near > div:nth-child({k}) .card") for k in (1, 2))
    assert above and below and all("positive" in c.get_attribute("class") for c in above)
    assert not any("positive" in c.get_attribute("class") for c in below)


def test_diff_page_counts_and_thumbnails(report, browser):
    ws, site, runs = report
    open_page(browser, site, "diff.html")
    thumbnails_render(browser)
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        diff = run_diff(cat, runs[0], runs[1])
    assert counts(browser, ".facts") == {"labels-added": 1, "labels-removed": 1, "gained": diff["gained"],
                                         "lost": diff["lost"]}
    per_label = {s.get_attribute("data-label"): counts(browser, f'section[data-label="{s.get_attribute("data-label")}"]')
                 for s in browser.find_elements("css selector", "section.change")}
    assert per_label == {r["label"]: {"gained": r["gained"], "lost": r["lost"]} for r in diff["labels"]
                         if r["gained"] or r["lost"]}


def test_search_finds_labels_and_file_names(report, browser):
    ws, site, runs = report
    open_page(browser, site, "index.html")
    box = browser.find_element("id", "search")
    box.send_keys("tri")
    links = [a.get_attribute("href") for a in browser.find_elements("css selector", "#search-results a")]
    assert any(h.endswith("label-003-triangle.html") for h in links)
    box.clear()
    name = sql(ws, "SELECT uri FROM current_tags WHERE label = 'star' ORDER BY score DESC LIMIT 1")[0][0]
    box.send_keys(Path(name).stem)
    texts = [a.text for a in browser.find_elements("css selector", "#search-results a")]
    assert Path(name).name in texts


def test_review_queue_downloads_a_file_review_import_accepts(report, browser):
    ws, site, runs = report
    open_page(browser, site, "review.html")
    thumbnails_render(browser)
    items = browser.find_elements("css selector", "#queue li.item")
    assert 0 < len(items) <= MAX_IMAGES
    picks = [(items[0], "accept"), (items[1], "reject")]
    for item, choice in picks:
        item.find_element("css selector", f"button.{choice}").click()
    assert browser.find_element("id", "n-decided").text == "2"
    browser.find_element("id", "download").click()
    target = browser.downloads / f"decisions-run{runs[1]}.json"
    for _ in range(100):
        if target.exists() and target.stat().st_size:
            break
        time.sleep(0.1)
    doc = json.loads(target.read_text())
    wanted = {(i.get_attribute("data-uri"), i.get_attribute("data-label"), c) for i, c in picks}
    assert {(d["uri"], d["label"], d["decision"]) for d in doc["decisions"]} == wanted
    out = invoke("review", "import", str(target), "-w", str(ws), "--json")
    assert out.exit_code == 0, out.output
    rows = set(sql(ws, "SELECT uri, label, decision FROM reviews WHERE source = 'report'"))
    assert rows == wanted
    person = dict(((u, lab), p) for u, lab, p in sql(ws, "SELECT uri, label, positive FROM current_tags "
                                                         "WHERE provenance = 'person'"))
    assert person == {(u, lab): c == "accept" for u, lab, c in wanted}


def test_the_screenshot_script_writes_two_pngs(report, tmp_path):
    ws, site, runs = report
    pytest.importorskip("selenium")
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("chromium and chromedriver are not installed")
    assert _screenshots_module().main(["-w", str(ws), "--out", str(tmp_path), "--label", "star"]) == 0
    for name in ("report-overview.png", "report-label.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_older_report_without_a_file_list_keeps_what_it_did_not_write(tmp_path):
    from tagger.report.site import MARKER, _foreign
    (tmp_path / MARKER).write_text("a tagger report: `tagger report` replaces this folder\n")
    for name in ("index.html", "label-star.html", "thumbs/1.jpg", "assets/app.js", "notes.txt", "sub/page.html"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x")
    assert _foreign(tmp_path) == ["notes.txt", "sub/page.html"]
    (tmp_path / MARKER).write_text("a tagger report\nindex.html\nthumbs/1.jpg\n")  # a list: only those
    assert _foreign(tmp_path) == ["assets/app.js", "label-star.html", "notes.txt", "sub/page.html"]


def test_a_folder_named_like_the_marker_does_not_make_a_report(tmp_path):
    from tagger.errors import ConfigError
    from tagger.report.site import MARKER, _check_out
    (tmp_path / "site" / MARKER).mkdir(parents=True)
    (tmp_path / "site" / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="is not a tagger report"):
        _check_out(tmp_path / "site")


def test_a_long_label_name_in_the_bar_chart_ends_in_an_ellipsis_and_keeps_its_whole_name():
    import re

    from tagger.report.charts import bar_chart
    long = "a very long label name that goes on and on"
    svg = str(bar_chart([(long, 5, None), ("star", 3, "label-star.html")], "positives per label"))
    shown = [re.sub(r"<title>.*?</title>", "", t) for t in re.findall(r'<text[^>]*text-anchor="end">(.*?)</text>', svg)]
    assert shown == [long[:27] + "\u2026", "star"]
    assert f"<title>{long}</title>" in svg
