"""`tagger serve` through its ASGI app (Starlette's test client) and as a real process: pages agree with
the catalog, a label pages through exactly its filtered tags, decisions are written at once and undone
to the state before, search by words and by image finds the right images with the model loaded once,
and what must be refused is: files not in the catalog, writes without the CSRF token or from another
site, other Host names, requests without the token of a remote bind, a remote bind without a token."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from servetools import ENV, ROOT, make_workspace, serving, sql
from starlette.testclient import TestClient

from tagger.catalog import Catalog
from tagger.errors import ConfigError
from tagger.serve import ServeConfig, create_app

pytestmark = pytest.mark.usefixtures("one_faiss_thread")
PAGE = 5


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    ws, truth, uris = make_workspace(tmp_path_factory.mktemp("serve"), n=24, runs=2)
    app = create_app(ServeConfig(workspace=ws.root, page_size=PAGE, who="tester"))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert app.state.serve.warmed.wait(120)  # its read-only open ends before the tests open the catalog
        yield ws, truth, uris, client, app


def csrf_of(client) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").text).group(1)


def image_ids_on(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<figure class="card[^"]*" data-image="(\d+)"', html)]


def tag_state(ws, image_id: int, label: str):
    return sql(ws, "SELECT positive, provenance, score FROM current_tags WHERE image_id = ? AND label = ?",
               [image_id, label])


def test_pages_render_and_agree_with_the_catalog(served):
    ws, _, uris, client, _ = served
    for url in ("/", "/review", "/diff", "/search", "/label/star", f"/image/{min(uris)}"):
        r = client.get(url)
        assert r.status_code == 200, (url, r.text[:500])
        assert "cdn" not in r.text.lower() and "https://" not in r.text  # nothing fetched from elsewhere
    n_pos = sql(ws, "SELECT count(*) FROM current_tags WHERE positive")[0][0]
    assert f'data-count="positives">{n_pos}<' in client.get("/").text
    image_id = min(uris)
    page = client.get(f"/image/{image_id}").text
    shown = dict(re.findall(r'<tr data-label="([^"]+)" data-positive="(true|false)"', page))
    expected = {lab: "true" if pos else "false" for lab, pos in sql(
        ws, "SELECT label, positive FROM current_tags WHERE image_id = ?", [image_id])}
    assert shown == expected
    assert client.get("/image/999999").status_code == 404
    for url in ("/image/99999999999999999999999", "/thumb/99999999999999999999999",
                "/search?like=99999999999999999999999"):  # past 64 bits: no image, not a server error
        assert client.get(url).status_code == 404, url
    assert client.get("/label/no-such-label").status_code == 404
    r = client.get("/label/star?min_conf=high")
    assert r.status_code == 400 and "min_conf must be a number" in r.text


def test_label_pages_through_its_filtered_tags_by_score(served):
    ws, _, _, client, _ = served
    expected = [i for i, in sql(ws, "SELECT t.image_id FROM current_tags AS t WHERE label = 'star' "
                                    "AND confidence >= 0.3 ORDER BY score DESC, uri")]
    assert PAGE < len(expected) < 24  # several pages, and the filter leaves some out
    seen, url = [], "/label/star?min_conf=0.3"
    while url:
        html = client.get(url).text
        seen += image_ids_on(html)
        nxt = re.search(r'<a rel="next" href="([^"]+)"', html)
        url = nxt.group(1).replace("&amp;", "&") if nxt else None
    assert seen == expected
    person = client.get("/label/star?provenance=person").text
    assert image_ids_on(person) == [i for i, in sql(ws, "SELECT image_id FROM current_tags WHERE label = 'star' "
                                                        "AND provenance = 'person' ORDER BY score DESC, uri")]


def test_decisions_are_written_at_once_and_undone(served):
    ws, _, uris, client, _ = served
    image_id = sorted(uris)[3]
    before = {lab: tag_state(ws, image_id, lab) for lab in ("star", "moon")}
    token = csrf_of(client)
    for label, decision in (("star", "accept"), ("moon", "reject")):
        r = client.post("/decide", data={"csrf": token, "image_id": image_id, "label": label, "decision": decision,
                                         "back": f"/image/{image_id}"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith(f"/image/{image_id}")
    assert tag_state(ws, image_id, "star")[0][:2] == (True, "person")
    assert tag_state(ws, image_id, "moon")[0][:2] == (False, "person")
    decided = set(sql(ws, "SELECT label, decision, who, source FROM review_decisions WHERE image_id = ?", [image_id]))
    assert decided == {("star", "accept", "tester", "app"), ("moon", "reject", "tester", "app")}
    page = client.get(f"/image/{image_id}").text  # a reload shows them
    assert 'data-label="star" data-positive="true" data-provenance="person" data-decision="accept"' in page
    # a second decision on the same pair, then two undos: back to the first, then to the model's state
    client.post("/decide", data={"csrf": token, "image_id": image_id, "label": "star", "decision": "reject"})
    assert tag_state(ws, image_id, "star")[0][:2] == (False, "person")
    client.post("/undo", data={"csrf": token, "image_id": image_id, "label": "star"})
    assert tag_state(ws, image_id, "star")[0][:2] == (True, "person")
    for label in ("star", "moon"):
        assert client.post("/undo", data={"csrf": token, "image_id": image_id, "label": label}).status_code == 200
        assert tag_state(ws, image_id, label) == before[label]
    assert sql(ws, "SELECT count(*) FROM review_decisions WHERE image_id = ?", [image_id]) == [(0,)]
    counts = sql(ws, "SELECT n_pos FROM current_label_counts WHERE label = 'star'")[0][0]
    assert counts == sql(ws, "SELECT count(*) FROM current_tags WHERE label = 'star' AND positive")[0][0]
    r = client.post("/undo", data={"csrf": token, "image_id": image_id, "label": "star"})
    assert r.status_code == 400 and "no decision" in r.text


def test_the_overview_counts_follow_decisions_from_the_app_and_from_elsewhere(served):
    """The overview's run totals are read once per state of the run (a full pass over its tags), and
    read again after any decision: the app's own, and one another process stores."""
    ws, _, uris, client, _ = served

    def shown() -> tuple[int, int]:
        html = client.get("/").text
        return int(re.search(r'data-count="positives">(\d+)<', html).group(1)), html.count("images by number")

    def truth() -> int:
        return sql(ws, "SELECT count(*) FROM current_tags WHERE positive")[0][0]

    before = truth()
    assert shown() == (before, 1)
    image_id = sorted(uris)[9]
    label = next(lab for lab, pos in sql(ws, "SELECT label, positive FROM current_tags WHERE image_id = ? "
                                             "ORDER BY label", [image_id]) if not pos)
    client.post("/decide", data={"csrf": csrf_of(client), "image_id": image_id, "label": label, "decision": "accept"})
    assert truth() == before + 1 and shown()[0] == before + 1
    with Catalog.open(ws.catalog) as cat:  # as `tagger review` does, in another process
        cat.record_decisions([(uris[image_id], label, "reject")], who="cli", source="cli")
    assert truth() == before and shown()[0] == before


