"""Progress of a driver's loop: plain sentences when not on a terminal (at most one per interval, and
one at the end), a redrawn bar on a terminal, nothing when disabled."""
from __future__ import annotations

import io
import re

from tagger.pipeline.progress import Progress


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    with Progress(3000, "encode toy-rn", "image", stream=out, every_s=0.0, enabled=True) as bar:
        bar.update(1200)
        bar.update(1800)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert re.fullmatch(r"encode toy-rn: 1,200 / 3,000 images \(40 %\), [\d,.]+ images/s, about .+ left", lines[0])
    assert re.fullmatch(r"encode toy-rn: 3,000 / 3,000 images \(100 %\) in \d+ s", lines[-1]), lines
    assert len(lines) == 2


def test_lines_are_spaced_by_the_interval_and_a_failed_loop_has_no_final_line():
    out = io.StringIO()
    try:
        with Progress(10, "tag", "shard", stream=out, every_s=3600.0, enabled=True) as bar:
            for _ in range(5):
                bar.update()
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert out.getvalue() == ""  # no line within the interval, none claiming an end that did not come
    assert bar.done == 5


def test_a_terminal_gets_a_bar_and_disabled_shows_nothing():
    tty = io.StringIO()
    with Progress(4, "tag", "shard", stream=tty, tty=True, enabled=True) as bar:
        bar.update(4)
    assert "\r" in tty.getvalue() and "4/4" in tty.getvalue() and "shards" in tty.getvalue()
    quiet = io.StringIO()
    with Progress(4, "tag", "shard", stream=quiet, enabled=False, every_s=0.0) as bar:
        bar.update(4)
    assert quiet.getvalue() == ""
    assert Progress(1, "x", "image").line().startswith("x: 0 / 1 image (0 %)")


def test_unset_follows_the_process_switch_that_the_cli_turns_on():
    from tagger.pipeline import progress
    was = progress._SHOWN
    try:
        progress.show_progress(False)
        out = io.StringIO()
        with Progress(2, "tag", "shard", stream=out, every_s=0.0) as bar:
            bar.update(2)
        assert out.getvalue() == ""
        progress.show_progress(True)
        with Progress(2, "tag", "shard", stream=out, every_s=0.0) as bar:
            bar.update(2)
        assert out.getvalue().startswith("tag: 2 / 2 shards (100 %) in ")
    finally:
        progress.show_progress(was)
