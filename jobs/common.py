"""Shared argument handling for the job entrypoints."""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from typing import Any, Callable

from tagger.errors import TaggerError
from tagger.workspace import Workspace


def finite_float(text: str) -> float:
    """argparse type: a finite float (``nan`` and ``inf`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--workspace", required=True, help="workspace directory (shared storage on a cluster)")
    p.add_argument("--log-level", default="INFO")
    return p


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="open_clip model name (default: the workspace's)")
    p.add_argument("--pretrained", default=None, help="hub tag or local checkpoint path")


def add_decision_args(p: argparse.ArgumentParser) -> None:
    """Options of every job that tags: how positives are decided, and a labelled set."""
    from tagger.pipeline.tag import DECISION_RULES, TagConfig
    p.add_argument("--decision", choices=DECISION_RULES, default=TagConfig.decision,
                   help="mixture: per-label thresholds fitted on the corpus; standardized: per-image z-score rule")
    p.add_argument("--calibrate-with", default=None, metavar="FILE",
                   help="CSV or Parquet of image URI -> labels: the labelled set later runs calibrate from")


def run(main: Callable[[argparse.Namespace, Workspace], dict[str, Any]], args: argparse.Namespace) -> None:
    """Configure logging, run ``main``, print its summary as one JSON line; errors become exit 2."""
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        ws = Workspace.at(args.workspace)
        ws.check_writable()
        if hasattr(args, "pretrained"):  # jobs that load a model: refuse a bad one before Ray starts
            from tagger.models.registry import check_model
            check_model(*ws.model(args.model, args.pretrained))
        out = main(args, ws)
    except TaggerError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(out, default=str))
