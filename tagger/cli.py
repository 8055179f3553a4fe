"""The ``tagger`` command line: one verb per pipeline stage."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import TaggerError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Tag image collections with labels nobody annotated.")
console = Console()


def _fail(e: Exception) -> None:
    console.print(f"[red]error:[/red] {e}")
    raise typer.Exit(code=2)


def print_metrics(title: str, metrics: dict) -> None:
    """Print a metrics dict as a two-column table."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.2f}" if isinstance(v, float) else str(v))
    console.print(table)


@app.command("eval")
def eval_cmd(
    dataset: str = typer.Option("toy", help="toy | toy-small | voc2007 | coco2014 | nuswide"),
    model: str = typer.Option("toy-vit", help="open_clip model name"),
    pretrained: Optional[str] = typer.Option(None, help="hub tag or local checkpoint (toy models: shipped weights)"),
    head: str = typer.Option("zsclip", help="zsclip | zsclip-ensemble | zsclip-std | zsclip-ensemble-std | linprobe | comc"),
    root: Optional[Path] = typer.Option(None, help="dataset root directory (real benchmarks)"),
    n: int = typer.Option(2000, help="number of toy scenes"),
    device: Optional[str] = typer.Option(None, help="cpu | cuda"),
    as_json: bool = typer.Option(False, "--json", help="end with one JSON line of the metrics"),
) -> None:
    """Evaluate a tagging head on a labelled dataset (mAP, P/R/F1 at top-3 and top-5)."""
    from .evaluate.datasets import open_dataset
    from .evaluate.harness import evaluate
    from .models import load_clip

    try:
        clip = load_clip(model, pretrained, device=device)
        kw = {"n": n} if dataset.startswith("toy") else {}
        ds = open_dataset(dataset, root=str(root) if root else None, **kw)
        metrics = evaluate(clip, ds, head)
    except (TaggerError, ValueError) as e:
        _fail(e)
        return
    metrics = {"dataset": dataset, "model": model, "head": head, **metrics}
    print_metrics(f"{head} on {dataset} ({model})", metrics)
    if as_json:
        print(json.dumps(metrics))


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
