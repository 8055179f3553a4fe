"""Inputs people give the catalog verbs that ended in tracebacks: a CSV field over the csv module's
limit, JSON nested 10^5 deep, a query that is not UTF-8. Each is one `error:` line, exit status 2,
nothing stored."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tagger.catalog import Catalog
from tagger.cli import app
from tagger.catalog.readonly import check_read_only
from tagger.errors import ConfigError, ReadOnlyQueryError
from tagger.export.kwmap import read_mapping
from tagger.workspace import Workspace

runner = CliRunner()


@pytest.fixture
def ws(labelled_workspace) -> Path:
    return labelled_workspace(["star", "moon"])


def invoke(ws: Path, *args: str):
    return runner.invoke(app, [*args, "-w", str(ws)], catch_exceptions=False)


def decisions(ws: Path) -> list:
    with Catalog.open(Workspace(ws).catalog, read_only=True) as cat:
        return cat.query("SELECT * FROM review_decisions")


def test_a_csv_field_over_the_csv_limit_is_one_error_line(ws, tmp_path):
    big = tmp_path / "big.csv"
    big.write_text('uri,label,decision\n"' + "x" * 200_000 + '",star,accept\n')
    out = invoke(ws, "review", "import", str(big))
    assert out.exit_code == 2 and "field larger than field limit" in out.stderr, out.output
    assert decisions(ws) == []
    with pytest.raises(ConfigError, match="cannot read mapping file"):
        read_mapping(big, ["star"])


def test_json_nested_too_deep_is_one_error_line(ws, tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    out = invoke(ws, "review", "import", str(deep))
    assert out.exit_code == 2 and "nests too deeply" in out.stderr, out.output
    assert decisions(ws) == []


def test_a_query_that_is_not_utf8_is_one_error_line(ws):
    query = "SELECT '" + os.fsdecode(b"caf\xe9") + "'"  # what a Latin-1 terminal hands over
    out = invoke(ws, "sql", query)
    assert out.exit_code == 2 and "not UTF-8" in out.stderr, out.output
    with pytest.raises(ReadOnlyQueryError, match="not UTF-8"):
        check_read_only(query)


def test_output_to_a_full_disk_is_one_error_line(ws):
    import subprocess
    import sys
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "tagger.cli", "labels", "list", "--json", "-w", str(ws)],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 2 and "error: No space left on device" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_files_saved_as_utf16_or_conflicting_are_one_error_line(ws, tmp_path):
    """A decisions, mapping or labelled file saved as UTF-16 (as spreadsheets do) says so; a decisions
    file giving one image and label two decisions is refused whole (which one was meant cannot be told)."""
    rows = "uri,label,decision\n/p/a.jpg,star,accept\n"
    wide = tmp_path / "wide.csv"
    wide.write_bytes(rows.encode("utf-16"))
    out = invoke(ws, "review", "import", str(wide))
    assert out.exit_code == 2 and "is UTF-16 text: save it as UTF-8" in out.stderr, out.output
    with pytest.raises(ConfigError, match="UTF-16"):
        read_mapping(wide, ["star"])
    from tagger.pipeline.calibration import read_labelled_file
    with pytest.raises(ConfigError, match="labelled file .* is UTF-16 text") as err:  # not the raw bytes it holds
        read_labelled_file(wide)
    assert "\x00" not in str(err.value)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("keyword,label\nSonne,star\nCafé,moon\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xe9 on line 3\)"):
        read_mapping(latin, ["star", "moon"])
    uri = str(tmp_path / "a.jpg")
    with Catalog.open(Workspace(ws).catalog) as cat:
        cat.register_images([uri])
    both = tmp_path / "both.csv"
    both.write_text(f"uri,label,decision\n{uri},star,accept\n{uri},moon,accept\n{uri},star,reject\n")
    out = invoke(ws, "review", "import", str(both))
    assert out.exit_code == 2 and "'accept' in decision 1 and 'reject' in decision 3" in out.stderr, out.output
    assert decisions(ws) == []
    same = tmp_path / "same.csv"  # the same decision twice is one decision
    same.write_text(f"uri,label,decision\n{uri},star,accept\n{uri},star, Accept\n")
    assert invoke(ws, "review", "import", str(same)).exit_code == 0 and len(decisions(ws)) >= 1
