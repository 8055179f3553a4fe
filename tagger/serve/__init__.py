"""``tagger serve``: a local web app over a workspace (Starlette, served by uvicorn): the overview, every
label's images, one page per image, search by words and by image, the diff of two runs, and the review
queue whose Accept / Reject / Undo write to the catalog at once. Never imports Ray."""
from .app import Serve, ServeConfig, create_app

__all__ = ["Serve", "ServeConfig", "create_app"]
