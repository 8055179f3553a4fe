"""Ray job entrypoints: each parses arguments and calls the tagger library (`python -m jobs.<name>`)."""
