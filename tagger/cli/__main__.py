"""``python -m tagger.cli``: the same as the ``tagger`` command."""
from .app import main

main()
