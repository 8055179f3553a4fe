"""Tag query latency: the DuckDB catalog (project schema, sorted loads) against a plain Parquet scan.

    python bench/query.py [--rows 50000000] [--runs 2] [--tags-per-image 25] [--labels 1000]

A synthetic tag set is generated inside DuckDB with ``range()`` and hash-based pseudo-random
labels and scores: rows / (runs x tags-per-image) images, each with tags-per-image distinct labels
per run. Each run's tags are written to a Parquet file in generation (image-major) order, as the
tag stage writes them, then loaded with ``Catalog.load_tags`` into a fresh catalog file (the real
``tags`` table, sorted by (run_id, label, score DESC)); the last run is made current. Queries:
top-100 images of a label in the current run (with URI); images with labels A and B but not C;
tag counts per label. They run on the ``current_tags`` view, on the ``tags`` table with an
explicit run filter (for reference), and on the unsorted Parquet files with ``read_parquet``
(the baseline; an images Parquet file supplies URIs). Median of --repeat warm runs each; results
are checked to agree. ``ratio`` = catalog (view) latency / Parquet latency, per query. Label
counts are also read from ``current_label_counts``, the per-run summary written with the tags.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from tagger.catalog import Catalog

QUERIES = {
    "top_label": "SELECT image_id, uri, score FROM {tags} WHERE label = $a {run} "
                 "ORDER BY score DESC, image_id LIMIT 100",
    "a_and_b_not_c": "SELECT image_id FROM {tags} WHERE label IN ($a, $b, $c) {run} GROUP BY image_id "
                     "HAVING bool_or(label = $a) AND bool_or(label = $b) AND NOT bool_or(label = $c) "
                     "ORDER BY image_id",
    "label_counts": "SELECT label, count(*) AS n, count(*) FILTER (WHERE positive) AS n_pos "
                    "FROM {tags} WHERE true {run} GROUP BY label ORDER BY label",
}


def tag_select(run: int, n_images: int, per_image: int, labels: int) -> str:
    """SQL producing one run's tags: distinct labels per image (stride 37 < labels / per_image)."""
    return f"""
        SELECT image_id, 'label_' || lpad(CAST((hash(image_id) + k * 37) % {labels} AS VARCHAR), 4, '0')
                   AS label,
               CAST((hash(image_id, k, {run}) % 1000000) / 1e6 AS FLOAT) AS score,
               CAST(k + 1 AS SMALLINT) AS rank,
               (hash(image_id, k, {run}) % 1000000) >= 900000 AS positive
        FROM range(1, {n_images} + 1) AS i(image_id), range({per_image}) AS j(k)
        ORDER BY image_id, k"""


