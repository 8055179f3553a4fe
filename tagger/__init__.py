"""tagger: tag very large image collections with labels nobody annotated."""
__version__ = "0.1.0"
