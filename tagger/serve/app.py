"""``tagger serve``'s ASGI application (Starlette): the pages of :mod:`.pages`, the image files and
renditions (looked up by image id in the catalog, never by a path from the request), and the writes
(accept, reject, undo), which need the page's CSRF token. :mod:`.security` guards every request."""
from __future__ import annotations

import hashlib
import logging
import mimetypes
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable
from urllib.parse import parse_qs, parse_qsl, urlencode

from jinja2 import ChoiceLoader, Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ..catalog import report as q
from ..errors import CatalogError, CatalogLockedError, ConfigError, TaggerError
from ..workspace import Workspace
from . import pages
from .security import AccessGuard, check_bind, new_token, same_token
from .state import CatalogAccess, Renditions, Searcher

__all__ = ["Serve", "ServeConfig", "create_app"]

logger = logging.getLogger(__name__)

_ASSETS = {"style.css": ("tagger.report", "text/css"), "serve.css": ("tagger.serve", "text/css"),
           "serve.js": ("tagger.serve", "text/javascript")}
_MAX_FORM = 16 * 1024
_MAX_ORIGINAL = 512 * 1024 * 1024  # an original whose size the catalog lacks is read only up to this


@dataclass(frozen=True)
class ServeConfig:
    """How the app serves a workspace (``host`` only decides whether a token is required)."""

    workspace: Path
    host: str = "127.0.0.1"
    token: str | None = None
    who: str = "app"
    page_size: int = 48
    neighbours: int = 12
    wait: float = 10.0
    model: str | None = None
    pretrained: str | None = None
    device: str | None = None
    allowed_hosts: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not 1 <= self.page_size <= 500 or not 0 <= self.neighbours <= 100:
            raise ConfigError("page size must be 1-500 and neighbours 0-100")


class Serve:
    """What every request shares: the workspace, catalog access, the searcher, templates, tokens."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.ws = Workspace(Path(cfg.workspace).expanduser().resolve())
        self.catalog = CatalogAccess(self.ws, cfg.wait)
        self.searcher = Searcher(self.ws, cfg.model, cfg.pretrained, cfg.device)
        self.renditions = Renditions(self.ws)
        self.csrf = new_token()
        self.env = Environment(loader=ChoiceLoader([PackageLoader("tagger.serve", "templates"),
                                                    PackageLoader("tagger.report", "templates")]),
                               undefined=StrictUndefined, autoescape=select_autoescape(["html"]),
                               trim_blocks=True, lstrip_blocks=True)
        self.env.filters["when"] = lambda t: t.strftime("%Y-%m-%d %H:%M:%S UTC") if t is not None else "-"
        self.env.filters["label_url"] = pages.label_url
        self.env.filters["name"] = lambda uri: PurePosixPath(str(uri)).name or str(uri)
        self._shapes: dict[int, tuple[tuple, Any]] = {}
        self._shapes_lock = threading.Lock()
        self.warmed = threading.Event()

    def run_shape(self, cat, run_id: int) -> tuple[dict[str, int], list[tuple[int, int]]]:
        """The run's totals and positives-per-image histogram (:func:`~tagger.catalog.report.run_shape`),
        read once per state of the run: the aggregate reads every tag of the run (seconds at 10^6
        images), the stamp a few rows."""
        stamp = q.run_stamp(cat, run_id)
        with self._shapes_lock:
            hit = self._shapes.get(run_id)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        shape = q.run_shape(cat, run_id)
        with self._shapes_lock:
            self._shapes = {run_id: (stamp, shape)}  # the current run's only: runs switch rarely
        return shape

    def warm(self) -> None:
        """Read the current run's shape before the first visit asks for it (errors: left to the page)."""
        try:
            with self.catalog.read() as cat:
                run_id = cat.current_run()
                if run_id is not None:
                    self.run_shape(cat, run_id)
        except TaggerError as e:
            logger.debug("no warm start: %s", e)
        finally:
            self.warmed.set()

    def current(self, cat, required: bool = True):
        """The current tag run (None, or with ``required`` a LookupError, when there is none)."""
        run_id = cat.current_run()
        if run_id is None:
            if required:
                raise LookupError("no current run: tag the workspace first (`tagger tag`, or `tagger nightly`)")
            return None
        return cat.tag_run(run_id)

    @staticmethod
    def cards(cat, hits: list[tuple[int, float]]) -> list[dict[str, Any]]:
        """Search hits as the cards pages show (image_id, uri, score), URIs read from ``cat``."""
        uris = cat.uris_of([i for i, _ in hits]) if hits else {}
        return [{"image_id": i, "uri": uris[i], "score": s} for i, s in hits if i in uris]

    def render(self, ctx: dict[str, Any], status: int = 200) -> HTMLResponse:
        template = self.env.get_template(ctx.pop("template"))
        html = template.render(csrf=self.csrf, **ctx)
        return HTMLResponse(html, status_code=status, headers=_HEADERS)


