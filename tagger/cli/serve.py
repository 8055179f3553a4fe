"""`tagger serve`: the local web app over a workspace (:mod:`tagger.serve`), served by uvicorn."""
from __future__ import annotations

import logging
import socket
from typing import Annotated, Optional

import typer

from ..errors import TaggerError
from .options import DEFAULT_WORKSPACE, ModelOpt, PretrainedOpt, WorkspaceOpt, fail, reported, workspace_at
from .review import WhoOpt, _who

__all__ = ["register", "serve_cmd"]

logger = logging.getLogger(__name__)


def serve_cmd(
    host: Annotated[str, typer.Option(help=(
        "address to listen on; anything but loopback (127.0.0.1, ::1, localhost) needs --token"))] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port (0: any free one)")] = 8765,
    token: Annotated[Optional[str], typer.Option(help=(
        "access token every request must carry (?token= once, then a cookie; or Authorization: Bearer); "
        "'auto' generates one and prints it"))] = None,
    who: WhoOpt = None,
    page_size: Annotated[int, typer.Option(min=1, max=500, help="images per page")] = 48,
    preload: Annotated[bool, typer.Option(
        "--preload/--no-preload", help="load the search model at start, not at the first search")] = True,
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    device: Annotated[Optional[str], typer.Option(help="cpu | cuda for the search model (default: cpu)")] = None,
    wait: Annotated[float, typer.Option(min=0, help=(
        "seconds a request waits while a job writes the catalog"))] = 10.0,
) -> None:
    """Serve the workspace as a local web app: labels, images, search, run diffs, and Accept / Reject /
    Undo that write the catalog at once (alongside running jobs)."""
    import uvicorn

    from ..serve import ServeConfig, create_app
    from ..serve.security import is_loopback, new_token
    with reported():
        ws = workspace_at(workspace)
        if token == "auto" or (token is None and not is_loopback(host)):
            if token is None:
                fail(f"--host {host} exposes the workspace beyond this machine: give --token TOKEN "
                     "(or --token auto to generate one)")
            token = new_token()
        cfg = ServeConfig(workspace=ws.root, host=host, token=token, who=_who(who), page_size=page_size,
                          wait=wait, model=model, pretrained=pretrained, device=device)
        app = create_app(cfg)
        if preload:
            try:
                app.state.serve.searcher.clip()
            except (TaggerError, OSError, RuntimeError) as e:  # the pages work without it; search says why
                logger.warning("search model not loaded: %s", e)
    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {ws.root} at http://{shown}:{bound}/" + (f"?token={token}" if token else ""), flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one); one error line when it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        fail(f"cannot listen on {host}:{port}: {(e.strerror or str(e)).lower()}")
    sock.set_inheritable(True)
    return sock


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the CLI."""
    app.command("serve")(serve_cmd)