def test_an_accept_the_run_did_not_keep_is_added_and_undo_removes_it(served):
    ws, _, uris, client, _ = served
    image_id = sorted(uris)[5]
    with_row = {lab for lab, in sql(ws, "SELECT label FROM current_tags WHERE image_id = ?", [image_id])}
    with Catalog.open(ws.catalog) as cat:
        cat.add_labels(["kite"])
    assert "kite" not in with_row
    token = csrf_of(client)
    client.post("/decide", data={"csrf": token, "image_id": image_id, "label": "kite", "decision": "accept"})
    page = client.get(f"/image/{image_id}").text
    assert 'data-label="kite" data-positive="true"' in page and "pending" in page  # the run lacks the label
    client.post("/undo", data={"csrf": token, "image_id": image_id, "label": "kite"})
    assert 'data-label="kite"' not in client.get(f"/image/{image_id}").text


def test_search_by_words_and_by_image(served):
    ws, truth, uris, client, app = served
    html = client.get("/search?q=a+star&k=5").text
    found = image_ids_on(html)
    assert len(found) == 5
    hits = sum("star" in truth[uris[i]] for i in found)
    base_rate = sum("star" in v for v in truth.values()) / len(truth)
    assert hits / 5 > base_rate, (hits, base_rate)
    clip = app.state.serve.searcher._clip
    client.get("/search?q=a+moon")
    assert app.state.serve.searcher._clip is clip  # loaded once
    target = sorted(uris)[7]
    like = image_ids_on(client.get(f"/search?like={target}&k=4").text)
    assert like[0] == target and len(like) == 4
    near = client.get(f"/image/{target}").text.split("Near neighbours", 1)[1]
    assert image_ids_on(near)[:3] == like[1:4]
    assert client.get("/search?like=abc").status_code == 400