_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "frame-ancestors 'none'; form-action 'self'", "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin"}


def _wants_json(request: Request | None) -> bool:
    return request is not None and request.headers.get("accept", "").startswith("application/json")


def _error(serve: Serve, e: Exception, status: int | None = None, request: Request | None = None) -> Response:
    """The error page; a JSON ``{"ok": false, "error"}`` for a client that asked for JSON."""
    status = status or (404 if isinstance(e, LookupError) else 503 if isinstance(e, CatalogLockedError) else 400)
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)  # a KeyError's str() adds quotes
    if _wants_json(request):
        return JSONResponse({"ok": False, "error": text}, status_code=status)
    return serve.render({"template": "error.html", "page": "error", "title": "error", "run": None,
                         "message": f"error: {text}"}, status)


def _page(serve: Serve, build: Callable[..., dict[str, Any]]):
    def endpoint(request: Request) -> Response:
        try:
            return serve.render(build(serve, request, **request.path_params))
        except (TaggerError, LookupError) as e:
            return _error(serve, e)
    return endpoint


def _image_row(serve: Serve, image_id: int) -> dict[str, Any]:
    from ..catalog.browse import image_info
    with serve.catalog.read() as cat:
        info = image_info(cat, pages.known_id(image_id))
    if info is None:
        raise LookupError(f"no image {image_id} in the catalog")
    return info


def _original(serve: Serve, info: dict[str, Any]) -> Response:
    """The image's file as it was encoded: only an image read without error, and only while the file's
    bytes are still the ones encoded (size, then sha256), so a file swapped or linked in since is never
    served. The bytes checked are the bytes sent."""
    from ..uris import to_local_path
    missing = LookupError(f"the file of image {info['image_id']} cannot be read here")
    if info["status"] != "ok" or not info["content_hash"]:
        return _error(serve, LookupError(f"image {info['image_id']} was not read as an image "
                                         f"(status {info['status']})"), 404)
    local = to_local_path(info["uri"])
    try:
        if local is None or not Path(local).is_file():
            raise OSError
        size = Path(local).stat().st_size
        if size != info["bytes"] if info["bytes"] is not None else size > _MAX_ORIGINAL:
            raise OSError  # another file than the one encoded, or one too large to read whole
        data = Path(local).read_bytes()
    except OSError:
        return _error(serve, missing, 404)
    if hashlib.sha256(data).hexdigest() != info["content_hash"]:
        return _error(serve, LookupError(f"the file of image {info['image_id']} changed after it was encoded: "
                                         "`tagger encode` reads it again"), 409)
    media = mimetypes.guess_type(local)[0] or "application/octet-stream"
    return Response(data, media_type=media, headers={"X-Content-Type-Options": "nosniff",
                                                     "Content-Security-Policy": "default-src 'none'"})


def _file(serve: Serve, kind: str):
    def endpoint(request: Request) -> Response:
        try:
            info = _image_row(serve, request.path_params["image_id"])
        except (TaggerError, LookupError) as e:
            return _error(serve, e)
        if kind == "file":
            return _original(serve, info)
        path = serve.renditions.get(info["uri"], info["content_hash"], preview=kind == "preview")
        if path is None:
            return Response(status_code=404)
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})
    return endpoint


