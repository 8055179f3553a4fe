"""What every job entry point shares: it runs one ``tagger`` verb, with that verb's own options.

A job parses nothing of its own but ``--log-level``: the rest of its command line goes to the
command-line verb (:mod:`tagger.cli`), so a job and the verb it wraps accept the same options,
build the same configs, and fail the same way (one ``error:`` line, exit status 2). A job always
prints its summary as one JSON line (``--json``) and needs ``--workspace`` (or ``$TAGGER_WORKSPACE``):
on a cluster the current directory is rarely where the workspace lives.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from tagger.cli import main as cli_main

__all__ = ["run_verb"]


def _has_workspace(argv: list[str]) -> bool:
    return bool(os.environ.get("TAGGER_WORKSPACE")) or any(
        a in ("--workspace", "-w") or a.startswith("--workspace=") for a in argv)


def run_verb(verb: str, argv: list[str] | None = None) -> None:
    """Run ``tagger VERB ARGV --json`` as this job; ``--log-level`` (default INFO) sets the logging level."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--log-level", default=os.environ.get("TAGGER_LOG_LEVEL", "INFO"))
    known, rest = pre.parse_known_args(sys.argv[1:] if argv is None else argv)
    asking_help = any(a in ("--help", "-h") for a in rest)
    if not asking_help and not _has_workspace(rest):
        print("error: --workspace is required (the workspace directory, on storage every node sees)",
              file=sys.stderr)
        sys.exit(2)
    args = rest + ([] if asking_help or "--json" in rest else ["--json"])
    level = logging.getLevelName(known.log_level.upper())
    cli_main(args, verb=verb, prog_name=f"python -m jobs.{verb.replace('-', '_')}",
             log_level=level if isinstance(level, int) else logging.INFO)
