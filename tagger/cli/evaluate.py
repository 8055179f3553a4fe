"""`tagger eval`: a tagging head's metrics on a labelled dataset (the toy world or a real benchmark), or
the toy world's seen/unseen split."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import ConfigError, TaggerError
from ..method.headkinds import image_heads
from .options import fail, print_summary

__all__ = ["eval_cmd", "register"]


def _eval_seen_unseen(clip, dataset: str, split: str, head: str, n: int, n_train: int) -> dict:
    """ZSL / GZSL metrics of ``head`` on the toy world's fixed seen/unseen split, flattened."""
    from ..evaluate.seen_unseen import evaluate_seen_unseen
    if split != "seen-unseen":
        raise ConfigError(f"--split must be seen-unseen, got {split!r}")
    if dataset != "toy":
        raise ConfigError(f"--split seen-unseen trains on the toy world's train scenes: use --dataset toy, "
                          f"not {dataset}")
    out = evaluate_seen_unseen(clip, head, n=n, n_train=n_train)
    return {f"{task}_{k}": v for task, m in out.items() for k, v in m.items()}


def eval_cmd(
    dataset: str = typer.Option("toy", help="toy | toy-small | voc2007 | coco2014 | nuswide"),
    model: str = typer.Option("toy-vit", help="open_clip model name"),
    pretrained: Optional[str] = typer.Option(None, help="hub tag or local checkpoint (toy models: shipped weights)"),
    head: str = typer.Option("zsclip", help=(
        "zsclip | zsclip-ensemble | zsclip-std | zsclip-ensemble-std | linprobe | comc; with --split "
        f"seen-unseen: zsclip | comc | {' | '.join(image_heads())} | comc-fewshot")),
    root: Optional[Path] = typer.Option(None, help="dataset root directory (real benchmarks)"),
    n: int = typer.Option(2000, min=1, help="number of toy scenes"),
    split: Optional[str] = typer.Option(None, help=(
        "seen-unseen: train on the toy train scenes' seen labels, report ZSL (unseen labels) and GZSL (all)")),
    n_train: int = typer.Option(3000, min=1, help="--split seen-unseen: toy train scenes the heads learn from"),
    device: Optional[str] = typer.Option(None, help="cpu | cuda"),
    as_json: bool = typer.Option(False, "--json", help="print the metrics as one JSON object (one line)"),
) -> None:
    """Evaluate a tagging head on a labelled dataset (mAP, P/R/F1 at top-3 and top-5)."""
    from ..evaluate.datasets import open_dataset
    from ..evaluate.harness import evaluate
    from ..models import load_clip

    try:
        clip = load_clip(model, pretrained, device=device)
        kw = {"n": n} if dataset.startswith("toy") else {}
        if split is not None:
            metrics = _eval_seen_unseen(clip, dataset, split, head, n, n_train)
        else:
            ds = open_dataset(dataset, root=str(root) if root else None, **kw)
            metrics = evaluate(clip, ds, head)
    except (TaggerError, ValueError) as e:
        fail(e)
    metrics = {"dataset": dataset, "model": model, "head": head, **metrics}
    print_summary(f"{head} on {dataset} ({model})", metrics, as_json)


def register(app: typer.Typer) -> None:
    """Add ``eval`` to the CLI."""
    app.command("eval")(eval_cmd)