# -- what is refused ------------------------------------------------------------------------------
def test_only_catalogued_files_are_served(served, tmp_path):
    ws, _, uris, client, _ = served
    image_id = min(uris)
    r = client.get(f"/image/{image_id}/file")
    assert r.status_code == 200 and r.content == open(uris[image_id], "rb").read()
    assert client.get(f"/thumb/{image_id}").headers["content-type"] == "image/jpeg"
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the web")
    for url in ("/image/999999/file", "/thumb/999999", f"/image/{secret}/file", "/image/..%2f..%2fetc%2fpasswd/file",
                "/assets/..%2fcatalog.duckdb", "/assets/../../catalog.duckdb", "/catalog.duckdb",
                "/thumb/" + "%2e%2e%2f" * 3 + "etc/passwd"):
        r = client.get(url)
        assert r.status_code == 404, url
        assert b"not for the web" not in r.content and b"root:" not in r.content


def test_a_file_is_served_only_as_the_image_encoded(served, tmp_path):
    """An error row (a link to a text file) and a catalogued image whose file was swapped after encoding
    are not served: the route must not read other files through a source folder."""
    ws, _, uris, client, _ = served
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0 not for the web")
    link = tmp_path / "passwd.jpg"
    link.symlink_to(secret)
    with Catalog.open(ws.catalog) as cat:
        (bad,) = cat.register_images([{"uri": str(link)}])
        cat.mark_errors([int(bad)], "decode failed: not an image")
    r = client.get(f"/image/{int(bad)}/file")
    assert r.status_code == 404 and b"not for the web" not in r.content and "was not read as an image" in r.text
    image_id = sorted(uris)[6]
    path = Path(uris[image_id])
    original = path.read_bytes()
    try:
        for swapped in (b"root:x:0:0 not for the web", original[:-1] + bytes([original[-1] ^ 1])):
            path.write_bytes(swapped)  # another content, then the same size with one byte changed
            r = client.get(f"/image/{image_id}/file")
            assert r.status_code in (404, 409) and b"not for the web" not in r.content and r.content != swapped
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        assert "changed after it was encoded" in client.get(f"/image/{image_id}/file").text
    finally:
        path.write_bytes(original)
    assert client.get(f"/image/{image_id}/file").content == original


