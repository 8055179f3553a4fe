"""`tagger serve` in headless Chromium (the system's chromium and chromedriver through selenium, as the
report's tests drive them), against a real `tagger serve` process: accept and reject tags on an image's
page, reload and see them kept, undo; search by words and by image; page through a label with a
confidence filter; and the app answering, and keeping a decision, while a real nightly runs."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import time

import httpx
import pytest
from servetools import ENV, ROOT, make_workspace, serving, sql

pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def _driver():
    pytest.importorskip("selenium")
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("chromium and chromedriver (Debian: chromium, chromium-driver) are not installed")
    spec = importlib.util.spec_from_file_location("report_screenshots", ROOT / "scripts" / "report_screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.chromium_driver()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    ws, truth, uris = make_workspace(tmp_path_factory.mktemp("serve-browser"), n=24, runs=1)
    driver = _driver()
    try:
        with serving(ws, "--page-size", "5") as (url, _):
            yield ws, truth, uris, url.rstrip("/"), driver
    finally:
        driver.quit()


def visit(driver, url: str) -> None:
    driver.get_log("browser")
    driver.get(url)
    assert driver.execute_script("return document.readyState") == "complete"
    problems = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert problems == [], problems


def row_state(driver, label: str) -> tuple[str, str, str]:
    from selenium.webdriver.common.by import By
    row = driver.find_element(By.CSS_SELECTOR, f'#tags tr[data-label="{label}"]')
    return row.get_attribute("data-positive"), row.get_attribute("data-provenance"), row.get_attribute("data-decision")


def navigate(driver, act) -> None:
    """Do ``act`` (a click, a key press) that loads another page, and wait until that page has replaced
    this one and finished loading (on a busy machine the old page can still be there right after)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
    old = driver.find_element(By.TAG_NAME, "html")
    act()
    WebDriverWait(driver, 60).until(EC.staleness_of(old))
    WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")


def click(driver, label: str, action: str) -> None:
    from selenium.webdriver.common.by import By
    button = driver.find_element(By.CSS_SELECTOR, f'#tags tr[data-label="{label}"] button.{action}')
    navigate(driver, button.click)


def test_accept_reject_reload_undo(app):
    ws, _, uris, base, driver = app
    image_id = sorted(uris)[4]
    visit(driver, f"{base}/image/{image_id}")
    assert driver.execute_script("return document.getElementById('picture').naturalWidth") > 0
    before = {lab: row_state(driver, lab) for lab in ("star", "circle")}
    click(driver, "star", "accept")
    click(driver, "circle", "reject")
    driver.refresh()
    assert row_state(driver, "star") == ("true", "person", "accept")
    assert row_state(driver, "circle") == ("false", "person", "reject")
    assert set(sql(ws, "SELECT label, decision FROM review_decisions WHERE image_id = ?", [image_id])) == \
        {("star", "accept"), ("circle", "reject")}
    click(driver, "star", "undo")
    click(driver, "circle", "undo")
    visit(driver, f"{base}/image/{image_id}")
    assert {lab: row_state(driver, lab) for lab in ("star", "circle")} == before


def test_search_by_words_then_by_image(app):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    ws, truth, uris, base, driver = app
    visit(driver, base + "/")
    box = driver.find_element(By.ID, "search")
    navigate(driver, lambda: box.send_keys("a star", Keys.ENTER))
    cards = driver.find_elements(By.CSS_SELECTOR, "#results figure.card")
    assert len(cards) == 5 and "search" in driver.current_url
    first = int(cards[0].get_attribute("data-image"))
    assert "star" in truth[uris[first]]
    navigate(driver, cards[0].find_element(By.CSS_SELECTOR, "a").click)
    assert driver.current_url.endswith(f"/image/{first}")
    navigate(driver, driver.find_element(By.LINK_TEXT, "More like this").click)
    like = [int(c.get_attribute("data-image")) for c in driver.find_elements(By.CSS_SELECTOR, "#results figure.card")]
    assert like[0] == first and len(like) == 5


def test_label_paged_with_a_confidence_filter(app):
    from selenium.webdriver.common.by import By
    ws, _, _, base, driver = app
    visit(driver, base + "/")
    navigate(driver, driver.find_element(By.CSS_SELECTOR, 'table.labels tr[data-label="square"] a').click)
    box = driver.find_element(By.NAME, "min_conf")
    box.clear()
    box.send_keys("0.4")
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    def follow(element) -> None:  # click, then wait until the next page replaced this one
        element.click()
        WebDriverWait(driver, 60).until(EC.staleness_of(element))
    follow(driver.find_element(By.CSS_SELECTOR, "form.filters button"))
    seen = []
    while True:
        seen += [int(c.get_attribute("data-image")) for c in driver.find_elements(By.CSS_SELECTOR, ".images figure.card")]
        nxt = driver.find_elements(By.CSS_SELECTOR, 'section.images a[rel="next"]')
        if not nxt:
            break
        follow(nxt[0])
    expected = [i for i, in sql(ws, "SELECT image_id FROM current_tags WHERE label = 'square' AND confidence >= 0.4 "
                                    "ORDER BY score DESC, uri")]
    assert seen == expected and len(expected) > 5


@pytest.mark.ray
@pytest.mark.slow
def test_app_answers_and_keeps_a_decision_while_a_nightly_runs(tmp_path):
    ws, truth, uris = make_workspace(tmp_path, n=24, runs=1)
    first = sql(ws, "SELECT run_id FROM current_run")[0][0]
    image_id = next(i for i in sorted(uris) if "star" not in truth[uris[i]])
    with serving(ws, "--no-preload") as (url, _):
        client = httpx.Client(base_url=url.rstrip("/"), timeout=60)
        csrf = client.get("/").text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        cmd = [sys.executable, "-m", "jobs.nightly", "--workspace", str(ws.root), "--model", "toy-vit",
               "--n-sentences", "600", "--partition-size", "16"]
        nightly = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
        latencies, decided = [], False
        while nightly.poll() is None:
            for path in ("/", "/label/star", f"/image/{image_id}", "/review"):
                t = time.perf_counter()
                r = client.get(path)
                latencies.append(time.perf_counter() - t)
                assert r.status_code == 200, (path, r.text[:300])
            if not decided and len(latencies) >= 8:
                r = client.post("/decide", data={"csrf": csrf, "image_id": image_id, "label": "star",
                                                 "decision": "accept"}, follow_redirects=False)
                assert r.status_code == 303
                decided = nightly.poll() is None
            time.sleep(0.2)
        out, err = nightly.communicate()
        assert nightly.returncode == 0, err[-3000:]
        assert decided and len(latencies) > 8
        latencies.sort()
        assert latencies[int(0.95 * (len(latencies) - 1))] < 5.0, latencies[-5:]
        now = sql(ws, "SELECT run_id FROM current_run")[0][0]
        assert now != first
        assert sql(ws, "SELECT positive, provenance FROM current_tags WHERE image_id = ? AND label = 'star'",
                   [image_id]) == [(True, "person")]
        assert f'data-label="star" data-positive="true" data-provenance="person"' in client.get(f"/image/{image_id}").text
