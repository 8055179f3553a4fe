"""`tagger init [WS]`: create a workspace (its catalog and workspace.json) and name the next command."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import WorkspaceError
from ..workspace import Workspace
from .options import (
    DEFAULT_WORKSPACE, ModelOpt, PretrainedOpt, WorkspaceOpt, console, open_catalog, print_summary, reported,
    workspace_at, workspace_path, workspace_target,
)

__all__ = ["init_cmd", "register"]


def _next_commands(root: Path) -> list[tuple[str, str]]:
    """The commands that follow, each with a note."""
    ws = shlex.quote(str(root))
    return [(f"tagger labels add --toy -w {ws}", f"or: tagger labels add NAME... -w {ws}"),
            (f"tagger encode SOURCE -w {ws}", "SOURCE: a folder, glob or manifest of images")]


def _keeps_its_model(ws: Workspace) -> str:
    """Why ``init --model`` leaves an existing workspace's model, and how another one is had."""
    from ..models.resolve import workspace_model_id
    name, root = ws.model()[0], shlex.quote(str(ws.root))
    how = ("start a new workspace for another model (tagger init NEW_FOLDER --model NAME)"
           if ws.holds_model(workspace_model_id(ws)) else
           f"nothing is encoded yet, so the first `tagger encode SOURCE --model NAME -w {root}` may still pick another")
    return f"{ws.root} already is a workspace (model {name}): init leaves it as it is; {how}"


def init_cmd(
    ws_arg: Annotated[Optional[Path], typer.Argument(
        metavar="[WS]", parser=workspace_path, help="the workspace folder to create (default: --workspace)")] = None,
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as one JSON object (one line)")] = False,
) -> None:
    """Create a workspace (its catalog and workspace.json, with the model it will use) and print the
    next command; an existing workspace is left as it is."""
    root = (ws_arg if ws_arg is not None else workspace).expanduser().resolve()
    ws = workspace_target(root)
    existed = ws.catalog.exists()
    with reported():
        if existed:  # a catalog.duckdb that is a text file or someone's database is not a workspace
            with open_catalog(root, read_only=True):
                pass
        if existed and (model or pretrained):
            raise WorkspaceError(_keeps_its_model(ws))
        if not existed:
            from ..models.registry import absolute_checkpoint, check_model
            name, weights = ws.model(model, absolute_checkpoint(pretrained))
            check_model(name, weights)  # a bad model is refused before anything is created
            ws = workspace_at(root, create=True)
            with open_catalog(root, read_only=False, create=True):
                pass
            ws.update_settings(model=name, pretrained=weights)
    summary: dict[str, Any] = {"workspace": str(root), "created": not existed, "model": ws.model()[0],
                               "next": [c for c, _ in _next_commands(root)]}
    if as_json:
        print_summary("init", summary, True)
        return
    console.print(f"{'created' if not existed else 'already'} a workspace at {root} (model {summary['model']})"
                  + ("" if not existed else "; nothing changed"), markup=False, soft_wrap=True)
    console.print("next:", markup=False, soft_wrap=True)
    for command, note in _next_commands(root):
        console.print(f"  {command}   ({note})", markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``init`` to the CLI."""
    app.command("init")(init_cmd)