def test_writes_need_the_csrf_token_and_this_site(served):
    ws, _, uris, client, _ = served
    image_id = sorted(uris)[2]
    form = {"image_id": image_id, "label": "star", "decision": "accept"}
    assert client.post("/decide", data=form).status_code == 403
    assert client.post("/decide", data={**form, "csrf": "guessed"}).status_code == 403
    r = client.post("/decide", data={**form, "csrf": csrf_of(client)}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert client.get("/decide").status_code == 405
    assert sql(ws, "SELECT count(*) FROM review_decisions WHERE image_id = ?", [image_id]) == [(0,)]
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 400  # DNS rebinding


def test_a_remote_bind_needs_a_token(served):
    ws = served[0]
    with pytest.raises(ConfigError, match="needs an access token"):
        create_app(ServeConfig(workspace=ws.root, host="0.0.0.0"))
    out = subprocess.run([sys.executable, "-m", "tagger.cli", "serve", "-w", str(ws.root), "--host", "0.0.0.0"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT, env=ENV)
    assert out.returncode == 2 and out.stderr.startswith("error:") and "--token" in out.stderr
    app = create_app(ServeConfig(workspace=ws.root, host="0.0.0.0", token="s3cret-token"))
    with TestClient(app, base_url="http://192.0.2.7") as client:
        assert client.get("/").status_code == 401
        assert client.get("/?token=wrong").status_code == 401
        assert client.get("/", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        r = client.get("/label/star?token=s3cret-token", follow_redirects=False)
        assert r.status_code == 303 and "token" not in r.headers["location"]
        assert client.get(r.headers["location"]).status_code == 200  # the cookie carries it now
        for sent, kept in (("/search?q=a%26b%20c&k=5&token=s3cret-token", "/search?q=a%26b%20c&k=5"),
                           ("/label/50%25%2Fx?token=s3cret-token", "/label/50%25%2Fx")):
            r = client.get(sent, follow_redirects=False)  # the address comes back as it was sent, encoded
            assert r.status_code == 303 and r.headers["location"] == kept, sent


def test_the_served_process_with_a_generated_token(served):
    ws = served[0]
    with serving(ws, "--host", "0.0.0.0", "--token", "auto", "--no-preload") as (url, _):
        parts = urlsplit(url)
        token = re.search(r"token=([\w-]+)", url).group(1)
        base = f"http://127.0.0.1:{parts.port}"
        assert httpx.get(base + "/health").status_code == 401
        assert httpx.get(base + "/health", headers={"Authorization": f"Bearer {token}"}).json()["ok"]


def test_undo_never_withdraws_a_decision_made_elsewhere_since(served):
    """The app accepts, then the person rejects with `tagger review`: the app's Undo is no longer offered,
    and an undo sent anyway is refused and leaves the later decision and its tag in place."""
    ws, _, uris, client, _ = served
    image_id = sorted(uris)[11]
    token = csrf_of(client)
    client.post("/decide", data={"csrf": token, "image_id": image_id, "label": "circle", "decision": "accept"})
    assert 'value="undo"' in client.get(f"/image/{image_id}").text
    with Catalog.open(ws.catalog) as cat:
        cat.record_decisions([(uris[image_id], "circle", "reject")], who="cli", source="cli")
    assert 'value="undo"' not in client.get(f"/image/{image_id}").text
    r = client.post("/undo", data={"csrf": token, "image_id": image_id, "label": "circle"})
    assert r.status_code == 400 and "replaced since" in r.text and "reject by cli" in r.text
    assert sql(ws, "SELECT decision, source FROM review_decisions WHERE image_id = ? AND label = 'circle'",
               [image_id]) == [("reject", "cli")]
    assert sql(ws, "SELECT positive, provenance FROM current_tags WHERE image_id = ? AND label = 'circle'",
               [image_id]) == [(False, "person")]
    r = client.post("/undo", data={"csrf": token, "image_id": image_id, "label": "circle"})
    assert r.status_code == 400 and "no decision" in r.text


def test_a_write_never_creates_a_catalog_that_was_moved_away(served, tmp_path):
    import shutil
    ws = served[0]
    copy = tmp_path / "copy"
    shutil.copytree(ws.root, copy)
    app = create_app(ServeConfig(workspace=copy, who="tester"))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        token = csrf_of(client)
        (copy / "catalog.duckdb").rename(tmp_path / "moved.duckdb")
        r = client.post("/decide", data={"csrf": token, "image_id": 1, "label": "star", "decision": "accept"})
        assert r.status_code == 400 and "no catalog at" in r.text
        assert not (copy / "catalog.duckdb").exists()


def test_a_page_past_the_last_is_not_found(served):
    client = served[3]
    assert client.get("/review?page=1").status_code == 200
    r = client.get("/review?page=999")
    assert r.status_code == 404 and "past the last page" in r.text
    assert client.get("/label/star?page=999").status_code == 404


def test_the_review_note_shows_only_a_decision_the_app_made(served):
    ws, _, uris, client, _ = served
    image_id = sorted(uris)[13]
    r = client.post("/decide", data={"csrf": csrf_of(client), "image_id": image_id, "label": "heart",
                                     "decision": "accept", "back": "/review"}, follow_redirects=False)
    page = client.get(r.headers["location"]).text
    assert 'id="note"' in page and "accepted heart" in page
    for spoof in (f"/review?done=reject&image={image_id}&label=heart", f"/review?done=accept&image={image_id}&label=moon"):
        assert 'id="note"' not in client.get(spoof).text, spoof  # an address claiming another decision


def test_search_like_an_unreadable_image_and_json_errors(served, tmp_path):
    """`?like=` an image that could not be read says so (it was 'not encoded yet'); a client asking for
    JSON gets its errors as JSON, not as an HTML page."""
    ws, _, uris, client, _ = served
    bad_file = tmp_path / "broken.jpg"
    bad_file.write_bytes(b"not a jpeg")
    with Catalog.open(ws.catalog) as cat:
        (bad,) = cat.register_images([{"uri": str(bad_file)}])
        cat.mark_errors([int(bad)], "decode failed: cannot identify image file")
    r = client.get(f"/search?like={int(bad)}")
    assert r.status_code == 400 and "could not be read (decode failed: cannot identify image file)" in r.text
    assert "not encoded yet" not in r.text
    assert client.get("/search?like=987654").status_code == 404
    json_only = {"Accept": "application/json"}
    form = {"image_id": sorted(uris)[3], "label": "no such label", "decision": "accept"}
    r = client.post("/decide", data={**form, "csrf": csrf_of(client)}, headers=json_only)
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/json")
    assert r.json()["ok"] is False and "no such label" in r.json()["error"]
    r = client.post("/decide", data={**form, "csrf": "guessed"}, headers=json_only)
    assert r.status_code == 403 and "CSRF" in r.json()["error"]
    r = client.post("/decide", data={**form, "label": "star", "csrf": csrf_of(client)}, headers=json_only)
    assert r.status_code == 200 and r.json()["ok"] is True
    r = client.post("/undo", data={**form, "label": "star", "csrf": csrf_of(client)}, headers=json_only)
    assert r.status_code == 200 and r.json()["ok"] is True


def test_the_diff_of_a_run_with_no_earlier_one_says_so(served):
    """The first run (or one whose predecessors were pruned) was compared with itself: all zeros."""
    ws, _, _, client, _ = served
    first, last = sql(ws, "SELECT min(run_id), max(run_id) FROM runs WHERE kind = 'tag'")[0]
    html = client.get(f"/diff?b={first}").text
    assert f"no earlier run of run {first} is kept to compare with" in html and 'data-count="gained"' not in html
    assert "nothing to compare" in client.get(f"/diff?a={last}&b={last}").text
    assert 'data-count="gained"' in client.get(f"/diff?a={first}&b={last}").text
    assert client.get("/diff?b=987654").status_code in (400, 404)


def test_a_thumbnail_is_made_only_from_the_bytes_encoded(served):
    """A file swapped for another picture after encoding showed the new picture as the image's thumbnail."""
    ws, _, uris, client, app = served
    image_id, other = sorted(uris)[9], sorted(uris)[10]
    path = Path(uris[image_id])
    original = path.read_bytes()
    (content_hash,) = sql(ws, "SELECT content_hash FROM images WHERE image_id = ?", [image_id])[0]
    for cached in Path(app.state.serve.renditions.thumbs.dir).rglob(f"{content_hash[:32]}.jpg"):
        cached.unlink()
    try:
        path.write_bytes(Path(uris[other]).read_bytes())  # another valid picture in its place
        for url in (f"/thumb/{image_id}", f"/image/{image_id}/preview"):
            assert client.get(url).status_code == 404, url
    finally:
        path.write_bytes(original)
    for url in (f"/thumb/{image_id}", f"/image/{image_id}/preview"):  # put back: shown again
        r = client.get(url)
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg", url