def _asset(request: Request) -> Response:
    from importlib import resources
    name = request.path_params["name"]
    if name not in _ASSETS:
        return Response(status_code=404)
    package, media = _ASSETS[name]
    text = (resources.files(package) / "templates" / "assets" / name).read_text(encoding="utf-8")
    return Response(text, media_type=media, headers={"Cache-Control": "no-cache"})


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > _MAX_FORM:
        raise ConfigError("the form is too large")
    return {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def _back(value: str | None) -> str:
    """A local address to return to (anything else: the overview), without an earlier write's note."""
    v = value or "/"
    if not v.startswith("/") or v.startswith("//") or "\\" in v:
        return "/"
    path, _, query = v.partition("?")
    kept = [(k, x) for k, x in parse_qsl(query) if k not in ("done", "image", "label")]
    return path + (f"?{urlencode(kept)}" if kept else "")


def _write(serve: Serve, action: str):
    async def endpoint(request: Request) -> Response:
        try:
            form = await _form(request)
        except ConfigError as e:
            return _error(serve, e, request=request)
        if not same_token(form.get("csrf") or request.headers.get("x-csrf-token"), serve.csrf):
            return _error(serve, ConfigError("the form's CSRF token is missing or stale: reload the page"), 403,
                          request)
        try:
            image_id, label = pages.known_id(int(form.get("image_id", ""))), form.get("label", "")
            done = await run_in_threadpool(_apply, serve, action, image_id, label, form.get("decision", ""))
        except ValueError:
            return _error(serve, ConfigError("image_id must be a whole number"), request=request)
        except (TaggerError, LookupError) as e:
            return _error(serve, e, request=request)
        if _wants_json(request):
            return JSONResponse({"ok": True, **done})
        back = _back(form.get("back"))
        sep = "&" if "?" in back else "?"
        note = urlencode({"done": action if action == "undo" else form.get("decision", ""), "image": image_id,
                          "label": label})
        return RedirectResponse(f"{back}{sep}{note}", status_code=303)
    return endpoint


def _apply(serve: Serve, action: str, image_id: int, label: str, decision: str) -> dict[str, Any]:
    from ..catalog.undo import decide, undo_last
    with serve.catalog.write() as cat:
        if action == "undo":
            return undo_last(cat, image_id, label)
        if decision not in ("accept", "reject"):
            raise CatalogError(f"decision must be accept or reject, got {decision!r}")
        out = decide(cat, image_id, label, decision, who=serve.cfg.who)
    return {k: v for k, v in out.items() if isinstance(v, (int, str, type(None)))}


def _health(serve: Serve):
    def endpoint(request: Request) -> Response:
        try:
            with serve.catalog.read() as cat:
                run = cat.current_run()
        except TaggerError as e:
            return JSONResponse({"ok": False, "error": str(e)}, status_code=503)
        return JSONResponse({"ok": True, "current_run": run})
    return endpoint


def create_app(cfg: ServeConfig) -> Starlette:
    """The app over ``cfg.workspace``; ConfigError for a non-loopback ``host`` without a token."""
    check_bind(cfg.host, cfg.token)
    serve = Serve(cfg)
    routes = [
        Route("/", _page(serve, pages.overview)),
        Route("/label/{name:path}", _page(serve, pages.label)),
        Route("/image/{image_id:int}", _page(serve, pages.image)),
        Route("/image/{image_id:int}/file", _file(serve, "file")),
        Route("/image/{image_id:int}/preview", _file(serve, "preview")),
        Route("/thumb/{image_id:int}", _file(serve, "thumb")),
        Route("/search", _page(serve, pages.search)),
        Route("/diff", _page(serve, pages.diff)),
        Route("/review", _page(serve, pages.review)),
        Route("/decide", _write(serve, "decide"), methods=["POST"]),
        Route("/undo", _write(serve, "undo"), methods=["POST"]),
        Route("/assets/{name}", _asset),
        Route("/health", _health(serve)),
    ]

    @asynccontextmanager
    async def lifespan(_app: Starlette):
        threading.Thread(target=serve.warm, name="serve-warm", daemon=True).start()
        yield

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.serve = serve
    app.add_middleware(AccessGuard, bind=cfg.host, token=cfg.token, csrf=serve.csrf,
                       allowed_hosts=list(cfg.allowed_hosts))
    return app
