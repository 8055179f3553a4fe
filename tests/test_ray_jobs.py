"""End to end through a real Ray head: `ray job submit` encode, generate_text, train and tag jobs,
then check the tags in the DuckDB catalog against the toy ground truth."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from raytools import ENV, free_port, submit, wait_for_job_server

from tagger.catalog import Catalog
from tagger.evaluate.catalog_eval import score_current_tags
from tagger.toyworld import LABEL_SYNONYMS, LABELS

pytestmark = pytest.mark.ray
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head on 127.0.0.1 started with `ray start --head`, stopped afterwards."""
    port, dash = free_port(), free_port()
    env = ENV
    subprocess.run([str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                    "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--num-cpus", "2",
                    # own agent port: a Ray left behind by a killed process may hold the default one
                    "--dashboard-agent-listen-port", str(free_port()),
                    "--disable-usage-stats"], check=True, env=env, capture_output=True, timeout=180)
    address = f"http://127.0.0.1:{dash}"
    try:
        wait_for_job_server(address)
        yield address
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def trained(ray_head, toy_folder, tmp_path_factory) -> Path:
    """A workspace encoded, given a text corpus and a classifier by jobs submitted to the head."""
    folder, truth = toy_folder
    ws = tmp_path_factory.mktemp("jobs") / "ws"
    ws.mkdir()
    with Catalog.open(ws / "catalog.duckdb") as cat:
        cat.add_labels(list(LABELS), {k: list(v) for k, v in LABEL_SYNONYMS.items()})
    enc = submit(ray_head, "jobs.encode", "--workspace", str(ws), "--source", str(folder),
                 "--model", "toy-vit", "--partition-size", "16")
    assert enc["encoded"] == len(truth) and enc["errors"] == 2
    submit(ray_head, "jobs.generate_text", "--workspace", str(ws), "--n-sentences", "4000")
    submit(ray_head, "jobs.train", "--workspace", str(ws))
    return ws


def test_jobs_submitted_to_ray_head_tag_the_corpus(ray_head, trained, toy_folder, tmp_path):
    folder, truth = toy_folder
    ws = tmp_path / "ws"
    shutil.copytree(trained, ws)
    tag = submit(ray_head, "jobs.tag", "--workspace", str(ws))
    assert tag["n_images"] == len(truth) and tag["decision"] == "anchored"

    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        errors = dict(cat.query("SELECT uri, error FROM images WHERE status = 'error'"))
        assert {Path(u).name for u in errors} == {"corrupt.jpg", "empty.png"}
        assert all(errors.values())
        tagged = {u for (u,) in cat.query("SELECT DISTINCT uri FROM current_tags")}
        assert tagged == set(truth)
        assert cat.query("SELECT count(*) FROM current_thresholds")[0][0] == len(LABELS)
    res = score_current_tags(ws / "catalog.duckdb", truth)
    base_rate = 100 * np.mean([len(v) for v in truth.values()]) / len(LABELS)
    # well above chance (measured: 25.2 against a base rate of 14.4 with toy-vit on this folder)
    assert res["mAP"] > base_rate + 8, res
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        n_pos = cat.query("SELECT count(*) FROM current_tags WHERE positive")[0][0]
    assert res["positives_per_image"] == pytest.approx(n_pos / len(truth))
    assert 0 < res["positive_precision"] <= 1 and 0 < res["positive_recall"] <= 1, res


def decisions_and_tags(ws: Path) -> tuple[list[tuple], list[tuple]]:
    """The current run's thresholds (with the fitted components) and tags, run ids left out."""
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        run = cat.current_run()
        thr = cat.query("SELECT label, threshold, present, source, mu0, sd0, mu1, sd1, prior FROM run_thresholds "
                        "WHERE run_id = ? ORDER BY label", [run])
        tags = cat.query("SELECT uri, label, score, confidence, rank, positive FROM current_tags ORDER BY uri, label")
    return thr, tags


def test_killed_tag_job_rerun_keeps_thresholds_and_tags(ray_head, trained, tmp_path):
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    shutil.copytree(trained, clean)
    shutil.copytree(trained, crashed)
    submit(ray_head, "jobs.tag", "--workspace", str(clean))
    submit(ray_head, "jobs.tag", "--workspace", str(crashed), "--crash-after", "1", ok=False)
    with Catalog.open(crashed / "catalog.duckdb", read_only=True) as cat:
        (run,) = cat.runs(kind="tag")
        assert run.status == "running" and cat.run_thresholds(run.run_id)  # killed after its decisions
        assert cat.current_run() is None
    assert len(list((crashed / "runs").rglob("tags-*.parquet"))) >= 1
    submit(ray_head, "jobs.tag", "--workspace", str(crashed))
    a, b = decisions_and_tags(clean), decisions_and_tags(crashed)
    assert a[0] and a[0] == b[0]  # thresholds and mixture parameters
    assert a[1] and a[1] == b[1]  # every tag, score and confidence
    with Catalog.open(crashed / "catalog.duckdb", read_only=True) as cat:
        assert [r.status for r in cat.runs(kind="tag")] == ["current"]