def build(cat: Catalog, tmp: Path, a: argparse.Namespace, n_images: int) -> tuple[list[str], dict]:
    """Images + per-run Parquet files + catalog loads; returns the files and timings."""
    con, times, files = cat.con, {}, []
    t0 = time.perf_counter()
    con.execute(f"INSERT INTO images (image_id, uri) SELECT i, 'file:///data/img/' || i || '.jpg' "
                f"FROM range(1, {n_images} + 1) AS r(i)")
    con.execute(f"COPY (SELECT image_id, uri FROM images) TO '{tmp / 'images.parquet'}' (FORMAT parquet)")
    times["images_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for run in range(1, a.runs + 1):
        path = tmp / f"tags-run{run}.parquet"
        con.execute(f"COPY (SELECT {run} AS run_id, * FROM ({tag_select(run, n_images, a.tags_per_image, a.labels)})) "
                    f"TO '{path}' (FORMAT parquet)")
        files.append(str(path))
    times["parquet_write_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_id = None
    for path in files:
        run_id = cat.start_run("tag", model_id="bench", labels=None)
        cat.load_tags(run_id, path, validate=a.validate)
        cat.finish_run(run_id)
    cat.set_current(run_id)
    con.execute("CHECKPOINT")
    times["catalog_load_s"] = time.perf_counter() - t0
    return files, times


def variants(files: list[str], tmp: Path, current: int) -> dict[str, tuple[str, str, str]]:
    """(FROM with URIs, FROM without, run filter) of each way of asking the same question."""
    scan = f"read_parquet({files!r})"
    return {"catalog view": ("current_tags", "current_tags", ""),
            "tags table": ("tags JOIN images USING (image_id)", "tags", f"AND run_id = {current}"),
            "parquet": (f"{scan} AS t JOIN read_parquet('{tmp / 'images.parquet'}') AS i USING (image_id)", scan,
                        f"AND run_id = {current}")}


def timed_median(con, sql: str, params: dict, repeat: int) -> tuple[float, list]:
    rows = con.execute(sql, params).fetchall()  # warm-up, and the result to compare
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        con.execute(sql, params).fetchall()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), rows


def run_queries(cat: Catalog, files: list[str], tmp: Path, a: argparse.Namespace) -> dict:
    current = cat.current_run()
    params = {"a": "label_0001", "b": "label_0038", "c": "label_0075"}
    out = {}
    for q, template in QUERIES.items():
        out[q], results = {}, {}
        for name, (with_uri, plain, run) in variants(files, tmp, current).items():
            sql = template.format(tags=with_uri if "uri" in template else plain, run=run)
            used = {k: v for k, v in params.items() if f"${k}" in sql}
            out[q][name], results[name] = timed_median(cat.con, sql, used, a.repeat)
        if len({json.dumps(r, default=str) for r in results.values()}) != 1:
            raise SystemExit(f"query {q}: the variants disagree")
        out[q]["result_rows"] = len(results["parquet"])
    summary = "SELECT label, n, n_pos FROM current_label_counts ORDER BY label"
    out["label_counts"]["summary view"], rows = timed_median(cat.con, summary, {}, a.repeat)
    if json.dumps(rows, default=str) != json.dumps(results_of_counts(cat, files, tmp, current), default=str):
        raise SystemExit("current_label_counts disagrees with counting the tags")
    return out


def results_of_counts(cat: Catalog, files: list[str], tmp: Path, current: int) -> list:
    with_uri, plain, run = variants(files, tmp, current)["parquet"]
    return cat.con.execute(QUERIES["label_counts"].format(tags=plain, run=run)).fetchall()


def report(a: argparse.Namespace, n_images: int, times: dict, res: dict) -> None:
    n_tags = n_images * a.runs * a.tags_per_image
    print(f"{n_tags:,} tag rows ({a.runs} runs x {n_images:,} images x {a.tags_per_image} labels of "
          f"{a.labels}); memory_limit {a.memory_limit}, threads {a.threads}; median of {a.repeat}")
    print("build: " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()) + f" (validate={a.validate})")
    print(f"{'query':<14} | {'rows':>6} | {'view ms':>8} | {'table ms':>8} | {'parquet ms':>10} | {'view/parquet':>12}")
    for q, r in res.items():
        print(f"{q:<14} | {r['result_rows']:>6} | {1e3 * r['catalog view']:>8.1f} | {1e3 * r['tags table']:>8.1f} | "
              f"{1e3 * r['parquet']:>10.1f} | {r['catalog view'] / r['parquet']:>12.3f}")
    lc = res["label_counts"]
    print(f"label counts from the per-run summary (current_label_counts): {1e3 * lc['summary view']:.2f} ms, "
          f"{lc['summary view'] / lc['parquet']:.4f} of parquet")
    print(json.dumps({"bench": "query", "rows": n_tags, "images": n_images, "runs": a.runs,
                      "ratio": {q: round(r["catalog view"] / r["parquet"], 3) for q, r in res.items()},
                      "label_counts_summary_ms": round(1e3 * res["label_counts"]["summary view"], 3),
                      "catalog_ms": {q: round(1e3 * r["catalog view"], 2) for q, r in res.items()},
                      "tags_table_ms": {q: round(1e3 * r["tags table"], 2) for q, r in res.items()},
                      "parquet_ms": {q: round(1e3 * r["parquet"], 2) for q, r in res.items()},
                      **{k: round(v, 2) for k, v in times.items()}}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=50_000_000, help="tag rows over all runs")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--tags-per-image", type=int, default=25)
    ap.add_argument("--labels", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--memory-limit", default="4GB")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-validate", dest="validate", action="store_false",
                    help="skip load_tags validation (unknown ids, repeated pairs)")
    a = ap.parse_args()
    if a.tags_per_image * 37 >= a.labels:
        raise SystemExit("need tags-per-image * 37 < labels for distinct labels per image")
    n_images = max(1, a.rows // (a.runs * a.tags_per_image))
    tmp = Path(tempfile.mkdtemp(prefix="tagger-bench-query-"))
    try:
        with Catalog.open(tmp / "catalog.duckdb", threads=a.threads) as cat:
            cat.con.execute(f"SET memory_limit = '{a.memory_limit}'")
            cat.con.execute(f"SET temp_directory = '{tmp / 'spill'}'")
            files, times = build(cat, tmp, a, n_images)
            res = run_queries(cat, files, tmp, a)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(a, n_images, times, res)


if __name__ == "__main__":
    main()
